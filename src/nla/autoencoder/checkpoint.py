"""An NLA on disk: `av/` (a full HF causal LM) and `ar/` (see reconstructor), each with `nla_meta.yaml`.

At load the AV's recorded marker and prompt are checked against the live tokenizer:
the marker must encode to exactly its recorded id, and the canonical prompt must
hold it once with the recorded neighbours. Drift (another tokenizer version, an
edited template) fails loudly and names what moved, instead of injecting the
activation into the wrong place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nla.autoencoder.injection import Injection
from nla.autoencoder.marker import Marker
from nla.autoencoder.meta import META_FILE, ModelMeta, read_model_meta, write_model_meta
from nla.autoencoder.soft_tokens import load_soft_tokens, save_soft_tokens, without_soft_tokens
from nla.autoencoder.templates import check_av_template
from nla.autoencoder.verbalizer import Verbalizer
from nla.autoencoder.verbalizer_prompt import InjectionSite, injection_site, prompt_ids
from nla.errors import NLAError
from nla.inputs import damaged_file
from nla.models.loading import load_causal_lm

AV_DIR, AR_DIR = "av", "ar"


def verbalizer_tokens(verbalizer: Verbalizer) -> dict:
    site = verbalizer.site
    return {"injection_char": site.marker.char, "injection_token_id": site.marker.token_id,
            "injection_left_neighbor_id": site.left_neighbor_id,
            "injection_right_neighbor_id": site.right_neighbor_id}


def save_verbalizer(folder: str | Path, verbalizer: Verbalizer, meta: ModelMeta) -> None:
    save_released_av(Path(folder), verbalizer.model, verbalizer.tokenizer, meta)


def save_released_av(folder: Path, model, tokenizer, meta: ModelMeta) -> None:
    """A released AV folder: the HF model (its own weights only), tokenizer, sidecar and any projector."""
    model.save_pretrained(folder, state_dict=without_soft_tokens(model.state_dict()))
    save_soft_tokens(folder, model)
    tokenizer.save_pretrained(folder)
    write_model_meta(folder, meta)


def check_site(tokenizer, meta: ModelMeta, folder: Path) -> tuple[list[int], InjectionSite]:
    """Rebuild the canonical prompt with the live tokenizer and compare it with the sidecar."""
    tokens, template = meta.tokens, meta.prompt_templates.get("av")
    missing = [f"tokens.{k}" for k in ("injection_char", "injection_token_id") if tokens.get(k) is None]
    if not template or missing:
        raise NLAError(f"{folder}/{META_FILE} lacks {missing[0] if missing else 'prompt_templates.av'}; "
                       "an AV sidecar records its prompt template and injection marker")
    check_av_template(template, f"{folder}/{META_FILE} prompt_templates.av")
    marker = Marker(str(tokens["injection_char"]), int(tokens["injection_token_id"]))
    encoded = tokenizer.encode(marker.char, add_special_tokens=False)
    if encoded != [marker.token_id] or marker.token_id == tokenizer.unk_token_id:
        raise NLAError(f"tokenizer drift in {folder}: marker {marker.char!r} now encodes to {encoded}, "
                       f"the sidecar says [{marker.token_id}]; use the tokenizer saved with the checkpoint")
    ids = prompt_ids(tokenizer, template, marker)
    site = injection_site(ids, marker)
    recorded = (tokens.get("injection_left_neighbor_id"), tokens.get("injection_right_neighbor_id"))
    if (site.left_neighbor_id, site.right_neighbor_id) != recorded:
        raise NLAError(f"prompt drift in {folder}: the marker's neighbours are now "
                       f"{(site.left_neighbor_id, site.right_neighbor_id)}, the sidecar says {recorded}; "
                       "the template or tokenizer changed since the AV was trained")
    return ids, site


def load_verbalizer(folder: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                    spread: bool = False) -> tuple[Verbalizer, ModelMeta]:
    from transformers import AutoTokenizer

    folder = Path(folder)
    meta = read_model_meta(folder)
    if meta.role != "av":
        raise NLAError(f"{folder} holds an {meta.role.upper()}, not an AV; pass the verbalizer's folder")
    if meta.injection_scale is None:
        raise NLAError(f"{folder}/nla_meta.yaml has no extraction.injection_scale; the AV cannot be used without it")
    with damaged_file(folder, "a tokenizer folder", "copy its tokenizer.json and tokenizer_config.json again, or "
                      "rerun the command that wrote it"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids, site = check_site(tokenizer, meta, folder)
    model = load_causal_lm(folder, device=device, dtype=dtype, spread=spread)
    width = model.get_input_embeddings().weight.shape[1]
    if width != meta.d_model:
        raise NLAError(f"{folder} holds a model of width {width} but its sidecar says d_model {meta.d_model}; "
                       "the folder mixes files of different models")
    return verbalizer_from(model, tokenizer, ids, site, meta, folder), meta


def verbalizer_from(model, tokenizer, ids: list[int], site: InjectionSite, meta: ModelMeta,
                    folder: Path) -> Verbalizer:
    """The AV of a loaded model and its checked sidecar; a projector (soft tokens) filled from its folder."""
    verbalizer = Verbalizer(model, tokenizer, ids, site, float(meta.injection_scale),
                            Injection.from_dict(meta.injection))
    if verbalizer.injection.soft_tokens:
        load_soft_tokens(model, Path(folder))
    return verbalizer


def check_pair(av: ModelMeta, ar: ModelMeta, where) -> None:
    """An AV and an AR belong together only if they read the same target layer and width. An AV whose
    sidecar names no layer (its config cannot say) reads its AR's."""
    if av.extraction_layer_index is None:
        av.extraction_layer_index = ar.extraction_layer_index
    for field_name in ("d_model", "extraction_layer_index"):
        if getattr(av, field_name) != getattr(ar, field_name):
            raise NLAError(f"the AV and AR in {where} disagree on {field_name} ({getattr(av, field_name)} vs "
                           f"{getattr(ar, field_name)}); pair checkpoints trained on the same target and layer")
    if av.base_checkpoint and ar.base_checkpoint and av.base_checkpoint != ar.base_checkpoint:
        raise NLAError(f"the AV and AR in {where} come from different targets ({av.base_checkpoint} vs "
                       f"{ar.base_checkpoint}); pair checkpoints trained on the same target")
