"""A plugin whose hook functions are not all marked with @restyle.hookimpl."""
