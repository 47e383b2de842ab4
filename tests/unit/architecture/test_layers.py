"""The layer contracts in pyproject.toml hold for the tree, and a forbidden import breaks `lint-imports` (so
`make lint` fails): run against a copy of the package with one bad edge added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev tools (`make install`, import-linter)")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "mesh", tmp_path / "mesh", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    r = lint(tree)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("dataplane/envoy.py", "import mesh.controlplane.pilot", "The data plane never imports the control plane"),
        ("api/config.py", "import mesh.targets.local", "Layers: api at the bottom"),
        ("targets/base.py", "import mesh.targets.local.target", "The Target protocol knows no implementation"),
        ("analyze/context.py", "import mesh.controlplane.translate", "never each"),
        ("errors.py", "import mesh.analyze.findings", "Errors sit below everything"),
        ("envoyjson.py", "import mesh.dataplane.envoy", "Layers: api at the bottom"),
        ("observability/traces.py", "import mesh.targets.local", "Layers: api at the bottom"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(tree: Path, module: str, bad_import: str, contract: str) -> None:
    path = tree / "mesh" / module
    path.write_text(path.read_text() + f"\n{bad_import}  # noqa\n")
    r = lint(tree)
    assert r.returncode != 0
    broken = r.stdout[r.stdout.index("Broken contracts") :]
    assert contract in broken, r.stdout
