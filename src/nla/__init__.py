"""nla: Natural Language Autoencoders — read a model's activations as text, and measure how faithful the text is.

    from nla import NLA, Reader
    reader = Reader.load("default")              # the shipped NLA with its target and calibration
    trace = reader.trace("The capital of France is Paris.")   # a Trace: tokens, explanations, scores, claims
    nla = NLA.load("kitft/nla-qwen2.5-7b-L20")   # or an nla folder; see NLA.load
    explanations = nla.explain(vectors)

`import nla` stays light: torch and transformers load only when `NLA` (or another public
name) is first used.
"""

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use.
_PUBLIC = {
    "NLA": "nla.autoencoder.nla",
    "Reader": "nla.reading.trace",
    "Trace": "nla.reading.document",
    "Explanation": "nla.autoencoder.verbalizer",
    "NLAError": "nla.errors",
    "load_target": "nla.models.target",
}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nla' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))


__all__ = list(_PUBLIC)
