"""Fails on import the way a plugin with a missing dependency does."""

import restyle_missing_dependency  # noqa: F401
