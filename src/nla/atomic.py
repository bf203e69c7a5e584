"""Atomic file writes: write to a temporary name beside the target, then rename.

A reader (or a resumed run) therefore sees either the old file or the complete
new one, never a half-written file, even after `kill -9`. Beside `write_yaml` is its
reading twin, which turns a damaged file into one `error:` line.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from nla.errors import NLAError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; on success rename it onto `path`, on error remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def old_copy(folder: Path) -> Path:
    """Where swap_folder keeps the previous folder while the new one is renamed in."""
    return folder.with_name(f".{folder.name}.old")


def swap_folder(new: Path, folder: Path) -> None:
    """Replace `folder` by the complete folder `new`: two renames, so a kill leaves either folder whole (the
    old one at old_copy(folder) if it fell between them)."""
    old = old_copy(folder)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def copy_folder(source: str | Path, dest: str | Path) -> Path:
    """DEST becomes a whole copy of SOURCE (a copy left by a killed run is replaced, never half kept)."""
    with atomic_path(dest) as tmp:
        shutil.copytree(source, tmp)
        shutil.rmtree(dest, ignore_errors=True)
    return Path(dest)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_yaml(path: str | Path, data: dict) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_yaml_mapping(path: str | Path, fix: str) -> dict:
    """A YAML file holding a mapping (empty: {}), or a one-line NLAError naming the file and `fix`."""

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise NLAError(f"{path} is not valid YAML ({str(err).splitlines()[0]}); {fix}") from None
    except UnicodeDecodeError as err:  # a binary or foreign file given where a YAML text belongs
        raise NLAError(f"{path} is not a UTF-8 text file (byte {err.start} is not UTF-8); {fix}") from None
    if not isinstance(raw, dict):
        raise NLAError(f"{path} does not hold a YAML mapping of fields; {fix}")
    return raw


def write_json(path: str | Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")
