"""A stage's settings: how each is declared (`setting`, with its help), and which differ between a saved run
and a rerun, for the one-line refusal of a resume.

    describe_changes({"lr": 0.001, "ar": {"epochs": 1}}, {"lr": 0.01, "ar": {"epochs": 2}})
    -> "ar.epochs 1 -> 2, lr 0.001 -> 0.01"

Nested mappings are compared key by key (dotted names); a key only one side has counts as
None there (an older file may lack a setting added since, at its default None). Long values
are cut, and past `limit` changes the rest are counted, so the message stays one line.
"""

from __future__ import annotations

from dataclasses import MISSING, field

MAX_VALUE_CHARS = 40


def setting(default=MISSING, help: str = ""):
    """A stage's setting: a config dataclass field with its help text, the one place the command line's option
    (its name, type, default and help: cli/common.options_from) and a YAML config's key come from."""
    return field(metadata={"help": help}) if default is MISSING else field(default=default, metadata={"help": help})


def changed_settings(saved: dict, now: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted name, saved value, current value) of every setting that differs, sorted by name."""
    changes = []
    for key in sorted(set(saved) | set(now), key=str):
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) or isinstance(new, dict):
            changes += changed_settings(old or {}, new or {}, f"{prefix}{key}.")
        elif old != new:
            changes.append((f"{prefix}{key}", old, new))
    return changes


def _short(value) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def describe_changes(saved: dict, now: dict, limit: int = 6) -> str:
    """'name old -> new, ...' for the settings that differ (at most `limit`, then how many more)."""
    changes = changed_settings(saved, now)
    parts = [f"{name} {_short(old)} -> {_short(new)}" for name, old, new in changes[:limit]]
    if len(changes) > limit:
        parts.append(f"and {len(changes) - limit} more")
    return ", ".join(parts)
