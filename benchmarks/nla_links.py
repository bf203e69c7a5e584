"""An NLA folder made of links: one AV's adapter beside another run's AR, as `nla eval` and NLA.load read it.

The benchmarks pair an AV they trained with an AR they did not (or the reverse) without copying either;
a link already there is kept, so a rerun finds the folder as it left it.
"""

from __future__ import annotations

from pathlib import Path


def link_adapters(folder: Path, **adapters: Path) -> Path:
    """FOLDER/<name> -> each adapter folder given (e.g. av_adapter=..., ar_adapter=...); returns FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in adapters.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(Path(source).resolve(), target_is_directory=True)
    return folder
