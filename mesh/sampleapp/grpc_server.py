"""The sample app's gRPC service, `meshops.sample.Echo`: the HTTP app's gRPC twin, for gRPC routing, faults and
retries through the mesh. Run as `python -m mesh.sampleapp.grpc_server` (same environment as the HTTP app).

No code generation: the service is registered through grpc's generic handlers and its messages are JSON
documents carried as the gRPC payload (`application/grpc`, length-prefixed as ever; only the codec is ours).
Every method answers the same document (service, version, pod, the full method path, the caller's mTLS identity,
the attempt); two methods exist so that routing by method (`/meshops.sample.Echo/Hello` vs `.../Echo`) is seen.

Test hooks, by request metadata (never forwarded anywhere):
  x-grpc-status: CODE        answer with this gRPC status (a name such as UNAVAILABLE, or its number)
  x-fail-times: N            answer UNAVAILABLE to the first N attempts (Envoy's x-envoy-attempt-count)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

SERVICE_NAME = "meshops.sample.Echo"
METHODS = ("Hello", "Echo")

SERVICE = os.environ.get("SERVICE_NAME", "app")
VERSION = os.environ.get("SERVICE_VERSION", "v1")
POD = os.environ.get("POD_NAME", "")
UNIX_SOCKET = os.environ.get("UNIX_SOCKET", "")
# XFCC is believed only where nothing but our sidecar can reach the app (see server.py)
XFCC_TRUSTED = bool(UNIX_SOCKET) or os.environ.get("XFCC_TRUSTED") == "1"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def decode(data: bytes) -> dict[str, Any]:
    doc = json.loads(data or b"{}")
    return doc if isinstance(doc, dict) else {"value": doc}


def status_code(text: str) -> grpc.StatusCode:
    """A status by name (`UNAVAILABLE`) or number (`14`)."""
    for code in grpc.StatusCode:
        if text.upper() == code.name or (text.isdigit() and int(text) == code.value[0]):
            return code
    raise ValueError(f"unknown gRPC status {text!r}")


def _peer(xfcc: str | None) -> str | None:
    if not xfcc or not XFCC_TRUSTED:
        return None
    element = xfcc.split(",")[-1]
    uris = [part.removeprefix("URI=") for part in element.split(";") if part.startswith("URI=")]
    return uris[-1] if uris else None


def _answer(method: str) -> Callable[[dict[str, Any], grpc.ServicerContext], dict[str, Any]]:
    def handle(request: dict[str, Any], context: grpc.ServicerContext) -> dict[str, Any]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        attempt = int(md.get("x-envoy-attempt-count", "1") or 1)
        if attempt <= int(md.get("x-fail-times", "0") or 0):
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{POD}: failing attempt {attempt} as asked")
        wanted = md.get("x-grpc-status")
        if wanted and status_code(wanted) != grpc.StatusCode.OK:
            context.abort(status_code(wanted), f"{POD}: status {wanted} as asked")
        return {
            "service": SERVICE,
            "version": VERSION,
            "pod": POD,
            "method": f"/{SERVICE_NAME}/{method}",
            "authority": md.get(":authority") or md.get("host"),
            "peer": _peer(md.get("x-forwarded-client-cert")),
            "attempt": attempt,
            "request": request,
        }

    return handle


def handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            m: grpc.unary_unary_rpc_method_handler(_answer(m), request_deserializer=decode, response_serializer=encode)
            for m in METHODS
        },
    )


def serve(address: str, workers: int = 16) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((handlers(),))
    if not server.add_insecure_port(address):
        raise OSError(f"cannot listen on {address}")
    server.start()
    return server


def call(channel: grpc.Channel, method: str, request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """One unary call of `meshops.sample.Echo/<method>` on `channel` (what a client of this service does)."""
    stub = channel.unary_unary(f"/{SERVICE_NAME}/{method}", request_serializer=encode, response_deserializer=decode)
    return stub(request, **kwargs)  # type: ignore[no-any-return]


def client_main(argv: list[str]) -> None:
    """`grpc_server call TARGET METHOD [--authority A] [--count N] [-H key=value]...`: N calls, one JSON line each
    (`{"code": "OK", "reply": {...}}` or `{"code": "UNAVAILABLE", "details": "..."}`). A pod's gRPC client: run
    inside the pod's network namespace under transparent interception, or dialling its sidecar's outbound
    listener (h2c) with the service as `:authority` in the HTTP_PROXY mode."""
    import argparse

    p = argparse.ArgumentParser(prog="grpc_server call")
    p.add_argument("target")
    p.add_argument("method", choices=METHODS)
    p.add_argument("--authority")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("-H", "--metadata", action="append", default=[], help="key=value")
    args = p.parse_args(argv)
    options: list[tuple[str, Any]] = [("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    metadata = [tuple(kv.split("=", 1)) for kv in args.metadata]
    with grpc.insecure_channel(args.target, options=options) as channel:
        for i in range(args.count):
            try:
                reply = call(channel, args.method, {"n": i}, metadata=metadata, timeout=args.timeout)
                out: dict[str, Any] = {"code": "OK", "reply": reply}
            except grpc.RpcError as e:
                out = {"code": e.code().name, "details": e.details()}
            print(json.dumps(out), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["call"]:
        client_main(sys.argv[2:])
        return
    if UNIX_SOCKET:
        if os.path.exists(UNIX_SOCKET):  # a stale socket from a previous run of this pod
            os.unlink(UNIX_SOCKET)
        address = f"unix:{UNIX_SOCKET}"
    else:
        address = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '9090')}"
    server = serve(address)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(f"{SERVICE} {VERSION} ({POD}) serving gRPC {SERVICE_NAME} on {address}", file=sys.stderr, flush=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(grace=0.5).wait()


if __name__ == "__main__":
    main()
