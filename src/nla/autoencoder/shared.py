"""One copy of the target's weights serving three roles: the target, the AV and the AR.

A run trained with LoRA keeps its adapters next to the merged folders:

    RUN/av_adapter/   adapter_config.json, adapter_model.safetensors, nla_meta.yaml
    RUN/ar_adapter/   the same plus value_head.safetensors

Both adapters go onto one base model under their role's name ("av" on every block,
"ar" on blocks 0..K). `use_role(model, role)` picks which one runs: "target" runs
none (the frozen target itself), "av" and "ar" run theirs. Reading a text with an NLA
(target activations, then AV, then AR) so holds one model instead of three.

`export_role` merges one adapter into a fresh copy of the base and writes the
released folder (RUN/av or RUN/ar); the trainers and `nla export` both use it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from nla.atomic import atomic_path
from nla.autoencoder.checkpoint import AR_DIR, AV_DIR, check_pair, check_site
from nla.autoencoder.injection import Injection
from nla.autoencoder.meta import ModelMeta, read_model_meta, write_model_meta
from nla.autoencoder.reconstructor import VALUE_HEAD_FILE, Reconstructor, read_value_head
from nla.autoencoder.templates import check_ar_suffix, check_ar_template
from nla.autoencoder.verbalizer import Verbalizer
from nla.errors import NLAError
from nla.train.lora import load_adapter, lora_layers, merge_lora, save_adapter

ADAPTER_DIRS = {"av": "av_adapter", "ar": "ar_adapter"}
RELEASED_DIRS = {"av": AV_DIR, "ar": AR_DIR}
ROLES = ("target", "av", "ar")


def has_adapters(run: Path) -> bool:
    return all((Path(run) / d / "nla_meta.yaml").exists() for d in ADAPTER_DIRS.values())


def use_role(model: nn.Module, role: str) -> None:
    """Run the shared model as the target (adapters off), the AV or the AR. Inference only: grads stay off."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    for layer in lora_layers(model):
        if role == "target":
            layer.enable_adapters(False)
        else:
            layer.enable_adapters(True)
            # Blocks after K carry no "ar" adapter: peft skips an active name a layer does not hold.
            layer.set_adapter(role, inference_mode=True)


def load_shared(run: Path, *, device: str = "cpu", dtype: str = "auto", spread: bool = False):
    """(target, verbalizer, reconstructor, av_meta, ar_meta): all three on one base model, switched by use_role."""
    from nla.models import load_target

    run = Path(run)
    av_dir, ar_dir = run / ADAPTER_DIRS["av"], run / ADAPTER_DIRS["ar"]
    av_meta, ar_meta = read_model_meta(av_dir), read_model_meta(ar_dir)
    check_pair(av_meta, ar_meta, run)
    if av_meta.base_checkpoint != ar_meta.base_checkpoint or not av_meta.base_checkpoint:
        raise NLAError(f"the adapters in {run} do not name one base model; load the merged folders instead")
    template = check_ar_template(ar_meta.prompt_templates.get("ar"), f"{ar_dir}/nla_meta.yaml prompt_templates.ar")
    target = load_target(av_meta.base_checkpoint, device=device, dtype=dtype, spread=spread)
    check_ar_suffix(target.tokenizer, template, ar_meta.tokens.get("critic_suffix_ids"), ar_dir)
    if target.d_model != av_meta.d_model:
        raise NLAError(f"{av_meta.base_checkpoint} has d_model {target.d_model} but the adapters in {run} were "
                       f"trained for {av_meta.d_model}; the base model changed since training")
    model = load_adapter(target.model, av_dir, "av")
    with warnings.catch_warnings():  # peft warns about a second adapter on one model: here that is the point
        warnings.simplefilter("ignore", UserWarning)
        model = load_adapter(model, ar_dir, "ar").requires_grad_(False)
    ids, site = check_site(target.tokenizer, av_meta, av_dir)
    verbalizer = Verbalizer(model, target.tokenizer, ids, site, float(av_meta.injection_scale),
                            Injection.from_dict(av_meta.injection))
    reconstructor = Reconstructor(model, ar_meta.extraction_layer_index, read_value_head(ar_dir, ar_meta.d_model)).eval()
    use_role(model, "target")
    return target, verbalizer, reconstructor, av_meta, ar_meta


def write_released(folder: Path, role: str, model: nn.Module, tokenizer, meta: ModelMeta,
                   head: nn.Linear | None = None) -> None:
    """A released-layout folder of a model without adapters: a full HF folder (AV) or the truncated AR."""
    if role == "av":
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_model_meta(folder, meta)
    else:
        Reconstructor(model, meta.extraction_layer_index, head).save_released(folder, tokenizer, meta)


def write_adapter(run: Path, role: str, model: nn.Module, meta: ModelMeta, head: nn.Linear | None = None) -> Path:
    """RUN/{role}_adapter, written atomically: the named adapter, its sidecar and (AR) the head."""
    folder = run / ADAPTER_DIRS[role]
    with atomic_path(folder) as tmp:
        save_adapter(model, tmp, role)
        if head is not None:
            save_file({"weight": head.weight.detach().contiguous().cpu()}, tmp / VALUE_HEAD_FILE)
        write_model_meta(tmp, meta)
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def export_role(run: Path, role: str, out: Path, *, dtype: str = "float32") -> Path:
    """Merge RUN/{role}_adapter into a fresh copy of its base and write OUT/{av|ar} in the released layout."""
    from nla.models import load_target

    folder = Path(run) / ADAPTER_DIRS[role]
    if not (folder / "nla_meta.yaml").exists():
        raise NLAError(f"{folder} not found; export needs a run trained with LoRA (train-ar / train-av)")
    meta = read_model_meta(folder)
    target = load_target(meta.base_checkpoint, device="cpu", dtype=dtype)
    model = merge_lora(load_adapter(target.model, folder, role))
    head = read_value_head(folder, meta.d_model) if role == "ar" else None
    released = Path(out) / RELEASED_DIRS[role]
    with atomic_path(released) as tmp:
        write_released(tmp, role, model, target.tokenizer, meta, head)
        shutil.rmtree(released, ignore_errors=True)  # an older export, replaced
    return released


def write_trained(run: Path, role: str, model: nn.Module, tokenizer, meta: ModelMeta, *, lora: bool,
                  head: nn.Linear | None = None) -> Path:
    """The end of a training stage: with LoRA the adapter folder, then its merged export; else the full folder."""
    if lora:
        write_adapter(run, role, model, meta, head)
        return export_role(run, role, run)
    shutil.rmtree(run / ADAPTER_DIRS[role], ignore_errors=True)  # a stale adapter would shadow the new weights
    released = run / RELEASED_DIRS[role]
    with atomic_path(released) as tmp:
        write_released(tmp, role, model, tokenizer, meta, head)
        shutil.rmtree(released, ignore_errors=True)
    return released


def export_nla(run: Path, out: Path | None = None, *, overwrite: bool = False, dtype: str = "float32") -> list[Path]:
    """`nla export`: the released av/ and ar/ folders merged from RUN's adapters (default: into RUN itself)."""
    run = Path(run)
    out = Path(out) if out else run
    roles = [role for role, name in ADAPTER_DIRS.items() if (run / name / "nla_meta.yaml").exists()]
    if not roles:
        raise NLAError(f"{run} has no av_adapter/ or ar_adapter/; export needs a run trained with LoRA")
    if out != run and not overwrite:
        taken = [str(out / RELEASED_DIRS[r]) for r in roles if (out / RELEASED_DIRS[r]).exists()]
        if taken:
            raise NLAError(f"{taken[0]} already exists; pass --overwrite to replace it, or another --out")
    return [export_role(run, role, out, dtype=dtype) for role in roles]
