"""The running mesh's control API (HTTP on an owner-only Unix socket, JSON bodies that are the models in `api.py`)
and the state file that tells other `mesh` commands where it is. `LocalTarget` is its client; `mesh proxy-config`
reads Envoy's admin directly.

The socket's directory is 0700, so file permissions are the access check; the bearer token (in the 0600 state file)
stays as a second one. Every request is bounded (body size, idle time, connections) and every failure is a one-line
JSON reason, never a traceback."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mesh import analyze as analysis
from mesh.api.config import MeshConfig
from mesh.compile.diff import diff_configs
from mesh.dataplane.procs import is_ours, process_start
from mesh.dataplane.unixhttp import control_request
from mesh.errors import (
    AnalysisFailed,
    MeshError,
    MeshNotRunning,
    PolicyError,
    PushRejected,
    PushTimedOut,
    StaleRevision,
    StateCorrupt,
    TargetError,
    WorkloadChange,
)
from mesh.targets import capabilities
from mesh.targets.base import ApplyResult, ChangeModel, ProxyStatus
from mesh.targets.local.api import (
    ApplyRequest,
    ErrorReply,
    MeshDescription,
    ProxyStatusReply,
    StateFile,
    WireConfig,
    finding_model,
    finding_of,
)
from mesh.targets.local.mesh import LocalMesh

log = logging.getLogger("mesh.control")

STATE_FILE = "state.json"
MAX_BODY = 64 << 20  # bytes; policy input is limited far below this (mesh.compile's limits)
IDLE_TIMEOUT = 30.0  # seconds a connection may sit between or inside requests
MAX_CONNECTIONS = 32

M = TypeVar("M", bound=BaseModel)


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def is_our_mesh(state: StateFile) -> bool:
    """The pid is the mesh process that wrote this file (same start time, same user), never pid 0/1/-1 or an
    unrelated process that reused the pid."""
    return is_ours(state.pid, state.pid_start)


def read_state(state_dir: Path) -> StateFile:
    """The running mesh's state. A state file whose process is gone (or is another process now) is removed."""
    path = state_path(state_dir)
    try:
        state = StateFile.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise MeshNotRunning(
            f"no local mesh is running from {state_dir}", hint="start one with `mesh up` (or pass --state-dir)"
        ) from None
    except (ValidationError, ValueError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StateCorrupt(
            f"{path} is damaged or not a state file this version of meshops wrote ({reason})",
            hint="`mesh down --force` stops the mesh it names if it can tell, and removes the file",
        ) from None
    if not is_our_mesh(state):
        path.unlink(missing_ok=True)
        raise MeshNotRunning(
            f"the mesh recorded in {path} is no longer running (pid {state.pid} is gone or another process); "
            "removed the stale state file",
            hint="start it again with `mesh up`",
        )
    return state


def discard_state(state_dir: Path) -> int | None:
    """`mesh down --force`: the pid of a mesh we can prove is ours (to stop), and the state file removed either way."""
    path = state_path(state_dir)
    pid = None
    try:
        state = StateFile.model_validate_json(path.read_bytes())
        pid = state.pid if is_our_mesh(state) else None
    except (ValidationError, ValueError, OSError):
        pass
    path.unlink(missing_ok=True)
    return pid


def write_state(state_dir: Path, state: StateFile) -> None:
    """Owner-only (0600): it holds the control API's token."""
    tmp = state_path(state_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(state.model_dump_json(indent=2))
    tmp.replace(state_path(state_dir))


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    """At most MAX_CONNECTIONS at once: one more is closed at once rather than holding a thread."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, path: Path, handler: type[BaseHTTPRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # owner-only from the first instant
        try:
            super().__init__(str(path), handler)
        finally:
            os.umask(old)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class ControlServer:
    def __init__(self, mesh: LocalMesh) -> None:
        self.mesh = mesh
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"control": self})
        self.socket = mesh.private_dir / "control.sock"
        self.httpd = _UnixHTTPServer(self.socket, handler)
        self.url = f"unix:{self.socket}"
        # a second check besides the socket's owner-only directory: the token in the (0600) state file
        self.token = secrets.token_urlsafe(24)
        # serve_forever checks for shutdown() between polls: 50 ms, not the default 500, so Ctrl-C and `mesh down`
        # are not held up half a second by an idle control API
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="control-api", daemon=True
        )

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.socket.unlink(missing_ok=True)

    def state(self, env: str = "", policies: str = "") -> StateFile:
        desc = self.mesh.describe()
        return StateFile(
            **desc.model_dump(),
            pid_start=process_start(desc.pid) or 0,
            api=self.url,
            token=self.token,
            env=env,
            policies=policies,
            state_dir=str(self.mesh.options.state_dir),
        )

    def apply(self, request: ApplyRequest) -> ApplyResult:
        """Applies are serialized, and each is merged against the config running when it takes the lock: two
        concurrent `apply -f` of different objects both land. A stated base revision that is no longer current is
        refused (never silently overwritten); an apply that changes nothing keeps the revision."""
        incoming = request.config.to_config()
        with self._lock:
            revision = self.mesh.pilot.revision
            if request.base_revision is not None and request.base_revision != revision:
                raise StaleRevision(
                    f"this apply was computed against revision {request.base_revision}, but the mesh is at revision "
                    f"{revision}: applying it would overwrite what changed since",
                    hint="look at the change (`mesh status`, `mesh apply --dry-run`), then apply again against "
                    f"--base-revision {revision}",
                )
            config = self._merged(incoming, request.merge)
            diff = [ChangeModel(op=c.op, ref=c.ref, patch=c.patch) for c in diff_configs(self.mesh.config, config)]
            self.mesh.check_workloads(config)
            found = analysis.check(config, capabilities("local")) if request.analyze else []
            findings = [finding_model(f) for f in found]
            if request.dry_run or not diff:
                return ApplyResult(
                    target="local", revision=str(revision), dry_run=request.dry_run, diff=diff, findings=findings
                )
            result = self.mesh.apply(config, analyze=False, wait=request.wait)
        return ApplyResult(
            target="local",
            revision=str(result.revision),
            diff=diff,
            findings=findings,
            proxies={n: r.state for n, r in sorted(result.results.items())},
            changed_proxies=sorted(result.changed),
            translate_ms=round(result.translate_ms, 2),
            sync_ms=round(result.sync_ms, 2),
        )

    def _merged(self, incoming: MeshConfig, merge: bool) -> MeshConfig:
        """The config to run. `merge` (kubectl-apply semantics): objects and services in the file replace their
        namesakes, the rest stay. A file without services keeps the running ones."""
        running = self.mesh.config
        resources, services = incoming.resources, incoming.services
        if merge:
            keys = {r.key for r in resources}
            resources = [r for r in running.resources if r.key not in keys] + resources
            names = {(s.namespace, s.name) for s in services}
            services = [s for s in running.services if (s.namespace, s.name) not in names] + services
        return MeshConfig(services=list(services or running.services), resources=resources)


def _error_reply(e: Exception) -> tuple[int, ErrorReply]:
    """Our error tree -> a status and a typed body, so the client raises the same error with the same data."""
    if isinstance(e, AnalysisFailed):
        return 422, ErrorReply(kind="analysis", error=str(e), findings=[finding_model(f) for f in e.findings])
    if isinstance(e, PushTimedOut):
        return 409, ErrorReply(kind="timed-out", error=e.args[0], rejections=e.rejections)
    if isinstance(e, PushRejected):
        return 409, ErrorReply(kind="rejected", error=str(e), rejections=e.rejections)
    if isinstance(e, StaleRevision):
        return 409, ErrorReply(kind="stale", error=e.args[0], hint=e.hint)
    if isinstance(e, PolicyError):
        return 400, ErrorReply(kind="policy", error=e.args[0], hint=e.hint)
    if isinstance(e, WorkloadChange):
        return 422, ErrorReply(kind="workload", error=e.args[0], hint=e.hint)
    if isinstance(e, TargetError):
        return 503, ErrorReply(kind="target", error=e.args[0], hint=e.hint)
    if isinstance(e, MeshError):
        return 400, ErrorReply(kind="mesh", error=e.args[0], hint=e.hint)
    if isinstance(e, ValidationError):
        return 400, ErrorReply(kind="policy", error=f"malformed request: {_one_line(e)}")
    # reported to the client in one line, never crashes the mesh; the traceback goes to the mesh's log only
    log.exception("control API request failed")
    return 500, ErrorReply(kind="internal", error=f"internal error ({type(e).__name__}); see the mesh's log")


def _one_line(e: ValidationError) -> str:
    errors = e.errors()
    if not errors:
        return "invalid body"
    where = ".".join(str(x) for x in errors[0]["loc"]) or "body"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {errors[0]['msg']}{more}"


class _Handler(BaseHTTPRequestHandler):
    control: ControlServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def address_string(self) -> str:
        return "local"

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's own errors (malformed request line, headers too long) as our JSON reply."""
        self.close_connection = True
        self._send(code, ErrorReply(kind="bad-request", error=message or self.responses.get(code, ("error",))[0]))

    def _send(self, status: int, payload: BaseModel) -> None:
        data = payload.model_dump_json().encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        given = self.headers.get("authorization", "").encode("utf-8", "surrogateescape")
        if hmac.compare_digest(given, f"Bearer {self.control.token}".encode()):
            return True
        self._send(401, ErrorReply(kind="auth", error="missing or wrong token (read from the mesh's state file)"))
        return False

    def do_GET(self) -> None:
        if not self._authorized():
            return
        mesh = self.control.mesh
        if self.path == "/status":
            self._send(200, mesh.describe())
        elif self.path == "/proxy-status":
            self._send(200, ProxyStatusReply(proxies=mesh.proxy_status()))
        elif self.path == "/config":
            self._send(200, WireConfig.of(mesh.config))
        else:
            self._send(404, ErrorReply(kind="not-found", error=f"no such endpoint {self.path}"))

    def do_POST(self) -> None:
        if not self._authorized():
            return
        if self.path != "/apply":
            self._send(404, ErrorReply(kind="not-found", error=f"no such endpoint {self.path}"))
            return
        body = self._body()
        if body is None:
            return
        try:
            self._send(200, self.control.apply(ApplyRequest.model_validate_json(body)))
        except Exception as e:
            self._send(*_error_reply(e))

    def _body(self) -> bytes | None:
        """The request body within MAX_BODY, or None after answering 400/411/413 (and closing the connection)."""
        raw = self.headers.get("content-length")
        if raw is None:
            return self._refuse(411, "a Content-Length header is required")
        if not raw.isdigit():
            return self._refuse(400, f"Content-Length must be a non-negative integer, not {raw[:40]!r}")
        length = int(raw)
        if length > MAX_BODY:
            return self._refuse(413, f"request body of {length} bytes exceeds the limit of {MAX_BODY} bytes")
        try:
            body = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return None
        if len(body) < length:
            return self._refuse(400, f"request body ended after {len(body)} of {length} bytes")
        return body

    def _refuse(self, status: int, reason: str) -> bytes | None:
        """Answer `status` with a one-line reason and close; returns None (no body) for `_body`'s callers."""
        self.close_connection = True
        self._send(status, ErrorReply(kind="bad-request", error=reason))
        return None


class ControlClient:
    """The control API from another process (or thread): typed requests in, typed replies or our errors out."""

    def __init__(self, state_dir: Path) -> None:
        self.state = read_state(state_dir)
        self.url = self.state.api

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
        return control_request(self.url, self.state.token, self.state.pid, method, path, body, timeout)

    def _get(self, path: str, model: type[M]) -> M:
        return self._reply(*self._request("GET", path, None, 10), model)

    def status(self) -> MeshDescription:
        return self._get("/status", MeshDescription)

    def proxy_status(self) -> list[ProxyStatus]:
        return self._get("/proxy-status", ProxyStatusReply).proxies

    def config(self) -> MeshConfig:
        return self._get("/config", WireConfig).to_config()

    def apply(self, request: ApplyRequest) -> ApplyResult:
        # a rollback after a timeout waits up to `wait` again
        status, body = self._request("POST", "/apply", request.model_dump_json().encode(), 2 * request.wait + 30)
        if status == 409 and b'"timed-out"' in body:
            raise PushTimedOut(ErrorReply.model_validate_json(body).rejections, request.wait)
        return self._reply(status, body, ApplyResult)

    @staticmethod
    def _reply(status: int, body: bytes, model: type[M]) -> M:
        if status == 200:
            return model.model_validate_json(body)
        try:
            err = ErrorReply.model_validate_json(body)
        except ValidationError:
            raise MeshError(f"control API answered {status}: {body[:300].decode(errors='replace')}") from None
        if err.kind == "analysis":
            raise AnalysisFailed([finding_of(f) for f in err.findings])
        if err.kind == "rejected":
            raise PushRejected(err.rejections)
        if err.kind == "stale":
            raise StaleRevision(err.error, hint=err.hint)
        if err.kind == "policy":
            raise PolicyError(err.error, hint=err.hint)
        if err.kind == "workload":
            raise WorkloadChange(err.error, hint=err.hint)
        if err.kind == "target":
            raise TargetError(err.error, hint=err.hint)
        raise MeshError(err.error, hint=err.hint)
