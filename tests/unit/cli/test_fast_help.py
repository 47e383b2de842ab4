"""A plain `mesh --help` replays the page click rendered last time, byte for byte, and only while that page is current.

Structural checks (is click loaded, what is printed) against click's own rendering in the same environment; `make
bench` times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mesh.cli import cli, fasthelp

# the `mesh` entry point, then whether click was loaded (on stderr, after the command's own output)
PROBE = """
import json, sys
from mesh.cli import main
sys.argv = ["mesh", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
sys.stderr.write("\\nCLICK " + json.dumps("click" in sys.modules))
sys.exit(code)
"""


def _help(cache: Path, columns: int = 200, arg: str = "--help") -> tuple[str, bool]:
    """(stdout, click loaded) of `mesh --help` with its cache under `cache`."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": str(columns)}
    r = subprocess.run([sys.executable, "-c", PROBE, arg], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(r.stderr.rpartition("\nCLICK ")[2])


@pytest.mark.parametrize("columns", [200, 60])
def test_the_replayed_page_is_clicks_page(tmp_path: Path, columns: int) -> None:
    rendered, click_first = _help(tmp_path, columns)
    replayed, click_then = _help(tmp_path, columns)
    assert click_first and not click_then
    assert replayed == rendered
    assert "Usage: mesh [OPTIONS] COMMAND [ARGS]..." in replayed and "  up " in replayed
    assert _help(tmp_path, columns, "-h") == (rendered, False)


def test_a_page_for_another_width_is_rendered_again(tmp_path: Path) -> None:
    wide, _ = _help(tmp_path, 200)
    narrow, click_loaded = _help(tmp_path, 60)
    assert click_loaded and narrow != wide
    assert _help(tmp_path, 60) == (narrow, False)  # the cache now holds the narrow page


@pytest.mark.parametrize(
    "content", [b"", b"\xff\xfe garbage", b"[]\nUsage: stale page"], ids=["empty", "binary", "key"]
)
def test_a_damaged_or_stale_cache_is_rendered_again(tmp_path: Path, content: bytes) -> None:
    rendered, _ = _help(tmp_path)
    fasthelp_file = tmp_path / "meshops" / "help.txt"
    fasthelp_file.write_bytes(content)
    assert _help(tmp_path) == (rendered, True)
    assert _help(tmp_path) == (rendered, False)


def test_an_unwritable_cache_never_fails_the_command(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out, click_loaded = _help(blocker)  # XDG_CACHE_HOME is a file: nothing can be cached under it
    assert click_loaded and "Usage: mesh" in out
    assert _help(blocker) == (out, True)


def test_only_a_complete_command_set_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process `cli` with a subset of the command modules (as tests use it) never writes the page."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = CliRunner().invoke(cli, ["--help"], prog_name="mesh")
    assert r.exit_code == 0 and not (tmp_path / "meshops" / "help.txt").exists()


def test_the_key_follows_the_command_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fasthelp, "CLI_DIR", tmp_path)
    source = tmp_path / "commands.py"
    source.write_text("a = 1\n")
    before = fasthelp.key()
    source.write_text("a = 22\n")
    assert fasthelp.key() != before
    assert fasthelp.cached(["up", "--help"]) is None  # only the top-level page is replayed
