"""What a steering edit does, against controls: the figures behind `benchmarks/steering.py`.

For each case of a steering set (steer_edits.yaml: a text, the edit of the explanation at its last
token, the words that mark each side) and each α, three directions of the same norm are added at layer K
(reading/steer.py's placement): the edit's own vector, a random direction (seeded), and another case's
edit vector (an unrelated edit). Each is measured by
  - the rise of log P(TO word) over the unsteered greedy continuation's N positions (teacher-forced, so
    every direction is scored on the same tokens; a word counts by any of its first tokens);
  - success: the steered greedy continuation holds a TO word and no FROM word;
  - fluency: that continuation's perplexity under the plain target.
A case whose FROM is not in the explanation the AV writes is skipped and counted: it cannot be edited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files

import torch
import yaml

from nla.errors import NLAError
from nla.models.steering import residual_added
from nla.reading.config import TraceSettings
from nla.reading.prompt import Prompt
from nla.reading.steer import Edit, SteerSettings, continuation, encode, perplexity, steering_vector
from nla.reading.trace import Reader

ARMS = ("edit", "random", "unrelated")
TOPIC = re.compile(r"\babout (\w+)")


@dataclass
class SteerCase:
    kind: str
    text: str
    to: list[str]
    edit: str | None = None  # FROM=>TO
    topic: str | None = None  # or: replace the explanation's "about X" with "about TOPIC"
    from_: list[str] = field(default_factory=list)

    def edit_for(self, explanation: str) -> Edit | None:
        """The edit to apply to this explanation; None when it holds no FROM."""
        if self.topic:
            found = TOPIC.search(explanation)
            return Edit(found.group(0), f"about {self.topic}") if found else None
        edit = Edit.parse(self.edit)
        return edit if edit.before in explanation else None


def load_cases(path=None) -> list[SteerCase]:
    raw = yaml.safe_load(open(path) if path else files("nla.reading").joinpath("steer_edits.yaml").open())
    cases = []
    for item in raw:
        item = dict(item)
        item["from_"] = item.pop("from", [])
        if bool(item.get("edit")) == bool(item.get("topic")):
            raise NLAError(f"steering case {item.get('text')!r} needs exactly one of edit: and topic:")
        cases.append(SteerCase(**item))
    return cases


def mentions(text: str, words: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE) for w in words)


def success(text: str, case: SteerCase) -> bool:
    """The continuation says a TO word and no FROM word."""
    return mentions(text, case.to) and not mentions(text, case.from_)


def first_tokens(tokenizer, words: list[str]) -> list[int]:
    """Each word's first token as it may start (after a space or not, lower or capitalised)."""
    ids = set()
    for word in words:
        for variant in {word, word.capitalize(), " " + word, " " + word.capitalize()}:
            ids.add(tokenizer(variant, add_special_tokens=False)["input_ids"][0])
    return sorted(ids)


@torch.no_grad()
def word_logprob(reader: Reader, ids: list[int], tokens: list[int], vector, position: int, later: bool,
                 words: list[int]) -> float:
    """Mean over the positions that write `tokens` of log P(any of `words`), with `vector` added."""
    target = reader.target
    full = torch.tensor([ids + tokens], device=target.device)
    with reader.nla.role("target"), residual_added(target.layers, reader.nla.layer, vector, position, later=later):
        logits = target.model(input_ids=full, use_cache=False).logits[0, len(ids) - 1 : -1].float()
    return float(logits.log_softmax(-1)[:, words].logsumexp(-1).mean())


def read_case(reader: Reader, case: SteerCase, settings: SteerSettings) -> dict | None:
    """The case's reading at its last token and its edit vector (unit of α); None when it cannot be edited."""
    ids = encode(reader, Prompt(text=case.text), settings.max_new_tokens)
    position = len(ids) - 1
    reading = reader.read(ids, [position], TraceSettings(max_new_tokens=settings.explanation_tokens,
                                                         claims=False))[position]
    edit = case.edit_for(reading["explanation"]) if reading["explanation"] else None
    if edit is None:
        return {"case": case, "explanation": reading["explanation"], "skipped": True}
    edited = edit.apply(reading["explanation"], "of the case")
    return {"case": case, "ids": ids, "position": position, "explanation": reading["explanation"],
            "edited": edited, "vector": steering_vector(reader, reading["explanation"], edited, reading["norm"]),
            "skipped": False}


def measure(reader: Reader, read: dict, directions: dict, settings: SteerSettings) -> dict:
    """One case's figures for each arm and α (directions: arm -> unit vector of the edit's norm)."""
    case, ids, position = read["case"], read["ids"], read["position"]
    later = settings.all_positions
    words = first_tokens(reader.target.tokenizer, case.to)
    baseline = continuation(reader, ids, None, position, settings, sampled=False)
    base_lp = word_logprob(reader, ids, baseline, None, position, later, words)
    unsteered = reader.target.tokenizer.decode(baseline, skip_special_tokens=True)
    out = {"text": case.text, "kind": case.kind, "explanation": read["explanation"], "edited": read["edited"],
           "baseline": unsteered, "baseline_success": success(unsteered, case), "arms": {}}
    for arm, unit in directions.items():
        rows = []
        for alpha in settings.alphas:
            new = continuation(reader, ids, alpha * unit, position, settings, sampled=False)
            text = reader.target.tokenizer.decode(new, skip_special_tokens=True)
            rows.append({"alpha": alpha, "text": text, "perplexity": perplexity(reader, ids, new),
                         "success": success(text, case),
                         "logprob_rise": word_logprob(reader, ids, baseline, alpha * unit, position, later, words)
                         - base_lp})
        out["arms"][arm] = rows
    return out


def steering_effect(reader: Reader, cases: list[SteerCase], settings: SteerSettings, *, seed: int = 0,
                    progress=None) -> dict:
    """Every case measured (skipped ones counted), then the table per α and arm."""
    reads = [read_case(reader, c, settings) for c in cases]
    usable = [r for r in reads if not r["skipped"]]
    generator = torch.Generator().manual_seed(seed)
    results = []
    for i, read in enumerate(usable):
        norm = read["vector"].norm()
        random = torch.randn(read["vector"].shape, generator=generator)
        other = unrelated(usable, i)
        vector = other["vector"] if other else torch.randn(read["vector"].shape, generator=generator)
        directions = {"edit": read["vector"], "random": random / random.norm() * norm,
                      "unrelated": vector / vector.norm().clamp_min(1e-12) * norm}
        results.append({**measure(reader, read, directions, settings),
                        "unrelated_edit": other["edited"] if other else None})
        if progress:
            progress(f"{i + 1}/{len(usable)} {read['case'].text[:40]!r}")
    return {"cases": len(cases), "edited": len(usable),
            "unsteered_success": sum(r["baseline_success"] for r in results) / len(results) if results else None,
            "skipped": [{"text": r["case"].text, "explanation": r["explanation"]} for r in reads if r["skipped"]],
            "table": table(results, settings.alphas), "results": results}


def unrelated(usable: list[dict], i: int) -> dict | None:
    """The next case (cyclically) whose edited explanation differs from case i's: its vector is the unrelated
    edit's; None when every other case reads the same (a second random direction stands in)."""
    for step in range(1, len(usable)):
        other = usable[(i + step) % len(usable)]
        if other["edited"] != usable[i]["edited"]:
            return other
    return None


def table(results: list[dict], alphas: tuple[float, ...]) -> list[dict]:
    """Per α: each arm's success rate, mean log-prob rise and median perplexity, and the share of cases where
    the edit's rise beats each control's."""
    rows = []
    for k, alpha in enumerate(alphas):
        row = {"alpha": alpha}
        for arm in ARMS:
            cells = [r["arms"][arm][k] for r in results]
            perplexities = sorted(c["perplexity"] for c in cells if c["perplexity"] is not None)
            row[arm] = {"success": sum(c["success"] for c in cells) / len(cells) if cells else None,
                        "logprob_rise": sum(c["logprob_rise"] for c in cells) / len(cells) if cells else None,
                        "perplexity": perplexities[len(perplexities) // 2] if perplexities else None}
        # Paired per case: how often the edit's own direction raises its words more than each control does.
        row["edit_beats"] = {arm: sum(r["arms"]["edit"][k]["logprob_rise"] > r["arms"][arm][k]["logprob_rise"]
                                      for r in results) / len(results) if results else None
                             for arm in ARMS[1:]}
        rows.append(row)
    return rows

