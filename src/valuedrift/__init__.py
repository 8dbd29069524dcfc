"""valuedrift: trace how a language model's values drift during post-training."""

__version__ = "0.1.0"
