"""A minimal third-party restyle plugin."""
