"""Build the embedded default corpus (shipped as nla/data/default_corpus.jsonl.gz).

    nla build-corpus --out src/nla/data/default_corpus.jsonl.gz

Why this corpus: the default must work with no network, be reproducible, and mix
genres the way the released NLAs' chat + web mix does. No PyPI package ships plain
English text, so the corpus has two offline sources:

1. Text the default target writes itself (SmolLM2-135M-Instruct), from built-in
   lists of topics and instructions: chat transcripts (kept as messages and rendered
   with each target's own chat template at extraction time) and plain prose in
   several genres (kept as text).
2. Reference documentation that ships with Python: the `pydoc_data` topics and
   standard-library docstrings, cut into document-sized pieces.

Every document carries `source`, `genre` and `topic` labels. Generation is seeded,
batched and resumable (finished documents are appended to a partial file and
skipped on restart); the final file is written atomically.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import random
import re
import sys
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import torch
from tqdm import tqdm

from nla.atomic import atomic_path
from nla.errors import NLAError
from nla.models import load_target
from nla.models.loading import pad_id_of
from nla.record_log import append_records, complete_records

# (topic, domain). Topic names are written to read naturally inside an instruction.
TOPICS = [
    ("volcanoes", "science"), ("black holes", "science"), ("photosynthesis", "science"),
    ("the human immune system", "health"), ("sleep and memory", "health"), ("running a marathon", "sport"),
    ("the history of chess", "games"), ("learning to play the guitar", "music"), ("jazz music", "music"),
    ("baking sourdough bread", "cooking"), ("Italian cooking", "cooking"), ("growing tomatoes", "gardening"),
    ("honeybees", "nature"), ("coral reefs", "nature"), ("migrating birds", "nature"),
    ("the Roman Empire", "history"), ("the printing press", "history"), ("the first moon landing", "history"),
    ("ancient Egypt", "history"), ("the Industrial Revolution", "history"), ("saving money", "finance"),
    ("how interest rates work", "finance"), ("starting a small business", "business"), ("remote work", "work"),
    ("job interviews", "work"), ("learning a second language", "education"), ("studying for exams", "education"),
    ("teaching children to read", "education"), ("climate change", "environment"), ("recycling plastic", "environment"),
    ("solar power", "energy"), ("electric cars", "technology"), ("smartphones", "technology"),
    ("how the internet works", "technology"), ("password security", "technology"), ("writing Python code", "programming"),
    ("sorting algorithms", "programming"), ("databases", "programming"), ("machine learning", "programming"),
    ("train travel in Europe", "travel"), ("visiting Japan", "travel"), ("camping in the mountains", "travel"),
    ("adopting a dog", "pets"), ("caring for a cat", "pets"), ("Shakespeare's plays", "literature"),
    ("writing a novel", "literature"), ("poetry", "literature"), ("impressionist painting", "art"),
    ("photography for beginners", "art"), ("architecture of cathedrals", "art"), ("the Olympic Games", "sport"),
    ("football tactics", "sport"), ("meditation", "health"), ("healthy breakfast ideas", "health"),
    ("friendship", "relationships"), ("moving to a new city", "life"), ("planning a wedding", "life"),
    ("elections and voting", "civics"), ("the rule of law", "civics"), ("the water cycle", "science"),
    ("earthquakes", "science"), ("the human brain", "science"), ("dinosaurs", "science"), ("vaccines", "health"),
    ("yoga", "health"), ("knitting", "hobbies"), ("board games", "games"), ("video game design", "games"),
    ("classical music", "music"), ("making coffee", "cooking"), ("vegetarian recipes", "cooking"),
    ("rainforests", "nature"), ("the ocean floor", "nature"), ("the French Revolution", "history"),
    ("the Silk Road", "history"), ("cryptocurrency", "finance"), ("public libraries", "civics"),
]

# Chat instructions: (genre, template). The assistant's answer completes the transcript.
CHAT_TASKS = [
    ("explanation", "Explain {topic} to a complete beginner."),
    ("advice", "Give me three practical tips about {topic}."),
    ("poem", "Write a short poem about {topic}."),
    ("faq", "What are the most common questions people ask about {topic}? Answer two of them."),
    ("misconceptions", "What are some common misconceptions about {topic}?"),
    ("history", "Summarize the history of {topic} in one paragraph."),
    ("email", "Write a friendly email to a colleague about {topic}."),
    ("story", "Tell me a very short story that involves {topic}."),
    ("opinion", "Do you think {topic} is overrated? Give a balanced answer."),
    ("how-to", "How do I get started with {topic}? Give me a step-by-step plan."),
    ("comparison", "Compare {topic} today with how it was fifty years ago."),
    ("kids", "Explain {topic} to a ten-year-old."),
    ("pros-cons", "What are the pros and cons of {topic}?"),
    ("quiz", "Write three quiz questions about {topic}, with answers."),
    ("definition", "Define the key terms someone needs to know about {topic}."),
    ("persuasive", "Convince me that I should care about {topic}."),
    ("summary", "In two sentences, what is the most important thing to know about {topic}?"),
    ("debug-my-thinking", "I think {topic} is simple. What am I missing?"),
    ("lesson-plan", "Outline a one-hour lesson about {topic}."),
    ("fun-facts", "Tell me some surprising facts about {topic}."),
]

# Prose genres: the model's answer is kept as a plain document (no chat wrapper).
PROSE_TASKS = [
    ("news", "Write a short news report about {topic}."),
    ("encyclopedia", "Write an encyclopedia-style paragraph about {topic}."),
    ("fiction", "Write the opening of a short story about {topic}."),
    ("diary", "Write a diary entry by someone who spent the day on {topic}."),
    ("review", "Write a review of a book about {topic}."),
    ("blog", "Write a personal blog post about {topic}."),
    ("essay", "Write a short essay arguing a point about {topic}."),
    ("letter", "Write a letter to the editor of a newspaper about {topic}."),
    ("speech", "Write a short speech to open a conference on {topic}."),
    ("product", "Write a product description for something related to {topic}."),
    ("dialogue", "Write a short dialogue between two friends discussing {topic}."),
    ("instructions", "Write clear instructions for a task related to {topic}."),
]


@dataclass(frozen=True)
class BuildConfig:
    out: Path
    model: str = "smollm2-135m"
    seed: int = 42
    batch_size: int = 64
    max_new_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.15
    docs_chunk_chars: int = 1200  # target size of a documentation piece
    limit: int | None = None  # generate only this many documents (tests)


def generation_jobs() -> list[dict]:
    """Every document to generate, with its id and labels, in a fixed order."""
    jobs = []
    for (topic, domain), (genre, template) in product(TOPICS, CHAT_TASKS):
        jobs.append(dict(id=f"chat/{genre}/{_slug(topic)}", source="smollm2-chat", genre=genre, topic=domain,
                         subject=topic, prompt=template.format(topic=topic)))
    for (topic, domain), (genre, template) in product(TOPICS, PROSE_TASKS):
        jobs.append(dict(id=f"prose/{genre}/{_slug(topic)}", source="smollm2-prose", genre=genre, topic=domain,
                         subject=topic, prompt=template.format(topic=topic)))
    return jobs


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def clean_generation(text: str) -> str | None:
    """Trim a sampled answer to its last full sentence; None if it is too short or loops."""
    # A cut-off answer often ends on a bare list number ("3.") that looks like a sentence end.
    text = re.sub(r"(\n\s*\d+\.?\s*)+$", "", text.strip())
    end = max(text.rfind(". "), text.rfind(".\n"), text.rfind("!"), text.rfind("?"))
    if not text.endswith((".", "!", "?")) and end > 0:
        text = text[: end + 1].rstrip()
    words = text.split()
    if len(words) < 30:
        return None
    trigrams = list(zip(words, words[1:], words[2:]))
    if len(set(trigrams)) < 0.6 * len(trigrams):
        return None  # degenerate repetition
    return text


def _generate_batch(target, prompts: list[str], cfg: BuildConfig, seed: int) -> list[str]:
    tok = target.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    tok.padding_side = "left"  # generation appends on the right
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(target.device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = target.model.generate(
            **batch, max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
            top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty, pad_token_id=pad_id_of(tok),
        )
    tok.padding_side = "right"
    return tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def generate_documents(cfg: BuildConfig, partial: Path) -> None:
    """Append generated documents to `partial` (JSON lines), skipping those already there."""

    done = {row["id"] for row in complete_records(partial)}  # a kill mid-append leaves a line cut short
    jobs = [j for j in generation_jobs()[: cfg.limit] if j["id"] not in done]
    if not jobs:
        return
    target = load_target(cfg.model)
    if not target.has_chat_template:
        raise NLAError(f"{cfg.model} has no chat template; build the corpus with an instruction-tuned model")
    bar = tqdm(total=len(jobs), desc="generating documents", unit="doc")
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start : start + cfg.batch_size]
        answers = _generate_batch(target, [j["prompt"] for j in batch], cfg, seed=cfg.seed + start)
        # Rejected samples are recorded too (answer None) so a resume does not redo them.
        append_records(partial, [{**job, "answer": clean_generation(answer)} for job, answer in zip(batch, answers)])
        bar.update(len(batch))
    bar.close()


def _pieces(text: str, size: int) -> list[str]:
    """Cut text at paragraph breaks into pieces of about `size` characters."""
    pieces, current = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if current and len(current) + len(para) > size:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return [p for p in pieces if len(p.split()) >= 40]


def python_documents(chunk_chars: int) -> list[dict]:
    """Reference text that ships with Python: pydoc topics and stdlib docstrings."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        for i, piece in enumerate(_pieces(topics[key], chunk_chars)):
            docs.append(dict(id=f"pydoc/{_slug(key)}/{i}", source="python-docs", genre="reference",
                             topic="programming", subject=key, text=piece))
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "turtledemo", "tkinter"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # platform-specific or optional modules
            continue
        doc = inspect.getdoc(module) or ""
        for i, piece in enumerate(_pieces(doc, chunk_chars)):
            docs.append(dict(id=f"docstring/{name}/{i}", source="python-docstrings", genre="module-docstring",
                             topic="programming", subject=name, text=piece))
        for member, text in _member_docstrings(module, name, 2 * chunk_chars)[:MEMBERS_PER_MODULE]:
            docs.append(dict(id=f"docstring/{name}.{member}", source="python-docstrings", genre="api-docstring",
                             topic="programming", subject=f"{name}.{member}", text=text))
    return docs


MEMBERS_PER_MODULE = 6  # keeps the API reference from crowding out the other genres


def _member_docstrings(module, name: str, max_chars: int) -> list[tuple[str, str]]:
    """Long docstrings of the public classes and functions a module defines, by name."""
    found = []
    for member in sorted(vars(module)):
        obj = getattr(module, member)
        if member.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", None) != name:
            continue
        doc = inspect.getdoc(obj) or ""
        if len(doc) >= 400 and len(doc.split()) >= 60:
            found.append((member, doc[:max_chars]))
    return found



def to_document(row: dict) -> dict | None:
    """A generated job row as a corpus record (chat transcripts keep their messages)."""
    answer = clean_generation(row["answer"]) if row.get("answer") else None
    if answer is None:
        return None
    labels = {k: row[k] for k in ("id", "source", "genre", "topic", "subject")}
    if row["source"] == "smollm2-chat":
        return {**labels, "messages": [{"role": "user", "content": row["prompt"]},
                                       {"role": "assistant", "content": answer}]}
    return {**labels, "text": answer}


def build_corpus(cfg: BuildConfig) -> dict:
    """Generate (or resume) and write the corpus; returns counts and timings."""
    start = time.time()
    partial = cfg.out.with_name(cfg.out.name + ".partial.jsonl")
    generate_documents(cfg, partial)
    rows = complete_records(partial)
    generated = [d for d in map(to_document, rows) if d is not None]
    docs = generated + python_documents(cfg.docs_chunk_chars)
    # Shuffled once, so that any prefix of the corpus (what --max-docs takes) mixes every source.
    random.Random(cfg.seed).shuffle(docs)
    with atomic_path(cfg.out) as tmp:
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    partial.unlink()
    return {"documents": len(docs), "generated": len(generated), "rejected": len(rows) - len(generated),
            "bytes": cfg.out.stat().st_size, "seconds": round(time.time() - start, 1)}
