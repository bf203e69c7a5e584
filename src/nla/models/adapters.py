"""One small adapter per model family.

An adapter answers the few questions where families differ: where the decoder
blocks live, whether input embeddings are scaled (Gemma multiplies looked-up rows
by sqrt(d) inside its forward, so anything that builds embeddings by hand must do
the same), and whether BOS must be added by hand (the Gemma GGUF tokenizer adds
none, and Gemma degenerates without it). Everything else is plain HF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from nla.errors import NLAError


def text_config(config):
    """The decoder's config (multimodal Gemma 3 nests it under `text_config`)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@dataclass(frozen=True)
class FamilyAdapter:
    family: str
    model_types: frozenset[str]
    requires_bos: bool = False
    scales_embeddings: bool = False

    def decoder(self, model: nn.Module) -> nn.Module:
        """The decoder stack that owns the embeddings, the blocks and the final norm."""
        base = model.model
        # Vision-language wrappers (Gemma3ForConditionalGeneration) keep the text stack one level down.
        return getattr(base, "language_model", base)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return self.decoder(model).norm

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = getattr(self.decoder(model), "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise NLAError(
                f"cannot find the decoder blocks of {type(model).__name__} (expected model.model.layers); "
                "add an adapter for this family in nla/models/adapters.py"
            )
        return layers

    def embed_scale(self, config) -> float:
        return math.sqrt(text_config(config).hidden_size) if self.scales_embeddings else 1.0


LLAMA = FamilyAdapter(
    "llama",
    frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "olmo2"}),
)
GEMMA = FamilyAdapter(
    "gemma",
    frozenset({"gemma", "gemma2", "gemma3", "gemma3_text"}),
    requires_bos=True,
    scales_embeddings=True,
)
ADAPTERS = (LLAMA, GEMMA)


def adapter_for(config) -> FamilyAdapter:
    model_type = config.model_type
    for adapter in ADAPTERS:
        if model_type in adapter.model_types or text_config(config).model_type in adapter.model_types:
            return adapter
    known = ", ".join(sorted(t for a in ADAPTERS for t in a.model_types))
    raise NLAError(
        f"model type '{model_type}' has no nla adapter (known: {known}); "
        "add a FamilyAdapter for it in nla/models/adapters.py"
    )
