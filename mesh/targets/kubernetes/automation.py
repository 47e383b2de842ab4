"""`mesh up|down --target kubernetes`: the Pulumi program through the Automation API, one stack per environment.

The Python Automation API does not honour `stackConfigDir` (pulumi/pulumi#10305), so the stack's settings are read
from stacks/Pulumi.<stack>.yaml here and set on the stack before every operation.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.errors import TargetError
from mesh.targets.kubernetes.settings import NAMESPACE, load_stack_file

ROOT = Path(__file__).resolve().parents[3]

TOOLS = {
    "pulumi": "install the Pulumi CLI: https://www.pulumi.com/docs/install/ (curl -fsSL https://get.pulumi.com | sh)",
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (go install sigs.k8s.io/kind@latest)",
    "docker": "install and start Docker: https://docs.docker.com/engine/install/",
}


def missing_tools(which: Callable[[str], str | None] = shutil.which) -> dict[str, str]:
    return {tool: hint for tool, hint in TOOLS.items() if which(tool) is None}


def check_tools(which: Callable[[str], str | None] = shutil.which) -> None:
    missing = missing_tools(which)
    if missing:
        raise TargetError(
            f"the kubernetes target needs {', '.join(sorted(missing))} on PATH",
            hint="; ".join(missing[t] for t in sorted(missing)),
        )


def stack_settings(stack: str, root: Path = ROOT) -> dict[str, str]:
    path = root / "stacks" / f"Pulumi.{stack}.yaml"
    if not path.exists():
        names = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (root / "stacks").glob("Pulumi.*.yaml")
        )
        raise TargetError(f"no stack settings at {path}", hint=f"stacks: {', '.join(names)}")
    return load_stack_file(path)


def _stack(stack: str, progress: Callable[[str], None]) -> Any:
    check_tools()
    from pulumi import automation as auto

    env = {
        "PULUMI_BACKEND_URL": os.environ.get("PULUMI_BACKEND_URL", f"file://{Path.home() / '.pulumi-meshops'}"),
        "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
    }
    (Path.home() / ".pulumi-meshops").mkdir(exist_ok=True)
    ws = auto.LocalWorkspaceOptions(work_dir=str(ROOT), env_vars=env)
    st = auto.create_or_select_stack(stack_name=stack, work_dir=str(ROOT), opts=ws)
    settings = stack_settings(stack)
    progress(f"stack {stack}: {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}")
    st.set_all_config({f"{NAMESPACE}:{k}": auto.ConfigValue(value=v) for k, v in settings.items()})
    return st


def up(stack: str, progress: Callable[[str], None] = print) -> dict[str, Any]:
    st = _stack(stack, progress)
    progress("pulumi up: kind cluster -> Istio (base, istiod, gateway) -> workloads -> policies (several minutes)")
    res = st.up(on_output=lambda line: progress("  " + line.rstrip()), color="never")
    outputs = {k: v.value for k, v in res.outputs.items() if k != "kubeconfig"}
    progress(
        f"✔ {res.summary.result}: ingress at {outputs.get('ingress_url')}, policies {outputs.get('policy_revision')}"
    )
    return outputs


def down(stack: str, progress: Callable[[str], None] = print) -> None:
    st = _stack(stack, progress)
    progress("pulumi destroy: policies, workloads, Istio and the kind cluster")
    st.destroy(on_output=lambda line: progress("  " + line.rstrip()), color="never")
    progress("✔ destroyed")
