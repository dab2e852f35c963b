"""``restyle serve``: one warm Engine behind an HTTP API (docs/serving.md).

- :mod:`restyle.serve.schema`: the public response schema, version 1 (needs
  pydantic only; the web examples use it too).
- :mod:`restyle.serve.uploads`: uploads refused on their Content-Length and
  bounded while read, for any ASGI app.

The outermost floor, beside the command line. Installed with
``pip install 'restyle[serve]'``.
"""
