"""The plugin contract: the four component kinds, the context they are handed,
the hook specifications, the registry, the boundary checks on what
components return, and the base of remote (cloud) components.
"""
