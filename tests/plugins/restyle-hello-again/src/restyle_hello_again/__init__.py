"""A second distribution declaring the entry point name "hello"."""
