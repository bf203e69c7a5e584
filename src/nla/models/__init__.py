"""Target models: presets, loading, and one adapter per model family."""


def __getattr__(name):
    # Lazy, so that light modules (configs, the CLI's --help) can import nla.models.presets without torch.
    if name in ("Target", "load_target"):
        from nla.models import target

        return getattr(target, name)
    raise AttributeError(f"module 'nla.models' has no attribute {name!r}")


__all__ = ["Target", "load_target"]
