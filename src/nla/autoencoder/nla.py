"""The public handle on a trained NLA: load it, explain activations, reconstruct text, measure pairs.

    nla = NLA.load("path/to/nla")             # holds av/ and ar/ (or av_adapter/ and ar_adapter/)
    nla = NLA.load("kitft/nla-qwen2.5-7b-L20")   # a released NLA: its -av and -ar hub repositories
    explanations = nla.explain(vectors)       # (N, d) activations -> N explanations
    predicted = nla.reconstruct(texts)        # N texts -> (N, d)
    mse = nla.mse(vectors, texts)             # per row, 2(1 - cos): 0 perfect, 2 orthogonal
    with nla.role("av"): ...                  # run the shared base as the AV (or "ar", "target") in a block

"Score" is a reader's word for 1 - MSE/B (reading/calibration.py), never this raw error.

A folder with both LoRA adapters (what train-ar / train-av write) loads onto one base model
that also serves as the target (`nla.target`): one copy of the weights instead of three.
Outside NLA calls it always runs as the plain target: each call that needs the AV or AR
switches its adapters on for that call only (`NLA.role`).
Merged folders (`nla export`, full fine-tuning, a released NLA's two repositories) load as
two models, and the target as a third when first asked for (default: the AV's
base_checkpoint); so does `shared_base=False`, which merges each adapter into its own copy.
Explanations are greedy and capped at 200 new tokens unless asked otherwise, as in the
release; one that reaches the cap without its closing tag is reported as truncated.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from nla.autoencoder.checkpoint import check_pair
from nla.autoencoder.hub import NLASource, resolve_nla
from nla.autoencoder.meta import ModelMeta
from nla.autoencoder.reconstructor import Reconstructor, reconstruction_mse
from nla.autoencoder.shared import has_adapters, load_ar_folder, load_av_folder, load_shared, use_role
from nla.autoencoder.templates import fill_ar_template
from nla.autoencoder.verbalizer import Explanation, Verbalizer, check_vectors
from nla.errors import NLAError
from nla.models import load_target
from nla.models.activations import pad_right, residual_stream
from nla.models.adapters import adapter_for
from nla.models.loading import check_dtype_name, input_device, pad_id_of
from nla.models.target import Target


def ar_input_ids(tokenizer, texts: list[str], template: str, requires_bos: bool) -> list[list[int]]:
    """The AR reads each explanation inside its template, as a raw string with special tokens (BOS) added."""
    bos = tokenizer.bos_token_id
    rows = []
    for text in texts:
        ids = tokenizer(fill_ar_template(template, text), add_special_tokens=True)["input_ids"]
        rows.append([bos] + ids if requires_bos and bos is not None and ids[:1] != [bos] else ids)
    return rows


@torch.no_grad()
def reconstruct_texts(reconstructor: Reconstructor, tokenizer, template: str, texts: list[str], *,
                      batch_size: int = 32) -> torch.Tensor:
    """The AR's predictions (N, d), fp32 on CPU, for texts read through its template, in padded batches."""
    requires_bos = adapter_for(reconstructor.backbone.config).requires_bos
    rows = ar_input_ids(tokenizer, texts, template, requires_bos)
    device = input_device(reconstructor.backbone)
    pad_id = pad_id_of(tokenizer)
    out = []
    for start in range(0, len(rows), batch_size):
        ids, mask = pad_right(rows[start : start + batch_size], pad_id, device)
        out.append(reconstructor(ids, mask).cpu())
    return torch.cat(out) if out else torch.empty(0, reconstructor.d_model)


class NLA:
    def __init__(self, verbalizer: Verbalizer, reconstructor: Reconstructor, ar_tokenizer,
                 av_meta: ModelMeta, ar_meta: ModelMeta, target: Target | None = None,
                 source: NLASource | None = None, device: str = "auto", dtype: str = "auto"):
        self.verbalizer = verbalizer
        self.reconstructor = reconstructor
        self.ar_tokenizer = ar_tokenizer
        self.av_meta = av_meta
        self.ar_meta = ar_meta
        self._target = target  # the shared base (adapters), or loaded on first use (merged folders)
        self.shared_base = target is not None and target.model is verbalizer.model
        self._role = "target"  # load_shared leaves a shared base with its adapters off
        self.source = source  # where the checkpoints were read from
        self.device, self.dtype = device, dtype  # how the target is loaded when first asked for

    @classmethod
    def load(cls, path: str | Path | None = None, *, av: str | Path | None = None, ar: str | Path | None = None,
             device: str = "auto", dtype: str | torch.dtype = "auto", shared_base: bool | None = None) -> "NLA":
        """Load an NLA from `path` (an nla folder, "default" for the NLA shipped in the package, or a hub
        prefix such as "kitft/nla-qwen2.5-7b-L20" that expands to its -av and -ar repositories) or from `av`
        and `ar` (each a folder or a hub id).

        dtype "auto": bf16 on CUDA, fp32 on CPU. device "auto": the GPU (spread over all GPUs when there are
        several), else the CPU. shared_base None: use the LoRA adapters when an nla folder has both."""
        source = resolve_nla(path, av=av, ar=ar)
        dtype = str(dtype).removeprefix("torch.")
        check_dtype_name(dtype)
        if shared_base is None:
            shared_base = source.run is not None and has_adapters(source.run)
        if shared_base:
            if source.run is None or not has_adapters(source.run):
                raise NLAError(f"{source.label} has no av_adapter/ and ar_adapter/; train with LoRA, or load the "
                               "merged folders")
            target, verbalizer, reconstructor, av_meta, ar_meta = load_shared(
                source.run, device=device, dtype=dtype, spread=True)
            nla = cls(verbalizer, reconstructor, target.tokenizer, av_meta, ar_meta, target, source, device, dtype)
        else:
            # Each half from its released folder, or merged from its adapter (a LoRA run without --export).
            verbalizer, av_meta = load_av_folder(source.av, device=device, dtype=dtype, spread=True)
            reconstructor, ar_tokenizer, ar_meta = load_ar_folder(source.ar, device=device, dtype=dtype, spread=True)
            check_pair(av_meta, ar_meta, source.label)
            nla = cls(verbalizer, reconstructor.eval(), ar_tokenizer, av_meta, ar_meta, None, source, device, dtype)
        return nla

    def target(self, spec: str | None = None, *, device: str | None = None, dtype: str | None = None) -> Target:
        """The frozen target whose activations this NLA reads: the shared base when there is one, else
        loaded once from `spec` (default: the AV's base_checkpoint), on the NLA's device and dtype. A shared
        base runs as the plain target outside NLA calls (and inside `with nla.role("target")`)."""
        if self.shared_base and spec and spec != self._target.name:
            raise NLAError(f"this NLA's adapters sit on {self._target.name}, which is also its target; "
                           f"drop --model {spec} (or load the merged folders to read another copy of it)")
        if self._target is None:

            base = spec or self.av_meta.base_checkpoint
            if not base:
                raise NLAError("the AV's sidecar names no base_checkpoint; pass --model with the target it reads")
            try:
                self._target = load_target(base, device=device or self.device, dtype=dtype or self.dtype,
                                           spread=True)
            except NLAError as err:
                if spec:
                    raise
                raise NLAError(f"cannot load the AV's base_checkpoint {base!r} ({err}); pass --model with "
                               "that target (a local folder or hub id)") from err
        return self._target

    @contextmanager
    def role(self, role: str):
        """Run the shared base as `role` ("target", "av" or "ar") inside the block, then as it ran before it.
        A no-op for an NLA of separate models."""
        previous = self._role
        if self.shared_base:
            use_role(self.verbalizer.model, role)
        self._role = role
        try:
            yield self
        finally:
            if self.shared_base:
                use_role(self.verbalizer.model, previous)
            self._role = previous

    @torch.no_grad()
    def activations(self, ids: list[int], target: Target | None = None) -> torch.Tensor:
        """(T, d) the target's layer-K activations over one token sequence, fp32 on CPU."""
        target = target or self.target()
        if target.d_model != self.d_model:
            raise NLAError(f"the target has d_model {target.d_model} but the NLA reads {self.d_model}; "
                           "pass the model the NLA was trained on")
        input_ids, mask = pad_right([ids], target.pad_id, target.device)
        with self.role("target"):
            return residual_stream(target, input_ids, mask, self.layer)[0].float().cpu()

    @property
    def d_model(self) -> int:
        return self.reconstructor.d_model

    @property
    def layer(self) -> int:
        return self.reconstructor.layer

    def explain(self, vectors: torch.Tensor, **generation) -> list[Explanation]:
        with self.role("av"):
            return self.verbalizer.explain(vectors, **generation)

    def reconstruct(self, texts: list[str], *, batch_size: int = 32) -> torch.Tensor:
        """(N, d) predicted activations, fp32 on CPU."""
        with self.role("ar"):
            return reconstruct_texts(self.reconstructor, self.ar_tokenizer, self.ar_meta.prompt_templates["ar"],
                                     texts, batch_size=batch_size)

    def mse(self, vectors: torch.Tensor, texts: list[str | None]) -> list[float | None]:
        """Reconstruction error of each (activation, explanation) pair; None where the explanation failed."""
        vectors = check_vectors(vectors, self.d_model)
        if len(texts) != len(vectors):
            raise NLAError(f"mse got {len(vectors)} activations but {len(texts)} texts; pass one text per activation")
        present = [i for i, t in enumerate(texts) if t is not None]
        errors: list[float | None] = [None] * len(texts)
        if present:
            mse = reconstruction_mse(self.reconstruct([texts[i] for i in present]), vectors[present].float().cpu())
            for i, value in zip(present, mse.tolist()):
                errors[i] = value
        return errors
