"""Imported first by restyle: OpenMP's idle threads sleep rather than spin,
unless the program chose otherwise (see :func:`restyle._settings.wait_passively`).

torch and faiss each load an OpenMP runtime that reads the setting once, when
it loads, so it has to be made before either is imported.
"""

from restyle._settings import wait_passively

WAITS_PASSIVELY = wait_passively()
