"""The data path on Kubernetes: the ingress over HTTP, and requests sent from inside pods with `kubectl exec`.

Traffic from a pod runs in its app container (the sidecar captures it, as it does the app's own calls); a plaintext
client is a pod in the uninjected `legacy` namespace. Proxy stats come from the sidecar's `pilot-agent`.

Environment: MESH_KUBECONFIG (kubeconfig file), MESH_INGRESS_URL (default http://localhost:8080), MESH_KUBECTL
(default kubectl), MESH_KIND_CLUSTER (the kind cluster to reuse when MESH_KUBECONFIG is unset; default meshops-ci).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mesh.api.config import MeshConfig
from mesh.errors import TargetError
from mesh.targets.base import Client
from mesh.targets.kubernetes.cluster import Cluster
from mesh.targets.traffic import HttpClient, Reply

# the gateway chart's service account is its release name, in the release namespace
GATEWAY_IDENTITY = "spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway"

_EXEC_SCRIPT = r"""
import json, sys, time, urllib.request, urllib.error
method, url, headers = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method in ("POST", "PUT", "PATCH") else None)
t0 = time.perf_counter()
try:
    with opener.open(req, timeout=15) as r:
        out = {"status": r.status, "headers": dict(r.headers), "body": r.read().decode(errors="replace")}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "headers": dict(e.headers), "body": e.read().decode(errors="replace")}
except Exception as e:
    out = {"error": f"{type(e).__name__}: {e}"}
out["elapsed"] = time.perf_counter() - t0
print(json.dumps(out))
"""


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

    def __call__(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        cmd = [self.binary, *(["--kubeconfig", self.kubeconfig] if self.kubeconfig else []), *args]
        try:
            r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise TargetError("kubectl not found", hint="install kubectl or set MESH_KUBECTL") from None
        if r.returncode != 0:
            raise TargetError(f"{' '.join(args[:3])} failed: {r.stderr.strip()}")
        return r.stdout


@dataclass
class ExecClient:
    """Requests sent from inside a pod's app container; its sidecar (if any) carries them."""

    kubectl: Kubectl
    namespace: str
    workload: str  # deploy/NAME
    base_url: str = ""

    def get(self, url: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        return self.request("GET", url, headers, host=host)

    def request(
        self, method: str, url: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        h = dict(headers or {})
        if host:
            h["Host"] = host
        out = json.loads(
            self.kubectl(
                "exec",
                "-n",
                self.namespace,
                self.workload,
                "-c",
                self.workload.split("/")[1].rsplit("-", 1)[0] if self.namespace != "legacy" else "client",
                "--",
                "python",
                "-c",
                _EXEC_SCRIPT,
                method,
                self.base_url + url,
                json.dumps(h),
            )
        )
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

    def from_pod(self, pod: str) -> Client:
        return ExecClient(self.kubectl, "default", self.deployment(pod))

    def plaintext_to(self, pod: str) -> Client:
        svc = pod.split("-")[0]
        return ExecClient(
            self.kubectl, "legacy", "deploy/legacy-client", f"http://{svc}.default.svc.cluster.local:9080"
        )

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
