"""Settings of a trace, free of heavy imports so the CLI can read their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from nla.errors import NLAError

# The NLA shipped in the package (see autoencoder/default.py): what trace, serve and demo read with
# when no --nla is given.
DEFAULT_NLA = "default"
# `nla explain`'s --max-tokens: each token is one explanation to write (a few seconds each on a CPU), so a
# longer text is refused up front instead of running for hours; trace (resumable, with progress) has no cap.
EXPLAIN_MAX_TOKENS = 512


@dataclass
class TraceSettings:
    max_new_tokens: int = 150  # the AV's cap; an explanation cut there is a failure
    batch_size: int = 16  # activations explained together
    min_position: int = 0  # earlier tokens are shown but not traced
    continue_tokens: int = 0  # tokens the target writes after the input, traced too
    max_tokens: int | None = None  # longest input + continuation; refused before any model work (the server sets it)

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise NLAError("max-new-tokens and batch-size must be at least 1")
        if self.min_position < 0 or self.continue_tokens < 0:
            raise NLAError("min-position and continue must be >= 0")
