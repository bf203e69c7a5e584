"""Trace a text: every token's explanation, score, label and claim checks, as one versioned document.

    nla trace "The capital of France is" --nla runs/nla --out runs/trace     # trace.json + trace.html
    nla trace --chat chat.json --continue 40 --nla runs/nla --out runs/chat  # plus 40 tokens the target writes

`Reader` holds an NLA with its target and calibration, loaded once; `nla trace`, `nla serve`
and Python callers all read through it, so every output carries the same figures.

The document itself (trace.json) and its typed form, `Trace`, are in reading/document.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.nla import NLA
from nla.autoencoder.shipped import resolve as resolve_shipped
from nla.autoencoder.verbalizer import Explanation
from nla.errors import NLAError
from nla.models.predictions import next_token_candidates
from nla.models.target import Target
from nla.reading.calibration import FAILED, LABELS, Calibration, calibration_for
from nla.reading.claims import check_claims, claims_report
from nla.reading.config import TraceSettings
from nla.reading.document import PARTIAL_LOG, SCHEMA, SCHEMA_VERSION, Trace, check_output
from nla.reading.prompt import Prompt, check_length, token_positions
from nla.record_log import RecordLog

NEXT_TOKENS = 5  # the target's likeliest next tokens stored per traced token, against which predictions are checked
SINK_NORM_RATIO = 8.0  # an activation this many times the text's median norm is an attention sink
def failure(explanation: Explanation, max_new_tokens: int) -> str | None:
    """Why an explanation failed, in words; None when it has its closing tag."""
    if explanation.text is not None:
        return None
    if explanation.num_tokens >= max_new_tokens:
        return f"cut at the {max_new_tokens}-token cap before </explanation>"
    if "<explanation>" not in explanation.answer:
        return "no <explanation> tag"
    return "no closing </explanation> tag"


def display_name(spec: str) -> str:
    """A model or NLA name fit for a page: a local path shows its folder name only."""
    return Path(spec).name if Path(spec).expanduser().exists() else spec


class Reader:
    """An NLA ready to read texts: the NLA, its target and its calibration."""

    def __init__(self, nla: NLA, target: Target, calibration: Calibration, name: str):
        self.nla, self.target, self.calibration, self.name = nla, target, calibration, name

    @classmethod
    def load(cls, nla: str | Path | None = None, *, av: str | Path | None = None, ar: str | Path | None = None,
             model: str | None = None, device: str = "auto", dtype: str = "auto", max_new_tokens: int = MAX_NEW_TOKENS,
             progress: bool = False) -> "Reader":
        """An NLA folder, "default" or a hub prefix (`nla`), or its two halves (`av`, `ar`), with its target."""
        if av is not None or ar is not None:
            if nla is not None:
                raise NLAError("pass either --nla or --nla-av with --nla-ar, not both")
            loaded = NLA.load(None, av=av, ar=ar, device=device, dtype=dtype)
            folder, name = loaded.source.av, loaded.source.label  # the calibration cache is keyed on the AV
        else:
            folder = resolve_shipped(nla)
            loaded, name = NLA.load(folder, device=device, dtype=dtype), display_name(str(folder))
        target = loaded.target(model, device=device, dtype=dtype)
        calibration = calibration_for(loaded, folder, target, max_new_tokens=max_new_tokens, progress=progress)
        return cls(loaded, target, calibration, name)

    # ------------------------------------------------------------ input

    def encode(self, prompt: Prompt, settings: TraceSettings) -> tuple[list[int], int]:
        """(token ids after the continuation, how many of them are the input). Limits are checked before
        the target writes anything."""
        if prompt.messages is not None:
            messages, _ = prompt.chat_for(self.target)
            rendered = self.target.render_chat(messages, add_generation_prompt=settings.continue_tokens > 0)
            ids = self.target.encode(rendered, rendered_chat=True)
        else:
            ids = self.target.encode(prompt.text)
        total = len(ids) + settings.continue_tokens
        what = f"the input ({len(ids)} tokens + {settings.continue_tokens} to continue)" if settings.continue_tokens \
            else "the input"
        if settings.max_tokens is not None and total > settings.max_tokens:  # the server's own, tighter limit first
            raise NLAError(f"the input has {len(ids)} tokens (+{settings.continue_tokens} to continue); at most "
                           f"{settings.max_tokens} are read per request: shorten it")
        check_length(self.target, total, what=what)  # past the context the activations mean nothing
        if len(ids) <= settings.min_position and not settings.continue_tokens:
            raise NLAError(f"the text has {len(ids)} tokens, none at or after --min-position {settings.min_position}")
        return ids + self.continuation(ids, settings.continue_tokens), len(ids)

    @torch.no_grad()
    def continuation(self, ids: list[int], count: int) -> list[int]:
        """Up to `count` tokens the target writes after `ids` (greedy), through its end-of-sequence token."""
        if count == 0:
            return []
        input_ids = torch.tensor([ids], device=self.target.device)
        with self.nla.role("target"):
            out = self.target.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                             max_new_tokens=count, do_sample=False, pad_token_id=self.target.pad_id)
        new = out[0, len(ids):].tolist()
        eos = self.target.tokenizer.eos_token_id
        return new[: new.index(eos) + 1] if eos in new else new

    # ------------------------------------------------------------ reading

    def read(self, ids: list[int], positions: list[int], settings: TraceSettings, *, done: dict | None = None,
             on_batch=None, progress: bool = False, desc: str = "trace") -> dict[int, dict]:
        """The reading of each position: explanation, score, label and claims; batched. `done` holds
        readings already made (a resumed trace); `on_batch(records)` sees each new batch."""
        done = dict(done or {})
        todo = [p for p in positions if p not in done]
        if not todo:
            return done
        acts = self.nla.activations(ids, self.target)  # (T, d)
        beliefs = self.next_tokens(ids, todo) if settings.claims else {}
        tokenizer = self.target.tokenizer
        bar = tqdm(total=len(positions), initial=len(positions) - len(todo), desc=desc, unit="token",
                   disable=not progress)
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            records = self.read_vectors(acts[batch], [tokenizer.decode(ids[: p + 1]) for p in batch],
                                        [tokenizer.decode(ids[p + 1 :]) for p in batch], settings,
                                        next_tokens=[beliefs[p] for p in batch] if beliefs else None)
            for p, record in zip(batch, records):
                record["position"] = p
            done.update((r["position"], r) for r in records)
            if on_batch:
                on_batch(records)
            bar.update(len(batch))
        bar.close()
        return done

    @torch.no_grad()
    def next_tokens(self, ids: list[int], positions: list[int]) -> dict[int, list[dict]]:
        """The target's own NEXT_TOKENS likeliest next tokens at each position (one forward pass), what a reading's
        predictions are checked against."""
        with self.nla.role("target"):
            found = next_token_candidates(self.target, [ids], [positions], k=NEXT_TOKENS)[0]
        return {p: [{"token": t, "prob": round(prob, 4)} for t, prob in c] for p, c in zip(positions, found)}

    def read_vectors(self, vectors: torch.Tensor, before: list[str], after: list[str],
                     settings: TraceSettings, next_tokens: list[list[dict]] | None = None) -> list[dict]:
        """One batch of readings of activations (B, d), whatever documents they come from: `before` is each
        one's text through its token, `after` the text after it (where a quote may be found later),
        `next_tokens` the target's likeliest next tokens at each (stored, and quoted predictions checked)."""
        explanations = self.nla.explain(vectors, max_new_tokens=settings.max_new_tokens,
                                        temperature=settings.temperature, batch_size=settings.batch_size)
        texts = [e.text for e in explanations]
        mse = self.nla.mse(vectors, texts)
        candidates = [[t["token"] for t in tokens] for tokens in next_tokens] if next_tokens else None
        claims = check_claims(self.nla, texts, vectors, mse, before, after, next_tokens=candidates,
                              denominator=self.calibration.denominator, batch_size=settings.batch_size) \
            if settings.claims else [[] for _ in texts]
        records = []
        for i, (e, m, c, v) in enumerate(zip(explanations, mse, claims, vectors)):
            score = self.calibration.score(m) if self.calibration else None  # no calibration: no score
            records.append({
                "position": None, "status": "ok" if e.text is not None else "failed",
                "failure": failure(e, settings.max_new_tokens), "truncated": e.truncated, "explanation": e.text,
                "answer": e.answer,
                "explanation_tokens": e.num_tokens, "norm": float(v.norm()), "mse": m,
                "cosine": None if m is None else 1.0 - m / 2, "score": score,
                "label": self.calibration.label(score) if self.calibration else None,
                "claims": [x.to_dict() for x in c],
                "next_tokens": next_tokens[i] if next_tokens else None})
        return records

    def token_rows(self, ids: list[int], prompt_tokens: int, readings: dict[int, dict]) -> list[dict]:
        special, sinks = self.target.special_ids, attention_sinks(readings)
        return [{"position": p, "token_id": i, "token": self.target.token_text(i), "special": i in special,
                 "generated": p >= prompt_tokens, "traced": p in readings, "sink": p in sinks, **readings.get(p, {})}
                for p, i in enumerate(ids)]

    def trace(self, prompt: Prompt | str, settings: TraceSettings | None = None, *, resume_from: Path | None = None,
              progress: bool = False) -> Trace:
        """The trace of a Prompt (or a plain text): `Trace.document` is what trace.json holds. With `resume_from`
        (a log file) each batch of readings is appended there as it is made, and a rerun on the same tokens and
        NLA reuses them."""
        prompt = Prompt(text=prompt) if isinstance(prompt, str) else prompt
        settings = settings or TraceSettings()
        started = time.time()
        ids, prompt_tokens = self.encode(prompt, settings)
        positions = list(range(min(settings.min_position, len(ids)), len(ids)))
        log = RecordLog(resume_from, self.resume_key(ids, settings)) if resume_from else None
        readings = self.read(ids, positions, settings, done={r["position"]: r for r in log.read()} if log else None,
                             on_batch=log.append if log else None, progress=progress)
        tokens = self.token_rows(ids, prompt_tokens, readings)
        return Trace({
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "nla": self.describe(), "target": display_name(self.target.name),
            "input": {"source": prompt.source, "kind": prompt.kind,
                      "note": prompt.chat_for(self.target)[1] if prompt.messages is not None else None,
                      "text": self.target.tokenizer.decode(ids[:prompt_tokens]), "messages": prompt.messages,
                      "prompt_tokens": prompt_tokens, "continued": len(ids) - prompt_tokens},
            "settings": asdict(settings), "calibration": self.calibration.to_dict(),
            "tokens": tokens, "summary": summarise(tokens), "seconds": round(time.time() - started, 2)})

    def explain(self, prompt: Prompt, positions: list[int] | None, settings: TraceSettings) -> dict:
        """Readings of a few positions of a text (default: its last token), for the explain API."""
        ids, prompt_tokens = self.encode(prompt, settings)
        wanted = token_positions(positions or [-1], len(ids))
        readings = self.read(ids, sorted(set(wanted)), settings)
        rows = {r["position"]: r for r in self.token_rows(ids, prompt_tokens, readings)}
        return {"nla": self.describe(), "calibration": self.calibration.to_dict(), "tokens_in_text": len(ids),
                "tokens": [rows[p] for p in wanted]}

    def describe(self) -> dict:
        meta = self.nla.av_meta
        return {"name": self.name, "layer": self.nla.layer, "d_model": self.nla.d_model,
                "base_checkpoint": display_name(meta.base_checkpoint or ""), "stage": meta.stage}

    def resume_key(self, ids: list[int], settings: TraceSettings) -> dict:
        """What a partial trace's readings depend on: the tokens, the NLA and the AV's cap."""
        return {"ids": hashlib.sha256(json.dumps(ids).encode()).hexdigest(), "nla": self.name,
                "av_created_at": self.nla.av_meta.created_at, "ar_created_at": self.nla.ar_meta.created_at,
                "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature,
                "denominator": self.calibration.denominator}


def attention_sinks(readings: dict[int, dict]) -> set[int]:
    """Positions whose activation says nothing about the text: position 0, where every text gets the same
    reading, and any position whose norm is SINK_NORM_RATIO times the median (attention sinks such as BOS and
    chat markers). They are marked in the trace and left out of its mean score."""
    norms = sorted(r["norm"] for r in readings.values() if r.get("norm") is not None)
    median = norms[len(norms) // 2] if norms else None
    return {0} | {p for p, r in readings.items()
                  if median and r.get("norm") is not None and r["norm"] > SINK_NORM_RATIO * median}


def summarise(tokens: list[dict]) -> dict:
    traced = [t for t in tokens if t["traced"]]
    scores = [t["score"] for t in traced if t["score"] is not None and not t.get("sink")]
    labels = {name: sum(t["label"] == name for t in traced) for name in (*LABELS, FAILED)}
    return {"tokens": len(tokens), "traced": len(traced), "failed": labels[FAILED],
            "mean_score": sum(scores) / len(scores) if scores else None, "labels": labels,
            "claims": claims_report([t["claims"] for t in traced])}


# ---------------------------------------------------------------- the output folder


def trace_to_folder(reader: Reader, prompt: Prompt, out: Path, settings: TraceSettings | None = None, *,
                    overwrite: bool = False, progress: bool = True) -> Trace:
    """OUT/trace.json and OUT/trace.html. Readings are logged under OUT/.partial/ as they are made, so a
    killed trace resumes when the same command runs again; the log goes once the trace is written."""
    check_output(out, overwrite)
    trace = reader.trace(prompt, settings, resume_from=out / PARTIAL_LOG, progress=progress)
    trace.save(out)
    shutil.rmtree((out / PARTIAL_LOG).parent, ignore_errors=True)
    return trace
