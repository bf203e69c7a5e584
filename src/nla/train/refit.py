"""Re-fit the AR on the AV's own explanations: the `refit` stage of `nla train`.

After SFT the AR has read only the warm-start texts, which are exact. The AV writes
approximations of them: a plausible setting, next tokens that are often right, a quote
that is partly wrong. Read by an AR that trusts every word, such a text reconstructs
worse than predicting the mean; an AR trained on what the AV really writes learns which
parts of it to trust (docs/quality.md has the measurement). This is the reference's
"train the AR on AV samples" done once, greedily, before (or instead of) RL:

    1. the SFT AV explains every ar_sft activation, greedily   OUT/av_texts.jsonl (resumable)
    2. those activations paired with the AV's texts             OUT/pairs.parquet (+ sidecar)
    3. a fresh AR trained on the pairs (nla train-ar's function) OUT/ar_adapter/ (LoRA) or OUT/ar/
    4. the SFT AV copied beside it, so OUT is a complete NLA    OUT/av_adapter/ (or OUT/av/)
    5. OUT/refit.json, written last: its presence marks the stage finished

An explanation without its closing tag is never read by an AR (it scores as a failure),
so its row is left out of the pairs.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from nla.atomic import copy_folder, write_json
from nla.autoencoder.nla import NLA
from nla.autoencoder.shared import trained
from nla.errors import NLAError
from nla.eval.evaluate import Generation, explain_all
from nla.inputs import EXPLANATIONS, damaged_file, vectors_of
from nla.layout import META_FILE
from nla.train.ar import train_ar
from nla.train.config import ARTrainConfig
from nla.train.pairs import write_text_pairs

TEXTS_FILE, PAIRS_FILE, DONE_FILE = "av_texts.jsonl", "pairs.parquet", "refit.json"


@dataclass
class RefitConfig:
    nla: Path  # the SFT NLA folder (av_adapter/ + ar_adapter/, or av/ + ar/)
    data: Path  # the ar_sft explanations the SFT AR was trained on: its activations (and sidecar) are reused
    out: Path
    lr: float = 1e-3
    batch_size: int = 16  # the AR's training batch
    epochs: float = 1.0
    lora_rank: int = 16
    explain_batch_size: int = 32  # activations the AV explains together
    max_new_tokens: int = 120
    device: str = "auto"
    dtype: str = "auto"
    overwrite: bool = False

    def __post_init__(self):
        self.nla, self.data, self.out = Path(self.nla), Path(self.data), Path(self.out)
        if self.lr <= 0 or self.batch_size < 1 or self.epochs <= 0 or self.explain_batch_size < 1:
            raise NLAError("refit: lr, batch_size, epochs and explain_batch_size must be positive")
        if self.max_new_tokens < 1:
            raise NLAError("refit: max_new_tokens must be at least 1")


def av_texts(cfg: RefitConfig, table: pa.Table, progress: bool) -> tuple[list[str | None], str, int]:
    """The SFT AV's greedy explanation of every row (None where it wrote no closing tag), resumable; and the
    SFT NLA's target and layer, which the new AR keeps."""

    nla = NLA.load(cfg.nla, device=cfg.device, dtype=cfg.dtype)
    golds = torch.from_numpy(vectors_of(table).copy())
    if golds.shape[1] != nla.d_model:
        raise NLAError(f"{cfg.data} holds d={golds.shape[1]} activations but {cfg.nla} reads d_model {nla.d_model}")
    settings = {"nla": str(cfg.nla.resolve()), "av_created_at": nla.av_meta.created_at,
                "data": str(cfg.data.resolve()), "max_new_tokens": cfg.max_new_tokens, "dtype": cfg.dtype}
    records = explain_all(nla, {"nla": golds}, Generation(cfg.explain_batch_size, cfg.max_new_tokens),
                          cfg.out / TEXTS_FILE, settings, progress,
                          desc="refit: the AV explains ar_sft")["nla"]
    model, layer = nla.ar_meta.base_checkpoint, nla.layer
    del nla
    gc.collect()  # the AR about to be trained loads its own copy of the base model
    return [r["text"] for r in records], model, layer


def check_tagged(cfg: RefitConfig, texts: list[str | None]) -> int:
    """How many rows the AV left without a closing tag (dropped from the pairs); too few left is an error."""
    kept = sum(t is not None for t in texts)
    if kept < 2:
        raise NLAError(f"the AV in {cfg.nla} closed its explanation for {kept} of {len(texts)} rows; "
                       "train it longer before re-fitting the AR")
    return len(texts) - kept


def copy_av(cfg: RefitConfig) -> Path:
    """The SFT AV beside the new AR (the adapter when there is one: megabytes, not the merged model)."""
    for name in ("av_adapter", "av"):
        source = cfg.nla / name
        if (source / META_FILE).exists():
            return copy_folder(source, cfg.out / name)
    raise NLAError(f"{cfg.nla} holds no AV (av_adapter/ or av/); pass the folder nla train-av wrote")


def refit_ar(cfg: RefitConfig, *, progress: bool = True) -> dict:
    if (cfg.out / DONE_FILE).exists() and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds a re-fitted AR; pass overwrite or another out")
    if not cfg.data.exists():
        raise NLAError(f"{cfg.data} not found; pass the ar_sft explanations the SFT AR was trained on")
    with damaged_file(cfg.data, EXPLANATIONS):
        table = pq.read_table(cfg.data)
    if "explanation" not in table.column_names:
        raise NLAError(f"{cfg.data} has no explanation column; pass the output of nla explain-data")
    texts, model, layer = av_texts(cfg, table, progress)
    dropped = check_tagged(cfg, texts)
    pairs = write_text_pairs(table, texts, cfg.data, cfg.out / PAIRS_FILE)
    if cfg.overwrite or not trained(cfg.out, "ar"):  # a kill after training but before the AV copy resumes here
        train_ar(ARTrainConfig(data=pairs, out=cfg.out, model=model, layer=layer, lr=cfg.lr,
                               batch_size=cfg.batch_size, epochs=cfg.epochs,
                               lora_rank=cfg.lora_rank, device=cfg.device, dtype=cfg.dtype,
                               overwrite=cfg.overwrite), progress=progress)
    av = copy_av(cfg)
    summary = {"rows": len(texts), "untagged_dropped": dropped, "av": str(av),
               "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    write_json(cfg.out / DONE_FILE, summary)  # last: its presence marks the stage finished
    return summary
