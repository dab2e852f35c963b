"""The public response schema now lives in the library: :mod:`restyle.serve.schema`
(``pip install 'restyle[serve]'``, or restyle and pydantic).

Both web examples and ``restyle serve`` import it from there; this module
stays for code that copied ``public_analysis.py`` beside an app.
``analysis-response.schema.json`` and ``error-response.schema.json`` beside
this file are its JSON schemas (``schema()``, ``error_schema()``).
"""

from restyle.serve.schema import *  # noqa: F403
from restyle.serve.schema import __all__  # noqa: F401
