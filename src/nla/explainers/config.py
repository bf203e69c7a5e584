"""Settings of `nla explain-data`, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nla.changes import setting
from nla.errors import NLAError
from nla.explainers.api import DEFAULT_CONCURRENCY, DEFAULT_MAX_RETRIES, DEFAULT_MODELS

EXPLAINER_NAMES = ("offline", "anthropic", "openai")  # explainers/stage.py: EXPLAINERS builds each


@dataclass
class ExplainDataConfig:
    dataset: Path = setting(help="A finished `nla extract` folder.")
    out: Path | None = setting(None, "Output folder (default: DATASET/explanations-EXPLAINER).")
    explainer: str = setting("offline", "Explanation backend: offline (facts only, no network), anthropic, or openai "
                             "(also vLLM, Ollama, any compatible server via --base-url).")
    splits: tuple[str, ...] = setting(("ar_sft", "av_sft"), "Comma-separated splits to explain.")
    top_k: int = setting(3, "The target's next-token candidates given to the explainer.")
    quote_tokens: int = setting(12, "The last N tokens of each context, quoted exactly (docs/quality.md).")
    salient_words: int = setting(0, "Name each context's K most distinctive content words (and up to 3 of a chat's "
                                 "own system prompt); 0: none (explainers/salient.py).")
    batch_tokens: int = setting(8192, "Tokens per forward pass of the target (its next-token candidates).")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N.")
    overwrite: bool = setting(False, "Replace existing explanations in --out (API answers stay cached).")
    # API backends (anthropic, openai) only:
    api_model: str | None = setting(None, "API model (default: " + ", ".join(
        f"{k} {v}" for k, v in DEFAULT_MODELS.items()) + ").")
    base_url: str | None = setting(None, "API base URL, e.g. http://localhost:8000/v1 for vLLM.")
    api_key_env: str | None = setting(None, "Environment variable holding the API key (default: ANTHROPIC_API_KEY / "
                                      "OPENAI_API_KEY); none: a keyless local server. The key is never stored.")
    concurrency: int = setting(DEFAULT_CONCURRENCY, "API requests in flight.")
    max_retries: int = setting(DEFAULT_MAX_RETRIES, "Retries per API request (429, 5xx, lost connection).")

    def __post_init__(self):
        self.dataset = Path(self.dataset)
        if isinstance(self.splits, str):  # the command line's comma-separated list
            self.splits = tuple(name.strip() for name in self.splits.split(",") if name.strip())
        self.out = Path(self.out) if self.out else self.dataset / f"explanations-{self.explainer}"
        if self.explainer not in EXPLAINER_NAMES:
            raise NLAError(f"unknown explainer '{self.explainer}'; choose one of: {', '.join(EXPLAINER_NAMES)}")
        if not self.splits:
            raise NLAError("--splits names no split; pass e.g. --splits ar_sft,av_sft")
        if self.top_k < 1:
            raise NLAError("top-k must be at least 1")
        if self.quote_tokens < 1:
            raise NLAError("quote-tokens must be at least 1")
        if self.salient_words < 0:
            raise NLAError("salient-words must be 0 (none) or more")
        if self.concurrency < 1:
            raise NLAError("concurrency must be at least 1")
        if self.max_retries < 0:
            raise NLAError("max-retries must be 0 or more")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise NLAError(f"base-url '{self.base_url}' is not an http(s) URL; e.g. http://localhost:8000/v1")
        if self.explainer in DEFAULT_MODELS:
            self.api_model = self.api_model or DEFAULT_MODELS[self.explainer]
