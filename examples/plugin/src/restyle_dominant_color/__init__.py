"""A restyle expert that names the item's dominant colours."""

from restyle_dominant_color.plugin import DominantColorExpert

__all__ = ["DominantColorExpert"]
