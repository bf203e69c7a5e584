"""`nla info`: the shape of a target and its activation norms at a layer; and an extraction's summary in words."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nla.data.corpus import load_corpus
from nla.data.extract import encode_document
from nla.data.norms import norm_stats, suggest_injection_scale
from nla.data.sampling import eligible_positions
from nla.errors import NLAError
from nla.models import Target
from nla.models.activations import batched_residual_stream


def layer_norm_stats(target: Target, texts_ids: list[list[int]], layer: int, min_position: int,
                     batch_tokens: int = 8192) -> dict:
    """Norm statistics over every non-special position >= min_position."""
    special = target.special_ids
    norms = []
    for indices, hidden in batched_residual_stream(target, texts_ids, layer, batch_tokens):
        for row, i in enumerate(indices):
            keep = eligible_positions(texts_ids[i], special_ids=special, min_position=min_position)
            norms.append(hidden[row, keep].norm(dim=-1).numpy())
    return norm_stats(np.concatenate(norms))


def target_info(target: Target, *, layer: int | None, corpus: str, max_docs: int, min_position: int,
                max_doc_tokens: int = 512) -> dict:
    if max_docs < 1 or min_position < 0:
        raise NLAError("--max-docs must be at least 1 and --min-position at least 0")
    layer = target.resolve_layer(layer)
    docs = load_corpus(corpus, limit=max_docs)
    ids = [encode_document(target, d, max_doc_tokens) for d in docs]
    ids = [x for x in ids if len(x) > min_position]
    info = {
        "model": target.name, "family": target.adapter.family, "architecture": type(target.model).__name__,
        "layers": target.num_layers, "d_model": target.d_model, "default_layer": target.default_layer,
        "layer": layer, "embed_scale": target.adapter.embed_scale(target.model.config),
        "chat_template": target.has_chat_template, "dtype": str(target.model.dtype).removeprefix("torch."),
        "device": str(target.device),
    }
    if not ids:
        raise NLAError(f"no document in {corpus} is longer than --min-position {min_position} tokens; "
                       "lower --min-position or use longer documents")
    stats = layer_norm_stats(target, ids, layer, min_position)
    info["activation_norm"] = {"documents": len(ids), "min_position": min_position, **stats}
    info["suggested_injection_scale"] = suggest_injection_scale(stats["mean"])
    return info


def format_summary(summary: dict, out: Path) -> str:
    norms = summary["activation_norm"]
    splits = ", ".join(f"{k} {v}" for k, v in summary["rows_per_split"].items())
    speed = summary["tokens_per_second"]
    lines = [
        f"extracted {summary['rows']} activations from {summary['documents_used']} documents "
        f"({summary['documents_skipped_too_short']} skipped as too short) into {out}/",
        f"  model {summary['model']}, layer {summary['layer']}, d_model {summary['d_model']}; "
        f"{summary['tokens']} tokens" + (f" at {speed:.0f} tokens/s" if speed else " (all resumed from chunks)"),
        f"  rows per split: {splits}",
        f"  activation norm: mean {norms['mean']:.1f}, p50 {norms['p50']:.1f}, p99 {norms['p99']:.1f}, "
        f"max {norms['max']:.1f} -> suggested injection scale {summary['suggested_injection_scale']:g}",
    ]
    return "\n".join(lines)
