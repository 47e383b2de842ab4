"""`mesh status` of the local mesh, read with the standard library only: the state file, then the control API's
`/status` and `/proxy-status` as JSON.

Loading the mesh's own modules (grpc, the pydantic models, the translator) costs half a second on a busy 2-core
machine, for a command that only asks. The mesh's own reader (`mesh.targets.local.control.read_state`) stays the one
every other command uses; tests hold the two to the same answers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mesh.cli.tables import table
from mesh.dataplane.procs import is_ours
from mesh.errors import MeshError, MeshNotRunning, StateCorrupt

STATE_FILE = "state.json"  # control.STATE_FILE
TIMEOUT = 10.0  # seconds, as the full client's GETs

# the state file's fields this reader relies on, with their JSON types (the rest is shown as the mesh wrote it)
_NEEDED: dict[str, type | tuple[type, ...]] = {
    "pid": int,
    "pid_start": int,
    "api": str,
    "token": str,
    "ingress": str,
    "revision": int,
}


def read_state(state_dir: Path) -> dict[str, Any]:
    """The running mesh's state file, as `control.read_state` judges it: missing -> not running, damaged ->
    StateCorrupt (naming `mesh down --force`), naming a process that is gone or not ours -> removed, not running."""
    path = state_dir / STATE_FILE
    try:
        state = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise MeshNotRunning(
            f"no local mesh is running from {state_dir}", hint="start one with `mesh up` (or pass --state-dir)"
        ) from None
    except (ValueError, OSError) as e:
        raise _damaged(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not isinstance(state, dict):
        raise _damaged(path, "not a JSON object")
    for field, kind in _NEEDED.items():
        value = state.get(field, 0 if field == "pid_start" else None)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _damaged(path, f"{field}: missing or not {getattr(kind, '__name__', kind)}")
    if not is_ours(state["pid"], state["pid_start"]):
        path.unlink(missing_ok=True)
        raise MeshNotRunning(
            f"the mesh recorded in {path} is no longer running (pid {state['pid']} is gone or another process); "
            "removed the stale state file",
            hint="start it again with `mesh up`",
        )
    return state


def _damaged(path: Path, reason: str) -> StateCorrupt:
    return StateCorrupt(
        f"{path} is damaged or not a state file this version of meshops wrote ({reason})",
        hint="`mesh down --force` stops the mesh it names if it can tell, and removes the file",
    )


class StatusClient:
    """GETs on the running mesh's control API; its answers as the JSON the mesh sent (MeshDescription,
    ProxyStatusReply)."""

    def __init__(self, state_dir: Path) -> None:
        self.state = read_state(state_dir)

    def get(self, path: str) -> Any:
        from mesh.dataplane.unixhttp import control_request  # only once a mesh is running

        state = self.state
        status, body = control_request(str(state["api"]), str(state["token"]), state["pid"], "GET", path, None, TIMEOUT)
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if status != 200:
            error = reply.get("error") if isinstance(reply, dict) else None
            hint = reply.get("hint") if isinstance(reply, dict) else None
            raise MeshError(error or f"control API answered {status}: {body[:300].decode(errors='replace')}", hint=hint)
        return reply

    def describe(self) -> dict[str, Any]:
        """What `/status` answers: the MeshDescription as JSON."""
        reply = self.get("/status")
        return reply if isinstance(reply, dict) else {}

    def proxy_errors(self) -> list[tuple[str, str, str]]:
        """(proxy, xDS type, Envoy's NACK text) for every proxy that rejected config."""
        reply = self.get("/proxy-status")
        proxies = reply.get("proxies", []) if isinstance(reply, dict) else []
        return [(p["proxy"], what, err) for p in proxies for what, err in p.get("errors", {}).items()]


def render(
    ingress: object,
    revision: object,
    detail: dict[str, Any],
    errors: list[tuple[str, str, str]],
    output: str,
    echo: Callable[[str], object],
) -> None:
    """`mesh status`'s page. `detail`: the target's own description as JSON (the local mesh's MeshDescription names
    its processes, edge and ACME credentials). `errors`: (proxy, xDS type, NACK text)."""
    if output == "json":
        echo(json.dumps(detail, indent=2, ensure_ascii=False))
        return
    echo(f"ingress:  {ingress}\nrevision: {revision}\n")
    processes = detail.get("processes") or []
    if processes:
        rows = [
            [p["name"], p["kind"], str(p["pid"]), "running" if p["running"] else "DOWN", str(p["restarts"])]
            for p in processes
        ]
        echo(table(["PROCESS", "KIND", "PID", "STATE", "RESTARTS"], rows))
    edge = detail.get("edge")
    if edge:  # the edge's backends as HAProxy's health checks see them
        echo(f"\nedge: {edge['policy']} on {', '.join(edge['listeners'])}")
        echo(table(["BACKEND", "ADDRESS", "STATE", "REQUESTS"], [_backend(b) for b in edge["backends"]]))
    credentials = detail.get("acme") or []
    if credentials:  # each ACME credential's last renewal
        rows = [_credential(c) for c in credentials]
        echo("\n" + table(["ACME CREDENTIAL", "ISSUER", "STATE", "LAST RENEWAL", "EXPIRES", "ERROR"], rows))
    for proxy, what, err in errors:  # ACKed is not serving: a NACK or a draining proxy is said here too
        echo(f"warning: {proxy} {what}: {err}")


def _backend(b: dict[str, Any]) -> list[str]:
    return [b["name"], b["address"], b["status"], str(b["requests"])]


def _credential(c: dict[str, Any]) -> list[str]:
    ready = "ready" if c["ready"] else "NOT READY"
    return [
        c["name"],
        c["issuer"],
        ready,
        c.get("last_success") or "-",
        c.get("not_after") or "-",
        c.get("error") or "",
    ]


def plain_status(argv: list[str]) -> int | None:
    """`mesh status` with no arguments (the common case), before click is imported: the exit code, or None when
    `argv` is anything else (click parses it). The same defaults and environment variables as the command's options
    (--target MESH_TARGET, --state-dir MESH_STATE_DIR), the same page, the same `error: ...` and exit code."""
    target = os.environ.get("MESH_TARGET") or "local"
    state_dir = Path(os.environ.get("MESH_STATE_DIR") or ".meshops")
    if argv != ["status"] or target != "local" or state_dir.is_file():  # click's own checks and messages
        return None
    try:
        client = StatusClient(state_dir)
        desc = client.describe()
        render(desc.get("ingress"), desc.get("revision"), desc, client.proxy_errors(), "table", print)
    except MeshError as e:
        if os.environ.get("MESH_DEBUG"):
            raise
        red = sys.stderr.isatty()  # as click.secho(fg="red", err=True): color only on a terminal
        sys.stderr.write(f"\x1b[31merror: {e}\x1b[0m\n" if red else f"error: {e}\n")
        return e.exit_code
    return 0
