"""The kubernetes target under test: a cluster made by `mesh up --target kubernetes` (the `ci` stack in CI).

Knobs that only this target needs live here: traffic from a pod is `kubectl exec` into its app container (the
sidecar captures it), a plaintext client is a pod in the uninjected `legacy` namespace, and propagation waits until
istiod holds the new config and every proxy reports SYNCED for a few consecutive polls.

Environment: MESH_KUBECONFIG (kubeconfig file; `pulumi stack output kubeconfig --show-secrets`), MESH_INGRESS_URL
(default http://localhost:8080), MESH_KUBECTL (default kubectl).
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
import tenacity

from mesh.api.config import MeshConfig
from mesh.compile import dump_yaml, render_istio
from mesh.errors import TargetError
from mesh.harness.client import HttpClient, Reply

MANAGED = "app.kubernetes.io/managed-by=meshops"
ISTIO_KINDS = (
    "gateways.networking.istio.io,virtualservices.networking.istio.io,destinationrules.networking.istio.io,"
    "peerauthentications.security.istio.io,authorizationpolicies.security.istio.io"
)

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


def _reuse_kind_cluster(name: str) -> Path:
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


class KindMeshUnderTest:
    name = "kind"
    # the gateway chart's service account is its release name, in the release namespace
    gateway_identity = "spiffe://cluster.local/ns/istio-ingress/sa/istio-ingressgateway"

    def __init__(self, config: MeshConfig, ingress_url: str) -> None:
        self.config = config
        self.kubectl = Kubectl()
        self.ingress_url = ingress_url

    @classmethod
    def from_environment(cls, config: MeshConfig) -> KindMeshUnderTest:
        if not os.environ.get("MESH_KUBECONFIG"):
            os.environ["MESH_KUBECONFIG"] = str(_reuse_kind_cluster(os.environ.get("MESH_KIND_CLUSTER", "meshops-ci")))
        m = cls(config, os.environ.get("MESH_INGRESS_URL", "http://localhost:8080"))
        m.kubectl("get", "pods", "-n", "istio-system", "-l", "app=istiod")  # fail fast with a clear error
        return m

    def ingress(self, host: str | None = None) -> HttpClient:
        return HttpClient(self.ingress_url, host=host)

    def _deployment(self, pod: str) -> str:
        m = re.match(r"^([a-z0-9-]+?)-(v[0-9a-z]+)(-[0-9]+)?$", pod)
        if m:
            return f"deploy/{m.group(1)}-{m.group(2)}"
        svc = next((s for s in self.config.services if s.name == pod), None)
        if svc is None:
            raise KeyError(f"no pod or service {pod!r}")
        return f"deploy/{svc.name}-{svc.versions[0].name}"

    def from_pod(self, pod: str) -> HttpClient:
        return ExecClient(self.kubectl, "default", self._deployment(pod))  # type: ignore[return-value]

    def plaintext_to(self, pod: str) -> HttpClient:
        svc = pod.split("-")[0]
        return ExecClient(
            self.kubectl, "legacy", "deploy/legacy-client", f"http://{svc}.default.svc.cluster.local:9080"
        )  # type: ignore[return-value]

    def pods(self, service: str) -> list[str]:
        out = self.kubectl(
            "get", "pods", "-n", "default", "-l", f"app={service}", "-o", "jsonpath={.items[*].metadata.name}"
        )
        return sorted(out.split())

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        target = self._deployment(pod)
        raw = self.kubectl(
            "exec",
            "-n",
            "default",
            target,
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
        data = json.loads(self.kubectl("get", "pods", "-n", "default", "-o", "json"))
        return sum(
            c.get("restartCount", 0) for p in data["items"] for c in p.get("status", {}).get("containerStatuses", [])
        )

    def apply(self, config: MeshConfig) -> None:
        manifests = render_istio(config)
        for m in manifests:
            m["metadata"].setdefault("labels", {})["app.kubernetes.io/managed-by"] = "meshops"
        applied = json.loads(self.kubectl("apply", "-o", "json", "-f", "-", input=dump_yaml(manifests)))
        items = applied.get("items", [applied])
        keep = {(i["kind"], i["metadata"]["namespace"], i["metadata"]["name"]) for i in items}
        existing = json.loads(self.kubectl("get", ISTIO_KINDS, "-A", "-l", MANAGED, "-o", "json"))["items"]
        for i in existing:
            key = (i["kind"], i["metadata"]["namespace"], i["metadata"]["name"])
            if key not in keep:
                self.kubectl("delete", i["kind"].lower(), i["metadata"]["name"], "-n", i["metadata"]["namespace"])
        self._wait_propagated({i["metadata"]["resourceVersion"] for i in items})
        self.config = config

    def _istiod(self, path: str) -> str:
        return self.kubectl(
            "exec", "-n", "istio-system", "deploy/istiod", "--", "pilot-discovery", "request", "GET", path
        )

    def _wait_propagated(self, versions: set[str], timeout: float = 90.0) -> None:
        """istiod has every applied resourceVersion, then all proxies report SYNCED on 3 polls in a row."""

        def istiod_has_config() -> bool:
            configz = self._istiod("/debug/configz").replace(" ", "")
            return all(f'"resourceVersion":"{v}"' in configz for v in versions)

        synced_polls = 0

        def proxies_synced() -> bool:
            nonlocal synced_polls
            syncz = self._istiod("/debug/syncz")
            synced_polls = synced_polls + 1 if "STALE" not in syncz and "NOT_SENT" not in syncz else 0
            return synced_polls >= 3

        for check, wait, what in (
            (istiod_has_config, 0.5, "istiod did not see the applied config"),
            (proxies_synced, 1.0, "proxies did not sync"),
        ):
            poll = tenacity.Retrying(
                stop=tenacity.stop_after_delay(timeout),
                wait=tenacity.wait_fixed(wait),
                retry=tenacity.retry_if_result(lambda ok: not ok),
            )
            try:
                poll(check)
            except tenacity.RetryError:
                raise TargetError(f"{what} within {timeout:.0f}s") from None

    def stop(self) -> None:
        """The cluster belongs to its Pulumi stack (`mesh down --target kubernetes`)."""
