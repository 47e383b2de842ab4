"""`mesh --help` without importing click: the page click rendered the last time, replayed while nothing it depends on
has changed.

Click and the command modules are most of what `mesh --help` costs over a bare interpreter. The page is a pure
function of the command modules' sources, click, Python and the help width, so it is cached under those (in
`$XDG_CACHE_HOME/meshops`, owner-only) and rendered by click again whenever any of them differs. Standard library
only, and nothing heavier than `os` on the way: this runs before anything else is imported.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HELP_ARGS = (["--help"], ["-h"])
CLI_DIR = Path(__file__).resolve().parent


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "meshops" / "help.txt"


def help_width() -> int:
    """The width click formats help to (click.formatting.HelpFormatter: terminal columns, at most 80, minus 2)."""
    import shutil

    return max(min(shutil.get_terminal_size().columns, 80) - 2, 50)


def key() -> str:
    """Everything the page depends on: each command module (name, size, mtime), click's own sources, Python, width."""
    import importlib.util

    click = importlib.util.find_spec("click")
    click_dir = Path(click.origin).parent if click and click.origin else None
    files = sorted(CLI_DIR.glob("*.py")) + (sorted(click_dir.glob("*.py")) if click_dir else [])
    stamps = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    return json.dumps([sys.version, sys.executable, help_width(), stamps], separators=(",", ":"))


def cached(argv: list[str]) -> str | None:
    """The help page for `argv` if it is a plain `mesh --help` and the cached page is current, else None."""
    if argv not in HELP_ARGS:
        return None
    try:
        head, _, page = cache_file().read_text(encoding="utf-8").partition("\n")
        return page if head == key() else None
    except (OSError, ValueError):
        return None


def remember(page: str) -> None:
    """Store the page click just rendered (atomically; never an error: a cache that cannot be written is skipped)."""
    path = cache_file()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(f"{key()}\n{page}")
        tmp.replace(path)
    except OSError:
        pass
