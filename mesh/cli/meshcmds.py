"""Mesh commands: up, down, status, apply, proxy-status, proxy-config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mesh.cli import cli
from mesh.cli.options import env_option, file_option, policies_option
from mesh.cli.tables import table
from mesh.errors import MeshNotRunning, TargetError

if TYPE_CHECKING:
    from mesh.targets.local import LocalOptions

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


@cli.command("up")
@env_option
@policies_option
@click.option(
    "--target",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    show_default=True,
    help="local: real Envoy on this machine. kubernetes: kind + Istio via Pulumi (needs docker, kind, pulumi).",
)
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
    default="warning",
    show_default=True,
    type=click.Choice(["trace", "debug", "info", "warning", "error"]),
    help="Envoy log level (logs under STATE_DIR/run).",
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
@state_dir_option
def up_cmd(
    env: str,
    policies: str,
    target: str,
    detach: bool,
    ingress_port: int,
    ingress_https_port: int,
    ingress_host: str,
    log_level: str,
    access_log: bool,
    observability: bool,
    trace_sampling: float,
    state_dir: Path,
) -> None:
    """Bring up a mesh running the policies: the sample app, a sidecar Envoy per pod, an ingress gateway.

    Runs in the foreground until Ctrl-C (everything it started stops with it), or with --detach in the
    background. Prints where to send traffic.

    \b
    Examples:
      mesh up                      # dev policies, ingress on 127.0.0.1:8080
      mesh up --env prod -d        # in the background; `mesh status`, `mesh down`
      curl -H 'Host: bookinfo.local' http://127.0.0.1:8080/productpage
    """
    if target == "kubernetes":
        from mesh.targets.kubernetes.automation import up as k8s_up

        k8s_up(env, progress=_say)
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        from mesh.targets.local.control import read_state

        st = read_state(state_dir)
        raise TargetError(
            f"a mesh is already running from {state_dir} (pid {st['pid']}, ingress {st['ingress']})",
            hint="use it, or stop it first with `mesh down`",
        )
    except MeshNotRunning:
        pass
    from mesh.targets.local import LocalOptions

    opts = LocalOptions(
        state_dir=state_dir,
        ingress_host=ingress_host,
        ingress_port=ingress_port,
        ingress_https_port=ingress_https_port,
        envoy_log_level=log_level,
        access_log=access_log,
        observability=_observability(observability, trace_sampling),
    )
    if detach:
        _detach(env, policies, opts)
        return
    _run_foreground(env, policies, opts)


def _observability(enabled: bool, sampling: float) -> Any:
    if not enabled:
        return None
    from mesh.observability.stack import ObservabilityOptions

    return ObservabilityOptions(sampling=sampling)


def _run_foreground(env: str, policies: str, opts: LocalOptions) -> None:
    from mesh.compile import build_policies
    from mesh.targets.local import LocalMesh
    from mesh.targets.local.control import ControlServer, state_path, write_state

    state_dir = opts.state_dir

    config = build_policies(env, policies)
    _say(
        f"meshops: local mesh for environment {env!r} ({len(config.services)} services, {len(config.resources)} policies)"
    )
    mesh = LocalMesh(config, opts, progress=lambda m: _say(f"  {m}"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    mesh.start()
    control = ControlServer(mesh).start()
    try:
        write_state(
            state_dir,
            {
                **mesh.describe(),
                "api": control.url,
                "token": control.token,
                "env": env,
                "policies": str(policies),
                "state_dir": str(state_dir),
            },
        )
        _print_ready(mesh.describe(), config)
        _say("\nPress Ctrl-C to stop.")
        stop.wait()
        _say("stopping the mesh ...")
    finally:
        control.stop()
        mesh.stop()
        state_path(state_dir).unlink(missing_ok=True)
        _say("stopped; no process left behind.")


def _print_ready(desc: dict[str, Any], config: Any) -> None:
    url = desc["ingress"]
    hosts = sorted({h for g in config.gateways for s in g.servers for h in s.hosts})
    host = next((h for h in hosts if h not in ("*", "localhost")), None)
    click.echo(f"\n✔ mesh is up — ingress at {url}")
    if desc.get("observability"):
        click.echo(f"  metrics: Prometheus at {desc['observability']['prometheus']}; `mesh traces`; `mesh dashboard`")
    if host:
        click.echo(f"  curl -H 'Host: {host}' {url}/productpage")
    if "localhost" in hosts:
        click.echo(f"  curl {url.replace('127.0.0.1', 'localhost')}/productpage")
    https = sorted({h for g in config.gateways for s in g.servers if s.tls and s.tls.mode for h in s.hosts} - {"*"})
    if https and desc.get("ingress_https"):
        hp = desc["ingress_https"].rsplit(":", 1)
        click.echo(
            f"  curl --cacert {desc['ca']} --resolve {https[0]}:{hp[1]}:{hp[0].split('//')[1]} "
            f"https://{https[0]}:{hp[1]}/productpage"
        )
    rows = [[p["name"], p["service"], p["version"], p["ip"]] for p in desc["pods"]]
    click.echo("\n" + table(["POD", "SERVICE", "VERSION", "POD IP"], rows))


def _detach(env: str, policies: str, opts: LocalOptions) -> None:
    from mesh.targets.local.control import read_state

    state_dir = opts.state_dir
    log_path = state_dir / "mesh.log"
    argv = [
        sys.executable,
        "-m",
        "mesh",
        "up",
        "--env",
        env,
        "--policies",
        policies,
        "--ingress-port",
        str(opts.ingress_port),
        "--ingress-https-port",
        str(opts.ingress_https_port),
        "--ingress-host",
        opts.ingress_host,
        "--log-level",
        opts.envoy_log_level,
        *(["--access-log"] if opts.access_log else []),
        *(
            ["--observability", "--trace-sampling", str(opts.observability.sampling)]
            if opts.observability is not None
            else []
        ),
        "--state-dir",
        str(state_dir),
    ]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    _say(f"starting the mesh in the background (pid {proc.pid}, log {log_path}) ...")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetError(f"the mesh exited while starting:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            st = read_state(state_dir)
        except MeshNotRunning:
            time.sleep(0.05)
            continue
        if st.get("pid") == proc.pid:
            from mesh.compile import build_policies

            _print_ready(st, build_policies(env, policies))
            click.echo("\nstop it with: mesh down")
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    raise TargetError(f"the mesh did not become ready within 60s; see {log_path}")


@cli.command("down")
@click.option("--target", type=click.Choice(["local", "kubernetes"]), default="local", show_default=True)
@env_option
@state_dir_option
def down_cmd(target: str, env: str, state_dir: Path) -> None:
    """Stop the mesh started with `mesh up --detach` (every Envoy and app with it).

    \b
    Example:
      mesh down
    """
    if target == "kubernetes":
        from mesh.targets.kubernetes.automation import down as k8s_down

        k8s_down(env, progress=_say)
        return
    from mesh.targets.local.control import read_state

    st = read_state(state_dir)
    pid = int(st["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            click.echo(f"✔ mesh (pid {pid}) stopped")
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    click.echo(f"mesh (pid {pid}) did not stop in 15s and was killed; its children die with it")


@cli.command("status")
@state_dir_option
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_cmd(state_dir: Path, output: str) -> None:
    """Show the running mesh: ingress URL, pods, processes and restarts.

    \b
    Example:
      mesh status -o json
    """
    from mesh.targets.local.control import ControlClient

    st = ControlClient(state_dir).get("/status")
    if output == "json":
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"ingress:  {st['ingress']}\nxDS:      {st['xds']}\nrevision: {st['revision']}\n")
    rows = [
        [p["name"], p["kind"], str(p["pid"]), "running" if p["running"] else "DOWN", str(p["restarts"])]
        for p in st["processes"]
    ]
    click.echo(table(["PROCESS", "KIND", "PID", "STATE", "RESTARTS"], rows))


@cli.command("apply")
@env_option
@policies_option
@file_option("Apply this Istio YAML instead of the typed policies ('-' for stdin).")
@click.option("--no-analyze", is_flag=True, help="Skip analysis (Envoy may then reject the push; it is rolled back).")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for every proxy to ACK.")
@click.option("--dry-run", is_flag=True, help="Show what would change and what analysis says; push nothing.")
@state_dir_option
def apply_cmd(
    env: str, policies: str, file: str | None, no_analyze: bool, wait: float, dry_run: bool, state_dir: Path
) -> None:
    """Push policies to the running mesh and report every proxy's ACK or NACK.

    With --env the policies replace the whole running set (declarative, as git would have it); with -f the
    objects in the file replace their namesakes and everything else stays (like `kubectl apply -f`).
    Analysis runs first (errors block, nothing is applied). If any Envoy rejects the push, every proxy is
    rolled back to the previous config and the Envoy error is printed. Workloads cannot change here.

    \b
    Examples:
      mesh apply --env prod --dry-run    # the diff and the analysis, nothing pushed
      mesh apply --env prod
      mesh apply -f canary-50.yaml
    """
    from mesh.cli.commands import load_config
    from mesh.compile import dump_yaml, render_istio
    from mesh.targets.local.control import ControlClient

    client = ControlClient(state_dir)
    config = load_config(env, policies, file)
    t0 = time.perf_counter()
    res = client.apply(
        dump_yaml(render_istio(config)),
        origin=file or f"policies:{env}",
        analyze=not no_analyze,
        wait=wait,
        merge=bool(file),
        dry_run=dry_run,
    )
    _print_diff(res["diff"])
    if dry_run:
        for f in res["findings"]:
            click.echo(f"{f['level']} [{f['code']}] ({f['resource']}) {f['path']}: {f['message']}")
        click.echo(f"dry run: {len(res['diff'])} change(s), analysis clean of errors; nothing was pushed")
        return
    took = (time.perf_counter() - t0) * 1000
    rows = [[n.split("~")[2], s] for n, s in res["proxies"].items()]
    if rows:
        click.echo(table(["PROXY", "STATE"], rows))
    click.echo(
        f"✔ revision {res['revision']} applied: {res['changed']} proxy(ies) changed, all ACKed "
        f"(translate {res['translate_ms']} ms, push+ACK {res['sync_ms']} ms, total {took:.0f} ms)"
    )


def _print_diff(changes: list[dict[str, str]]) -> None:
    if not changes:
        click.echo("no changes to the running policies")
    for c in changes:
        color = {"+": "green", "-": "red", "~": "yellow"}[c["op"]]
        click.secho(f"{c['op']} {c['ref']}", fg=color)
        for line in c["patch"].splitlines()[2:]:
            click.echo(f"    {line}")


@cli.command("proxy-status")
@state_dir_option
def proxy_status_cmd(state_dir: Path) -> None:
    """Each proxy's sync state with the control plane (SYNCED, STALE, NACK), like `istioctl proxy-status`.

    \b
    Example:
      mesh proxy-status
    """
    from mesh.targets.local.control import ControlClient

    rows = []
    for p in ControlClient(state_dir).get("/proxy-status"):
        v = p["versions"]
        rows.append([p["proxy"], p["kind"], p["state"], v["CDS"], v["LDS"], v["EDS"], v["RDS"], v["SDS"]])
        for t, err in p["errors"].items():
            rows.append(["", "", f"  {t} NACK: {err}", "", "", "", "", ""])
    click.echo(table(["NAME", "TYPE", "STATE", "CDS", "LDS", "EDS", "RDS", "SDS"], rows))
    _ = ControlClient


def ClientOrExit(state_dir: Path) -> Any:
    from mesh.targets.local.control import ControlClient

    return ControlClient(state_dir)


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
    match = [p for p in st["proxies"] if proxy in (p["name"], p["name"].split(".")[0], p["id"])]
    if not match:
        names = ", ".join(p["name"] for p in st["proxies"])
        raise TargetError(f"no proxy {proxy!r} in the running mesh", hint=f"proxies: {names}")
    click.echo(show(kind, match[0]["ip"], output), nl=False)


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

    procs = read_state(state_dir)["processes"]
    chosen = [p for p in procs if name in (p["name"], p["name"].split("/", 1)[1])]
    if not chosen:
        raise TargetError(f"no process {name!r} in the running mesh", hint="`mesh status` lists them")
    offsets: dict[str, int] = {}
    for p in chosen:
        path = Path(p["log"])
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        click.secho(f"==> {p['name']} ({path}) <==", bold=True)
        for line in lines[-tail:]:
            click.echo(line)
        offsets[p["log"]] = path.stat().st_size if path.exists() else 0
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
