"""An append-only JSONL log that makes a long stage resumable after a kill.

The first line holds the settings the records depend on; each later line is one finished
record, appended and flushed as soon as it exists. Reading a log written with other settings
deletes it (its records no longer apply); a last line cut short by a kill is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

from nla.atomic import atomic_path


def saved_settings(path: Path) -> dict:
    """The settings in a log's header line, read without the records (a KeyError or JSONDecodeError when the
    file is not such a log)."""
    with Path(path).open(encoding="utf-8") as f:
        return json.loads(f.readline())["settings"]


def complete_records(path: Path) -> list[dict]:
    """The whole records of an append-only JSONL file, [] when it does not exist.

    A kill in the middle of an append leaves a last line cut short: it and anything after it are
    dropped, and the file is rewritten atomically without them, so the next append starts on a
    line of its own."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")  # a kill can cut a character too
    records, cut = [], False
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # cut short by a kill
            cut = True
            break
    if cut or (text and not text.endswith("\n")):
        write_records(path, records)
    return records


def write_records(path: Path, records: list[dict]) -> None:
    """Replace a JSONL file by these records, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def append_records(path: Path, records: list[dict]) -> None:
    """Append records to a JSONL file, flushed before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


class RecordLog:
    def __init__(self, path: Path, settings: dict):
        self.path = Path(path)
        self.settings = settings

    def read(self) -> list[dict]:
        """The records of a log written with the same settings; [] (and no file) otherwise. A last line cut
        short by a kill is dropped as complete_records drops it."""
        lines = complete_records(self.path)
        if not lines or not isinstance(lines[0], dict) or lines[0].get("settings") != self.settings:
            self.path.unlink(missing_ok=True)  # other settings, or killed while writing the header
            return []
        return lines[1:]

    def append(self, records: list[dict]) -> None:
        header = [] if self.path.exists() and self.path.stat().st_size else [{"settings": self.settings}]
        append_records(self.path, header + records)
