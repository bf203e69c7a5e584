"""nla: Natural Language Autoencoders — read a model's activations as text, and measure how faithful the text is."""

__version__ = "0.1.0"
