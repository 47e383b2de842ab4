"""Policy commands: render, analyze, import."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from mesh.cli import cli
from mesh.cli.options import env_option, file_option, policies_option
from mesh.errors import EXIT_ANALYSIS, EXIT_NO_ROUTE

# The typed model, compiler and analyzers load inside the commands, so `mesh --help` never pays for them.
if TYPE_CHECKING:
    from mesh import analyze as analysis
    from mesh.api.config import MeshConfig


def load_config(env: str, policies: str, file: str | None) -> MeshConfig:
    """Typed policies by default; imported YAML with -f (`-` reads stdin)."""
    from mesh.compile import build_policies, load_file, load_stream

    if file == "-":
        return load_stream(sys.stdin.buffer, "<stdin>")
    if file:
        return load_file(file)
    return build_policies(env, policies)


@cli.command("render")
@env_option
@policies_option
@click.option("--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--istio-only", is_flag=True, help="Only the Istio resources, without Namespaces/Services/Deployments.")
def render_cmd(env: str, policies: str, output: str, istio_only: bool) -> None:
    """Print the Istio (and Kubernetes workload) manifests the policies compile to.

    Output is deterministic: two runs over the same policies are byte-identical, so it diffs cleanly.

    \b
    Example:
      mesh render --env prod -o yaml > prod.yaml
    """
    from mesh.compile import build_policies, dump_json, dump_yaml, render

    manifests = render(build_policies(env, policies), workloads=not istio_only)
    click.echo(dump_yaml(manifests) if output == "yaml" else dump_json(manifests), nl=False)


@cli.command("analyze")
@env_option
@policies_option
@file_option(
    "Analyze this Istio/Kubernetes YAML ('-' for stdin) merged with the environment's policies and workloads: its "
    "objects replace their namesakes, as `istioctl analyze` merges files with the live cluster."
)
@click.option(
    "--isolated",
    is_flag=True,
    help="With -f: analyze the file alone, without the environment's policies and workloads.",
)
@click.option(
    "--target",
    type=click.Choice(["local", "kubernetes", "none"]),
    default="none",
    show_default=True,
    help="Also check that every field is supported by this target.",
)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def analyze_cmd(env: str, policies: str, file: str | None, isolated: bool, target: str, output: str) -> None:
    """Check policies before they are applied (like `istioctl analyze`, and more).

    Reports dangling references, unreachable rules, weight totals, mTLS conflicts, subsets that select
    nothing and fields the target does not support. Exits 79 when any finding is an Error.

    With -f, `Pod` objects count as workloads (gateway selectors, subsets) and `Secret` objects as the
    credentials Gateways may name.

    \b
    Examples:
      mesh analyze --env dev
      mesh analyze -f samples/bookinfo/networking/virtual-service-all-v1.yaml -o json
      mesh analyze -f whole-cluster.yaml --isolated
    """
    from mesh import analyze as analysis

    config, inventory = analysis_input(env, policies, file, isolated)
    caps = None
    if target != "none":
        from mesh.targets import capabilities

        caps = capabilities(target)
    findings = analysis.analyze(config, caps, inventory)
    if output == "json":
        click.echo(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for f in findings:
            color = {"Error": "red", "Warning": "yellow", "Info": None}[f.level]
            click.secho(str(f), fg=color)
        n_err = len(analysis.errors(findings))
        summary = f"{len(findings)} finding(s), {n_err} error(s)" if findings else "✔ No validation issues found"
        click.echo(summary, err=True)
    if analysis.errors(findings):
        sys.exit(EXIT_ANALYSIS)


def analysis_input(env: str, policies: str, file: str | None, isolated: bool) -> tuple[MeshConfig, analysis.Inventory]:
    """The config to analyze and what else exists: the file over the environment (or alone), its Pods and Secrets."""
    from mesh import analyze as analysis
    from mesh.compile import Observed, build_policies, load_file, load_stream

    if not file:
        return build_policies(env, policies), analysis.Inventory()
    observed = Observed()
    if file == "-":
        top = load_stream(sys.stdin.buffer, "<stdin>", observed=observed)
    else:
        top = load_file(file, observed=observed)
    config = top if isolated else overlay(build_policies(env, policies), top)
    pods = tuple(analysis.Workload(ns, labels) for ns, labels in observed.pods)
    inventory = analysis.Inventory(
        workloads=analysis.Inventory().workloads + pods, credentials=frozenset(observed.secrets) or None
    )
    return config, inventory


def overlay(base: MeshConfig, top: MeshConfig) -> MeshConfig:
    """`base` with `top`'s objects added, each replacing its namesake (same kind, namespace and name; services by
    FQDN)."""
    from mesh.api.config import MeshConfig

    keys = {r.key for r in top.resources}
    fqdns = {s.fqdn for s in top.services}
    return MeshConfig(
        services=[s for s in base.services if s.fqdn not in fqdns] + top.services,
        resources=[r for r in base.resources if r.key not in keys] + top.resources,
    )


@cli.command("import")
@file_option("Istio/Kubernetes YAML to import ('-' for stdin).")
@click.option("--namespace", "-n", default="default", show_default=True, help="Namespace for objects that name none.")
def import_cmd(file: str | None, namespace: str) -> None:
    """Turn existing Istio YAML into typed Python policies (printed to stdout).

    Accepts Gateway, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy (any served
    apiVersion) and Kubernetes Services/Deployments, which become typed workloads. Unknown kinds or fields
    are errors naming the file, line and field.

    \b
    Example (a new package beside the shipped policies/, never over it):
      mkdir imported && mesh import -f bookinfo-gateway.yaml > imported/__init__.py
      mesh render --policies imported
    """
    if not file:
        raise click.UsageError("say which file to import: mesh import -f FILE (or -f - for stdin)")
    from mesh.compile import to_python

    config = load_config("", "", file)
    click.echo(to_python(config, origin=file if file != "-" else "stdin"), nl=False)


@cli.command("simulate")
@env_option
@policies_option
@click.option(
    "--from",
    "source",
    default="gateway",
    show_default=True,
    help="Where the request starts: `gateway` (the ingress) or a pod such as reviews-v2-0 (or reviews-v2-0.default).",
)
@click.option("--header", "-H", "headers", multiple=True, help="Request header NAME:VALUE (repeatable).")
@click.option("--method", "-X", default="GET", show_default=True)
@file_option("Simulate the environment's policies with this Istio YAML applied on top (as `mesh apply -f` would).")
@click.option(
    "--state-dir",
    default=".meshops",
    show_default=True,
    envvar="MESH_STATE_DIR",
    help="Where a running local mesh keeps its state: its live config is simulated unless --env is given.",
)
@click.argument("url")
def simulate_cmd(
    env: str,
    policies: str,
    source: str,
    headers: tuple[str, ...],
    method: str,
    file: str | None,
    state_dir: str,
    url: str,
) -> None:
    """Which route and cluster a request would hit — answered offline from the translated config, no Envoy needed
    (like Istio's pilot simulation).

    \b
    Examples:
      mesh simulate http://bookinfo.local/productpage
      mesh simulate --from productpage-v1-0 -H end-user:jason http://reviews:9080/reviews
      mesh simulate -f canary-90.yaml --from productpage.default http://reviews:9080/reviews

    When a local mesh runs, its live config is simulated (the first line says which revision); --env forces the
    environment's policies instead.
    """
    from mesh.api.config import MeshConfig
    from mesh.controlplane.simulate import explain, simulate

    explicit = click.get_current_context().get_parameter_source("env") is click.core.ParameterSource.COMMANDLINE
    config, origin = simulated_config(env, policies, state_dir, explicit)
    click.echo(f"config: {origin}", err=True)
    if file:  # kubectl-apply semantics: the file's objects replace their namesakes
        extra = load_config(env, policies, file)
        keys = {r.key for r in extra.resources}
        config = MeshConfig(
            services=config.services, resources=[r for r in config.resources if r.key not in keys] + extra.resources
        )
    sim = simulate(config, source, url, dict(h.split(":", 1) for h in headers), method)
    for line in explain(sim):
        click.echo(line)
    if sim.hit is None:
        sys.exit(EXIT_NO_ROUTE)


def simulated_config(env: str, policies: str, state_dir: str, forced: bool) -> tuple[MeshConfig, str]:
    """The running local mesh's config when one runs (what its proxies serve), else the environment's policies."""
    from pathlib import Path

    from mesh.compile import build_policies
    from mesh.errors import MeshNotRunning

    if not forced and Path(state_dir, "state.json").exists():
        from mesh.targets.local import LocalOptions, LocalTarget

        target = LocalTarget(LocalOptions(state_dir=Path(state_dir)))
        try:
            revision = target.describe().revision
            return target.live_config(), f"live mesh revision {revision}"
        except MeshNotRunning:
            pass  # a state file left by a mesh that is gone: the environment is what there is
    return build_policies(env, policies), f"environment {env} from {policies.rstrip('/')}/"
