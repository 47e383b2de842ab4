"""`mesh up --target kubernetes` without the tools it needs: a clear error naming each and how to install it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mesh.errors import TargetError
from mesh.targets.kubernetes.automation import check_tools, stack_settings
from tests.conftest import ROOT


def test_missing_tools_are_named_with_install_hints() -> None:
    with pytest.raises(TargetError) as e:
        check_tools(which=lambda tool: None if tool in ("kind", "pulumi") else "/usr/bin/" + tool)
    assert "needs kind, pulumi on PATH" in str(e.value)
    assert "https://kind.sigs.k8s.io" in str(e.value) and "https://www.pulumi.com/docs/install/" in str(e.value)


def test_stack_settings_are_read_from_stacks_dir() -> None:
    """The Automation API ignores stackConfigDir (pulumi/pulumi#10305): we read stacks/ ourselves."""
    assert stack_settings("ci")["policyEnv"] == "e2e"
    with pytest.raises(TargetError, match="no stack settings"):
        stack_settings("qa")


def test_cli_exit_code_and_message_when_tools_are_missing() -> None:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # the venv only: no pulumi, kind or docker
    r = subprocess.run(
        [sys.executable, "-m", "mesh", "up", "--target", "kubernetes", "--env", "dev"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 69
    assert "the kubernetes target needs" in r.stderr and "Traceback" not in r.stderr
