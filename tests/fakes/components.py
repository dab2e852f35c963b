"""The fakes restyle ships for plugin authors, used by restyle's own tests too."""

from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert

__all__ = ["ColorEncoder", "ListMarketplace", "ScriptedExpert"]
