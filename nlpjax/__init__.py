"""nlpjax: a pure-functional JAX/Flax research framework for NLP."""

__version__ = "0.1.0"
