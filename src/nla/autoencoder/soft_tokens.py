"""A learned projector from the vector to k soft tokens, read beside the vector itself (issue 22, item 3).

With the residual site the AV's blocks after K read the vector at one position, the marker. A
projector (as vision-language models connect an image encoder to a language model) maps the vector
to k more vectors, one for each of the k prompt positions right after the marker, where they are
added to those positions' own block-K output. Later blocks can then attend to what the projector
decoded (e.g. the tokens before the current one) instead of decoding it all from one position.

The projector is a two-layer MLP on the vector's direction (the vector divided by its RMS, so the
target's large residual norms do not scale its output); its last layer starts at zero, so a fresh
projector adds nothing and the AV starts as today's residual site. It is not LoRA: it is stored
beside the adapter (or the released folder) as soft_tokens.safetensors, and the sidecar's
`injection.soft_tokens: k` says it must be there. It trains with the AV's SFT (from scratch or a
warm start) and stays frozen in RL.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nla.errors import NLAError
from nla.inputs import damaged_file
from nla.layout import SOFT_TOKENS_FILE

# The projector is registered on the AV's model under this name, so the SFT loop's optimizer and
# training state (every trainable parameter of the model) carry it like the LoRA weights.
ATTRIBUTE = "nla_soft_tokens"


class SoftTokens(nn.Module):
    def __init__(self, d_model: int, count: int):
        super().__init__()
        self.count, self.d_model = count, d_model
        self.hidden = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, count * d_model)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """(B, d) vectors -> (B, count, d) additions to the positions after the marker."""
        x = vectors.float()
        x = x / x.pow(2).mean(dim=-1, keepdim=True).add(1e-6).sqrt()
        return self.out(nn.functional.gelu(self.hidden(x))).view(len(vectors), self.count, self.d_model)


def attach(model: nn.Module, count: int) -> SoftTokens:
    """A fresh projector (adds nothing yet) registered on the model, in fp32 (trained weights, as LoRA's)."""
    d_model = model.get_input_embeddings().weight.shape[1]
    device = model.get_input_embeddings().weight.device
    projector = SoftTokens(d_model, count).to(device)
    model.add_module(ATTRIBUTE, projector)
    return projector


def projector_of(model: nn.Module) -> SoftTokens | None:
    return getattr(model, ATTRIBUTE, None)


def load_soft_tokens(model: nn.Module, folder: Path, *, trainable: bool = False) -> None:
    """Fill the model's projector from FOLDER/soft_tokens.safetensors (frozen unless `trainable`)."""
    projector, path = projector_of(model), Path(folder) / SOFT_TOKENS_FILE
    if not path.is_file():
        raise NLAError(f"{path} is missing: the sidecar says this AV reads the vector through {projector.count} "
                       "soft tokens; copy the file from the run that trained it, or retrain the AV")
    with damaged_file(path, "a soft-token projector file", "copy it again from the run that trained it"):
        weights = load_file(path)
    try:
        projector.load_state_dict(weights)
    except RuntimeError as error:
        raise NLAError(f"{path} does not fit this AV ({projector.count} soft tokens of width {projector.d_model}): "
                       f"{str(error).splitlines()[1].strip()}; the folder mixes files of different runs") from None
    projector.requires_grad_(trainable)


def save_soft_tokens(folder: Path, model: nn.Module) -> None:
    """FOLDER/soft_tokens.safetensors when the model carries a projector; nothing otherwise."""
    projector = projector_of(model)
    if projector is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in projector.state_dict().items()},
                  Path(folder) / SOFT_TOKENS_FILE)


def without_soft_tokens(state: dict) -> dict:
    """A model's state dict less the projector: what a released AV's model.safetensors holds (the
    projector has its own file, and the model class knows nothing of it)."""
    return {k: v for k, v in state.items() if not k.startswith(ATTRIBUTE + ".")}
