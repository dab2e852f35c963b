"""Built-in experts."""
