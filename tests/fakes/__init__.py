"""In-process fakes for restyle's tests."""
