"""The sample service. Standard library only, so it starts in ~50 ms and runs anywhere (also in a container)."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROPAGATE = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "end-user",
    "x-chaos",
)

# Who this instance is and what it calls: read from the environment by `configure` when `main` starts (in a child
# the zygote forked, that is its workload's environment: `mesh.sampleapp.zygote`).
SERVICE = "app"
VERSION = "v1"
POD = ""
UPSTREAMS_SPEC = ""
_attempts: Counter[str] = Counter()
_lock = threading.Lock()
_opener = urllib.request.build_opener()
# XFCC is believed only on the Unix socket: there the only possible caller is our own sidecar, which sets it; on TCP
# anyone on the machine could forge it
UNIX_SOCKET = ""
# ... or on TCP under transparent interception, where the pod's rules let nothing reach the app but its sidecar
XFCC_TRUSTED = False


def _peer(xfcc: str | None) -> str | None:
    """The caller's SPIFFE id from the last X-Forwarded-Client-Cert element (added by our sidecar)."""
    if not xfcc:
        return None
    m = re.findall(r"URI=([^;,]+)", xfcc.split(",")[-1])
    return m[-1] if m else None


@dataclass(frozen=True)
class Upstream:
    """A service this one calls, with bookinfo's client behaviour: a per-attempt timeout and a number of attempts.

    Written `URL[;timeout=SECONDS][;attempts=N]` in `UPSTREAMS` (comma-separated). Istio's docs tasks depend on
    these: bookinfo's productpage gives reviews 3 s and one retry, reviews v2 waits 10 s for ratings, v3 2.5 s."""

    url: str
    timeout: float = 10.0
    attempts: int = 1

    @classmethod
    def parse(cls, spec: str) -> Upstream:
        url, *options = spec.strip().split(";")
        fields = dict(o.split("=", 1) for o in options if o)
        return cls(url, float(fields.get("timeout", 10.0)), int(fields.get("attempts", 1)))


UPSTREAMS: list[Upstream] = []


def _call(upstream: Upstream, headers: dict[str, str]) -> dict[str, Any]:
    """Call an upstream as bookinfo's services do: retry anything but a 200 until the attempts are used up."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    tries = 0
    while tries < upstream.attempts:
        tries += 1
        out = _attempt(upstream, headers)
        if out["status"] == 200:
            break
    out["ms"] = round((time.perf_counter() - t0) * 1000, 1)
    if upstream.attempts > 1:
        out["attempts"] = tries
    if out["status"] != 200 and "error" not in out:
        out["error"] = f"{_service_of(upstream.url)} unavailable (status {out['status']})"
    return out


def _attempt(upstream: Upstream, headers: dict[str, str]) -> dict[str, Any]:
    req = urllib.request.Request(upstream.url, headers=headers)
    try:
        with _opener.open(req, timeout=upstream.timeout) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) or "timed out" in str(e) else str(e)
        return {"url": upstream.url, "status": 0, "error": f"{_service_of(upstream.url)} unavailable: {why}"}
    out: dict[str, Any] = {"url": upstream.url, "status": status}
    try:
        out["body"] = json.loads(body)
    except ValueError:
        out["text"] = body.decode(errors="replace")[:200]
    return out


def _service_of(url: str) -> str:
    return url.split("//", 1)[-1].split(":", 1)[0].split("/", 1)[0]


def _misbehaviour() -> tuple[float, int]:
    """A version told to misbehave (its env: MISBEHAVE_ERROR_RATE 0..1, MISBEHAVE_LATENCY_MS) for canary tests."""
    return float(os.environ.get("MISBEHAVE_ERROR_RATE", "0") or 0), int(
        os.environ.get("MISBEHAVE_LATENCY_MS", "0") or 0
    )


def _misbehave(status: int, path: str) -> int:
    """Sleep and fail as configured (never on /health, so the pod stays ready while it answers badly)."""
    error_rate, latency_ms = _misbehaviour()
    if path == "/health":
        return status
    if latency_ms:
        time.sleep(latency_ms / 1000)
    return 500 if error_rate and random.random() < error_rate else status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "meshops-sampleapp"  # and the service and version: `configure`
    disable_nagle_algorithm = True  # TCP_NODELAY does not apply to Unix sockets: `configure`

    def address_string(self) -> str:
        return "sidecar" if UNIX_SOCKET else super().address_string()

    def log_message(self, fmt: str, *args: Any) -> None:
        if os.environ.get("SAMPLEAPP_ACCESS_LOG"):
            super().log_message(fmt, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _handle(self) -> None:
        h = {k.lower(): v for k, v in self.headers.items()}
        rid = h.get("x-request-id", "")
        with _lock:
            _attempts[rid] += 1
            attempt = _attempts[rid]
        # Envoy numbers attempts across retries to any replica (include_request_attempt_count)
        attempt = int(h.get("x-envoy-attempt-count", attempt))
        delay = int(h.get("x-delay-ms", "0") or 0)
        if attempt == 1:
            delay += int(h.get("x-delay-first-ms", "0") or 0)
        if delay:
            time.sleep(delay / 1000)
        status = int(h.get("x-status", "200") or 200)
        if h.get("x-fail-pod") in (POD, "*") or attempt <= int(h.get("x-fail-times", "0") or 0):
            status = 503
        status = _misbehave(status, self.path)
        body: dict[str, Any] = {
            "service": SERVICE,
            "version": VERSION,
            "pod": POD,
            "method": self.command,
            "path": self.path,
            "peer": _peer(h.get("x-forwarded-client-cert")) if XFCC_TRUSTED else None,
            "request_id": rid,
            "attempt": attempt,
            "trace": {k: h[k] for k in PROPAGATE if k in h and k not in ("x-request-id", "end-user", "x-chaos")},
        }
        if status < 400 and UPSTREAMS and self.path != "/health":
            fwd = {k: h[k] for k in PROPAGATE if k in h}
            body["calls"] = [_call(u, fwd) for u in UPSTREAMS]
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-served-by", POD)
        self.end_headers()
        self.wfile.write(data)


def configure() -> None:
    """Take this instance's identity, upstreams and trust from its environment (a child of the zygote has its
    workload's environment by now, not the one the module was imported with)."""
    global SERVICE, VERSION, POD, UPSTREAMS_SPEC, UPSTREAMS, UNIX_SOCKET, XFCC_TRUSTED, _opener
    environ = os.environ
    SERVICE = environ.get("SERVICE_NAME", "app")
    VERSION = environ.get("SERVICE_VERSION", "v1")
    POD = environ.get("POD_NAME", socket.gethostname())
    UPSTREAMS_SPEC = environ.get("UPSTREAMS", "")
    UPSTREAMS = [Upstream.parse(u) for u in UPSTREAMS_SPEC.split(",") if u.strip()]
    UNIX_SOCKET = environ.get("UNIX_SOCKET", "")
    XFCC_TRUSTED = bool(UNIX_SOCKET) or environ.get("XFCC_TRUSTED") == "1"
    _opener = urllib.request.build_opener(urllib.request.ProxyHandler())  # honours HTTP_PROXY: the sidecar
    Handler.server_version = f"meshops-sampleapp/{SERVICE}-{VERSION}"
    Handler.disable_nagle_algorithm = not UNIX_SOCKET
    _attempts.clear()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        """Owner-only from the first instant (umask), replacing a stale socket from a previous run of this pod."""
        path = str(self.server_address)
        if os.path.exists(path):
            os.unlink(path)
        old = os.umask(0o177)
        try:
            super().server_bind()
        finally:
            os.umask(old)


class EchoHandler(socketserver.StreamRequestHandler):
    """TCP echo (`--tcp-echo`): each line comes back as `<version> <pod> <line>`, so a client can count which
    version each connection reached (TCP routes split connections, not requests)."""

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, socket.socket) and self.connection.family != socket.AF_UNIX:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        try:
            for raw in self.rfile:
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.wfile.write(f"{VERSION} {POD} {line}\n".encode())
                self.wfile.flush()
        except (OSError, ssl.SSLError):
            pass  # the client went away (or failed its handshake): nothing to answer


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The app terminates TLS itself (for SNI passthrough at the gateway): its own certificate, not the mesh's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _options(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mesh.sampleapp", description="The mesh's sample service.")
    p.add_argument(
        "--tcp-echo",
        nargs="?",
        const=-1,
        type=int,
        metavar="PORT",
        help="serve TCP echo instead of HTTP (on PORT, default $PORT): each line answered with the version name",
    )
    p.add_argument("--tls-cert", default=os.environ.get("TLS_CERT", ""), help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", default=os.environ.get("TLS_KEY", ""), help="... and this private key (PEM)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = _options(sys.argv[1:] if argv is None else argv)
    configure()
    host = os.environ.get("HOST", "0.0.0.0")
    port = int(os.environ.get("PORT", "9080"))
    server: socketserver.BaseServer
    if opts.tcp_echo is not None:
        port = port if opts.tcp_echo < 0 else opts.tcp_echo
        server, where = EchoServer((host, port), EchoHandler), f"{host}:{port} (TCP echo)"
    elif UNIX_SOCKET:
        server, where = UnixServer(UNIX_SOCKET, Handler), UNIX_SOCKET
    else:
        server, where = Server((host, port), Handler), f"{host}:{port}"
    if opts.tls_cert and isinstance(server, socketserver.TCPServer):
        # the handshake runs in the connection's thread (first read), so a silent client blocks no one else
        server.socket = _tls_context(opts.tls_cert, opts.tls_key).wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        where += " (TLS)"
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"{SERVICE} {VERSION} ({POD}) listening on {where}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
