"""`mesh up|down --target kubernetes`: the Pulumi program through the Automation API, one stack per environment.

The program runs inline (in this process), so it works from an installed package: no Pulumi.yaml or source checkout
is needed. Stack settings come from the package's `stacks/Pulumi.<stack>.yaml` (or MESH_STACKS_DIR) and are handed
to the program directly; Pulumi's workspace and the default file backend live under MESH_PULUMI_HOME
(~/.pulumi-meshops), so a run never changes a tracked file. Everything that can be checked before Pulumi starts
(the stack's cluster, the tools, the policies' analysis) is checked first, so a misconfigured stack creates nothing.
Pulumi's failures become DeploymentFailed (exit 69) naming each failing resource and its message.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mesh import analyze as analysis
from mesh.compile import build_policies
from mesh.compile.policies import DEFAULT_POLICIES
from mesh.errors import DeploymentFailed, TargetError
from mesh.targets import capabilities
from mesh.targets.kubernetes.settings import StackSettings, load_stack_file, stacks_dir, state_home

PROJECT = "meshops"
PLUGINS = {"kubernetes": "pulumi_kubernetes", "command": "pulumi_command"}  # provider plugin -> its Python SDK
KUBECONFIG_ENV = "MESH_CLUSTER_KUBECONFIG"

TOOLS = {
    "pulumi": "install the Pulumi CLI: https://www.pulumi.com/docs/install/ (curl -fsSL https://get.pulumi.com | sh)",
    "kind": "install kind: https://kind.sigs.k8s.io/docs/user/quick-start/#installation (go install sigs.k8s.io/kind@v0.31.0)",
    "docker": "install and start Docker: https://docs.docker.com/engine/install/",
}


def missing_tools(
    which: Callable[[str], str | None] | None = None, *, needs: tuple[str, ...] = tuple(TOOLS)
) -> dict[str, str]:
    find = which or shutil.which
    return {tool: TOOLS[tool] for tool in needs if find(tool) is None}


def check_tools(which: Callable[[str], str | None] | None = None, *, needs: tuple[str, ...] = tuple(TOOLS)) -> None:
    missing = missing_tools(which, needs=needs)
    if missing:
        raise TargetError(
            f"the kubernetes target needs {', '.join(sorted(missing))} on PATH",
            hint="; ".join(missing[t] for t in sorted(missing)),
        )


def stack_settings(stack: str, root: Path | None = None) -> dict[str, str]:
    """The raw settings of a stack file in `root` (default: MESH_STACKS_DIR or the packaged stacks)."""
    root = root or stacks_dir()
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        names = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in root.glob("Pulumi.*.yaml"))
        raise TargetError(f"no stack settings at {path}", hint=f"stacks: {', '.join(names)} (or set MESH_STACKS_DIR)")
    return load_stack_file(path)


def resolve(stack: str, root: Path | None = None, environ: dict[str, str] | None = None) -> StackSettings:
    """The stack's typed settings, its cluster named: an ephemeral stack may create kind, any other needs the
    kubeconfig of an existing cluster (MESH_CLUSTER_KUBECONFIG, or meshops:kubeconfigFile in its stack file)."""
    env = os.environ if environ is None else environ
    raw = stack_settings(stack, root)
    if env.get(KUBECONFIG_ENV):
        raw["kubeconfigFile"] = env[KUBECONFIG_ENV]
    try:
        s = StackSettings.from_mapping(raw.get)
    except ValueError as e:
        raise TargetError(f"stack {stack}: {e}") from None
    if s.kubeconfig_file:
        path = Path(s.kubeconfig_file).expanduser()
        if not path.is_file():
            raise TargetError(
                f"stack {stack}: the kubeconfig file {path} does not exist",
                hint=f"point {KUBECONFIG_ENV} (or meshops:kubeconfigFile) at the cluster's kubeconfig",
            )
        return StackSettings.from_mapping({**raw, "kubeconfig": path.read_text()}.get)
    if not s.ephemeral:
        raise TargetError(
            f"stack {stack} deploys to an existing cluster but names none; nothing was created",
            hint=f"set {KUBECONFIG_ENV}=/path/to/kubeconfig (or meshops:kubeconfigFile in Pulumi.{stack}.yaml); "
            "only ephemeral stacks (meshops:ephemeral: true, e.g. dev and ci) create a kind cluster",
        )
    return s


def _backend(home: Path) -> str:
    if os.environ.get("PULUMI_BACKEND_URL"):
        return os.environ["PULUMI_BACKEND_URL"]
    (home / "state").mkdir(parents=True, exist_ok=True)
    return f"file://{home / 'state'}"


def _stack(stack: str, settings: StackSettings, policies: Path, progress: Callable[[str], None]) -> Any:
    from pulumi import automation as auto

    from mesh.targets.kubernetes.program import program

    home = state_home()
    workspace = home / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    env = {
        "PULUMI_BACKEND_URL": _backend(home),
        "PULUMI_CONFIG_PASSPHRASE": os.environ.get("PULUMI_CONFIG_PASSPHRASE", ""),
    }
    opts = auto.LocalWorkspaceOptions(
        work_dir=str(workspace),
        env_vars=env,
        project_settings=auto.ProjectSettings(name=PROJECT, runtime="python"),
    )
    progress(f"stack {stack}: cluster {settings.cluster_name} ({_cluster(settings)}), policies {settings.policy_env}")

    def run() -> None:
        program(settings, policies, home)

    st = auto.create_or_select_stack(stack_name=stack, project_name=PROJECT, program=run, opts=opts)
    for plugin, package in PLUGINS.items():  # an inline program declares no plugins: install the SDKs' own
        st.workspace.install_plugin(plugin, f"v{version(package)}")
    return st


def _cluster(s: StackSettings) -> str:
    return "kind, created here" if s.creates_cluster else f"existing, kubeconfig {s.kubeconfig_file}"


def _prepare(stack: str, policies: str | os.PathLike[str]) -> tuple[StackSettings, Path]:
    """Everything that can fail before Pulumi runs: the stack's cluster, the tools, the policies' analysis."""
    s = resolve(stack)
    check_tools(needs=("pulumi", "kind", "docker") if s.creates_cluster else ("pulumi",))
    path = Path(policies).resolve()
    analysis.check(build_policies(s.policy_env, path), capabilities("kubernetes"))
    return s, path


def up(
    stack: str, progress: Callable[[str], None] = print, *, policies: str | os.PathLike[str] = DEFAULT_POLICIES
) -> dict[str, Any]:
    s, path = _prepare(stack, policies)
    with pulumi_errors("up", stack):
        st = _stack(stack, s, path, progress)
        progress("pulumi up: kind cluster -> Istio (base, istiod, gateway) -> workloads -> policies (several minutes)")
        res = st.up(on_output=lambda line: progress("  " + line.rstrip()), color="never")
    outputs = {k: v.value for k, v in res.outputs.items() if k != "kubeconfig"}
    progress(
        f"✔ {res.summary.result}: ingress at {outputs.get('ingress_url')}, policies {outputs.get('policy_revision')}"
    )
    return outputs


def down(
    stack: str, progress: Callable[[str], None] = print, *, policies: str | os.PathLike[str] = DEFAULT_POLICIES
) -> None:
    s = resolve(stack)
    check_tools(needs=("pulumi", "kind") if s.creates_cluster else ("pulumi",))
    with pulumi_errors("destroy", stack):
        st = _stack(stack, s, Path(policies).resolve(), progress)
        progress("pulumi destroy: policies, workloads, Istio and the kind cluster")
        st.destroy(on_output=lambda line: progress("  " + line.rstrip()), color="never")
    progress("✔ destroyed")


def preview(
    stack: str, progress: Callable[[str], None] = print, *, policies: str | os.PathLike[str] = DEFAULT_POLICIES
) -> str:
    """`pulumi preview --diff`: what `up` would change (deploy.yml writes it to the job summary)."""
    s, path = _prepare(stack, policies)
    with pulumi_errors("preview", stack):
        st = _stack(stack, s, path, progress)
        res = st.preview(diff=True, color="never")
    return str(res.stdout)


def output(stack: str, name: str, progress: Callable[[str], None] = print) -> str:
    """One stack output, secrets in clear (e.g. the kubeconfig the e2e suite uses)."""
    s = resolve(stack)
    check_tools(needs=("pulumi",))
    with pulumi_errors("stack output", stack):
        outputs = _stack(stack, s, Path(DEFAULT_POLICIES).resolve(), progress).outputs()
    if name not in outputs:
        raise TargetError(f"stack {stack} has no output {name!r}", hint=f"outputs: {', '.join(sorted(outputs))}")
    return str(outputs[name].value)


# --- Pulumi's errors as ours ---------------------------------------------------------------------------------

# In Pulumi's "Diagnostics:" section: "  <type> (<name>):" then the resource's messages, indented further.
_DIAGNOSTIC = re.compile(
    r"^ {2}(?P<type>[\w.-]+:[\w./-]*:[\w.-]+) \((?P<name>[^)]+)\):\n(?P<body>(?: {4,}.*\n?)+)", re.M
)


def failures(output: str) -> list[tuple[str, str, str]]:
    """(type, name, message) of each resource whose diagnostics hold an error; the stack's own summary line
    ("update failed") only when no resource is named."""
    found = []
    for m in _DIAGNOSTIC.finditer(output):
        body = " ".join(line.strip() for line in m["body"].splitlines())
        if "error:" in body:
            found.append((m["type"], m["name"], body.split("error:", 1)[1].strip()))
    named = [f for f in found if f[0] != "pulumi:pulumi:Stack"]
    return named or found


@contextmanager
def pulumi_errors(operation: str, stack: str) -> Iterator[None]:
    """Automation API exceptions -> DeploymentFailed naming the failing resources (no traceback, exit 69)."""
    from pulumi import automation as auto

    again = f"mesh {'down' if operation == 'destroy' else 'up'} --target kubernetes --env {stack}"
    try:
        yield
    except auto.ConcurrentUpdateError as e:
        raise DeploymentFailed(
            f"pulumi {operation} (stack {stack}): the stack is locked by another update",
            failures(str(e)),
            hint=f"wait for it; if it died, `pulumi cancel --stack {stack}` in {state_home() / 'workspace'}, then {again}",
        ) from None
    except auto.CommandError as e:
        found = failures(str(e))
        first = str(e).strip().splitlines()[-1] if not found and str(e).strip() else ""
        raise DeploymentFailed(
            f"pulumi {operation} (stack {stack}) failed{': ' + first if first else ''}",
            found,
            hint=f"fix what the resource(s) above report, then `{again}`; MESH_DEBUG=1 shows Pulumi's full output",
        ) from None
