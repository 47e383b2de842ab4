"""Mesh commands: up, down, status, apply, proxy-status, proxy-config."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mesh.cli import cli
from mesh.cli.options import env_option, file_option, policies_option
from mesh.cli.tables import table
from mesh.errors import MeshNotRunning, UsageError

if TYPE_CHECKING:
    from mesh.api.config import MeshConfig
    from mesh.targets.base import ChangeModel, Target, TargetStatus
    from mesh.targets.local.api import MeshDescription

STATE_DIR_HELP = "Where the running mesh keeps its state and logs. Env: MESH_STATE_DIR."


def state_dir_option(f: Any) -> Any:
    return click.option(
        "--state-dir",
        default=".meshops",
        show_default=True,
        envvar="MESH_STATE_DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help=STATE_DIR_HELP,
    )(f)


def _say(msg: str) -> None:
    click.echo(msg, err=True)


TARGET_HELP = "local: real Envoy on this machine. kubernetes: kind + Istio via Pulumi (needs docker, kind, pulumi)."


def target_option(f: Any) -> Any:
    return click.option(
        "--target",
        "target_name",
        type=click.Choice(["local", "kubernetes"]),
        default="local",
        show_default=True,
        envvar="MESH_TARGET",
        help=TARGET_HELP,
    )(f)


def _target(name: str, env: str, state_dir: Path, policies: str = "policies", **local: Any) -> Target:
    """The Target for --target, through the one registry (no command branches on the target's name)."""
    from mesh.targets.local.options import LocalOptions
    from mesh.targets.registry import TargetSettings, create

    detach = bool(local.pop("detach", True))
    options = LocalOptions(state_dir=state_dir, **local)
    return create(name, TargetSettings(env=env, policies=policies, detach=detach, local=options))


@cli.command("up")
@env_option
@policies_option
@target_option
@click.option("--detach", "-d", is_flag=True, help="Run in the background; stop it with `mesh down`.")
@click.option(
    "--ingress-port",
    default=8080,
    show_default=True,
    envvar="MESH_INGRESS_PORT",
    help="Host port for the gateway's port 80.",
)
@click.option(
    "--ingress-https-port",
    default=8443,
    show_default=True,
    envvar="MESH_INGRESS_HTTPS_PORT",
    help="Host port for the gateway's port 443 (HTTPS servers).",
)
@click.option("--ingress-host", default="127.0.0.1", show_default=True, help="Host address the ingress listens on.")
@click.option(
    "--log-level",
    "envoy_log_level",
    default="warning",
    show_default=True,
    type=click.Choice(["trace", "debug", "info", "warning", "error"]),
    help="Envoy log level (logs under STATE_DIR/run).",
)
@click.option(
    "--interception",
    default="proxy",
    show_default=True,
    type=click.Choice(["auto", "proxy", "iptables"]),
    help="How apps reach their sidecars: HTTP_PROXY (proxy), Istio's transparent capture with a network namespace "
    "per pod (iptables; root), or auto (iptables where possible). `mesh up` prints which it chose and why.",
)
@click.option(
    "--outbound-traffic-policy",
    default="ALLOW_ANY",
    show_default=True,
    type=click.Choice(["ALLOW_ANY", "REGISTRY_ONLY"]),
    help="meshConfig.outboundTrafficPolicy (iptables mode): where a pod's connection to a destination the mesh does "
    "not know goes: passed through (ALLOW_ANY) or blocked (REGISTRY_ONLY; ServiceEntries add what may be reached).",
)
@click.option(
    "--dns-proxy/--no-dns-proxy",
    default=False,
    show_default=True,
    help="Istio's DNS proxying (iptables mode; ISTIO_META_DNS_CAPTURE): each sidecar answers its pod's DNS with "
    "service VIPs and ServiceEntry hosts, instead of per-pod hosts files.",
)
@click.option(
    "--dns-auto-allocate/--no-dns-auto-allocate",
    default=True,
    show_default=True,
    help="With --dns-proxy: ServiceEntries without addresses get one from 240.240.0.0/16 "
    "(ISTIO_META_DNS_AUTO_ALLOCATE).",
)
@click.option(
    "--h2-upgrade-policy",
    default="DO_NOT_UPGRADE",
    show_default=True,
    type=click.Choice(["DO_NOT_UPGRADE", "UPGRADE"]),
    help="meshConfig.h2UpgradePolicy: UPGRADE carries HTTP/1.1 ports between sidecars over HTTP/2 (a DestinationRule's "
    "connectionPool.http.h2UpgradePolicy overrides it per service).",
)
@click.option("--access-log", is_flag=True, help="Every proxy logs each request (see them with `mesh logs`).")
@click.option(
    "--observability",
    is_flag=True,
    help="Istio's metrics in a real Prometheus, traces from every proxy (`mesh traces`, `mesh dashboard`).",
)
@click.option(
    "--trace-sampling", default=100.0, show_default=True, help="Percent of requests traced (--observability)."
)
@click.option(
    "--gateway-replicas", default=1, show_default=True, type=click.IntRange(1, 16), help="Ingress gateway Envoys."
)
@click.option(
    "--edge",
    type=click.Choice(["haproxy"]),
    default=None,
    help="An HAProxy edge on the ingress port in front of the gateway replicas (the policies' Edge, or plain HTTP).",
)
@click.option(
    "--stats-flush-interval",
    default="5s",
    show_default=True,
    help="How often every Envoy merges its histograms (a Go duration): a Rollout step reads its canary's p99 after "
    "the next flush, so a shorter interval makes steps quicker.",
)
@click.option(
    "--workload-cert-ttl",
    default="24h",
    show_default=True,
    help="Lifetime of workload certificates (a Go duration); each is renewed at half its life.",
)
@click.option(
    "--ca-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A plug-in CA: a directory with Istio's cacerts files (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).",
)
@state_dir_option
def up_cmd(env: str, policies: str, target_name: str, state_dir: Path, **local: Any) -> None:
    """Bring up a mesh running the policies: the sample app, a sidecar Envoy per pod, an ingress gateway.

    Runs in the foreground until Ctrl-C (everything it started stops with it), or with --detach in the
    background. Prints where to send traffic.

    \b
    Examples:
      mesh up                      # dev policies, ingress on 127.0.0.1:8080
      mesh up --env prod -d        # in the background; `mesh status`, `mesh down`
      curl -H 'Host: bookinfo.local' http://127.0.0.1:8080/productpage
    """
    from mesh.dataplane import zygote

    if target_name == "local" and not local["detach"]:  # the sample apps' parent imports while we do (this process)
        zygote.prestart(state_dir / "zygote.log")
    try:
        _up(env, policies, target_name, state_dir, **local)
    finally:
        zygote.discard()  # unless the mesh adopted it


def _up(env: str, policies: str, target_name: str, state_dir: Path, **local: Any) -> None:
    from mesh.compile import build_policies

    # every option not named above is a LocalOptions field: the detached mesh gets them as one typed model
    local["workload_cert_ttl"] = _seconds(local["workload_cert_ttl"])
    local["stats_flush_interval"] = _seconds(local["stats_flush_interval"], "--stats-flush-interval")
    local["observability"] = _observability(local.pop("observability"), local.pop("trace_sampling"))
    target = _target(target_name, env, state_dir, policies, **local)
    policy_env = getattr(target, "policy_env", None)  # a Kubernetes stack names the environment it deploys
    config = build_policies(policy_env() if policy_env else env, policies)
    _say(
        f"meshops: {target.name} mesh for environment {env!r} ({len(config.services)} services, {len(config.resources)} policies)"
    )
    foreground = bool(getattr(target, "foreground", False))
    stop = threading.Event()
    if foreground:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    status = target.up(config, progress=lambda m: _say(f"  {m}"))
    _say_elapsed()
    try:
        _print_ready(target, status, config)
        if not foreground:
            click.echo("\nstop it with: mesh down")
            return
        _say("\nPress Ctrl-C to stop.")
        stop.wait()
        _say("stopping the mesh ...")
    finally:
        if foreground:
            target.down()
            _say("stopped; no process left behind.")


def _say_elapsed() -> None:
    """The user's clock: from the command's exec (interpreter start and imports included) to a mesh that serves."""
    import os

    from mesh.dataplane.procs import process_age

    age = process_age(os.getpid())
    if age is not None:
        _say(f"  up {age:.2f}s after `mesh up` started")


def _seconds(duration: str, option: str = "--workload-cert-ttl") -> float:
    from mesh.api._base import parse_duration

    try:
        return parse_duration(duration)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=f"'{option}'") from None


def _observability(enabled: bool, sampling: float) -> Any:
    if not enabled:
        return None
    from mesh.observability.options import ObservabilityOptions

    return ObservabilityOptions(sampling=sampling)


def _print_ready(target: Target, status: TargetStatus, config: MeshConfig) -> None:
    url = status.ingress_url or ""
    hosts = sorted({h for g in config.gateways for s in g.servers for h in s.hosts})
    host = next((h for h in hosts if h not in ("*", "localhost")), None)
    click.echo(f"\n✔ mesh is up — ingress at {url}")
    if host:
        click.echo(f"  curl -H 'Host: {host}' {url}/productpage")
    if "localhost" in hosts:
        click.echo(f"  curl {url.replace('127.0.0.1', 'localhost')}/productpage")
    describe = getattr(target, "describe", None)
    if describe is None:  # only the local target has pods on this machine to list
        return
    desc: MeshDescription = describe()
    if desc.observability:
        click.echo(f"  metrics: Prometheus at {desc.observability.prometheus}; `mesh traces`; `mesh dashboard`")
    https = sorted({h for g in config.gateways for s in g.servers if s.tls and s.tls.mode for h in s.hosts} - {"*"})
    if https and desc.ingress_https:
        hp = desc.ingress_https.rsplit(":", 1)
        click.echo(
            f"  curl --cacert {desc.ca} --resolve {https[0]}:{hp[1]}:{hp[0].split('//')[1]} "
            f"https://{https[0]}:{hp[1]}/productpage"
        )
    rows = [[p.name, p.service, p.version, p.ip] for p in desc.pods]
    click.echo("\n" + table(["POD", "SERVICE", "VERSION", "POD IP"], rows))


@cli.command("down")
@target_option
@env_option
@state_dir_option
@click.option(
    "--force", is_flag=True, help="Also when the state file is damaged: stop what it provably names, remove it."
)
def down_cmd(target_name: str, env: str, state_dir: Path, force: bool) -> None:
    """Stop the mesh started with `mesh up --detach` (every Envoy and app with it).

    Nothing running is not an error: it says so and exits 0.

    \b
    Example:
      mesh down
      mesh down --force     # the state file is damaged
    """
    target = _target(target_name, env, state_dir)
    force_down = getattr(target, "force_down", None)
    if force and force_down is not None:
        click.echo(f"✔ {force_down()}")
        return
    st = target.status()  # a damaged state file raises here (exit 69), naming `--force`
    if not st.running:
        click.echo(f"nothing to stop: {(st.detail or f'the {target.name} mesh is not running').splitlines()[0]}")
    else:
        target.down()
        click.echo(f"✔ {target.name} mesh stopped")
    leftovers = getattr(target, "remove_leftovers", None)  # what a killed local mesh left (iptables mode)
    removed = leftovers() if leftovers is not None else []
    if removed:
        click.echo(f"✔ removed the pod network of {len(removed)} killed mesh(es): {', '.join(removed)}")


@cli.command("status")
@target_option
@env_option
@state_dir_option
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_cmd(target_name: str, env: str, state_dir: Path, output: str) -> None:
    """Show the running mesh: ingress URL, revision, and (locally) its processes and restarts.

    \b
    Example:
      mesh status -o json
    """
    from mesh.cli.localstatus import StatusClient, render

    if target_name == "local":  # read without loading the mesh's modules: `mesh status` answers instantly
        client = StatusClient(state_dir)
        desc = client.describe()
        render(desc.get("ingress"), desc.get("revision"), desc, client.proxy_errors(), output, click.echo)
        return
    target = _target(target_name, env, state_dir)
    st = target.status()
    if not st.running:
        raise MeshNotRunning(st.detail or f"the {target.name} mesh is not running", hint="start it with `mesh up`")
    errors = [(p.proxy, what, err) for p in target.proxy_status() for what, err in p.errors.items()]
    render(st.ingress_url, st.revision, st.model_dump(mode="json"), errors, output, click.echo)


@cli.command("apply")
@env_option
@policies_option
@target_option
@file_option("Apply this Istio YAML instead of the typed policies ('-' for stdin).")
@click.option("--no-analyze", is_flag=True, help="Skip analysis (Envoy may then reject the push; it is rolled back).")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for every proxy to ACK.")
@click.option("--dry-run", is_flag=True, help="Show what would change and what analysis says; push nothing.")
@click.option(
    "--base-revision",
    type=int,
    default=None,
    help="Apply only if the mesh still runs this revision (`mesh status`); otherwise exit 75 and change nothing.",
)
@state_dir_option
def apply_cmd(
    env: str,
    policies: str,
    target_name: str,
    file: str | None,
    no_analyze: bool,
    wait: float,
    dry_run: bool,
    base_revision: int | None,
    state_dir: Path,
) -> None:
    """Push policies to the running mesh and report every proxy's ACK or NACK.

    With --env the policies replace the whole running set (declarative, as git would have it); with -f the
    objects in the file replace their namesakes and everything else stays (like `kubectl apply -f`).
    Analysis runs first (errors block, nothing is applied; warnings are printed with file:line). If any Envoy
    rejects the push, or does not confirm it within --wait, every proxy is rolled back to the previous config and the
    command exits 76. Applies are serialized; --base-revision makes one conditional on the revision it was computed
    against (exit 75 if the mesh moved on). An apply that changes nothing keeps the revision. Workload changes
    (services, versions, replicas) are refused (exit 69): they need `mesh up`.

    \b
    Examples:
      mesh apply --env prod --dry-run    # the diff and the analysis, nothing pushed
      mesh apply --env prod
      mesh apply -f canary-50.yaml
    """
    from mesh.cli.commands import load_config

    target = _target(target_name, env, state_dir, policies)
    config = load_config(env, policies, file)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"analyze": False} if no_analyze else {}
    if base_revision is not None:
        kwargs["base_revision"] = base_revision
    res = target.apply(config, dry_run=dry_run, prune=not file, wait=wait, **kwargs)
    _print_diff(res.diff)
    for f in res.findings:
        click.echo(f"{f.level} [{f.code}] ({f.resource}{' ' + f.source if f.source else ''}) {f.path}: {f.message}")
    if dry_run:
        click.echo(f"dry run: {len(res.diff)} change(s), analysis clean of errors; nothing was pushed")
        return
    if not res.diff:
        click.echo(f"✔ nothing to apply: revision {res.revision} keeps serving")
        return
    took = (time.perf_counter() - t0) * 1000
    rows = [[n.split("~")[2] if n.count("~") >= 2 else n, s] for n, s in res.proxies.items()]
    if rows:
        click.echo(table(["PROXY", "STATE"], rows))
    click.echo(
        f"✔ revision {res.revision} applied: {len(res.changed_proxies)} proxy(ies) changed, all ACKed "
        f"(translate {res.translate_ms} ms, push+ACK {res.sync_ms} ms, total {took:.0f} ms)"
    )


def _print_diff(changes: list[ChangeModel]) -> None:
    if not changes:
        click.echo("no changes to the running policies")
    for c in changes:
        color = {"+": "green", "-": "red", "~": "yellow"}[c.op]
        click.secho(f"{c.op} {c.ref}", fg=color)
        for line in c.patch.splitlines()[2:]:
            click.echo(f"    {line}")


@cli.command("proxy-status")
@target_option
@env_option
@state_dir_option
def proxy_status_cmd(target_name: str, env: str, state_dir: Path) -> None:
    """Each proxy's sync state with the control plane (SYNCED, STALE, NACK), like `istioctl proxy-status`.

    \b
    Example:
      mesh proxy-status
    """
    rows = []
    for p in _target(target_name, env, state_dir).proxy_status():
        v = p.versions
        rows.append([p.proxy, p.kind, p.state, *(v.get(t, "") for t in ("CDS", "LDS", "EDS", "RDS", "SDS"))])
        for t, err in p.errors.items():
            rows.append(["", "", f"  {t} NACK: {err}", "", "", "", "", ""])
    click.echo(table(["NAME", "TYPE", "STATE", "CDS", "LDS", "EDS", "RDS", "SDS"], rows))


@cli.command("proxy-config")
@click.argument("kind", type=click.Choice(["listeners", "routes", "clusters", "endpoints", "secrets", "all"]))
@click.argument("proxy")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_dir_option
def proxy_config_cmd(kind: str, proxy: str, output: str, state_dir: Path) -> None:
    """What one Envoy really runs, read from its admin /config_dump (not from the control plane's memory).

    PROXY is a pod name (reviews-v1-0), NAME.NAMESPACE, or istio-ingressgateway.

    \b
    Examples:
      mesh proxy-config routes istio-ingressgateway
      mesh proxy-config clusters productpage-v1-0 -o json
    """
    from mesh.cli.proxyconfig import show
    from mesh.targets.local.control import read_state

    st = read_state(state_dir)
    match = [p for p in st.proxies if proxy in (p.name, p.name.split(".")[0], p.id)]
    if not match:
        names = ", ".join(p.name for p in st.proxies)
        raise UsageError(f"no proxy {proxy!r} in the running mesh", hint=f"proxies: {names}")
    click.echo(show(kind, match[0].admin, output), nl=False)


@cli.command("logs")
@click.argument("name")
@click.option("--tail", "-n", default=40, show_default=True, help="Lines to show from the end of each log.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@state_dir_option
def logs_cmd(name: str, tail: int, follow: bool, state_dir: Path) -> None:
    """Logs of a pod's app and sidecar (or of one process), from the running mesh.

    NAME is a pod (reviews-v1-0: both its app and its Envoy), a process (envoy/reviews-v1-0, app/reviews-v1-0)
    or istio-ingressgateway. Envoy logs warnings and errors (`mesh up --log-level debug` for more).

    \b
    Examples:
      mesh logs reviews-v1-0
      mesh logs envoy/istio-ingressgateway -f
    """
    from mesh.targets.local.control import read_state

    procs = read_state(state_dir).processes
    chosen = [p for p in procs if name in (p.name, p.name.split("/", 1)[1])]
    if not chosen:
        raise UsageError(f"no process {name!r} in the running mesh", hint="`mesh status` lists them")
    offsets: dict[str, int] = {}
    for p in chosen:
        path = Path(p.log)
        data = path.read_bytes() if path.exists() else b""
        offsets[p.log] = len(data)  # follow from what was read: a line written meanwhile is shown, not skipped
        click.secho(f"==> {p.name} ({path}) <==", bold=True)
        for line in data.decode(errors="replace").splitlines()[-tail:]:
            click.echo(line)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how -f ends: quietly, exit 0
        _follow(offsets, follow)


def _follow(offsets: dict[str, int], follow: bool) -> None:
    while follow:
        time.sleep(0.2)
        for log, offset in offsets.items():
            path = Path(log)
            if path.exists() and path.stat().st_size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offsets[log] = offset + len(chunk)
                for line in chunk.decode(errors="replace").splitlines():
                    click.echo(f"{Path(log).stem}: {line}")
