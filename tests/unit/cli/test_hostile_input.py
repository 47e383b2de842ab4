"""Hostile and broken input, as a user's shell sees it: exit 65 and a message naming the file, line and limit
or field — never a traceback, a hang, or a silent success."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
VS = (
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [{host}]\n"
    "  http:\n  - route:\n    - destination: {{host: r}}\n      weight: {weight}\n    timeout: {timeout}\n"
)


def mesh(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": "120", **(env or {})}
    full.pop("MESH_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args], capture_output=True, text=True, cwd=cwd, env=full, timeout=60
    )


def analyze(tmp_path: Path, content: str | bytes, **env: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "in.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content)
    return mesh("analyze", "-f", str(f), env=env)


def assert_65(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode == 65, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    for n in needles:
        assert n in out.stderr, (n, out.stderr)


def test_alias_bomb_of_valid_objects_fails_fast(tmp_path: Path) -> None:
    dr = "apiVersion: networking.istio.io/v1\n    kind: DestinationRule\n    metadata: {name: a}\n    spec: {host: a}"
    levels = ["  a0: &a0\n    " + dr] + [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "apiVersion: v1\nkind: List\nx:\n" + "\n".join(levels) + "\nitems: *a8\n"
    assert len(text) < 4096
    start = time.monotonic()
    out = analyze(tmp_path, text)
    assert time.monotonic() - start < 10
    assert_65(out, "in.yaml:", "exceeds the input limit", "MESH_MAX_")


def test_object_count_limit_names_how_to_raise_it(tmp_path: Path) -> None:
    doc = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d{i}}}\nspec: {{host: a}}\n"
    text = "---\n".join(doc.format(i=i) for i in range(30))
    assert_65(analyze(tmp_path, text, MESH_MAX_OBJECTS="20"), "number of objects", "limit of 20", "MESH_MAX_OBJECTS")


def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    f = tmp_path / "in.yaml"
    with open(f, "wb") as sparse:
        sparse.truncate(50 * 1024 * 1024)  # sparse: 50 MB of NULs, which would be a YAML error if parsed
    start = time.monotonic()
    out = mesh("analyze", "-f", str(f))
    assert time.monotonic() - start < 10
    assert_65(out, "file size (52,428,800 bytes) exceeds the input limit", "MESH_MAX_INPUT_BYTES")


@pytest.mark.parametrize(
    "content,needles",
    [
        ("[" * 3000 + "]" * 3000, ["in.yaml:1: nesting depth exceeds the input limit of 64", "MESH_MAX_YAML_DEPTH"]),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: [a, b]\nspec: {host: a}\n",
            ["in.yaml:3", "metadata must be a mapping"],
        ),
        (b"apiVersion: v1\nkind: Service\nmetadata: {name: r\xe9views}\n", ["in.yaml:3: not UTF-8"]),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: r}\nspec:\n  selector: {app: r}\n  ports:\n  - name: http\n"
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\nspec:\n  template:\n"
            "    metadata: {labels: {app: r}}\n    spec: {containers: [{name: r, image: x}]}\n",
            ["in.yaml:7", "spec.ports[0]: this port has no `port` number"],
        ),
        (VS.format(host="r", weight=10**30, timeout="1s"), ["in.yaml:9", "weight", "less than or equal to 2147483647"]),
        (VS.format(host="r", weight="true", timeout="1s"), ["in.yaml:9", "weight", "valid integer"]),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  host: b\n",
            ["in.yaml:6: duplicate key 'host' (first at line 5)"],
        ),
        (VS.format(host="rëviews", weight=1, timeout="1s"), ["in.yaml:5", "spec.hosts[0]", "not ASCII"]),
        (VS.format(host="r", weight=1, timeout="999999999999s"), ["in.yaml:10", "timeout", "longest duration Envoy"]),
        (
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec: {host: a}\n"
            "specs: {host: b}\n",
            ["in.yaml:5", "unknown top-level field 'specs'"],
        ),
    ],
    ids=[
        "deep-nesting",
        "metadata-list",
        "non-utf8",
        "port-without-port",
        "huge-weight",
        "weight-true",
        "duplicate-key",
        "non-ascii-host",
        "huge-timeout",
        "unknown-top-level",
    ],
)
def test_broken_input_is_a_clear_65(tmp_path: Path, content: str | bytes, needles: list[str]) -> None:
    assert_65(analyze(tmp_path, content), *needles)


def _policies(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "hostile"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import sys\nfrom mesh.api import MeshConfig\nENVIRONMENTS = ('dev',)\n\n\ndef build(env):\n" + body
    )
    return pkg


@pytest.mark.parametrize("command", ["render", "analyze"])
def test_policies_that_exit_are_an_error(tmp_path: Path, command: str) -> None:
    pkg = _policies(tmp_path, "    sys.exit(0)\n")
    out = mesh(command, "--policies", str(pkg))
    assert_65(out, "__init__.py:7", "called sys.exit(0)")


def test_policies_that_loop_forever_time_out(tmp_path: Path) -> None:
    pkg = _policies(tmp_path, "    while True:\n        pass\n")
    start = time.monotonic()
    out = mesh("render", "--policies", str(pkg), env={"MESH_POLICY_TIMEOUT": "2"})
    assert time.monotonic() - start < 30
    assert_65(out, "did not finish within 2s", "MESH_POLICY_TIMEOUT")


def test_abort_percent_says_what_replaced_it(tmp_path: Path) -> None:
    text = VS.format(host="r", weight=1, timeout="1s").replace(
        "    timeout: 1s\n", "    fault:\n      abort: {httpStatus: 503, percent: 50}\n"
    )
    assert_65(analyze(tmp_path, text), "abort.percent was removed", "percentage: {value: N}")


def test_import_help_does_not_suggest_overwriting_the_shipped_policies() -> None:
    out = mesh("import", "--help")
    assert out.returncode == 0
    assert "> policies/" not in out.stdout


def test_non_utf8_on_stdin_is_a_clear_65() -> None:
    full = {**os.environ, "COLUMNS": "120"}
    full.pop("MESH_DEBUG", None)
    out = subprocess.run(
        [sys.executable, "-m", "mesh", "analyze", "-f", "-"],
        input=b"a: \xff\n",
        capture_output=True,
        env=full,
        timeout=60,
    )
    assert out.returncode == 65
    assert b"<stdin>:1: not UTF-8" in out.stderr and b"Traceback" not in out.stderr
