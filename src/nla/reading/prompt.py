"""What a trace reads: a text, a text file, or a chat transcript (JSON messages).

A transcript is rendered with the target's own chat template when it is read, so the NLA
sees the same tokens the target would, and nothing the user did not give: a default system
prompt the template would add is left out unless asked for (`template_system_prompt`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nla.data.corpus import read_utf8
from nla.errors import NLAError
from nla.models.target import Target, check_unicode

CHAT_ROLES = ("system", "user", "assistant", "tool", "developer")


def check_messages(messages, where: str = "the chat") -> list[dict]:
    """A list of {role, content} string pairs (extra keys dropped), or a one-line error."""
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list) or not messages:
        raise NLAError(f"{where} must be a non-empty JSON list of {{\"role\": ..., \"content\": ...}} messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise NLAError(f"message {i} of {where} needs a string \"role\" and a string \"content\"")
        if m["role"] not in CHAT_ROLES:  # a template renders an unknown role as it likes, or silently drops it
            raise NLAError(f"message {i} of {where} has role {m['role']!r}; use one of {', '.join(CHAT_ROLES)}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass
class Prompt:
    text: str | None = None
    messages: list[dict] | None = None
    source: str = "text"  # shown in the trace: "text", or the file's name
    # A chat without a system message is traced as given: where the target's template would add its own
    # default system prompt, an empty system message keeps it out (a note in the trace says so). True: the
    # template's default is traced, as the target would see such a chat in use.
    template_system_prompt: bool = False

    def __post_init__(self):
        if (self.text is None) == (self.messages is None):
            raise NLAError("give either a text or a chat (a list of messages), not both or neither")
        if self.messages is not None:
            self.messages = check_messages(self.messages)
        elif not self.text.strip():
            raise NLAError("the text is empty; pass some text to trace")
        for text in [self.text] if self.messages is None else [m["content"] for m in self.messages]:
            check_unicode(text)  # before any model loads

    @property
    def kind(self) -> str:
        return "chat" if self.messages is not None else "text"

    def chat_for(self, target) -> tuple[list[dict], str | None]:
        """The messages to render for `target`, and a note when they differ from those given."""
        if self.template_system_prompt or not target.inserts_system_prompt(self.messages):
            return self.messages, None
        return ([{"role": "system", "content": ""}, *self.messages],
                f"{target.name}'s chat template adds its own system prompt to a chat without one; traced with an "
                "empty system message instead, so only the given messages are read (give a system message, or "
                "--template-system-prompt, to trace another)")

    @classmethod
    def from_file(cls, path: Path) -> "Prompt":
        return cls(text=_read(path), source=Path(path).name)

    @classmethod
    def from_chat_file(cls, path: Path, template_system_prompt: bool = False) -> "Prompt":
        try:
            messages = json.loads(_read(path))
        except json.JSONDecodeError as err:
            raise NLAError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); "
                           "write a list of {\"role\", \"content\"} messages") from err
        return cls(messages=check_messages(messages, str(path)), source=Path(path).name,
                   template_system_prompt=template_system_prompt)


def _read(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise NLAError(f"{path} not found; check the path")
    return read_utf8(path)


def check_length(target: Target, tokens: int, *, max_tokens: int | None = None, what: str = "the text") -> None:
    """Refuse a token sequence longer than the target's context (its activations there mean nothing) or than
    max_tokens (--max-tokens), naming its length and the limit."""
    context = target.context_length
    if context is not None and tokens > context:
        raise NLAError(f"{what} has {tokens} tokens, more than the {context} of {target.name}'s context; "
                       "shorten it")
    if max_tokens is not None and tokens > max_tokens:
        raise NLAError(f"{what} has {tokens} tokens, more than --max-tokens {max_tokens} (each token is one "
                       "explanation to write); shorten it, or raise --max-tokens")


def token_positions(positions: list[int], tokens: int) -> list[int]:
    """Positions in a text of `tokens` tokens, negative ones counted from the end (-1: the last)."""
    for p in positions:
        if not -tokens <= p < tokens:
            raise NLAError(f"position {p} is outside the text's {tokens} tokens")
    return [p % tokens for p in positions]
