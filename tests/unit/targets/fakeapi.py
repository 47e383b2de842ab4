"""A fake Kubernetes API server: the few endpoints KubernetesTarget uses, over real HTTP, so the official client,
its serialisation and our error handling run for real. Not a cluster: no admission, no controllers."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

CUSTOM = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/(?:namespaces/(?P<ns>[^/]+)/)?(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?$"
)
PODS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$")
PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/proxy/(?P<path>.+)$")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeApiServer:
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (plural, ns, name)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # namespace -> pod objects
    istiod: dict[str, Callable[[], Any]] = field(default_factory=dict)  # debug path -> reply
    requests: list[Request] = field(default_factory=list)
    version: int = 100
    url: str = ""

    def add(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(plural, meta.get("namespace", "default"), meta["name"])] = obj

    def handle(self, req: Request) -> tuple[int, Any]:
        self.requests.append(req)
        if m := PROXY.match(req.path):
            path = m["path"].removeprefix("debug/")
            if m["pod"].endswith(":15014") and path in self.istiod:
                return 200, self.istiod[path]()
            return 404, {"kind": "Status", "message": f"no {m['path']}"}
        if m := PODS.match(req.path):
            selector = req.query.get("labelSelector", [""])[0]
            items = [p for p in self.pods.get(m["ns"], []) if _selects(selector, p)]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if m := CUSTOM.match(req.path):
            return self._custom(req, m["plural"], m["ns"], m["name"])
        return 404, {"kind": "Status", "message": f"no route {req.path}"}

    def _custom(self, req: Request, plural: str, ns: str | None, name: str | None) -> tuple[int, Any]:
        if req.method == "GET" and name is None:
            selector = req.query.get("labelSelector", [""])[0]
            items = [o for (p, n, _), o in sorted(self.objects.items()) if p == plural and ns in (None, n)]
            return 200, {"items": [o for o in items if _selects(selector, o)]}
        assert ns is not None and name is not None
        key = (plural, ns, name)
        if req.method == "PATCH":
            self.version += 1
            obj = {**req.body, "metadata": {**req.body["metadata"], "resourceVersion": str(self.version)}}
            if "All" not in req.query.get("dryRun", []):
                self.objects[key] = obj
            return 200, obj
        if req.method == "DELETE":
            if key not in self.objects:
                return 404, {"kind": "Status", "message": "not found"}
            del self.objects[key]
            return 200, {"kind": "Status", "status": "Success"}
        return 405, {"kind": "Status", "message": req.method}

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "t"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path


def _selects(selector: str, obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels", {})
    return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",") if term))


@contextmanager
def running(api: FakeApiServer) -> Iterator[FakeApiServer]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            # the client escapes '/' inside a path parameter; the API server (Go's net/http) decodes it
            req = Request(
                self.command,
                unquote(url.path),
                parse_qs(url.query),
                dict(self.headers),
                json.loads(raw) if raw else None,
            )
            status, payload = api.handle(req)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = do_POST = _serve

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    api.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        httpd.shutdown()
        httpd.server_close()


def istiod_pod(name: str = "istiod-abc") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio-system", "labels": {"app": "istiod"}},
        "status": {"phase": "Running"},
    }


def app_pod(name: str, app: str, restarts: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": app, "restartCount": restarts, "ready": True, "image": "x", "imageID": ""}],
        },
    }
