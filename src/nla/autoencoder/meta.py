"""The `nla_meta.yaml` sidecar of an AV or AR checkpoint folder (the released NLAs' format).

We write schema version 2 with `av`/`ar` names; we read both that and the older
(schema 1) files, which say `actor`/`critic` and keep the extraction layer in other
places (see `_layer_index`: the legacy `critic.num_hidden_layers` means K itself).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nla.atomic import read_yaml_mapping, write_yaml
from nla.errors import NLAError
from nla.inputs import damaged_file
from nla.layout import META_FILE

SCHEMA_VERSION = 2
ROLE_ALIASES = {"av": "av", "ar": "ar", "actor": "av", "critic": "ar"}
STAGES = ("init", "sl", "rl")


@dataclass
class ModelMeta:
    role: str  # "av" (verbalizer) or "ar" (reconstructor)
    d_model: int
    extraction_layer_index: int | None  # K; None only for an AV whose sidecar does not say (its AR's K is used)
    injection_scale: float | None  # None for the AR
    mse_scale: float | None
    tokens: dict = field(default_factory=dict)  # injection_char, injection_token_id, neighbour ids, critic_suffix_ids
    prompt_templates: dict = field(default_factory=dict)  # {"av": ..., "ar": ...}
    base_checkpoint: str = ""
    stage: str = "init"
    trained_on: list = field(default_factory=list)
    parent_checkpoints: list = field(default_factory=list)
    training: dict = field(default_factory=dict)  # lr, loss_type, global_batch_size
    created_at: str = ""
    # AV only: where the vector enters ({} = the released embedding site; see autoencoder/injection.py)
    injection: dict = field(default_factory=dict)

    def to_yaml_dict(self) -> dict:
        data = asdict(self)
        layer = data.pop("extraction_layer_index")
        injection_scale, mse_scale = data.pop("injection_scale"), data.pop("mse_scale")
        if not data["injection"] or data["injection"].get("site", "embedding") == "embedding":
            data.pop("injection")  # the released layout has no such key: leave it out
        return {"kind": "nla_model", "schema_version": SCHEMA_VERSION, "role": data.pop("role"),
                "d_model": data.pop("d_model"), "extraction_layer_index": layer,
                "extraction": {"injection_scale": injection_scale, "mse_scale": mse_scale}, **data,
                "created_at": self.created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _layer_index(raw: dict, role: str, folder: Path) -> int | None:
    """K, read as the reference reads it: the top-level key, else critic.extraction_layer_index, else the
    legacy critic.num_hidden_layers (which means K itself, not K+1). Failing those, an AR's own config
    (it holds blocks 0..K, so K+1 layers); an AV's config says nothing about K, so None (its AR's K is used)."""
    if raw.get("extraction_layer_index") is not None:
        return int(raw["extraction_layer_index"])
    critic = raw.get("critic") or {}
    if critic.get("extraction_layer_index") is not None:
        return int(critic["extraction_layer_index"])
    if critic.get("num_hidden_layers") is not None:
        return int(critic["num_hidden_layers"])
    if role == "av":
        return None
    config = folder / "config.json"
    if config.exists():
        with damaged_file(config, "a JSON model config"):
            data = json.loads(config.read_text())
        layers = (data.get("text_config") or data).get("num_hidden_layers")
        if layers:
            return int(layers) - 1
    raise NLAError(f"{folder / META_FILE} names no extraction layer and the folder has no config.json to infer it")


def _scale(value, d_model: int, name: str, path: Path) -> float | None:
    """A resolved scale: a number, "sqrt_d_model" (the reference's sentinel), or null/"raw"/"none" (no scaling)."""
    if value is None or value in ("raw", "none"):
        return None
    if value == "sqrt_d_model":
        return math.sqrt(d_model)
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise NLAError(f"{path} has extraction.{name} {value!r}; expected a number, sqrt_d_model or null") from err


def read_model_meta(folder: str | Path) -> ModelMeta:
    folder = Path(folder)
    path = folder / META_FILE
    if not path.exists():
        raise NLAError(f"{folder} has no {META_FILE}; pass an NLA checkpoint folder (AV or AR)")
    with damaged_file(path, "a YAML sidecar", "restore the checkpoint's sidecar"):
        raw = read_yaml_mapping(path, "restore the checkpoint's sidecar")
    if raw.get("kind") not in (None, "nla_model"):
        raise NLAError(f"{path} is a '{raw.get('kind')}' sidecar, not an nla_model one")
    role = ROLE_ALIASES.get(str(raw.get("role", "")).lower())
    if role is None:
        raise NLAError(f"{path} has role '{raw.get('role')}'; expected av, ar, actor or critic")
    templates = raw.get("prompt_templates") or {}
    extraction = raw.get("extraction") or {}
    if raw.get("d_model") is None:
        raise NLAError(f"{path} has no d_model; it is not a complete nla_model sidecar")
    d_model = raw["d_model"]
    if isinstance(d_model, str) and d_model.strip().isdigit():  # a hand-edited sidecar may quote it
        d_model = int(d_model)
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
        raise NLAError(f"{path} has d_model {raw['d_model']!r}, not a positive whole number; restore the "
                       "checkpoint's sidecar")
    return ModelMeta(
        role=role,
        d_model=d_model,
        extraction_layer_index=_layer_index(raw, role, folder),
        injection_scale=_scale(extraction.get("injection_scale"), d_model, "injection_scale", path),
        mse_scale=_scale(extraction.get("mse_scale"), d_model, "mse_scale", path),
        tokens=raw.get("tokens") or {},
        prompt_templates={"av": templates.get("av", templates.get("actor")),
                          "ar": templates.get("ar", templates.get("critic"))},
        base_checkpoint=raw.get("base_checkpoint") or "",
        stage=raw.get("stage") or "init",
        trained_on=raw.get("trained_on") or [],
        parent_checkpoints=raw.get("parent_checkpoints") or [],
        training=raw.get("training") or {},
        created_at=str(raw.get("created_at") or ""),
        injection=raw.get("injection") or {},
    )


def write_model_meta(folder: str | Path, meta: ModelMeta) -> None:
    if meta.role not in ("av", "ar"):
        raise ValueError(f"role must be av or ar, got {meta.role}")
    if meta.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {meta.stage}")
    write_yaml(Path(folder) / META_FILE, meta.to_yaml_dict())
