"""The activation reconstructor (AR): explanation text -> the activation it explains.

The AR is the target's blocks 0..K (no final norm, no lm_head) plus a
Linear(d, d, bias=False) head initialised to the identity (the reference found the
identity start far better than a random one). It reads the explanation and
predicts the activation from the last non-pad token of a right-padded batch.

The loss compares sqrt(d)-normalised prediction and gold: mean_d((p - g)^2) = 2(1 - cos),
0 when perfect, 2 when orthogonal.

Released layout of an AR folder: config.json with num_hidden_layers = K+1 (and
per-layer arrays such as `layer_types` sliced to match), the truncated backbone's
weights, `value_head.safetensors` holding one tensor `weight` [d, d], the tokenizer
(right padding), and `nla_meta.yaml`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nla.autoencoder.meta import META_FILE, ModelMeta, read_model_meta, write_model_meta
from nla.autoencoder.templates import check_ar_suffix, check_ar_template
from nla.errors import NLAError
from nla.inputs import damaged_file
from nla.layout import VALUE_HEAD_FILE
from nla.models.activations import hidden_at_layer
from nla.models.adapters import FamilyAdapter, adapter_for, text_config
from nla.models.loading import load_causal_lm

_LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")


def normalize(v: torch.Tensor, scale: float | None) -> torch.Tensor:
    """v * scale / ||v|| along the last dim (norm in fp32, clamped); scale None leaves v raw."""
    if scale is None:
        return v
    norm = v.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (v.float() * (scale / norm)).to(v.dtype)


def reconstruction_mse(prediction: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Per-row mean_d((p - g)^2) after normalising both to norm sqrt(d): equals 2(1 - cos)."""
    scale = math.sqrt(gold.shape[-1])
    return (normalize(prediction.float(), scale) - normalize(gold.float(), scale)).pow(2).mean(dim=-1)


class Reconstructor(nn.Module):
    def __init__(self, backbone: nn.Module, layer: int, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter: FamilyAdapter = adapter_for(backbone.config)
        self.layer = layer
        d = text_config(backbone.config).hidden_size
        if head is None:
            head = nn.Linear(d, d, bias=False)
            with torch.no_grad():
                head.weight.copy_(torch.eye(d))
        self.head = head.to(device=next(backbone.parameters()).device, dtype=torch.float32)

    @property
    def d_model(self) -> int:
        return self.head.weight.shape[0]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded token ids -> (B, d) predicted activations, fp32."""
        hidden = hidden_at_layer(self.backbone, self.adapter.decoder_layers(self.backbone), input_ids,
                                 attention_mask, self.layer)  # (B, T, d)
        last = (attention_mask.sum(dim=1) - 1).to(hidden.device)  # right padding: the last real token
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked.to(device=self.head.weight.device, dtype=torch.float32))

    def save_released(self, folder: str | Path, tokenizer, meta: ModelMeta) -> None:
        """Write the released AR layout (truncated config and weights, value head, tokenizer, sidecar)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.backbone.config)
        text = text_config(config)
        text.num_hidden_layers = self.layer + 1
        if getattr(text, "layer_types", None):
            text.layer_types = text.layer_types[: self.layer + 1]
        config.save_pretrained(folder)
        # Drop the blocks after K, the final norm and the lm_head, by module name (a tied lm_head shares
        # its tensor with the embeddings, which stay).
        unused = (self.adapter.final_norm(self.backbone), self.backbone.get_output_embeddings())
        prefixes = tuple(f"{name}." for name, module in self.backbone.named_modules()
                         if any(module is m for m in unused))
        state = {}
        for name, param in self.backbone.named_parameters():
            match = _LAYER_KEY.search(name)
            if name.startswith(prefixes) or (match and int(match.group(1)) > self.layer):
                continue
            state[name] = param.detach().contiguous().cpu()
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        save_file({"weight": self.head.weight.detach().contiguous().cpu()}, folder / VALUE_HEAD_FILE)
        tokenizer = copy.copy(tokenizer)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(folder)
        declare_only_an_added_bos(tokenizer, folder)
        write_model_meta(folder, meta)


def declare_only_an_added_bos(tokenizer, folder: Path) -> None:
    """The reference client refuses an AR whose tokenizer declares a BOS that add_special_tokens=True does not
    add (its reconstruct() tokenizes that way, as training did). SmolLM2's declares <|im_start|> as BOS and
    adds nothing: the saved tokenizer then declares no BOS, which is what the AR read in training either way."""
    bos = tokenizer.bos_token_id
    if bos is None or tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [bos]:
        return
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if "bos_token" in data:
            data["bos_token"] = None
            path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def read_value_head(folder: Path, d_model: int) -> nn.Linear:
    """The AR's Linear(d, d) head from value_head.safetensors (one tensor, `weight`; the release's is bf16),
    held in fp32."""
    path = folder / VALUE_HEAD_FILE
    if not path.exists():
        raise NLAError(f"{folder} has no {VALUE_HEAD_FILE}; an AR folder needs its value head")
    with damaged_file(path, "a safetensors file"):
        tensors = load_file(path)
    if "weight" not in tensors:
        raise NLAError(f"{path} holds {sorted(tensors)} but no 'weight'; the value head is one tensor named weight")
    weight = tensors["weight"]
    if tuple(weight.shape) != (d_model, d_model):
        raise NLAError(f"{path} has shape {tuple(weight.shape)}, but the sidecar says "
                       f"d_model {d_model}; the folder mixes files of different models")
    head = nn.Linear(d_model, d_model, bias=False)
    with torch.no_grad():
        head.weight.copy_(weight.float())
    return head


def _drop_lm_head(backbone: nn.Module) -> None:
    """The AR never runs its lm_head (absent from the folder, so freshly initialised): free it unless it is
    tied to the input embeddings (then it costs nothing)."""
    head = backbone.get_output_embeddings()
    if head is not None and head.weight is not backbone.get_input_embeddings().weight:
        backbone.set_output_embeddings(nn.Identity())


def load_reconstructor(folder: str | Path, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                       spread: bool = False) -> tuple[Reconstructor, object, ModelMeta]:
    """Load an AR folder in the released layout: (reconstructor, tokenizer, sidecar)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    meta = read_model_meta(folder)
    if meta.role != "ar":
        raise NLAError(f"{folder} holds a {meta.role.upper()}, not an AR; pass the reconstructor's folder")
    head = read_value_head(folder, meta.d_model)
    template = check_ar_template(meta.prompt_templates.get("ar"), f"{folder}/{META_FILE} prompt_templates.ar")
    with damaged_file(folder, "a tokenizer folder", "copy its tokenizer.json and tokenizer_config.json again, or "
                      "rerun the command that wrote it"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    check_ar_suffix(tokenizer, template, meta.tokens.get("critic_suffix_ids"), folder)
    # The final norm and lm_head are absent by design; they are never run (the forward stops at block K).
    backbone = load_causal_lm(folder, device=device, dtype=dtype, spread=spread)
    layers = text_config(backbone.config).num_hidden_layers
    if meta.extraction_layer_index is None or not 0 <= meta.extraction_layer_index < layers:
        raise NLAError(f"{folder} keeps {layers} blocks but its sidecar says layer {meta.extraction_layer_index}; "
                       "an AR holds blocks 0..K (config num_hidden_layers = K+1)")
    _drop_lm_head(backbone)
    return Reconstructor(backbone, meta.extraction_layer_index, head), tokenizer, meta
