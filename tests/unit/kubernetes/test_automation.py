"""`mesh up|down --target kubernetes` before and around Pulumi: the stack's cluster and the tools are checked
before anything is created, Pulumi's failures become our exit codes naming the failing resource, and the
Automation API runs the packaged program inline in a workspace outside the source tree (no live Pulumi here: its
functions are replaced by fakes that record what they were given)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pulumi import automation as auto
from pulumi.automation._cmd import CommandResult

from mesh.errors import EXIT_TARGET, DeploymentFailed, TargetError
from mesh.targets.kubernetes import automation
from mesh.targets.kubernetes.automation import check_tools, failures, pulumi_errors, resolve, stack_settings
from mesh.targets.kubernetes.settings import STACKS
from tests.conftest import ROOT

PULUMI_FAILURE = """\
Updating (ci):
 +  kubernetes:core/v1:Namespace namespace-default creating (0s)
 +  kubernetes:core/v1:Namespace namespace-default creating failed error: namespaces "default" already exists
Diagnostics:
  kubernetes:core/v1:Namespace (namespace-default):
    error: resource default was not successfully created by the Kubernetes API server: namespaces "default"
    already exists

  pulumi:pulumi:Stack (meshops-ci):
    error: update failed

Resources:
    12 unchanged
"""


def _mesh(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        capture_output=True,
        text=True,
        env={**env, "MESH_PULUMI_HOME": str(tmp_path / "home")},
        cwd=ROOT,
        timeout=60,
    )


def test_missing_tools_are_named_with_install_hints() -> None:
    with pytest.raises(TargetError) as e:
        check_tools(which=lambda tool: None if tool in ("kind", "pulumi") else "/usr/bin/" + tool)
    assert "needs kind, pulumi on PATH" in str(e.value)
    assert "https://kind.sigs.k8s.io" in str(e.value) and "https://www.pulumi.com/docs/install/" in str(e.value)


def test_stack_settings_ship_with_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert STACKS.parent == Path(automation.__file__).parent  # package data, not the source checkout
    assert stack_settings("ci")["policyEnv"] == "e2e"
    with pytest.raises(TargetError, match="no stack settings"):
        stack_settings("qa")
    (tmp_path / "Pulumi.qa.yaml").write_text("config:\n  meshops:policyEnv: dev\n")
    monkeypatch.setenv("MESH_STACKS_DIR", str(tmp_path))  # your own environments
    assert stack_settings("qa") == {"policyEnv": "dev"}


def test_the_target_modules_do_not_look_for_a_source_checkout() -> None:
    for module in ("automation.py", "program.py", "settings.py", "image.py"):
        text = (Path(automation.__file__).parent / module).read_text()
        assert "parents[" not in text, module


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_a_lasting_stack_without_a_cluster_stops_naming_the_setting(stack: str) -> None:
    with pytest.raises(TargetError) as e:
        resolve(stack, environ={})
    assert e.value.exit_code == EXIT_TARGET
    assert "MESH_CLUSTER_KUBECONFIG" in str(e.value) and "meshops:kubeconfigFile" in str(e.value)


def test_a_lasting_stack_with_a_kubeconfig_file_uses_it(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "staging.kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    s = resolve("staging", environ={"MESH_CLUSTER_KUBECONFIG": str(kubeconfig)})
    assert s.kubeconfig == kubeconfig.read_text() and not s.creates_cluster
    with pytest.raises(TargetError, match="does not exist"):
        resolve("staging", environ={"MESH_CLUSTER_KUBECONFIG": str(tmp_path / "missing")})


def test_ephemeral_stacks_create_kind() -> None:
    assert resolve("dev", environ={}).creates_cluster and resolve("ci", environ={}).creates_cluster


def test_cli_staging_without_a_kubeconfig_fails_before_creating_anything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MESH_CLUSTER_KUBECONFIG"}
    r = _mesh("up", "--target", "kubernetes", "--env", "staging", env=env, tmp_path=tmp_path)
    assert r.returncode == EXIT_TARGET, r.stderr
    assert "MESH_CLUSTER_KUBECONFIG" in r.stderr and "nothing was created" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "home").exists()  # no workspace, no state, no kind kubeconfig


def test_cli_exit_code_and_message_when_tools_are_missing(tmp_path: Path) -> None:
    tools = tmp_path / "bin"  # git only (GitPython needs it at import): no pulumi, kind or docker
    tools.mkdir()
    git = shutil.which("git")
    assert git, "git is needed (Debian: apt-get install git)"
    (tools / "git").symlink_to(git)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{tools}"}
    r = _mesh("up", "--target", "kubernetes", "--env", "dev", env=env, tmp_path=tmp_path)
    assert r.returncode == EXIT_TARGET
    assert "the kubernetes target needs" in r.stderr and "Traceback" not in r.stderr


def test_an_existing_cluster_needs_only_the_pulumi_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("MESH_CLUSTER_KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(TargetError) as e:
        automation.up("prod", progress=lambda _: None)
    assert "needs pulumi on PATH" in str(e.value)


def test_pulumi_diagnostics_name_the_failing_resource() -> None:
    assert failures(PULUMI_FAILURE) == [
        (
            "kubernetes:core/v1:Namespace",
            "namespace-default",
            'resource default was not successfully created by the Kubernetes API server: namespaces "default" '
            "already exists",
        )
    ]
    assert failures("  pulumi:pulumi:Stack (meshops-ci):\n    error: update failed\n") == [
        ("pulumi:pulumi:Stack", "meshops-ci", "update failed")
    ]


def test_automation_errors_become_deployment_failed() -> None:
    error = auto.errors.create_command_error(CommandResult(stdout=PULUMI_FAILURE, stderr="", code=255))
    with pytest.raises(DeploymentFailed) as e, pulumi_errors("up", "ci"):
        raise error
    assert e.value.exit_code == EXIT_TARGET
    assert e.value.failures[0][:2] == ("kubernetes:core/v1:Namespace", "namespace-default")
    assert "mesh up --target kubernetes --env ci" in str(e.value)
    locked = auto.errors.create_command_error(
        CommandResult(stdout="", stderr="error: the stack is currently locked by 1 lock(s)", code=255)
    )
    with pytest.raises(DeploymentFailed, match="locked by another update"), pulumi_errors("up", "ci"):
        raise locked


class FakeWorkspace:
    def __init__(self) -> None:
        self.plugins: list[tuple[str, str]] = []

    def install_plugin(self, name: str, version: str) -> None:
        self.plugins.append((name, version))


class FakeStack:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.config_writes = 0
        self.workspace = FakeWorkspace()

    def set_all_config(self, *args: Any, **kwargs: Any) -> None:
        self.config_writes += 1

    set_config = set_all_config

    def up(self, **kwargs: Any) -> Any:
        if self.error:
            raise self.error

        class Result:
            outputs: dict[str, Any] = {}

            class summary:
                result = "succeeded"

        return Result()


def _fake_pulumi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: FakeStack) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def create_or_select_stack(**kwargs: Any) -> FakeStack:
        seen.update(kwargs)
        return stack

    monkeypatch.setattr(auto, "create_or_select_stack", create_or_select_stack)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setenv("MESH_PULUMI_HOME", str(tmp_path / "home"))  # does not exist yet: made with its parents
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    return seen


def test_up_runs_the_packaged_program_inline_outside_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = FakeStack()
    tmp_path = tmp_path / "not" / "yet"
    seen = _fake_pulumi(monkeypatch, tmp_path, stack)
    tracked = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    automation.up("ci", progress=lambda _: None, policies=ROOT / "policies")
    assert seen["stack_name"] == "ci" and callable(seen["program"])  # created on a fresh backend, else selected
    work_dir = Path(seen["opts"].work_dir)
    assert work_dir == tmp_path / "home" / "workspace" and work_dir.is_dir()
    assert seen["opts"].env_vars["PULUMI_BACKEND_URL"] == f"file://{tmp_path / 'home' / 'state'}"
    assert stack.config_writes == 0  # settings go to the program directly: no stack file is written
    assert [name for name, _ in stack.workspace.plugins] == ["kubernetes", "command"]
    assert dict(stack.workspace.plugins)["kubernetes"].startswith("v4.34.")  # the SDK's own, pinned minor
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == tracked


def test_cli_prints_the_failing_resource_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mesh.cli import cli, meshcmds

    assert meshcmds  # importing it registers the commands

    error = auto.errors.create_command_error(CommandResult(stdout=PULUMI_FAILURE, stderr="", code=255))
    _fake_pulumi(monkeypatch, tmp_path, FakeStack(error))
    monkeypatch.chdir(ROOT)
    r = CliRunner().invoke(cli, ["up", "--target", "kubernetes", "--env", "ci"])
    assert r.exit_code == EXIT_TARGET, r.output
    assert "kubernetes:core/v1:Namespace namespace-default" in r.output and "already exists" in r.output
    assert "Traceback" not in r.output


def test_the_files_the_target_reads_ship_in_the_package() -> None:
    """Stacks and the sample app's Dockerfile are package data (checked by hand: a wheel of this tree holds
    mesh/targets/kubernetes/stacks/*.yaml and sampleapp.Dockerfile, and `resolve`/`image.prepare` run from it)."""
    import fnmatch
    import tomllib

    from mesh.targets.kubernetes import image

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mesh"]
    package = ROOT / "mesh"
    needed = [*STACKS.glob("Pulumi.*.yaml"), image.DOCKERFILE]
    assert len(needed) == 5
    for path in needed:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"
    for name, src in image.context_files().items():
        assert src.is_relative_to(package), f"{name} comes from outside the package: {src}"
