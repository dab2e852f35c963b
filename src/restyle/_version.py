"""restyle's version, on the ground floor: any module may read it without importing the package."""

__version__ = "0.1.0"
