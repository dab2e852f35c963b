"""A plugin that registers a class where an instance belongs, and one good marketplace."""
