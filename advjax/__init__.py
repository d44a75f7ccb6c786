"""advjax: a JAX reimplementation of Szegedy et al., "Intriguing properties of
neural networks" (arXiv 1312.6199)."""

__version__ = "0.1.0"
