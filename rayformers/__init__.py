"""rayformers."""
