"""Act on a reading: steer the target with an edited explanation (`nla steer`).

    nla steer "The cat chased the rabbit" --edit "rabbit=>mouse" --out runs/steer   # steer.json + steer.html

The activation at one token (default: the last) is explained; that explanation and the same explanation
edited (FROM=>TO, every occurrence; or replaced whole, --explanation-file) go through the AR. The
difference of the two reconstructions' directions, at the activation's own norm, is the steering vector:
α times it is added to block K's output while the target writes. By default at the read token only, as
the paper's rhyme edit changes a plan the model holds at one token (the line's end) and lets attention
carry it on; with --all-positions also at every later token, each generated one included. Each α's
continuation is written greedy and sampled (seeded), beside the unsteered ones, with its perplexity under
the plain target. reading/steer_effect.py measures the effect against controls.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass

import torch

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.errors import NLAError
from nla.models.steering import residual_added
from nla.reading.config import TraceSettings
from nla.reading.prompt import Prompt, check_length, token_positions
from nla.reading.trace import Reader

MAX_ALPHA = 16.0  # past this the vector swamps the activation (its norm is the activation's own, times α)


@dataclass
class SteerSettings:
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    position: int = -1  # the token whose reading is edited (negative: from the end)
    all_positions: bool = False  # also add the vector at every later position (generated tokens too)
    max_new_tokens: int = 24  # each continuation's length
    temperature: float = 0.8  # the sampled continuation's (the greedy one is written too)
    seed: int = 0  # the sampled continuations' seed: a rerun writes the same text
    explanation_tokens: int = MAX_NEW_TOKENS  # the reading's cap, as in trace

    def __post_init__(self):
        self.alphas = tuple(float(a) for a in self.alphas)
        if not self.alphas or any(not math.isfinite(a) or abs(a) > MAX_ALPHA for a in self.alphas):
            raise NLAError(f"--alpha {','.join(map(str, self.alphas))}: give values between -{MAX_ALPHA:g} and "
                           f"{MAX_ALPHA:g}, e.g. 0.5,1,2,4")
        if self.max_new_tokens < 1 or self.explanation_tokens < 1:
            raise NLAError("--max-new-tokens must be at least 1")
        if self.temperature <= 0:
            raise NLAError("--temperature must be above 0 (the greedy continuation is always written too)")


@dataclass(frozen=True)
class Edit:
    before: str
    after: str

    @classmethod
    def parse(cls, spec: str) -> "Edit":
        before, sep, after = spec.partition("=>")
        if not sep or not before.strip() or "=>" in after:
            raise NLAError(f"--edit {spec!r} is not FROM=>TO (e.g. --edit \"rabbit=>mouse\")")
        return cls(before.strip(), after.strip())

    def apply(self, explanation: str, where: str) -> str:
        if self.before not in explanation:
            raise NLAError(f"the edit's FROM {self.before!r} is not in the explanation {where}: {explanation!r}; "
                           "edit a phrase it holds, or pass --explanation-file")
        return explanation.replace(self.before, self.after)


def steering_vector(reader: Reader, original: str, edited: str, norm: float) -> torch.Tensor:
    """norm · (unit AR(edited) − unit AR(original)): the AR is trained on directions (its error normalises
    both sides), so the change of direction, put at the activation's own scale, is what the edit means."""
    predicted = reader.nla.reconstruct([edited, original])
    unit = predicted / predicted.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (unit[0] - unit[1]) * norm


def encode(reader: Reader, prompt: Prompt, max_new_tokens: int) -> list[int]:
    """The tokens the target continues: a plain text as it is, a chat with the assistant's turn opened."""
    target = reader.target
    if prompt.messages is not None:
        messages, _ = prompt.chat_for(target)
        rendered = target.render_chat(messages, add_generation_prompt=messages[-1]["role"] != "assistant")
        ids = target.encode(rendered, rendered_chat=True)
    else:
        ids = target.encode(prompt.text)
    check_length(target, len(ids) + max_new_tokens, what=f"the input ({len(ids)} tokens + {max_new_tokens} to write)")
    return ids


@torch.no_grad()
def continuation(reader: Reader, ids: list[int], vector: torch.Tensor | None, position: int,
                 settings: SteerSettings, *, sampled: bool) -> list[int]:
    """The tokens the target writes after `ids` with α·vector already in `vector` (None: unsteered)."""
    target = reader.target
    if sampled:
        torch.manual_seed(settings.seed)  # each sampled continuation starts from the same seed: reproducible
    input_ids = torch.tensor([ids], device=target.device)
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_k": 0} if sampled else \
        {"do_sample": False}
    with reader.nla.role("target"), residual_added(target.layers, reader.nla.layer, vector, position,
                                                   later=settings.all_positions):
        out = target.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                    max_new_tokens=settings.max_new_tokens, pad_token_id=target.pad_id, **sampling)
    new = out[0, len(ids):].tolist()
    eos = target.tokenizer.eos_token_id
    return new[: new.index(eos) + 1] if eos in new else new


@torch.no_grad()
def perplexity(reader: Reader, ids: list[int], new: list[int]) -> float | None:
    """Perplexity of the written tokens under the plain target (fluency: steering that breaks the text shows)."""
    if not new:
        return None
    target = reader.target
    full = torch.tensor([ids + new], device=target.device)
    with reader.nla.role("target"):
        logits = target.model(input_ids=full, use_cache=False).logits[0, len(ids) - 1 : -1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(new, device=logits.device))
    return round(math.exp(float(nll)), 3)


def written(reader: Reader, ids: list[int], new: list[int]) -> dict:
    return {"text": reader.target.tokenizer.decode(new, skip_special_tokens=True),
            "perplexity": perplexity(reader, ids, new)}


def steer(reader: Reader, prompt: Prompt, settings: SteerSettings, *, edit: Edit | None = None,
          explanation: str | None = None) -> dict:
    """The steering document: the reading, its edit, and the continuations per α (α 0: unsteered)."""
    if (edit is None) == (explanation is None):
        raise NLAError("give exactly one of an edit (FROM=>TO) and an edited explanation")
    ids = encode(reader, prompt, settings.max_new_tokens)
    position = token_positions([settings.position], len(ids))[0]
    reading = reader.read(ids, [position], TraceSettings(max_new_tokens=settings.explanation_tokens,
                                                         claims=False))[position]
    where = f"at position {position} ({reader.target.token_text(ids[position])!r})"
    if reading["explanation"] is None:
        raise NLAError(f"the explanation {where} failed ({reading['failure']}); pick another --position")
    edited = edit.apply(reading["explanation"], where) if edit else explanation.strip()
    if not edited:
        raise NLAError("the edited explanation is empty; write the explanation the activation should have")
    unit = steering_vector(reader, reading["explanation"], edited, reading["norm"])
    runs = []
    for alpha in (0.0, *settings.alphas):
        vector = alpha * unit if alpha else None
        runs.append({"alpha": alpha, **{kind: written(reader, ids, continuation(reader, ids, vector, position,
                                                                                  settings, sampled=kind == "sampled"))
                                        for kind in ("greedy", "sampled")}})
    return {"input": reader.target.tokenizer.decode(ids), "position": position,
            "token": reader.target.token_text(ids[position]), "nla": reader.describe(),
            "explanation": reading["explanation"], "score": reading["score"], "label": reading["label"],
            "edit": asdict(edit) if edit else None, "edited": edited,
            "where": "every position from the read token on" if settings.all_positions else "the read token only",
            "vector_norm": round(float(unit.norm()), 4), "activation_norm": round(reading["norm"], 4),
            "settings": asdict(settings), "runs": runs}


def steer_page(doc: dict) -> str:
    """steer.html: the reading, its edit and a table of continuations, self-contained and escaped."""
    e = html.escape
    rows = "".join(f"<tr><td>{r['alpha']:g}</td><td>{e(r['greedy']['text'])}</td><td>{r['greedy']['perplexity']}"
                   f"</td><td>{e(r['sampled']['text'])}</td><td>{r['sampled']['perplexity']}</td></tr>"
                   for r in doc["runs"])
    return (f"<!doctype html><html><head><meta charset=utf-8><meta http-equiv=Content-Security-Policy "
            f"content=\"default-src 'none'; style-src 'unsafe-inline'\"><title>nla steer</title><style>"
            f"body{{font:14px system-ui;margin:2em;max-width:70em}}td,th{{border:1px solid #ccc;padding:.3em;"
            f"vertical-align:top}}table{{border-collapse:collapse}}</style></head><body><h1>nla steer</h1>"
            f"<p><b>Input</b>: {e(doc['input'])}</p><p><b>Read at</b> position {doc['position']} "
            f"({e(doc['token'])}), layer {doc['nla']['layer']}; added at {e(doc['where'])}.</p>"
            f"<p><b>Explanation</b>: {e(doc['explanation'])}</p><p><b>Edited</b>: {e(doc['edited'])}</p>"
            f"<table><tr><th>α</th><th>greedy</th><th>ppl</th><th>sampled</th><th>ppl</th></tr>{rows}</table>"
            f"</body></html>")
