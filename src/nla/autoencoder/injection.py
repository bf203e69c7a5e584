"""Where the AV reads the activation: the marker's token embedding (released), or block K's output.

The released NLAs overwrite the marker's input embedding with the rescaled vector, so
the AV must learn to read a layer-K vector as if it were a token embedding. The
`residual` injection instead writes the vector into the AV's residual stream right
after block K, at the marker's position: blocks K+1.. (which read exactly such vectors
in the target) see it in the form they already understand, and the AV can read it with
far less training (the `patchscope` idea). Blocks 0..K then see a plain, constant prompt.

The vector still travels in the marker's slot of `inputs_embeds` (so batching,
`generate` and the RL loop work unchanged); two hooks, armed only inside
`ResidualInjection.active()`, move it: a pre-hook on block 0 takes it out and puts the
marker's own embedding back, and a hook on block K writes it into block K's output.
The hooks act only on a forward that holds the marker's position: not on the decoding steps
of `generate`, nor on a batch's shared prompt prefix computed once into a KV cache
(`train/av.py: response_logits`); a forward continuing such a cache finds the marker by its
position id.

Two sites (`early_layer: E`, E < K): the vector is also written into block E's output. Blocks
E+1..K then carry it, through attention, into the prompt's later positions and the answer's,
and block K's write restores it exactly at the marker, where blocks K+1.. read it as before.

Soft tokens (`soft_tokens: k`, residual only): a learned projector (autoencoder/soft_tokens.py) maps the
vector to k more vectors, added to block K's output at the k prompt positions after the marker.

    sidecar: injection: {site: residual, layer: K}                 (absent: the released embedding site)
             injection: {site: residual, layer: K, early_layer: E} (two sites)
             injection: {site: residual, layer: K, soft_tokens: k} (k soft tokens; soft_tokens.safetensors)
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from nla.errors import NLAError
from nla.models.adapters import adapter_for

EMBEDDING, RESIDUAL = "embedding", "residual"
SITES = (EMBEDDING, RESIDUAL)


@dataclass(frozen=True)
class Injection:
    site: str = EMBEDDING
    layer: int | None = None  # residual: the block whose output takes the vector (the extraction layer K)
    early_layer: int | None = None  # residual, two sites: an earlier block whose output takes it too
    soft_tokens: int = 0  # residual: how many positions after the marker take the projector's vectors

    def __post_init__(self):
        if self.site not in SITES:
            raise NLAError(f"injection site '{self.site}' is unknown; use one of: {', '.join(SITES)}")
        if self.site == RESIDUAL and (self.layer is None or self.layer < 0):
            raise NLAError("a residual injection needs the layer K it writes into (injection.layer)")
        if self.early_layer is not None and (self.site != RESIDUAL or not 0 <= self.early_layer < self.layer):
            raise NLAError(f"an early injection layer must be a block before the residual site's layer "
                           f"({self.layer}), with site residual; got early_layer {self.early_layer}")
        if self.soft_tokens < 0 or (self.soft_tokens and self.site != RESIDUAL):
            raise NLAError(f"soft tokens ({self.soft_tokens}) need site residual and a count of at least 1; "
                           "pass --injection residual, or drop --injection-soft-tokens")

    @property
    def layers(self) -> tuple[int, ...]:
        """The blocks whose output takes the vector, earliest first (residual only)."""
        return tuple(k for k in (self.early_layer, self.layer) if k is not None)

    def to_dict(self) -> dict:
        # One site keeps the sidecar as it always was; a second site or soft tokens add their key.
        extra = {} if self.early_layer is None else {"early_layer": self.early_layer}
        soft = {"soft_tokens": self.soft_tokens} if self.soft_tokens else {}
        return {"site": self.site, "layer": self.layer, **extra, **soft}

    @classmethod
    def from_dict(cls, raw: dict | None) -> "Injection":
        raw = raw or {}
        layer, early = raw.get("layer"), raw.get("early_layer")
        return cls(site=str(raw.get("site", EMBEDDING)), layer=None if layer is None else int(layer),
                   early_layer=None if early is None else int(early), soft_tokens=int(raw.get("soft_tokens", 0)))


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


class ResidualInjection:
    """The hooks that move the vector from the marker's embedding slot to block K's output (and block E's)."""

    def __init__(self, model: torch.nn.Module, sites: tuple[int, ...], position: int, prompt_length: int,
                 marker_id: int, projector: torch.nn.Module | None = None):
        layers = adapter_for(model.config).decoder_layers(model)
        if not 0 <= sites[-1] < len(layers):
            raise NLAError(f"residual injection at layer {sites[-1]}, but the AV has {len(layers)} blocks (0.."
                           f"{len(layers) - 1}); the AV and the activations must come from the same model")
        if projector is not None and position + projector.count >= prompt_length:
            raise NLAError(f"{projector.count} soft tokens do not fit after the marker: the AV prompt has "
                           f"{prompt_length - position - 1} tokens after it; pass fewer soft tokens")
        self.model, self.position, self.prompt_length, self.marker_id = model, position, prompt_length, marker_id
        self.projector = projector  # soft tokens: added at block K's output after the marker
        self.armed = False
        self.pending: torch.Tensor | None = None  # (B, d): the vectors taken out at block 0, put in at block K
        layers[0].register_forward_pre_hook(self._take, with_kwargs=True)
        for k in sites:  # the last site is K: it clears the pending vectors
            layers[k].register_forward_hook(functools.partial(self._put, last=k == sites[-1]), with_kwargs=True)

    @contextlib.contextmanager
    def active(self):
        """Arm the hooks for AV forwards only (on a shared base the target and AR pass through the same blocks)."""
        previous, self.armed = self.armed, True
        try:
            yield
        finally:
            self.armed, self.pending = previous, None

    def _marker_column(self, hidden: torch.Tensor, kwargs: dict) -> int | None:
        """The marker's column in this forward, or None when the forward does not hold it (a decoding step,
        or the prompt's shared prefix run alone). A forward that continues a cached prefix starts past
        position 0, so the column is found from the position ids that every block receives."""
        if not self.armed:
            return None
        positions = kwargs.get("position_ids")
        if positions is None:  # a family that does not pass them: only a whole-prompt forward holds the marker
            return self.position if hidden.shape[1] >= self.prompt_length else None
        column = self.position - int(positions.reshape(-1)[0])
        return column if 0 <= column < hidden.shape[1] else None

    def _take(self, module, args, kwargs):
        hidden = _hidden_arg(args, kwargs)  # (B, T, d)
        column = self._marker_column(hidden, kwargs)
        if column is None:
            return None
        self.pending = hidden[:, column].clone()
        embedding = self.model.get_input_embeddings()(torch.tensor([self.marker_id], device=hidden.device))
        hidden = hidden.clone()
        hidden[:, column] = embedding.to(hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _put(self, module, args, kwargs, output, *, last: bool = True):
        hidden = output[0] if isinstance(output, tuple) else output
        column = self._marker_column(hidden, kwargs)
        if self.pending is None or column is None:
            return None
        hidden = hidden.clone()
        hidden[:, column] = self.pending.to(hidden.dtype)
        if last and self.projector is not None:
            after = slice(column + 1, column + 1 + self.projector.count)
            hidden[:, after] = hidden[:, after] + self.projector(self.pending).to(hidden.device, hidden.dtype)
        if last:
            self.pending = None
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
