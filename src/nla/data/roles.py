"""Which message of a chat transcript each token belongs to, as the target's chat template renders it.

A token inside a message's content gets that message's role; the template's own tokens (turn markers, a
default system prompt that the template inserts) get "template", so `--roles assistant` reads only what the
assistant wrote. Plain-text documents have one role, "text".
"""

from __future__ import annotations

TEXT, TEMPLATE = "text", "template"


def content_spans(rendered: str, messages: list[dict]) -> list[tuple[int, int, str]]:
    """(start, end, role) of each message's content in the rendered transcript, found in order."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        start = rendered.find(content, cursor) if content else -1
        if start < 0:  # a template that rewrote the content: its tokens stay "template"
            continue
        spans.append((start, start + len(content), message["role"]))
        cursor = start + len(content)
    return spans


def token_roles(tokenizer, rendered: str, messages: list[dict], token_count: int) -> list[str]:
    """The role of each of the `token_count` tokens of `rendered` (a BOS added before it counts as template)."""
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    shift = token_count - len(offsets)  # tokens the target's encode() put in front (a BOS)
    roles = [TEMPLATE] * token_count
    spans = content_spans(rendered, messages)
    for i, (start, end) in enumerate(offsets):
        middle = (start + end) / 2
        for lo, hi, role in spans:
            if lo <= middle < hi and end > start:
                roles[i + shift] = role
                break
    return roles
