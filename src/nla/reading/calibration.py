"""A fidelity score people can read: 1 - MSE / B per token, and a High / Medium / Low label.

MSE is the AR's reconstruction error 2(1 - cos) of one activation from its explanation. B is
the NLA's own calibration variance, the FVE denominator (nla.eval.metrics): the mean squared
distance of sqrt(d)-normalised activations from their mean. So a token's score reads like FVE:
1 is a perfect round trip, 0 is no better than always guessing the mean, below 0 is worse.

The label thresholds are not chosen by taste: they are the tertiles of the per-token scores
of held-out activations explained by this same NLA, so "High" means "in the best third of what
this NLA does on held-out text". A failed explanation (no closing tag) has no score and is
labelled `failed`.

    nla calibrate --nla runs/nla                # held-out split of its dataset -> runs/nla/calibration.json

An NLA folder without calibration.json (a released NLA, a fresh run) gets one estimated on a
built-in sample: a few dozen activations of the embedded default corpus through the NLA's own
target. It is cached outside the NLA folder and labelled "estimated on a built-in sample"
wherever it is shown.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nla.atomic import write_json
from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.nla import NLA
from nla.autoencoder.shipped import resolve
from nla.data.config import ExtractConfig
from nla.data.corpus import load_corpus
from nla.data.extract import encode_document
from nla.data.sampling import sample_positions
from nla.errors import NLAError
from nla.eval.evaluate import default_heldout, read_heldout
from nla.eval.metrics import baseline
from nla.inputs import damaged_file
from nla.layout import CALIBRATION_FILE, CONTEXT_COLUMN, EVAL_JSON, EXPLANATIONS_FILE, ROWS_FILE
from nla.models.presets import cache_dir
from nla.models.target import Target
from nla.reading.claims import check_claims, claims_report
from nla.record_log import saved_settings

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
LABELS = ("High", "Medium", "Low")
FAILED = "failed"
TERTILES = (1 / 3, 2 / 3)
ESTIMATED_NOTE = "estimated on a built-in sample"
BUILTIN_ROWS = 32  # a few dozen: enough for B to two digits, cheap enough to compute on first use
MIN_SCORED_ROWS = 3  # fewer successful explanations than this give no thresholds (labels stay unset)


@dataclass(frozen=True)
class Calibration:
    denominator: float  # B: the FVE denominator of the calibration rows
    low: float | None  # scores below this are Low (the 1/3 quantile of held-out scores); None: too few scored
    high: float | None  # scores at or above this are High (the 2/3 quantile)
    rows: int  # activations the calibration was computed on
    scored_rows: int  # of which the AV wrote a complete explanation
    source: str  # where the rows came from
    estimated: bool  # True: the built-in sample, not held-out data of the NLA's own dataset
    claims: dict = field(default_factory=dict)  # the claim report on the same rows (nla.reading.claims)
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def score(self, mse: float | None) -> float | None:
        return None if mse is None else 1.0 - mse / self.denominator

    def label(self, score: float | None) -> str | None:
        """High / Medium / Low; `failed` without a score; None when there are no thresholds."""
        if score is None:
            return FAILED
        if self.low is None or self.high is None:
            return None
        return "High" if score >= self.high else "Medium" if score >= self.low else "Low"

    @property
    def note(self) -> str:
        where = f"{ESTIMATED_NOTE} ({self.source})" if self.estimated else \
            f"from {self.rows} held-out rows of {self.source}"
        if self.low is None:
            cut = f"no labels: only {self.scored_rows} of {self.rows} rows were explained"
        else:
            cut = f"High >= {self.high:.2f}, Low < {self.low:.2f} (tertiles of {self.scored_rows} scores)"
        return f"score = 1 - MSE/B, B = {self.denominator:.3f} {where}; {cut}"

    def to_dict(self) -> dict:
        return {**asdict(self), "note": self.note}

    @classmethod
    def from_dict(cls, data: dict, where: str = "calibration") -> "Calibration":
        if not isinstance(data, dict) or data.get("schema_version", 0) > SCHEMA_VERSION:
            raise NLAError(f"{where} is not a calibration this version of nla reads; rerun nla calibrate")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError as err:
            raise NLAError(f"{where} lacks fields ({err}); rerun nla calibrate") from err


def thresholds(scores: list[float]) -> tuple[float | None, float | None]:
    if len(scores) < MIN_SCORED_ROWS:
        return None, None
    low, high = np.quantile(np.asarray(scores), TERTILES)
    return float(low), float(high)


def compute_calibration(nla: NLA, vectors: torch.Tensor, contexts: list[str] | None = None, *, source: str,
                        estimated: bool, max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 16,
                        progress: bool = False, texts: list[str | None] | None = None) -> Calibration:
    """Explain held-out activations (N, d) (or take their explanations, `texts`, from an evaluation), score
    the round trips, and derive B, the thresholds and the claim report (when the contexts, the text up to
    each activation's token, are given)."""
    if len(vectors) < 2:
        raise NLAError(f"calibration needs at least 2 activations, got {len(vectors)}")
    denominator = baseline(vectors).denominator
    if texts is None:
        texts = []
        for start in tqdm(range(0, len(vectors), batch_size), desc="calibrate: explain", unit="batch",
                          disable=not progress):
            batch = vectors[start : start + batch_size]
            texts += [e.text for e in nla.explain(batch, max_new_tokens=max_new_tokens, batch_size=batch_size)]
    mse = nla.mse(vectors, texts)
    scores = [1.0 - m / denominator for m in mse if m is not None]
    low, high = thresholds(scores)
    claims = {}
    if contexts is not None:
        claim_lists = check_claims(nla, texts, vectors, mse, contexts, denominator=denominator, batch_size=batch_size)
        claims = claims_report([[c.to_dict() for c in cs] for cs in claim_lists])
    return Calibration(denominator=denominator, low=low, high=high, rows=len(vectors), scored_rows=len(scores),
                       source=source, estimated=estimated, claims=claims,
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


READ_ERRORS = (KeyError, TypeError, AttributeError, IndexError)  # a JSON file of the wrong shape


def _evaluated(folder: Path) -> dict:
    """What a finished `nla eval` folder read: its rows (data, max_rows, seed) and the AV that explained them.
    The explanation cache's header records the resolved AV folder and data, and the AV's training time; an
    eval.json alone gives them as they were typed."""

    path, cache = folder / EVAL_JSON, folder / EXPLANATIONS_FILE
    if not path.is_file():
        raise NLAError(f"{folder} holds no finished evaluation ({EVAL_JSON}); run nla eval first, or calibrate "
                       "without --from-eval")
    with damaged_file(path, "an nla eval report", "rerun nla eval", also=READ_ERRORS):
        report = json.loads(path.read_text(encoding="utf-8"))
        evaluated = {"nla": report["nla"], "data": report["data"], "max_rows": report["settings"]["max_rows"],
                     "seed": report["settings"]["seed"], "av": None, "av_created_at": None}
    if cache.is_file():
        with damaged_file(cache, "an nla eval cache", "rerun nla eval", also=READ_ERRORS):
            settings = saved_settings(cache)
            evaluated.update(av=settings["nla"], data=settings["data"], av_created_at=settings["av_created_at"])
    return evaluated


def _check_same_nla(folder: Path, evaluated: dict, nla: NLA, nla_path: Path) -> None:
    if evaluated["av"] is None:  # no cache: the label eval.json records
        same = Path(evaluated["nla"]).resolve() == Path(nla_path).resolve()
    else:
        same = Path(evaluated["av"]) == Path(nla.source.av).resolve()
    if not same:
        raise NLAError(f"{folder} evaluated {evaluated['nla']}, not {nla_path}; pass that NLA's own eval folder")
    if evaluated["av_created_at"] not in (None, nla.av_meta.created_at):
        raise NLAError(f"{folder}'s explanations were written by an earlier training of this AV; rerun nla eval")


def _eval_texts(folder: Path, table) -> list[str | None]:
    """The evaluation's explanations of `table`'s rows, checked row by row against it."""
    import pyarrow.parquet as pq

    path = folder / ROWS_FILE
    with damaged_file(path, "a parquet file", "rerun nla eval"):
        rows = pq.read_table(path, columns=["doc_id", "position", "explanation"])
    same = (rows.column("doc_id").to_pylist() == table.column("doc_id").to_pylist()
            and rows.column("position").to_pylist() == table.column("position").to_pylist())
    if not same:
        raise NLAError(f"{path} does not hold the rows its eval.json names (the data changed since); rerun nla eval")
    return rows.column("explanation").to_pylist()


def read_calibration(path: Path) -> Calibration | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise NLAError(f"cannot read {path} ({err}); delete it or rerun nla calibrate") from err
    return Calibration.from_dict(data, str(path))


def save_calibration(calibration: Calibration, path: Path) -> None:
    write_json(path, calibration.to_dict())


# ---------------------------------------------------------------- the built-in sample


def builtin_sample(nla: NLA, target: Target, rows: int = BUILTIN_ROWS) -> tuple[torch.Tensor, list[str]]:
    """(rows, d) activations of the embedded default corpus through the NLA's target, and each one's
    context text. Documents are taken evenly across the corpus (chat, prose, docs), two positions each,
    placed as `nla extract` places them."""

    cfg, per_doc = ExtractConfig(out=Path(".")), 2
    docs = load_corpus("default")
    vectors, contexts = [], []
    for doc in docs[:: max(1, len(docs) * per_doc // rows)]:
        ids = encode_document(target, doc, cfg.max_doc_tokens)
        positions = sample_positions(ids, doc.doc_id, special_ids=target.special_ids, min_position=cfg.min_position,
                                     per_doc=per_doc, seed=cfg.seed)
        if not positions:
            continue
        acts = nla.activations(ids[: positions[-1] + 1], target)  # (T, d)
        vectors.extend(acts[p] for p in positions)
        contexts.extend(target.tokenizer.decode(ids[: p + 1]) for p in positions)
        if len(vectors) >= rows:
            break
    if len(vectors) < 2:
        raise NLAError(f"the built-in sample gave no activations for {target.name}; run nla calibrate --data")
    return torch.stack(vectors[:rows]), contexts[:rows]


def _cache_path(nla: NLA, folder: Path, max_new_tokens: int) -> Path:
    identity = json.dumps([str(folder.resolve()), nla.av_meta.created_at, nla.ar_meta.created_at, nla.layer,
                           max_new_tokens])
    return cache_dir() / "calibrations" / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.json"


def calibration_for(nla: NLA, folder: Path, target: Target, *, max_new_tokens: int = MAX_NEW_TOKENS,
                    progress: bool = False) -> Calibration:
    """The NLA folder's calibration.json, else the built-in estimate (computed once, then cached)."""
    own = read_calibration(Path(folder) / CALIBRATION_FILE)
    if own is not None:
        return own
    cached = _cache_path(nla, Path(folder), max_new_tokens)
    estimate = read_calibration(cached)
    if estimate is None:
        log.info(f"{folder} has no {CALIBRATION_FILE}: estimating the score calibration on a built-in sample "
                 f"({BUILTIN_ROWS} activations; once, then cached). nla calibrate makes a held-out one.")
        vectors, contexts = builtin_sample(nla, target)
        estimate = compute_calibration(nla, vectors, contexts, source=f"{len(vectors)} activations of the embedded "
                                       "default corpus", estimated=True, max_new_tokens=max_new_tokens,
                                       progress=progress)
        save_calibration(estimate, cached)
    return estimate


def calibration_path(nla_path: str | Path) -> Path:
    """Where `nla calibrate` writes: inside the NLA's own folder (`default`: the shipped one)."""

    folder = resolve(nla_path).expanduser()
    if not folder.is_dir():  # a hub prefix: there is no folder of its own to write into
        raise NLAError(f"{nla_path} is not an NLA folder on this machine, and calibration.json is written into one: "
                       "check the path, or download a hub NLA's two halves into a folder (as av/ and ar/) and pass it")
    return folder / CALIBRATION_FILE


def calibrate(nla_path: str | Path, data: str | Path | None = None, *, max_rows: int | None = 256,
              max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 16, seed: int = 0, device: str = "auto",
              dtype: str = "auto", overwrite: bool = False, progress: bool = True,
              from_eval: Path | None = None) -> Calibration:
    """`nla calibrate`: calibrate an NLA on held-out activations (default: the validation split of the
    dataset it was trained on) and write NLA/calibration.json. `from_eval`: an `nla eval` folder of this
    NLA, whose rows and explanations are used instead of explaining again (data and max_rows come from it)."""

    out = calibration_path(nla_path)
    if out.exists() and not overwrite:
        raise NLAError(f"{out} exists; pass --overwrite to calibrate again")
    evaluated = _evaluated(Path(from_eval)) if from_eval else None
    nla = NLA.load(nla_path, device=device, dtype=dtype)
    if evaluated:
        _check_same_nla(Path(from_eval), evaluated, nla, Path(nla_path))
        data, max_rows, seed = Path(evaluated["data"]), evaluated["max_rows"], evaluated["seed"]
    data = Path(data) if data else default_heldout(nla)
    table, vectors = read_heldout(data, nla, max_rows, seed)
    texts = _eval_texts(Path(from_eval), table) if from_eval else None
    contexts = table.column(CONTEXT_COLUMN).to_pylist() if CONTEXT_COLUMN in table.column_names else None
    calibration = compute_calibration(nla, vectors, contexts, source=f"{data.parent.name}/{data.name}",
                                      estimated=False, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                      progress=progress, texts=texts)
    save_calibration(calibration, out)
    return calibration
