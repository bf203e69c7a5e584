"""Target models: presets, loading, and one adapter per model family."""

from nla.models.target import Target, load_target

__all__ = ["Target", "load_target"]
