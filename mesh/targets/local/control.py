"""The running mesh's control API (loopback HTTP, JSON) and the state file that tells other `mesh` commands where
it is. `mesh status | apply | proxy-status | down` talk to it; `mesh proxy-config` goes to Envoy's admin directly."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from mesh import analyze as analysis
from mesh.api.config import MeshConfig
from mesh.compile import load_yaml
from mesh.compile.diff import diff_configs
from mesh.errors import AnalysisFailed, MeshError, MeshNotRunning, PolicyError, PushRejected
from mesh.targets import capabilities
from mesh.targets.local.mesh import LocalMesh

STATE_FILE = "state.json"


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_path(state_dir)
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshNotRunning(
            f"no local mesh is running from {state_dir}", hint="start one with `mesh up` (or pass --state-dir)"
        ) from None
    if not _pid_alive(int(state.get("pid", 0))):
        path.unlink(missing_ok=True)
        raise MeshNotRunning(f"the mesh recorded in {path} is no longer running", hint="start it again with `mesh up`")
    return state


def write_state(state_dir: Path, state: dict[str, Any]) -> None:
    """Owner-only (0600): it holds the control API's token."""
    tmp = state_path(state_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state, indent=2))
    tmp.replace(state_path(state_dir))


class ControlServer:
    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"control": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # loopback is shared by every local user: only holders of the (0600) state file may drive the mesh
        self.token = secrets.token_urlsafe(24)
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="control-api", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        config = load_yaml(body["manifests"], body.get("origin", "<apply>"))
        resources = config.resources
        if body.get("merge"):
            # kubectl-apply semantics: objects in the file replace their namesakes, the rest stay
            incoming = {r.key for r in resources}
            resources = [r for r in self.mesh.config.resources if r.key not in incoming] + resources
        if not config.services:
            config = MeshConfig(services=list(self.mesh.config.services), resources=resources)
        with self._lock:
            changes = [c.to_dict() for c in diff_configs(self.mesh.config, config)]
            if body.get("dry_run"):
                findings = analysis.check(config, capabilities("local")) if body.get("analyze", True) else []
                return {"dry_run": True, "diff": changes, "findings": [f.to_dict() for f in findings]}
            result = self.mesh.apply(config, analyze=body.get("analyze", True), wait=float(body.get("wait", 10.0)))
        return {
            "diff": changes,
            "revision": result.revision,
            "translate_ms": round(result.translate_ms, 2),
            "sync_ms": round(result.sync_ms, 2),
            "changed": len(result.changed),
            "proxies": {n: r.state for n, r in sorted(result.results.items())},
        }


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        if hmac.compare_digest(self.headers.get("authorization", ""), f"Bearer {self.control.token}"):
            return True
        self._send(401, {"kind": "auth", "error": "missing or wrong token (read from the mesh's state file)"})
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        mesh = self.control.mesh
        if self.path == "/status":
            self._send(200, mesh.describe())
        elif self.path == "/proxy-status":
            self._send(200, mesh.proxy_status())
        else:
            self._send(404, {"error": f"no such endpoint {self.path}"})

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path != "/apply":
            self._send(404, {"error": f"no such endpoint {self.path}"})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        try:
            self._send(200, self.control.apply(body))
        except AnalysisFailed as e:
            self._send(422, {"kind": "analysis", "findings": [f.to_dict() for f in e.findings]})
        except PushRejected as e:
            self._send(409, {"kind": "rejected", "rejections": e.rejections})
        except PolicyError as e:
            self._send(400, {"kind": "policy", "error": str(e)})
        except MeshError as e:
            self._send(400, {"kind": "mesh", "error": str(e)})
        except Exception as e:  # pragma: no cover - reported to the client, never crashes the mesh
            self._send(500, {"kind": "internal", "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})


class ControlClient:
    def __init__(self, state_dir: Path) -> None:
        self.state = read_state(state_dir)
        self.url = self.state["api"]
        self._s = requests.Session()
        self._s.trust_env = False
        self._s.headers["authorization"] = f"Bearer {self.state.get('token', '')}"

    def get(self, path: str) -> Any:
        return self._s.get(self.url + path, timeout=10).json()

    def apply(
        self,
        manifests: str,
        *,
        origin: str,
        analyze: bool = True,
        wait: float = 10.0,
        merge: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        from mesh.analyze.findings import Finding

        r = self._s.post(
            self.url + "/apply",
            json={
                "manifests": manifests,
                "origin": origin,
                "analyze": analyze,
                "wait": wait,
                "merge": merge,
                "dry_run": dry_run,
            },
            timeout=wait + 30,
        )
        payload: dict[str, Any] = r.json()
        if r.status_code == 200:
            return payload
        kind = payload.get("kind")
        if kind == "analysis":
            raise AnalysisFailed(
                [
                    Finding(code=f["code"], message=f["message"], resource=f["resource"], path=f["path"])
                    for f in payload["findings"]
                ]
            )
        if kind == "rejected":
            raise PushRejected(payload["rejections"])
        if kind == "policy":
            raise PolicyError(payload["error"])
        raise MeshError(payload.get("error", f"control API answered {r.status_code}"))
