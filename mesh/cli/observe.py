"""`mesh traces` and `mesh dashboard`: the running mesh's telemetry (started by `mesh up --observability`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mesh.cli import cli
from mesh.cli.meshcmds import state_dir_option


def reconcile_history(db: Path, limit: int = 15) -> Callable[[], list[dict[str, str]]]:
    """The GitOps reconciler's attempts (its SQLite state), newest first; empty until it has run."""

    def read() -> list[dict[str, str]]:
        if not db.exists():
            return []
        from mesh.gitops.state import StateStore

        store = StateStore(db)
        try:
            attempts = store.attempts(limit=limit)
        finally:
            store.close()
        return [
            {
                "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.started)),
                "env": a.env,
                "commit": a.sha[:10],
                "outcome": a.outcome,
                "reason": a.reason,
            }
            for a in attempts
        ]

    return read


def _proxy_status(state_dir: Path) -> Any:
    def read() -> list[dict[str, str]]:
        from mesh.targets.local.control import ControlClient

        rows = []
        for p in ControlClient(state_dir).proxy_status():
            rows.append(
                {
                    "proxy": p.proxy,
                    "type": p.kind,
                    "status": p.state,
                    **{t: p.versions.get(t, "") for t in ("CDS", "LDS", "EDS", "RDS", "SDS")},
                }
            )
        return rows

    return read


@cli.command("traces")
@click.option("--service", "-s", help="Only traces through this service (e.g. reviews, or reviews.default).")
@click.option("--trace", "trace_id", help="Show this trace's span tree.")
@click.option("--limit", "-n", default=10, show_default=True, help="How many recent traces to list.")
@state_dir_option
def traces_cmd(service: str | None, trace_id: str | None, limit: int, state_dir: Path) -> None:
    """Recent traces, or one trace's span tree with timings (which hop was slow, where a fault fired).

    The store is a small SQLite file fed over OTLP by every proxy; it is not Jaeger.

    \b
    Examples:
      mesh traces                      # recent traces, newest first
      mesh traces --service reviews    # those through reviews
      mesh traces --trace 4bf92f35...  # the span tree of one
    """
    from mesh.observability.layout import TelemetryLayout
    from mesh.observability.traces import TraceStore, render_tree

    layout = TelemetryLayout(state_dir)
    layout.read_endpoints()  # a clear error when the mesh runs without observability
    store = TraceStore(layout.traces)
    try:
        if trace_id:
            click.echo(render_tree(store.tree(trace_id)))
            return
        rows = store.recent(service=service, limit=limit)
        if not rows:
            click.echo("no traces yet" + (f" through {service}" if service else ""))
            return
        for t in rows:
            when = time.strftime("%H:%M:%S", time.localtime(t.start_ns / 1e9))
            err = f"  {t.errors} error span(s)" if t.errors else ""
            click.echo(f"{t.trace_id}  {when}  {t.duration_ms:9.1f} ms  {t.spans:3d} spans  {t.root}{err}")
        click.echo("\nshow one: mesh traces --trace TRACE_ID", err=True)
    finally:
        store.close()


@cli.command("dashboard")
@click.option("--port", default=0, show_default=True, help="Loopback port to serve on (0: any free port).")
@click.option("--refresh", default=5, show_default=True, help="Seconds between page refreshes.")
@state_dir_option
def dashboard_cmd(port: int, refresh: int, state_dir: Path) -> None:
    """Serve the mesh dashboard on loopback: service graph, golden signals, weighted-route splits, proxy status,
    recent traces. The link it prints carries the control API's token; Ctrl-C stops it.

    \b
    Example:
      mesh dashboard --port 20001
    """
    from mesh.observability.dashboard import Dashboard
    from mesh.observability.live import local_sources
    from mesh.targets.local.control import read_state

    state = read_state(state_dir)
    sources = local_sources(
        state_dir,
        proxy_status=_proxy_status(state_dir),
        reconcile_history=reconcile_history(state_dir / "gitops" / "state.db"),
    )
    sources.refresh_seconds = refresh
    dash = Dashboard(sources, token=state.token, port=port)
    click.echo(f"dashboard: {dash.url}", err=True)
    try:
        dash.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dash.stop()
