"""One copy of the target's weights serving three roles: the target, the AV and the AR.

A run trained with LoRA keeps its adapters (megabytes), not merged copies of the model:

    RUN/av_adapter/   adapter_config.json, adapter_model.safetensors, nla_meta.yaml
    RUN/ar_adapter/   the same plus value_head.safetensors

Both adapters go onto one base model under their role's name ("av" on every block,
"ar" on blocks 0..K). `use_role(model, role)` picks which one runs: "target" runs
none (the frozen target itself), "av" and "ar" run theirs. Reading a text with an NLA
(target activations, then AV, then AR) so holds one model instead of three. A reader
that needs the AV or AR as a model of its own (`nla rl`, an oracle AR) merges the
adapter into a fresh copy of the base when it loads (`load_av_folder`, `load_ar_folder`).

`export_role` merges one adapter into a fresh copy of the base and writes the
released folder (RUN/av or RUN/ar, about 1 GB for SmolLM2-135M): `nla export` does,
and the trainers do when asked (`--export`).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from nla.atomic import atomic_path
from nla.autoencoder.checkpoint import (AR_DIR, AV_DIR, check_pair, check_site, load_verbalizer, save_released_av,
                                        verbalizer_from)
from nla.autoencoder.injection import Injection
from nla.autoencoder.lora import (load_adapter, lora_layers, merge_lora, read_lora, reduced_rank, save_adapter,
                                  stacked_adapter, write_lora)
from nla.autoencoder.meta import ModelMeta, read_model_meta, write_model_meta
from nla.autoencoder.reconstructor import VALUE_HEAD_FILE, Reconstructor, load_reconstructor, read_value_head
from nla.autoencoder.soft_tokens import attach, load_soft_tokens, save_soft_tokens
from nla.autoencoder.templates import check_ar_suffix, check_ar_template
from nla.errors import NLAError
from nla.layout import ADAPTER_DIRS, CALIBRATION_FILE, META_FILE, SOFT_TOKENS_FILE
from nla.models import load_target

RELEASED_DIRS = {"av": AV_DIR, "ar": AR_DIR}
ROLES = ("target", "av", "ar")


def trained(run: Path, role: str) -> bool:
    """Whether RUN holds a trained AV or AR: its adapter or its released folder (what a trainer writes last)."""
    return any((Path(run) / name / META_FILE).exists() for name in (ADAPTER_DIRS[role], RELEASED_DIRS[role]))


def is_adapter(folder: Path) -> bool:
    """An adapter folder (peft's files and a sidecar) rather than a released checkpoint."""
    return (Path(folder) / "adapter_config.json").exists()


def has_adapters(run: Path) -> bool:
    return all((Path(run) / d / META_FILE).exists() for d in ADAPTER_DIRS.values())


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


def _load_base(meta: ModelMeta, where: Path, *, device: str, dtype: str, spread: bool):
    """The target an adapter was trained on (its sidecar's base_checkpoint), checked against the sidecar."""

    if not meta.base_checkpoint:
        raise NLAError(f"{where}/nla_meta.yaml names no base_checkpoint; an adapter needs the model it was trained on")
    target = load_target(meta.base_checkpoint, device=device, dtype=dtype, spread=spread)
    if target.d_model != meta.d_model:
        raise NLAError(f"{meta.base_checkpoint} has d_model {target.d_model} but the adapters in {where} were "
                       f"trained for {meta.d_model}; the base model changed since training")
    return target


def load_shared(run: Path, *, device: str = "cpu", dtype: str = "auto", spread: bool = False):
    """(target, verbalizer, reconstructor, av_meta, ar_meta): all three on one base model, switched by use_role."""
    run = Path(run)
    av_dir, ar_dir = run / ADAPTER_DIRS["av"], run / ADAPTER_DIRS["ar"]
    av_meta, ar_meta = read_model_meta(av_dir), read_model_meta(ar_dir)
    check_pair(av_meta, ar_meta, run)
    if av_meta.base_checkpoint != ar_meta.base_checkpoint or not av_meta.base_checkpoint:
        raise NLAError(f"the adapters in {run} do not name one base model; load the merged folders instead")
    template = check_ar_template(ar_meta.prompt_templates.get("ar"), f"{ar_dir}/nla_meta.yaml prompt_templates.ar")
    target = _load_base(av_meta, run, device=device, dtype=dtype, spread=spread)
    check_ar_suffix(target.tokenizer, template, ar_meta.tokens.get("critic_suffix_ids"), ar_dir)
    model = load_adapter(target.model, av_dir, "av")
    with warnings.catch_warnings():  # peft warns about a second adapter on one model: here that is the point
        warnings.simplefilter("ignore", UserWarning)
        model = load_adapter(model, ar_dir, "ar").requires_grad_(False)
    ids, site = check_site(target.tokenizer, av_meta, av_dir)
    verbalizer = verbalizer_from(model, target.tokenizer, ids, site, av_meta, av_dir)
    value_head = read_value_head(ar_dir, ar_meta.d_model)
    reconstructor = Reconstructor(model, ar_meta.extraction_layer_index, value_head).eval()
    use_role(model, "target")
    return target, verbalizer, reconstructor, av_meta, ar_meta


def _merged_from_adapter(folder: Path, role: str, *, device: str, dtype: str, spread: bool):
    """(target whose model now holds the merged weights, sidecar): the adapter folded into a fresh base."""
    meta = read_model_meta(folder)
    if meta.role != role:
        raise NLAError(f"{folder} holds an {meta.role.upper()} adapter, not an {role.upper()}; pass the "
                       f"{ADAPTER_DIRS[role]}/ folder")
    target = _load_base(meta, folder, device=device, dtype=dtype, spread=spread)
    target.model = merge_lora(load_adapter(target.model, folder, role)).requires_grad_(False)
    return target, meta


def load_av_folder(folder: Path, *, device: str = "cpu", dtype: str = "auto", spread: bool = False):
    """(verbalizer, sidecar) from a released AV folder or an av_adapter folder (merged into its base)."""
    if not is_adapter(folder):
        return load_verbalizer(folder, device=device, dtype=dtype, spread=spread)
    target, meta = _merged_from_adapter(Path(folder), "av", device=device, dtype=dtype, spread=spread)
    if meta.injection_scale is None:
        raise NLAError(f"{folder}/nla_meta.yaml has no injection_scale; the AV cannot be used without it")
    ids, site = check_site(target.tokenizer, meta, Path(folder))
    return verbalizer_from(target.model.eval(), target.tokenizer, ids, site, meta, Path(folder)), meta


def load_ar_folder(folder: Path, *, device: str = "cpu", dtype: str = "auto", spread: bool = False):
    """(reconstructor, tokenizer, sidecar) from a released AR folder or an ar_adapter folder (merged into its
    base, which keeps its blocks after K: never run, as on the shared base)."""
    if not is_adapter(folder):
        return load_reconstructor(folder, device=device, dtype=dtype, spread=spread)
    target, meta = _merged_from_adapter(Path(folder), "ar", device=device, dtype=dtype, spread=spread)
    template = check_ar_template(meta.prompt_templates.get("ar"), f"{folder}/nla_meta.yaml prompt_templates.ar")
    check_ar_suffix(target.tokenizer, template, meta.tokens.get("critic_suffix_ids"), folder)
    head = read_value_head(folder, meta.d_model)
    return Reconstructor(target.model, meta.extraction_layer_index, head).eval(), target.tokenizer, meta


def write_released(folder: Path, role: str, model: nn.Module, tokenizer, meta: ModelMeta,
                   head: nn.Linear | None = None) -> None:
    """A released-layout folder of a model without adapters: a full HF folder (AV) or the truncated AR."""
    if role == "av":
        save_released_av(folder, model, tokenizer, meta)
    else:
        Reconstructor(model, meta.extraction_layer_index, head).save_released(folder, tokenizer, meta)


def _write_adapter_files(folder: Path, role: str, model: nn.Module, meta: ModelMeta,
                         head: nn.Linear | None, rank: int | None = None) -> None:
    """The named adapter (peft's files; with `rank`, stored at that lower rank), its sidecar and (AR) the head."""
    kept = save_adapter(model, folder, role, rank)
    save_soft_tokens(folder, model)  # an AV's projector, if it has one: not LoRA, so stored whole
    if kept is not None:
        meta = cut_meta(meta, rank, kept)
    if head is not None:
        save_file({"weight": head.weight.detach().contiguous().cpu()}, folder / VALUE_HEAD_FILE)
    write_model_meta(folder, meta)


def cut_meta(meta: ModelMeta, rank: int, kept: float) -> ModelMeta:
    """The sidecar of an adapter stored at a lower rank: it says what is stored, the trained rank's update cut."""
    return dataclasses.replace(meta, training={**meta.training, "saved_rank": rank, "saved_rank_kept": round(kept, 4)})


def store_at_rank(source: Path, dest: Path, rank: int) -> None:
    """An adapter folder (with its sidecar) written again at a lower rank, as --save-rank stores one."""
    config, weights, kept = reduced_rank(*read_lora(source), rank)
    write_lora(dest, config, weights)
    if (source / SOFT_TOKENS_FILE).exists():  # the projector is not LoRA: it is kept as trained
        shutil.copy2(source / SOFT_TOKENS_FILE, dest / SOFT_TOKENS_FILE)
    write_model_meta(dest, cut_meta(read_model_meta(source), rank, kept))


def write_stacked(run: Path, role: str, model: nn.Module, adapter_name: str, parent: Path, meta: ModelMeta,
                  head: nn.Linear | None = None) -> Path | None:
    """RUN/{role}_adapter holding `parent`'s adapter and the model's LoRA trained on top of it (RL) as one
    adapter, so the run stays megabytes and loads on the shared base; None (nothing written) when the two
    do not stack, and the caller writes the merged folder instead."""

    stacked = stacked_adapter(model, adapter_name, parent)
    if stacked is None:
        return None
    config, weights = stacked
    folder = run / ADAPTER_DIRS[role]
    with atomic_path(folder) as tmp:
        write_lora(tmp, config, weights)
        save_soft_tokens(tmp, model)  # an AV's projector (frozen in RL), as its SFT stage stored it
        if head is not None:
            save_file({"weight": head.weight.detach().contiguous().cpu()}, tmp / VALUE_HEAD_FILE)
        write_model_meta(tmp, meta)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(run / RELEASED_DIRS[role], ignore_errors=True)  # an older run's merged folder would win
    return folder


def export_role(run: Path, role: str, out: Path, *, dtype: str = "float32", adapter: Path | None = None) -> Path:
    """Merge RUN/{role}_adapter (or the `adapter` folder given) into a fresh copy of its base and write
    OUT/{av|ar} in the released layout."""

    folder = Path(adapter) if adapter else Path(run) / ADAPTER_DIRS[role]
    if not (folder / META_FILE).exists():
        raise NLAError(f"{folder} not found; export needs a run trained with LoRA (train-ar / train-av)")
    meta = read_model_meta(folder)
    target = load_target(meta.base_checkpoint, device="cpu", dtype=dtype)
    model = merge_lora(load_adapter(target.model, folder, role))
    soft_tokens = Injection.from_dict(meta.injection).soft_tokens if role == "av" else 0
    if soft_tokens:  # the released folder keeps the projector beside the model
        attach(model, soft_tokens)
        load_soft_tokens(model, folder)
    head = read_value_head(folder, meta.d_model) if role == "ar" else None
    released = Path(out) / RELEASED_DIRS[role]
    with atomic_path(released) as tmp:
        write_released(tmp, role, model, target.tokenizer, meta, head)
        shutil.rmtree(released, ignore_errors=True)  # an older export, replaced
    return released


def write_trained(run: Path, role: str, model: nn.Module, tokenizer, meta: ModelMeta, *, lora: bool,
                  head: nn.Linear | None = None, export: bool = False, rank: int | None = None) -> Path:
    """The end of a training stage; returns the folder written last, whose sidecar marks the stage done.

    LoRA: RUN/{role}_adapter (megabytes), plus the merged RUN/{role} only with `export` (a full copy of the
    model). Full fine-tuning: RUN/{role}. What an older run left for the role goes first (a stale folder of
    the other kind would be read instead of the new weights), and RUN/calibration.json with it. With `rank`,
    a LoRA is stored at that lower rank (lora.reduced_rank), and the export merges what is stored."""
    run = Path(run)
    (run / CALIBRATION_FILE).unlink(missing_ok=True)
    adapter, released = run / ADAPTER_DIRS[role], run / RELEASED_DIRS[role]
    if not lora:
        shutil.rmtree(adapter, ignore_errors=True)
        with atomic_path(released) as tmp:
            write_released(tmp, role, model, tokenizer, meta, head)
            shutil.rmtree(released, ignore_errors=True)
        return released
    with atomic_path(adapter) as tmp:  # renamed in last: a kill before that leaves no adapter, i.e. not done
        _write_adapter_files(tmp, role, model, meta, head, rank)
        shutil.rmtree(adapter, ignore_errors=True)  # first: never an old adapter beside a new merged folder
        if export:
            export_role(run, role, run, adapter=tmp)
        else:
            shutil.rmtree(released, ignore_errors=True)
    return adapter


def reference_client_note(av_meta: ModelMeta) -> str | None:
    """What the reference client (its nla_inference.py) cannot do with this AV, in words; None when it reads it.
    Its NLAClient always writes the vector into the marker's token embedding and ignores the sidecar's
    `injection` key, so an AV trained with the vector at a block's output would be read wrongly there."""
    injection = Injection.from_dict(av_meta.injection)
    if injection.site == "embedding":
        return None
    where = " and ".join(f"block {k}'s output" for k in injection.layers)
    return (f"this AV reads the vector at {where} (injection: {injection.site}); the "
            "reference client's NLAClient writes it into the marker's token embedding whatever the sidecar says, "
            "so it would read this AV wrongly (its AR reads fine): read the AV with nla, or train with "
            "--injection embedding for the reference client")


def export_nla(run: Path, out: Path | None = None, *, overwrite: bool = False, dtype: str = "float32") -> list[Path]:
    """`nla export`: the released av/ and ar/ folders merged from RUN's adapters (default: into RUN itself).
    An av/ or ar/ already in OUT is replaced only with overwrite."""
    run = Path(run)
    out = Path(out) if out else run
    roles = [role for role, name in ADAPTER_DIRS.items() if (run / name / META_FILE).exists()]
    if not roles:
        raise NLAError(f"{run} has no av_adapter/ or ar_adapter/; export needs a run trained with LoRA")
    taken = [f"{out / RELEASED_DIRS[r]}/" for r in roles if (out / RELEASED_DIRS[r]).exists()]
    if taken and not overwrite:
        one = len(taken) == 1
        raise NLAError(f"{', '.join(taken)} already exist{'s' if one else ''}; pass --overwrite to replace "
                       f"{'it' if one else 'them'}, or another --out")
    return [export_role(run, role, out, dtype=dtype) for role in roles]
