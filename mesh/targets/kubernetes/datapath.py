"""The data path on Kubernetes: the ingress over HTTP, and requests sent from inside pods with `kubectl exec`.

Traffic from a pod runs in its app container (the sidecar captures it, as it does the app's own calls); a plaintext
client is a pod in the uninjected `legacy` namespace. Each pod container gets one long-lived
client process behind one `kubectl exec -i` stream (not one exec per request). Proxy stats come from the sidecar's
`pilot-agent`.

Environment: MESH_KUBECONFIG (kubeconfig file), MESH_INGRESS_URL (default http://localhost:8080), MESH_KUBECTL
(default kubectl), MESH_KIND_CLUSTER (the kind cluster to reuse when MESH_KUBECONFIG is unset; default meshops-ci).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import requests

from mesh.api.config import MeshConfig
from mesh.errors import TargetError
from mesh.targets.base import Client
from mesh.targets.kubernetes.cluster import Cluster
from mesh.targets.traffic import HttpClient, Reply

# the gateway chart's service account is its release name, in the release namespace
GATEWAY_IDENTITY = "spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway"

# One long-lived client process per pod container, fed over one `kubectl exec -i` stream: a line of JSON in
# ({"id", "method", "url", "headers", "n"}), a line of JSON out ({"id", "replies": n replies}); each request line is
# served on its own thread, so concurrent callers (verification sends 8 at a time) stay concurrent. A request then costs one round trip
# over the API server's exec stream instead of a kubectl process and a new exec session (~0.2-0.5 s each).
_CLIENT_LOOP = r"""
import json, sys, time, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def one(q):
    m = q["method"]
    req = urllib.request.Request(q["url"], method=m, headers=q["headers"], data=b"" if m in ("POST", "PUT", "PATCH") else None)
    t0 = time.perf_counter()
    try:
        with opener.open(req, timeout=q.get("timeout", 15)) as r:
            out = {"status": r.status, "headers": dict(r.headers), "body": r.read().decode(errors="replace")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "headers": dict(e.headers), "body": e.read().decode(errors="replace")}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    out["elapsed"] = time.perf_counter() - t0
    return out
import threading
lock = threading.Lock()
def serve(q):
    out = json.dumps({"id": q["id"], "replies": [one(q) for _ in range(q.get("n", 1))]})
    with lock:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    threading.Thread(target=serve, args=(json.loads(line),), daemon=True).start()
"""
REQUEST_TIMEOUT = 15.0  # seconds per request inside the pod (the e2e tests' per-test timeouts assume it)
START_TIMEOUT = 60.0  # kubectl exec + interpreter start


def reuse_kind_cluster(name: str) -> Path:
    """The kubeconfig of the kind cluster `mesh up --target kubernetes` made, through pytest-kind (which reuses an
    existing cluster of that name). A missing cluster is an error: a fresh one would have no Istio."""
    from pytest_kind import KindCluster

    kind, kubectl = shutil.which("kind"), shutil.which("kubectl")
    if kind is None:
        raise TargetError("kind not found", hint="install kind, or set MESH_KUBECONFIG to the cluster's kubeconfig")
    clusters = subprocess.run([kind, "get", "clusters"], capture_output=True, text=True).stdout.split()
    if name not in clusters:
        raise TargetError(
            f"no kind cluster {name!r} (found: {', '.join(clusters) or 'none'})",
            hint="create it with `mesh up --target kubernetes --env ci`, or set MESH_KIND_CLUSTER / MESH_KUBECONFIG",
        )
    cluster = KindCluster(name, kind_path=Path(kind), kubectl_path=Path(kubectl) if kubectl else None)
    cluster.create()
    return Path(cluster.kubeconfig_path)


class Kubectl:
    def __init__(self) -> None:
        self.binary = os.environ.get("MESH_KUBECTL", "kubectl")
        self.kubeconfig = os.environ.get("MESH_KUBECONFIG")

    def argv(self, *args: str) -> list[str]:
        return [self.binary, *(["--kubeconfig", self.kubeconfig] if self.kubeconfig else []), *args]

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        try:
            r = subprocess.run(self.argv(*args), input=input, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise TargetError("kubectl not found", hint="install kubectl or set MESH_KUBECTL") from None
        if r.returncode != 0:
            raise TargetError(f"{' '.join(args[:3])} failed: {r.stderr.strip()}")
        return r.stdout


class ExecSession:
    """The client loop running in one pod container behind one `kubectl exec -i`; restarted on the next request if
    it dies (a pod restart, a dropped stream). Requests from several threads are in flight together, matched to
    their replies by id. The process is reaped on `close()` or when the session is collected."""

    def __init__(self, kubectl: Kubectl, namespace: str, workload: str, container: str) -> None:
        self.argv = kubectl.argv(
            "exec", "-i", "-n", namespace, workload, "-c", container, "--", "python", "-u", "-c", _CLIENT_LOOP
        )
        self.where = f"{namespace}/{workload} ({container})"
        self._proc: subprocess.Popen[str] | None = None
        self._pending: dict[int, queue.Queue[Any]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.starts = 0  # how many exec sessions this client opened (tests: one for many requests)

    def send(self, method: str, url: str, headers: dict[str, str], n: int = 1) -> list[dict[str, Any]]:
        """n identical requests in one round trip; each reply a dict (status/headers/body/elapsed, or error)."""
        answer: queue.Queue[Any] = queue.Queue(1)
        with self._lock:
            proc = self._running()
            ident = next(self._ids)
            self._pending[ident] = answer
            query = {"id": ident, "method": method, "url": url, "headers": headers, "n": n, "timeout": REQUEST_TIMEOUT}
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps(query) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError) as e:
                self._stop(proc)
                raise requests.ConnectionError(f"exec stream to {self.where} closed: {e}") from None
        try:
            replies = answer.get(timeout=REQUEST_TIMEOUT * n + 10)
        except queue.Empty:
            with self._lock:
                self._stop(proc)  # the stream hangs: every request on it is lost; the next one starts anew
            raise requests.ConnectionError(f"no reply from the client in {self.where}") from None
        if replies is None:
            with self._lock:
                err = self._stop(proc)
            raise requests.ConnectionError(f"kubectl exec to {self.where} ended: {err or 'no output'}")
        return cast(list[dict[str, Any]], replies)

    def _running(self) -> subprocess.Popen[str]:
        """The live exec process, started (and its `ready` line awaited) if there is none. Holds the lock."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._stop(self._proc)
        try:
            proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
            )
        except FileNotFoundError:
            raise TargetError("kubectl not found", hint="install kubectl or set MESH_KUBECTL") from None
        ready: queue.Queue[bool] = queue.Queue(1)
        self._proc, self._pending = proc, {}
        self.starts += 1
        threading.Thread(target=_pump, args=(proc, self._pending, ready), daemon=True).start()
        self._finalizer = weakref.finalize(self, _reap, proc)
        try:
            started = ready.get(timeout=START_TIMEOUT)
        except queue.Empty:
            started = False
        if not started:
            err = self._stop(proc)
            raise requests.ConnectionError(f"the client in {self.where} did not start: {err or 'no output'}")
        return proc

    def _stop(self, proc: subprocess.Popen[str]) -> str:
        """Kill and reap `proc` if it is still this session's; returns what it wrote to stderr."""
        if self._proc is not proc:
            return ""
        self._proc = None
        _reap(proc)
        return (proc.stderr.read() if proc.stderr else "").strip()[-500:]

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._stop(self._proc)


def _pump(proc: subprocess.Popen[str], pending: dict[int, queue.Queue[Any]], ready: queue.Queue[bool]) -> None:
    """Replies to their callers by id; when the stream ends, every caller still waiting gets None."""
    assert proc.stdout is not None
    for line in proc.stdout:
        msg = json.loads(line)
        if "ready" in msg:
            ready.put(True)
        elif (answer := pending.pop(msg["id"], None)) is not None:
            answer.put(msg["replies"])
    if ready.empty():
        ready.put(False)  # ended before it was ready
    for ident in list(pending):
        pending.pop(ident).put(None)


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdin:
        proc.stdin.close()


@dataclass
class ExecClient:
    """Requests sent from inside a pod's app container; its sidecar (if any) carries them."""

    session: ExecSession
    base_url: str = ""

    def get(self, url: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        return self.request("GET", url, headers, host=host)

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        return self.batch(method, url, headers, 1, host=host)[0]

    def batch(
        self, method: str, url: str, headers: dict[str, str] | None = None, n: int = 1, *, host: str | None = None
    ) -> list[Reply]:
        """n requests in one round trip (a sample for a split); a failed one raises as a single request would."""
        h = dict(headers or {})
        if host:
            h["Host"] = host
        return [_reply(out) for out in self.session.send(method, self.base_url + url, h, n)]


def _reply(out: dict[str, Any]) -> Reply:
    if "error" in out:
        raise requests.ConnectionError(out["error"])
    try:
        body: Any = json.loads(out["body"])
    except ValueError:
        body = None
    return Reply(out["status"], out["headers"], body, out["body"], out["elapsed"])


class KubernetesDataPath:
    """Clients into the cluster's mesh for tests and verification (see the module docstring)."""

    gateway_identity = GATEWAY_IDENTITY

    def __init__(self, config: MeshConfig, cluster: Cluster, ingress_url: str, kubectl: Kubectl | None = None) -> None:
        self.config = config
        self.cluster = cluster
        self.ingress_url = ingress_url
        self.kubectl = kubectl or Kubectl()
        self._sessions: dict[tuple[str, str, str], ExecSession] = {}

    def ingress(self, host: str | None = None) -> Client:
        return HttpClient(self.ingress_url, host=host)

    def deployment(self, pod: str) -> str:
        m = re.match(r"^([a-z0-9-]+?)-(v[0-9a-z]+)(-[0-9]+)?$", pod)
        if m:
            return f"deploy/{m.group(1)}-{m.group(2)}"
        svc = next((s for s in self.config.services if s.name == pod), None)
        if svc is None:
            raise KeyError(f"no pod or service {pod!r}")
        return f"deploy/{svc.name}-{svc.versions[0].name}"

    def session(self, namespace: str, workload: str, container: str) -> ExecSession:
        """One long-lived client per container, shared by every client object the tests make for it."""
        key = (namespace, workload, container)
        if key not in self._sessions:
            self._sessions[key] = ExecSession(self.kubectl, namespace, workload, container)
        return self._sessions[key]

    def from_pod(self, pod: str) -> Client:
        workload = self.deployment(pod)
        return ExecClient(self.session("default", workload, workload.split("/")[1].rsplit("-", 1)[0]))

    def plaintext_to(self, pod: str) -> Client:
        svc = pod.split("-")[0]
        session = self.session("legacy", "deploy/legacy-client", "client")
        return ExecClient(session, f"http://{svc}.default.svc.cluster.local:9080")

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()

    def pods(self, service: str) -> list[str]:
        return sorted(p.metadata.name for p in self.cluster.pods("default", f"app={service}"))

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        raw = self.kubectl(
            "exec",
            "-n",
            "default",
            self.deployment(pod),
            "-c",
            "istio-proxy",
            "--",
            "pilot-agent",
            "request",
            "GET",
            "stats?format=json",
        )
        rx = re.compile(pattern)
        return {
            s["name"]: s.get("value", 0)
            for s in json.loads(raw).get("stats", [])
            if "value" in s and rx.search(s["name"])
        }

    def restarts(self) -> int:
        return self.cluster.restarts("default")
