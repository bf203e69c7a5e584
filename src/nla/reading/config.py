"""Settings of a trace, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.shipped import (
    DEFAULT as DEFAULT_NLA,  # noqa: F401 (re-exported: what trace, serve and demo read with)
)
from nla.errors import NLAError

# `nla explain`'s --max-tokens: each token is one explanation to write (a few seconds each on a CPU), so a
# longer text is refused up front instead of running for hours; trace (resumable, with progress) has no cap.
EXPLAIN_MAX_TOKENS = 512


@dataclass
class TraceSettings:
    max_new_tokens: int = MAX_NEW_TOKENS  # the release's cap; an explanation cut there is a failure
    claims: bool = True  # weigh and check each claim (leave-one-out AR passes; the target's next tokens)
    batch_size: int = 16  # activations explained together
    min_position: int = 0  # earlier tokens are shown but not traced
    continue_tokens: int = 0  # tokens the target writes after the input, traced too
    max_tokens: int | None = None  # longest input + continuation; refused before any model work (the server sets it)
    temperature: float = 0.0  # the AV's sampling: 0 is greedy (the release's examples)

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise NLAError("max-new-tokens and batch-size must be at least 1")
        if self.temperature < 0:
            raise NLAError("temperature must be at least 0 (0: greedy)")
        if self.min_position < 0 or self.continue_tokens < 0:
            raise NLAError("min-position and continue must be >= 0")


ROLE_CHOICES = ("assistant", "user", "system", "text")  # "text": the tokens of a plain-text document


@dataclass
class IndexSettings:
    """What an audit index holds (`nla index`); a rerun with other values is refused, naming them."""

    corpus: str = "default"
    text_field: str = "text"
    max_docs: int | None = None
    positions: str = "all"  # "all", or N: N positions sampled per document (seeded, as extraction samples)
    roles: tuple[str, ...] = ROLE_CHOICES  # which tokens are indexed (chat roles; "text" for plain documents)
    explain: str = "none"  # "none" (activations only), "all", or N explained positions per document
    min_position: int = 1  # position 0 is an attention sink: its activation says nothing about the text
    max_doc_tokens: int = 512
    seed: int = 42
    max_new_tokens: int = MAX_NEW_TOKENS

    def __post_init__(self):
        self.positions, self.explain = str(self.positions), str(self.explain)
        self.roles = tuple(self.roles)
        for name, value, words in (("--positions", self.positions, ("all",)),
                                   ("--explain", self.explain, ("all", "none"))):
            if value not in words and not (value.isdigit() and int(value) >= 1):
                raise NLAError(f"{name} {value} is not {' or '.join(words)} or a whole number of at least 1")
        unknown = sorted(set(self.roles) - set(ROLE_CHOICES))
        if not self.roles or unknown:
            raise NLAError(f"--roles {','.join(self.roles)}: choose among {', '.join(ROLE_CHOICES)}")
        if self.min_position < 0 or self.max_doc_tokens <= self.min_position:
            raise NLAError("--min-position must be >= 0 and below --max-doc-tokens")
        if self.max_docs is not None and self.max_docs < 1:
            raise NLAError("--max-docs must be at least 1")
        if self.max_new_tokens < 1:
            raise NLAError("--max-new-tokens must be at least 1")
