"""`mesh status` reads the local mesh with the standard library only, and says what the mesh's own client says.

Structural checks (which modules a fresh interpreter loads) and answers compared with the full client's; `make bench`
times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mesh.cli import cli, localstatus, meshcmds  # noqa: F401  (meshcmds registers `status`)
from mesh.errors import MeshNotRunning, StateCorrupt
from mesh.targets.local import LocalTarget
from mesh.targets.local.api import MeshDescription, StateFile
from mesh.targets.local.control import read_state, state_path
from tests.unit.cli.test_lazy_imports import HEAVY

# `mesh status` as the entry point runs it, then the modules it loaded (on stderr, after the command's own output)
PROBE = """
import json, sys
from mesh.cli import main
sys.argv = ["mesh", "status", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as e:
    code = e.code
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def _status(state_dir: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = {**os.environ, "MESH_STATE_DIR": str(state_dir)}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60)
    err, _, modules = r.stderr.rpartition("\nMODULES ")
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, err), set(json.loads(modules))


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_status_of_no_mesh_loads_nothing_heavy_and_hints_once(tmp_path: Path) -> None:
    r, loaded = _status(tmp_path)
    assert r.returncode == 69, r.stderr
    assert r.stderr.strip() == (
        f"error: no local mesh is running from {tmp_path}\n  hint: start one with `mesh up` (or pass --state-dir)"
    )
    assert _heavy(loaded) == [], f"`mesh status` would import {_heavy(loaded)}"
    assert "http.client" not in loaded and "click" not in loaded  # "not running" needs no HTTP, no option parser


def test_status_of_a_running_mesh_loads_nothing_heavy(served: LocalTarget) -> None:
    r, loaded = _status(served.options.state_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ingress:  http://127.0.0.1:8080\nrevision: ")
    assert _heavy(loaded) == [], f"`mesh status` would import {_heavy(loaded)}"
    assert "click" not in loaded


def _same_through_click(state_dir: Path) -> None:
    """A plain `mesh status` (read before click) and `mesh status --state-dir DIR` (click parses, the command runs)
    print the same bytes and exit the same way."""
    plain, plain_modules = _status(state_dir)
    env = {k: v for k, v in os.environ.items() if k != "MESH_STATE_DIR"}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, "--state-dir", str(state_dir)], capture_output=True, text=True, env=env
    )
    assert "click" not in plain_modules and '"click"' in r.stderr
    assert (plain.returncode, plain.stdout, plain.stderr) == (
        r.returncode,
        r.stdout,
        r.stderr.rpartition("\nMODULES ")[0],
    )


def test_plain_status_says_what_the_command_says_of_a_running_mesh(served: LocalTarget) -> None:
    _same_through_click(served.options.state_dir)


@pytest.mark.parametrize("content", [None, b"{garbage"], ids=["none", "damaged"])
def test_plain_status_says_what_the_command_says_of_no_mesh(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        state_path(tmp_path).write_bytes(content)
    _same_through_click(tmp_path)


def test_anything_but_a_plain_local_status_goes_to_click(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path))
    assert localstatus.plain_status(["status", "-o", "json"]) is None
    monkeypatch.setenv("MESH_TARGET", "kubernetes")
    assert localstatus.plain_status(["status"]) is None
    monkeypatch.delenv("MESH_TARGET")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "file"))  # click says it is not a directory
    assert localstatus.plain_status(["status"]) is None


def test_the_light_client_reads_what_the_full_client_reads(served: LocalTarget) -> None:
    client = localstatus.StatusClient(served.options.state_dir)
    assert MeshDescription.model_validate(client.describe()) == served.describe()
    assert client.proxy_errors() == [(p.proxy, w, e) for p in served.proxy_status() for w, e in p.errors.items()]


def test_status_json_is_the_mesh_description(served: LocalTarget) -> None:
    env = {"MESH_STATE_DIR": str(served.options.state_dir)}
    r = CliRunner().invoke(cli, ["status", "-o", "json"], env=env)
    assert r.exit_code == 0, r.output
    assert MeshDescription.model_validate_json(r.output) == served.describe()
    assert r.output == json.dumps(json.loads(served.describe().model_dump_json()), indent=2, ensure_ascii=False) + "\n"


def _state(pid: int, pid_start: int) -> StateFile:
    return StateFile(
        pid=pid, pid_start=pid_start, ingress="http://x", ca="c", revision=1, started_at=0.0, api="unix:/x", token="t"
    )


CASES: dict[str, bytes | None] = {
    "missing": None,
    "truncated": b'{"pid": 12, "ingress": "http://1',
    "empty": b"",
    "binary": b"\xff\xfe\x00\x81garbage",
    "wrong types": b'{"pid": "twelve", "ingress": 3}',
    "not an object": b"[1, 2]",
    "stale pid": _state(2**22 + 7, 12345).model_dump_json().encode(),
}


@pytest.mark.parametrize("content", CASES.values(), ids=CASES.keys())
def test_the_light_reader_judges_a_state_file_as_the_mesh_does(tmp_path: Path, content: bytes | None) -> None:
    """Same error class and message (the reason for damage aside: each parser words its own)."""
    answers = []
    for reader in (read_state, localstatus.read_state):
        if content is not None:
            state_path(tmp_path).write_bytes(content)
        with pytest.raises(MeshNotRunning) as e:
            reader(tmp_path)
        text = str(e.value)
        answers.append((type(e.value), text.split(" (")[0] if isinstance(e.value, StateCorrupt) else text))
    assert answers[0] == answers[1]


def test_the_light_reader_takes_a_live_mesh_as_the_mesh_does(served: LocalTarget) -> None:
    light = localstatus.read_state(served.options.state_dir)
    assert StateFile.model_validate(light) == read_state(served.options.state_dir)
