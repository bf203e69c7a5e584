"""The verbalizer's (AV's) prompt and the injection of an activation into it.

The AV prompt is one user message holding the injection marker once, tokenized with
the chat template in one step (`apply_chat_template(..., tokenize=True,
add_generation_prompt=True)`; encoding the rendered string again would add a second
BOS and shift the site by one). Targets without a chat template get the plain text
with BOS. The marker's neighbour tokens are recorded, and the activation (rescaled
to the injection scale) replaces the marker's embedding only where both neighbours
match; the number of such sites must equal the number of vectors.

Input embeddings come from the model's own embedding module, so Gemma's sqrt(d)
scale is applied to every other token exactly as in a normal forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nla.autoencoder.marker import Marker, find_marker
from nla.autoencoder.reconstructor import normalize
from nla.autoencoder.templates import fill_av_template
from nla.errors import NLAError

# Short on purpose: the prompt is recomputed in every training and RL pass (SmolLM2's chat template
# already adds a system prompt of its own), and the AV learns what to say from training, not from here.
AV_TEMPLATE = ("Explain this hidden state of a language model ({injection_char}) "
               "inside <explanation></explanation> tags.")


@dataclass(frozen=True)
class InjectionSite:
    """Where the activation goes: the marker token and its recorded neighbours."""

    marker: Marker
    left_neighbor_id: int
    right_neighbor_id: int


def prompt_ids(tokenizer, template: str, marker: Marker) -> list[int]:
    text = fill_av_template(template, marker.char)
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                            add_generation_prompt=True)
        # Some transformers versions return a BatchEncoding here, others a plain list.
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return ids if bos is None or (ids and ids[0] == bos) else [bos] + ids


def choose_marker(tokenizer, template: str = AV_TEMPLATE) -> Marker:
    """The first marker candidate that sits exactly once, inside, the tokenized AV prompt."""

    def fits(marker: Marker) -> bool:
        ids = prompt_ids(tokenizer, template, marker)
        return ids.count(marker.token_id) == 1 and 0 < ids.index(marker.token_id) < len(ids) - 1

    return find_marker(tokenizer, fits)


def injection_site(ids: list[int], marker: Marker) -> InjectionSite:
    """Check the canonical prompt holds the marker once, not at an edge, and record its neighbours."""
    where = [i for i, t in enumerate(ids) if t == marker.token_id]
    if len(where) != 1:
        raise NLAError(f"the AV prompt holds the marker {marker.char!r} (id {marker.token_id}) {len(where)} times; "
                       "it must appear exactly once: check the prompt template and tokenizer")
    pos = where[0]
    if pos == 0 or pos == len(ids) - 1:
        raise NLAError(f"the marker {marker.char!r} sits at the edge of the AV prompt; move it inside the template")
    return InjectionSite(marker, ids[pos - 1], ids[pos + 1])


def inject(embeddings: torch.Tensor, input_ids: torch.Tensor, vectors: torch.Tensor, site: InjectionSite,
           injection_scale: float) -> torch.Tensor:
    """Replace the marker's embedding in each row with its vector rescaled to `injection_scale`.

    embeddings (B, T, d), input_ids (B, T), vectors (B, d). Returns a new tensor.
    """
    ids = input_ids
    is_marker = ids == site.marker.token_id
    left = torch.zeros_like(is_marker)
    right = torch.zeros_like(is_marker)
    left[:, 1:] = ids[:, :-1] == site.left_neighbor_id
    right[:, :-1] = ids[:, 1:] == site.right_neighbor_id
    sites = (is_marker & left & right).nonzero()  # (n, 2): row, position
    rows = torch.arange(len(vectors), device=ids.device)
    if sites.shape[0] != vectors.shape[0] or not torch.equal(sites[:, 0], rows):
        raise NLAError(f"found {sites.shape[0]} injection sites for {vectors.shape[0]} vectors (one per row "
                       "expected); the prompt ids do not match the AV's recorded marker and neighbours")
    out = embeddings.clone()
    out[sites[:, 0], sites[:, 1]] = normalize(vectors.float(), injection_scale).to(out.dtype)
    return out
