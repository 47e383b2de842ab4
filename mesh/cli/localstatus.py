"""`mesh status` of the local mesh, read with the standard library only: the state file, then the control API's
`/status` and `/proxy-status` as JSON.

Loading the mesh's own modules (grpc, the pydantic models, the translator) costs half a second on a busy 2-core
machine, for a command that only asks. The mesh's own reader (`mesh.targets.local.control.read_state`) stays the one
every other command uses; tests hold the two to the same answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
        import http.client  # only once a mesh is running: the answer "not running" needs no HTTP

        from mesh.dataplane.unixhttp import UnixHTTPConnection

        api = str(self.state["api"])
        conn = UnixHTTPConnection(api.removeprefix("unix:"), TIMEOUT)
        try:
            conn.request("GET", path, headers={"authorization": f"Bearer {self.state['token']}"})
            r = conn.getresponse()
            status, body = r.status, r.read()
        except TimeoutError:
            raise MeshNotRunning(
                f"the mesh (pid {self.state['pid']}) accepted a connection but did not answer within {TIMEOUT:.0f}s",
                hint="is it stopped (Ctrl-Z, SIGSTOP) or overloaded? `kill -CONT` it, or `mesh down --force`",
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise MeshNotRunning(
                f"the mesh's control API at {api} does not answer: {e}",
                hint="`mesh down --force` cleans up if the mesh is gone; then `mesh up`",
            ) from None
        finally:
            conn.close()
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
