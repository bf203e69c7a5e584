"""Every fixed file and column name of nla's folders, in one place.

The names are the on-disk contract: released NLAs and the reference client read some of them
(nla_meta.yaml, value_head.safetensors, adapter folders), so change one only with a format
version. Modules import the names from here instead of writing the strings again.
"""

from __future__ import annotations

from pathlib import Path

# An NLA folder: av/ and ar/ (released, merged) or av_adapter/ and ar_adapter/ (LoRA), each with its sidecar.
META_FILE = "nla_meta.yaml"
ADAPTER_DIRS = {"av": "av_adapter", "ar": "ar_adapter"}
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's own file name
VALUE_HEAD_FILE = "value_head.safetensors"  # the AR's head
SOFT_TOKENS_FILE = "soft_tokens.safetensors"  # an AV's soft-token projector (injection.soft_tokens), beside it
CALIBRATION_FILE = "calibration.json"  # nla calibrate's score thresholds, beside the adapters

# An `nla extract` folder (and the stages that read one): its settings and its finished-marker.
CONFIG = "config.yaml"
SUMMARY = "summary.json"
SIDECAR_SUFFIX = ".nla_meta.yaml"  # beside each split's parquet: SPLIT.parquet.nla_meta.yaml

# An `nla eval` folder: eval.json (written last), its rows and the AV's explanations.
EVAL_JSON, ROWS_FILE, EXPLANATIONS_FILE = "eval.json", "rows.parquet", "explanations.jsonl"

# An `nla steer` folder: steer.json (written last) and its page.
STEER_JSON, STEER_HTML = "steer.json", "steer.html"

# An `nla train` run folder.
TRAIN_CONFIG_FILE, STAGES_FILE = "train_config.yaml", "stages.json"

# Columns of the dataset parquets.
ACTIVATION_COLUMN = "activation_vector"
CONTEXT_COLUMN = "detokenized_text_truncated"  # each row's true context, up to and including its token
EXPLANATION_COLUMN = "explanation"


def sidecar_path(parquet: str | Path) -> Path:
    parquet = Path(parquet)
    return parquet.with_name(parquet.name + SIDECAR_SUFFIX)
