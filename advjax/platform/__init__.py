"""Backend-specific rewrites (XLA:CPU)."""
