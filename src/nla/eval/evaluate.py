"""`nla eval`: held-out fidelity of a trained NLA, next to the controls that give it meaning.

    nla eval --nla runs/nla --data runs/acts/validation.parquet --out runs/eval
    nla eval --nla runs/nla --oracle-ar runs/oracle --out runs/eval --overwrite

The AV explains each held-out activation (greedy, batched), the AR reconstructs it from
the explanation, and the round trip is scored with FVE, MSE (2(1 - cos)) and cosine
(nla.eval.metrics). The same rows are scored for three controls:

    shuffled_av   the AV reads another row's activation (a seeded derangement: no row keeps its
                  own); its explanation is reconstructed and scored against the TRUE activation.
                  Near 0 FVE proves the explanations carry this activation, not the dataset's average.
    oracle_ar     an AR trained on the true context (`nla train-ar --text-column
                  detokenized_text_truncated`) reads the held-out context: a reference ceiling.
    mean          every row predicted as the mean activation of a training split.

An explanation without its closing tag is a failed sample: it scores MSE 2 (an orthogonal guess,
the penalty RL gives it), so failures lower FVE instead of being dropped.

Outputs in OUT/: eval.json (written last; it marks the evaluation complete), rows.parquet
(per-row errors), fve_by_position.png and fve_by_norm.png (with the `plot` extra), and
explanations.jsonl, the AV's outputs, appended batch by batch so that a killed run resumes and
a rerun with the same AV settings (e.g. adding --oracle-ar under --overwrite) reuses them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from nla.atomic import write_json
from nla.autoencoder.checkpoint import AR_DIR
from nla.autoencoder.hub import role_folder
from nla.autoencoder.nla import NLA, reconstruct_texts
from nla.autoencoder.reconstructor import reconstruction_mse
from nla.autoencoder.shared import load_ar_folder
from nla.autoencoder.verbalizer import FAILED_MSE
from nla.errors import NLAError
from nla.eval.breakdown import fve_by_bucket, fve_by_genre, readability, write_plots, write_rows
from nla.eval.config import EvalConfig
from nla.eval.metrics import baseline, summary, texts_mse
from nla.eval.robustness import fresh_ar_fve, robustness
from nla.explainers.api import ApiExplainer
from nla.inputs import open_dataset, vectors_of
from nla.layout import ACTIVATION_COLUMN, CONFIG, CONTEXT_COLUMN, EVAL_JSON, EXPLANATIONS_FILE, META_FILE, ROWS_FILE
from nla.models.loading import pick_device
from nla.record_log import RecordLog

REQUIRED_COLUMNS = (ACTIVATION_COLUMN, "doc_id", "position", "token")


# ---------------------------------------------------------------- inputs


def default_heldout(nla: NLA) -> Path:
    """The validation split of the extraction the NLA was trained from (found via the sidecars' trained_on)."""
    for trained_on in nla.ar_meta.trained_on + nla.av_meta.trained_on:
        for folder in list(Path(str(trained_on)).parents)[:2]:  # the split's folder, or its explanations' parent
            if (folder / CONFIG).exists() and (folder / "validation.parquet").exists():
                return folder / "validation.parquet"
    raise NLAError(f"cannot find the dataset {nla.source.label} was trained on here; pass --data with a held-out "
                   "split extracted from its target at its layer (e.g. runs/acts/validation.parquet)")


def read_heldout(path: Path, nla: NLA, max_rows: int | None, seed: int, *,
                 flag: str = "--data") -> tuple[pa.Table, torch.Tensor]:
    """The evaluated rows (a seeded sample when max_rows is set, kept in file order) and their activations,
    checked against the NLA's width, layer and target."""
    table = open_dataset(path, flag=flag, columns=REQUIRED_COLUMNS, against=f"the NLA {nla.source.label}",
                         d_model=nla.d_model, layer=nla.layer, target=nla.av_meta.base_checkpoint).table
    if max_rows is not None and max_rows < table.num_rows:
        keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=max_rows, replace=False))
        table = table.take(pa.array(keep))
    if table.num_rows < 2:
        raise NLAError(f"{path} has {table.num_rows} row(s); evaluation needs at least 2")
    return table, torch.from_numpy(vectors_of(table).copy())


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point: row i reads activation order[i] != i."""
    cycle = np.random.default_rng(seed).permutation(n)
    order = np.empty(n, dtype=np.int64)
    order[cycle] = np.roll(cycle, -1)  # each row takes the next one along a random cycle
    return order


def load_other_ar(path: Path, nla: NLA, device: str, dtype: str = "auto", what: str = "oracle AR"):
    """Another AR than the NLA's (its folder, its adapter, or a run folder holding ar/ or ar_adapter/) that
    reads the NLA's target, layer and width: the oracle AR, or the fresh AR of --robustness."""
    folder = role_folder(path, AR_DIR) or path
    if not (folder / META_FILE).exists():
        raise NLAError(f"{path} is not an AR folder; pass the --out of nla train-ar (or its ar/ or ar_adapter/ "
                       "folder)")
    oracle, tokenizer, meta = load_ar_folder(folder, device=device, dtype=dtype)
    for name, ours in (("base_checkpoint", nla.ar_meta.base_checkpoint), ("d_model", nla.d_model),
                       ("extraction_layer_index", nla.layer)):
        theirs = getattr(meta, name)
        if ours is not None and theirs is not None and theirs != ours:
            raise NLAError(f"the {what} {folder} has {name} {theirs} but the NLA has {ours}; "
                           "train it on the same target and layer as the NLA")
    return oracle.eval(), tokenizer, meta


def default_mean_source(data: Path) -> Path | None:
    """ar_sft.parquet beside the held-out split, unless it is that split or empty (an extraction of held-out
    documents only): then the control is skipped, not the evaluation refused."""
    candidate = data.parent / "ar_sft.parquet"
    if not candidate.exists() or candidate.resolve() == data.resolve():
        return None
    return candidate if pq.ParquetFile(candidate).metadata.num_rows else None


# ---------------------------------------------------------------- the AV, resumable


def av_settings(cfg: EvalConfig, nla: NLA, data: Path) -> dict:
    """What the cached explanations depend on; a cache made with other settings is discarded."""
    return {"nla": str(nla.source.av.resolve()), "av_created_at": nla.av_meta.created_at,  # retrained in place
            "data": str(data.resolve()), "max_rows": cfg.max_rows, "seed": cfg.seed,
            "max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "dtype": cfg.dtype}


@dataclass
class Generation:
    """The three settings explain_all reads (an EvalConfig has them too), for a stage that explains outside eval."""

    batch_size: int
    max_new_tokens: int
    temperature: float = 0.0


def explain_all(nla: NLA, vectors: dict[str, torch.Tensor], cfg: EvalConfig | Generation, cache: Path,
                settings: dict, progress: bool, desc: str = "eval: explain") -> dict[str, list[dict]]:
    """Explanations (greedy unless cfg.temperature) for each named set of activations, batch by batch,
    appended to the cache."""
    log = RecordLog(cache, settings)
    done = {(r["control"], r["row"]): r for r in log.read()}
    todo = [(name, start) for name, v in vectors.items() for start in range(0, len(v), cfg.batch_size)
            if any((name, i) not in done for i in range(start, min(start + cfg.batch_size, len(v))))]
    for name, start in tqdm(todo, desc=desc, unit="batch", disable=not progress):
        batch = vectors[name][start : start + cfg.batch_size]
        explanations = nla.explain(batch, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   batch_size=cfg.batch_size)
        records = [{"control": name, "row": i, "text": e.text, "answer": e.answer, "num_tokens": e.num_tokens,
                    "truncated": e.truncated} for i, e in enumerate(explanations, start=start)]
        log.append(records)
        done.update(((name, r["row"]), r) for r in records)
    return {name: [done[(name, i)] for i in range(len(v))] for name, v in vectors.items()}


# ---------------------------------------------------------------- scoring


def explanation_mse(nla: NLA, records: list[dict], golds: torch.Tensor, batch_size: int) -> np.ndarray:
    """Per-row MSE of the AR's reconstruction from each explanation; FAILED_MSE where the AV gave no text."""
    return texts_mse(lambda texts: nla.reconstruct(texts, batch_size=batch_size), [r["text"] for r in records], golds)


def explanation_stats(records: list[dict]) -> dict:
    """Failures (no closing tag; scored FAILED_MSE) and, among them, the truncated ones (cut at the token cap:
    a higher --max-new-tokens would let them finish)."""
    return {"failure_rate": float(np.mean([r["text"] is None for r in records])),
            "truncated_rate": float(np.mean([bool(r.get("truncated")) for r in records])),
            "mean_explanation_tokens": float(np.mean([r["num_tokens"] for r in records]))}


# ---------------------------------------------------------------- outputs


def oracle_control(oracle, cfg: EvalConfig, table, golds, reference) -> tuple[np.ndarray | None, dict]:
    """(per-row MSE, report) of the text-oracle AR reading each row's true context; skipped without one."""
    if not oracle:
        return None, {"skipped": "no --oracle-ar given; train one with nla train-ar --text-column "
                                 f"{CONTEXT_COLUMN} and pass its --out"}
    ar, tokenizer, meta = oracle
    predicted = reconstruct_texts(ar, tokenizer, meta.prompt_templates["ar"], table.column(CONTEXT_COLUMN).to_pylist(),
                                  batch_size=cfg.batch_size)
    error = reconstruction_mse(predicted, golds).numpy()
    return error, {**summary(error, reference), "ar": str(cfg.oracle_ar),
                   "what": "an AR trained on the true context reads the held-out context"}


def mean_control(mean_from, mean_source, data: Path, golds, reference) -> tuple[np.ndarray | None, dict]:
    """(per-row MSE, report) of predicting every row as a training split's mean activation."""
    if not mean_from:
        return None, {"skipped": f"no ar_sft.parquet with rows next to {data}; pass --mean-from with a training split"}
    source, mean_golds = mean_from
    error = reconstruction_mse(baseline(mean_golds).mean.expand_as(golds), golds).numpy()
    return error, {**summary(error, reference), "mean_from": str(mean_source), "mean_rows": source.num_rows,
                   "what": "every row predicted as the mean activation"}


def rewrite_api(cfg: EvalConfig):
    """The API client of --rewrite-backend, its answers cached in OUT/.cache (a rerun asks nothing again)."""
    return ApiExplainer(cfg.rewrite_backend, model=cfg.rewrite_model, base_url=cfg.base_url,
                        api_key_env=cfg.api_key_env, cache_path=cfg.out / ".cache" / "rewrites.jsonl", progress=False)


def robustness_report(nla: NLA, explained: dict, golds, reference, fresh, cfg: EvalConfig, fve: float, api) -> dict:
    report = robustness(nla, explained, golds, reference, seed=cfg.seed, base_fve=fve, api=api)
    report["fresh_ar"] = fresh_ar_fve(fresh, explained["nla"], golds, reference, fve, cfg.batch_size) if fresh \
        else {"skipped": "no --fresh-ar given; pass an AR trained on this AV's explanations apart from it"}
    return report


# ---------------------------------------------------------------- the stage


def evaluate(cfg: EvalConfig, *, progress: bool = True) -> dict:
    if (cfg.out / EVAL_JSON).exists() and not cfg.overwrite:
        raise NLAError(f"{cfg.out} already holds an evaluation; pass --overwrite or another --out")
    started = time.time()
    api = rewrite_api(cfg) if cfg.rewrite_backend else None  # its key is checked before any model loads
    nla = NLA.load(cfg.nla, av=cfg.nla_av, ar=cfg.nla_ar, device=cfg.device, dtype=cfg.dtype)
    data = cfg.data or default_heldout(nla)
    table, golds = read_heldout(data, nla, cfg.max_rows, cfg.seed)
    device = str(pick_device(cfg.device))
    oracle = load_other_ar(cfg.oracle_ar, nla, device, cfg.dtype) if cfg.oracle_ar else None
    fresh = load_other_ar(cfg.fresh_ar, nla, device, cfg.dtype, "fresh AR") if cfg.fresh_ar else None
    if oracle and CONTEXT_COLUMN not in table.column_names:
        raise NLAError(f"{data} has no {CONTEXT_COLUMN} column, which the oracle AR reads; "
                       "pass a split written by nla extract")
    mean_source = cfg.mean_from or default_mean_source(data)
    # read (and checked) before any explaining: a bad --mean-from must not cost the AV's work first
    mean_from = read_heldout(mean_source, nla, None, cfg.seed, flag="--mean-from") if mean_source else None
    reference = baseline(golds)
    order = derangement(len(golds), cfg.seed)

    if cfg.overwrite:  # the old report goes first: a kill mid-way leaves no old eval.json beside new rows
        (cfg.out / EVAL_JSON).unlink(missing_ok=True)
    explained = explain_all(nla, {"nla": golds, "shuffled_av": golds[order]}, cfg, cfg.out / EXPLANATIONS_FILE,
                            av_settings(cfg, nla, data), progress)
    errors = {"nla": explanation_mse(nla, explained["nla"], golds, cfg.batch_size),
              "shuffled_av": explanation_mse(nla, explained["shuffled_av"], golds, cfg.batch_size)}
    controls: dict[str, dict] = {
        "shuffled_av": {**summary(errors["shuffled_av"], reference), **explanation_stats(explained["shuffled_av"]),
                        "what": "the AV reads another row's activation; scored against the true one"}}
    for name, (error, control) in (("oracle_ar", oracle_control(oracle, cfg, table, golds, reference)),
                                   ("mean", mean_control(mean_from, mean_source, data, golds, reference))):
        controls[name] = control
        if error is not None:
            errors[name] = error

    fve = summary(errors["nla"], reference)["fve"]
    robust = robustness_report(nla, explained, golds, reference, fresh, cfg, fve, api) if cfg.robustness else None
    readable = readability(nla, explained["nla"], table)
    norms = golds.norm(dim=1).numpy()
    by = {"position": fve_by_bucket(table.column("position").to_numpy().astype(float), errors, reference, cfg.buckets),
          "norm": fve_by_bucket(norms, errors, reference, cfg.buckets)}
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_rows(cfg.out / ROWS_FILE, table, norms, errors, explained)
    result = {
        "nla": nla.source.label, "data": str(data), "rows": len(golds), "d_model": nla.d_model, "layer": nla.layer,
        "baseline_denominator": reference.denominator,
        "fve": fve, "mse": float(errors["nla"].mean()),
        "cosine": summary(errors["nla"], reference)["cosine"], **explanation_stats(explained["nla"]),
        "failed_mse": FAILED_MSE, "controls": controls, "readability": readable,
        "by_position": by["position"], "by_norm": by["norm"], "by_genre": fve_by_genre(table, errors, reference),
        "plots": write_plots(cfg.out, by, len(golds)), **({"robustness": robust} if robust else {}),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "overwrite"},
        "seconds": round(time.time() - started, 1),
    }
    write_json(cfg.out / EVAL_JSON, result)  # last: its presence marks a finished evaluation
    return result


def format_result(result: dict) -> str:
    lines = [f"{result['rows']} held-out rows of {result['data']} (layer {result['layer']}, "
             f"B = {result['baseline_denominator']:.3f})",
             f"  {'nla':>12}: FVE {result['fve']:+.3f}  MSE {result['mse']:.3f}  cos {result['cosine']:.3f}  "
             f"failed {result['failure_rate']:.0%}  {result['mean_explanation_tokens']:.0f} tokens"]
    if result.get("truncated_rate"):
        lines.append(f"  {'':>12}  {result['truncated_rate']:.0%} truncated at {result['settings']['max_new_tokens']} "
                     "tokens (scored as failures); raise --max-new-tokens to let them finish")
    for name, c in result["controls"].items():
        lines.append(f"  {name:>12}: " + (f"skipped ({c['skipped']})" if "skipped" in c else
                                          f"FVE {c['fve']:+.3f}  MSE {c['mse']:.3f}  cos {c['cosine']:.3f}"))
    for name, r in result.get("robustness", {}).items():
        kept = "" if r.get("kept") is None else f" ({r['kept']:.0%} kept)"
        lines.append(f"  {name:>18}: " + (f"skipped ({r['skipped']})" if "skipped" in r else
                                          f"FVE {r['fve' if 'fve' in r else 'nla']:+.3f}{kept}" +
                                          (f"  control {r['shuffled_av']:+.3f}" if "shuffled_av" in r else "")))
    plots = result["plots"]
    lines.append(f"  plots: {plots['skipped']}" if "skipped" in plots else f"  plots: {', '.join(plots.values())}")
    return "\n".join(lines)

