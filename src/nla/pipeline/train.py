"""`nla train`: the whole pipeline from one YAML config, each stage in its own folder.

    nla train --preset smollm2-135m --out runs/smol        # the shipped default's recipe
    nla train --config my.yaml --out runs/mine             # a user's model, layer and corpus

Stages, in order (OUT/<folder>):
    extract   acts/                    activations of the corpus at layer K (nla extract)
    explain   acts/explanations/       warm-start explanations of ar_sft and av_sft (nla explain-data)
    sft-ar    sft/ar_adapter/          the reconstructor on those explanations (nla train-ar; sft/ar/ with
                                       lora_rank 0, or also with export: true)
    sft-av    sft/av_adapter/          the verbalizer on those explanations (nla train-av; likewise sft/av/)
    refit     refit/                   a fresh AR on the SFT AV's own texts of ar_sft, beside that AV
                                       (train/refit.py); skipped when refit.epochs is 0
    expert    expert/                  rounds of expert iteration on that AV: the AR picks the best of its
                                       sampled explanations, the AV trains on them (train/expert.py); run
                                       only when the config has an expert section (rounds 0 skips it)
    rl        rl/av_adapter/, ar_adapter/ GRPO on the AV with a live AR (nla rl); skipped when rl.steps is 0
    oracle    oracle/ar_adapter/       the text-oracle AR: an AR reading the true contexts of ar_sft, the
                                       ceiling eval reports beside the NLA (a measurement, not part of the
                                       NLA); run only when the config's oracle section sets something, e.g.
                                       oracle: {epochs: 1.0} (epochs 0 skips it)
    eval      eval/                    held-out FVE next to its controls (nla eval)
    calibrate <last NLA>/calibration.json  its score thresholds and claim report from eval's rows and
                                       explanations (nla calibrate --from-eval): trace and demo labels

A stage whose output marks it finished is skipped; an unfinished one resumes (every stage
function resumes on its own after a kill). OUT/train_config.yaml holds the config the run
was started with: rerunning with another config is refused and names the settings that differ,
with their old and new values.
OUT/stages.json records each stage's wall and CPU seconds. A stage killed mid-way adds the time
from its start to the last file it wrote (its CPU seconds are lost) and counts in killed_attempts.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import resource
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nla.atomic import read_yaml_mapping, write_json, write_yaml
from nla.changes import describe_changes
from nla.errors import NLAError
from nla.layout import CALIBRATION_FILE, CONTEXT_COLUMN, EVAL_JSON, STAGES_FILE, SUMMARY, TRAIN_CONFIG_FILE

# What a YAML value may be for a setting annotated with each type (a path is written as a string). Other
# annotations (tuple[str, ...], SplitFractions) are left to the stage config's own checks.
YAML_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
              "Path": (str,), "dict": (dict,)}
SECTIONS = ("extract", "explain", "ar", "av", "refit", "expert", "rl", "oracle", "eval")
TRAIN_PRESETS = ("smollm2-135m", "gemma3-270m")  # presets/NAME.yaml


@dataclass
class PipelineConfig:
    """One YAML file: the target and corpus at the top, then one section of settings per stage."""

    model: str = "smollm2-135m"
    layer: int | None = None
    corpus: str = "default"
    extract: dict = field(default_factory=dict)  # ExtractConfig fields (max_docs, positions_per_doc, ...)
    explain: dict = field(default_factory=dict)  # ExplainDataConfig fields (explainer, quote_tokens, ...)
    ar: dict = field(default_factory=dict)  # ARTrainConfig fields (lr, batch_size, epochs, lora_rank, ...)
    av: dict = field(default_factory=dict)  # AVTrainConfig fields (injection, lr, epochs, ...)
    refit: dict = field(default_factory=dict)  # RefitConfig fields (lr, epochs, ...); epochs 0 skips it
    expert: dict = field(default_factory=dict)  # ExpertConfig fields (rounds, rows, ...); absent: not run
    rl: dict = field(default_factory=dict)  # RLConfig fields; steps 0 skips RL
    oracle: dict = field(default_factory=dict)  # ARTrainConfig fields of the text-oracle AR; absent: not trained
    eval: dict = field(default_factory=dict)  # EvalConfig fields (max_rows, ...)


def preset_path(name: str) -> Path:
    if name not in TRAIN_PRESETS:
        raise NLAError(f"unknown preset '{name}'; choose one of: {', '.join(TRAIN_PRESETS)} (or pass --config FILE)")
    return Path(str(resources.files("nla.pipeline") / "presets" / f"{name}.yaml"))


def load_config(path: Path) -> PipelineConfig:
    if not path.exists():
        raise NLAError(f"config {path} not found; pass a YAML file or --preset {TRAIN_PRESETS[0]}")
    raw = read_yaml_mapping(path, "write model:, corpus: and one mapping per stage (see the presets)")
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise NLAError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for section in SECTIONS:
        if not isinstance(raw.get(section) or {}, dict):
            raise NLAError(f"{path}: '{section}' must be a mapping of settings")
    _check_types({k: v for k, v in raw.items() if k not in SECTIONS}, PipelineConfig, str(path))
    return PipelineConfig(**{k: (v or {}) if k in SECTIONS else v for k, v in raw.items()})


def _build(cls, settings: dict, section: str, **fixed):
    """A stage config from its YAML section; an unknown or fixed key is named in one line."""
    names = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(k for k in settings if k not in names or k in fixed)
    if bad:
        allowed = sorted(names - set(fixed) - {"overwrite"})
        raise NLAError(f"section '{section}': key(s) {', '.join(bad)} cannot be set there; allowed: "
                       f"{', '.join(allowed)}")
    _check_types(settings, cls, f"section '{section}'")
    return cls(**{**settings, **fixed})


def _check_types(settings: dict, cls, where: str) -> None:
    """A value of the wrong kind (lr: fast, batch_size: 1.5) is one line naming it, not a TypeError in a stage."""
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in settings.items():
        parts = [part.strip() for part in kinds[key].split("|")]
        if not all(part in YAML_TYPES for part in parts):
            continue
        allowed = tuple(kind for part in parts for kind in YAML_TYPES[part])
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            raise NLAError(f"{where}: {key} is {value!r}, not of type {kinds[key]}; write a value of that type "
                           "(see the presets)")


def stage_configs(cfg: PipelineConfig, out: Path) -> dict:
    """Every stage's config object, built (and so validated) before any work starts."""
    from nla.data.config import ExtractConfig
    from nla.eval.config import EvalConfig
    from nla.explainers.config import ExplainDataConfig
    from nla.rl.config import RLConfig
    from nla.train.config import ARTrainConfig, AVTrainConfig, ExpertConfig
    from nla.train.refit import RefitConfig

    acts, sft, refit, rl = out / "acts", out / "sft", out / "refit", out / "rl"
    explained = acts / "explanations"
    configs = {
        "extract": _build(ExtractConfig, cfg.extract, "extract", out=acts, model=cfg.model, corpus=cfg.corpus,
                          layer=cfg.layer),
        "explain": _build(ExplainDataConfig, cfg.explain, "explain", dataset=acts, out=explained),
        "sft-ar": _build(ARTrainConfig, cfg.ar, "ar", data=explained / "ar_sft.parquet", out=sft),
        "sft-av": _build(AVTrainConfig, cfg.av, "av", data=explained / "av_sft.parquet", out=sft),
    }
    nla = sft
    if cfg.refit.get("epochs", 1):
        configs["refit"] = _build(RefitConfig, cfg.refit, "refit", nla=sft, data=explained / "ar_sft.parquet",
                                  out=refit)
        nla = refit
    if cfg.expert and cfg.expert.get("rounds", 1):
        if cfg.av.get("lora_rank", 1) == 0:
            raise NLAError("section 'expert' trains on the AV's LoRA adapter, but av.lora_rank is 0 (full "
                           "fine-tuning); drop the expert section or train the AV with LoRA")
        configs["expert"] = _build(ExpertConfig, cfg.expert, "expert", nla=nla, data=explained / "av_sft.parquet",
                                   out=out / "expert")
        nla = out / "expert"
    if cfg.rl.get("steps", 1):
        configs["rl"] = _build(RLConfig, cfg.rl, "rl", nla=nla, data=acts / "rl.parquet", out=rl,
                               eval_data=acts / "validation.parquet")
        nla = rl
    oracle = {}
    if cfg.oracle and cfg.oracle.get("epochs", 1):
        oracle = {"oracle_ar": out / "oracle"}
        configs["oracle"] = _build(ARTrainConfig, cfg.oracle, "oracle", data=acts / "ar_sft.parquet",
                                   out=oracle["oracle_ar"], text_column=CONTEXT_COLUMN)
    configs["eval"] = _build(EvalConfig, cfg.eval, "eval", nla=nla, out=out / "eval",
                             data=acts / "validation.parquet", **oracle)
    configs["calibrate"] = CalibrateStage(nla=nla, eval=configs["eval"])
    return configs


@dataclass
class CalibrateStage:
    """The last stage: the final NLA's calibration.json, from the evaluation's rows and explanations."""

    nla: Path
    eval: object  # the eval stage's EvalConfig

    @property
    def out(self) -> Path:
        return self.nla


def calibrate_stage(config: CalibrateStage) -> None:
    from nla.reading.calibration import calibrate

    calibrate(config.nla, from_eval=config.eval.out, device=config.eval.device, dtype=config.eval.dtype,
              batch_size=config.eval.batch_size)


def finished(stage: str, config) -> bool:
    """What each stage writes last, so its presence means the stage completed."""
    out = Path(config.out)
    if stage in ("sft-ar", "sft-av", "rl", "oracle"):
        from nla.autoencoder.shared import trained

        # LoRA: the adapter folder, renamed in last (after the merged folder, with export); else the released
        # one. RL writes its AR after its AV.
        return trained(out, "av" if stage == "sft-av" else "ar")
    marker = {"extract": out / SUMMARY, "explain": out / SUMMARY, "refit": out / "refit.json",
              "expert": out / "expert.json",
              "eval": out / EVAL_JSON, "calibrate": out / CALIBRATION_FILE}[stage]
    return marker.exists()


# stage -> (module, function): imported only when the stage runs, so `nla train --help` stays light
STAGE_FUNCTIONS = {"extract": ("nla.data.extract", "extract"), "explain": ("nla.explainers.stage", "explain_data"),
                   "sft-ar": ("nla.train.ar", "train_ar"), "sft-av": ("nla.train.av", "train_av"),
                   "refit": ("nla.train.refit", "refit_ar"), "expert": ("nla.train.expert", "expert_iteration"),
                   "rl": ("nla.rl.run", "rl"), "oracle": ("nla.train.ar", "train_ar"),
                   "eval": ("nla.eval.evaluate", "evaluate"),
                   "calibrate": ("nla.pipeline.train", "calibrate_stage")}


def run_stage(stage: str, config) -> None:
    module, function = STAGE_FUNCTIONS[stage]
    getattr(importlib.import_module(module), function)(config)


def _check_same_config(out: Path, cfg: PipelineConfig) -> None:
    saved_path = out / TRAIN_CONFIG_FILE
    if not saved_path.exists():
        return
    changed = describe_changes(read_yaml_mapping(saved_path, "rerun with another --out"), dataclasses.asdict(cfg))
    if changed:
        raise NLAError(f"{out} was started with another config (changed: {changed}); rerun with the "
                       f"config in {saved_path}, or pass another --out")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count_killed_attempt(record: dict, stage: str, folder: Path) -> bool:
    """A stage killed mid-way never wrote its time. Count the span from its start to the last file it wrote
    (a lower bound of the wall time it spent; its CPU time is lost), so that the budget stays honest."""
    since = record.get(stage, {}).pop("running_since", None)
    if since is None:
        return False
    files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    last = max((p.stat().st_mtime for p in files), default=since)
    entry = record[stage]
    entry["wall_seconds"] = round(entry["wall_seconds"] + max(0.0, last - since), 1)
    entry["killed_attempts"] = entry.get("killed_attempts", 0) + 1
    return True


def run_pipeline(cfg: PipelineConfig, out: Path, *, echo=print) -> dict:
    """Run (or resume) every stage; returns OUT/stages.json's content, the evaluation at its end."""
    out = Path(out)
    configs = stage_configs(cfg, out)  # every section is validated before the first stage runs
    _check_same_config(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / TRAIN_CONFIG_FILE, dataclasses.asdict(cfg))
    record = json.loads((out / STAGES_FILE).read_text()) if (out / STAGES_FILE).exists() else {}
    started = time.perf_counter()
    for number, (stage, config) in enumerate(configs.items(), start=1):
        where = f"[{number}/{len(configs)}] {stage}"
        if count_killed_attempt(record, stage, Path(config.out)):
            write_json(out / STAGES_FILE, record)
        if finished(stage, config):
            echo(f"{where}: finished earlier, skipped ({config.out})")
            continue
        echo(f"{where}: running -> {config.out}")
        spent = record.setdefault(stage, {"wall_seconds": 0.0, "cpu_seconds": 0.0})  # resumed stages add up
        spent["running_since"] = time.time()  # cleared below; left behind by a kill
        write_json(out / STAGES_FILE, record)
        clock, cpu = time.perf_counter(), _cpu_seconds()
        run_stage(stage, config)
        del spent["running_since"]
        spent["wall_seconds"] = round(spent["wall_seconds"] + time.perf_counter() - clock, 1)
        spent["cpu_seconds"] = round(spent["cpu_seconds"] + _cpu_seconds() - cpu, 1)
        write_json(out / STAGES_FILE, record)
        echo(f"{where}: done in {record[stage]['wall_seconds'] / 60:.1f} min "
             f"(total this call {(time.perf_counter() - started) / 60:.1f} min)")
    return {"stages": record, "eval": json.loads((configs["eval"].out / EVAL_JSON).read_text())}
