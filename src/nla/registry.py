"""The known NLAs (registry.yaml): the shipped default and the released ones, with their target, layer,
published FVE and memory to read in bf16, as SAELens lists its pretrained SAEs in one file.

    known("qwen2.5-7b-L20")["source"]     # 'kitft/nla-qwen2.5-7b-L20': NLA.load and --nla take either
    source_of("gemma3-12b-L32")           # the hub prefix a name stands for; other specs are returned as given
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml


@cache
def registry() -> dict[str, dict]:
    return yaml.safe_load(files("nla").joinpath("registry.yaml").read_text(encoding="utf-8"))


def known(spec: str) -> dict | None:
    """The entry of a registry name or of the hub prefix it stands for (with its name), else None."""
    for name, entry in registry().items():
        if spec in (name, entry["source"]):
            return {"name": name, **entry}
    return None


def source_of(spec: str) -> str:
    """What to load for `spec`: a released NLA's hub prefix for its registry name, else `spec` itself."""
    entry = registry().get(spec)
    return entry["source"] if entry and spec != "default" else spec
