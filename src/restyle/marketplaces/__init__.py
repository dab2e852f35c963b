"""Built-in marketplaces."""
