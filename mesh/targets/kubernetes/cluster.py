"""Policies on a live cluster through the official `kubernetes` client: server-side apply, prune, propagation.

- Apply is server-side apply with the field manager `meshops` (force: meshops owns the fields it declares).
- Every object carries `app.kubernetes.io/managed-by=meshops`; prune deletes the labelled objects of the Istio kinds
  that the new config no longer declares (never anything meshops did not create).
- Propagation: istiod's debug endpoints, read through the API server's pod proxy
  (`/api/v1/namespaces/istio-system/pods/<istiod>:15014/proxy/debug/...`), so no exec and no port-forward:
  first `/debug/configz` holds every applied resourceVersion, then `/debug/syncz` shows every proxy ACKed what
  istiod sent, on `SYNCED_POLLS` polls in a row (a proxy between two pushes looks synced for a moment).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from mesh.errors import TargetError
from mesh.targets.base import ProxyStatus, SyncState

FIELD_MANAGER = "meshops"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGED = f"{MANAGED_LABEL}=meshops"
ISTIO_NAMESPACE = "istio-system"
ISTIOD_DEBUG_PORT = 15014
SYNCED_POLLS = 3

# kind -> (group, version, plural): the Istio kinds meshops renders, and so the ones it prunes
ISTIO_KINDS: dict[str, tuple[str, str, str]] = {
    "Gateway": ("networking.istio.io", "v1", "gateways"),
    "VirtualService": ("networking.istio.io", "v1", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "v1", "destinationrules"),
    "PeerAuthentication": ("security.istio.io", "v1", "peerauthentications"),
    "AuthorizationPolicy": ("security.istio.io", "v1", "authorizationpolicies"),
}

# syncz's per-type fields -> the short names `mesh proxy-status` shows
_XDS = {"cluster": "CDS", "listener": "LDS", "endpoint": "EDS", "route": "RDS", "secret": "SDS"}

Key = tuple[str, str, str]  # kind, namespace, name


@dataclass(frozen=True)
class Applied:
    key: Key
    resource_version: str


def _key(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", "default"), meta["name"])


def managed(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with meshops' label: what prune later recognises as ours."""
    meta = {**manifest["metadata"], "labels": {**manifest["metadata"].get("labels", {}), MANAGED_LABEL: "meshops"}}
    return {**manifest, "metadata": meta}


def sync_state(row: dict[str, Any]) -> SyncState:
    """One syncz row -> istioctl's word: NOT SENT (nothing sent yet), STALE (sent but not ACKed), SYNCED."""
    sent = [row.get(f"{t}_sent", "") for t in ("cluster", "listener", "route", "endpoint")]
    acked = [row.get(f"{t}_acked", "") for t in ("cluster", "listener", "route", "endpoint")]
    if not any(sent):
        return "NOT SENT"
    return "SYNCED" if all(s == a for s, a in zip(sent, acked, strict=True) if s) else "STALE"


class Cluster:
    """The few API calls meshops makes, over one `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        # Any: the generated client's return types describe JSON it hands back as dicts (and raw responses)
        self.custom: Any = client.CustomObjectsApi(api_client)
        self.core: Any = client.CoreV1Api(api_client)

    # --- policies -----------------------------------------------------------------------------------------

    def apply(self, manifests: Iterable[dict[str, Any]], *, dry_run: bool = False) -> list[Applied]:
        out = []
        for m in manifests:
            group, version, plural = ISTIO_KINDS[m["kind"]]
            kind, namespace, name = _key(m)
            live = self.custom.patch_namespaced_custom_object(
                group,
                version,
                namespace,
                plural,
                name,
                managed(m),
                field_manager=FIELD_MANAGER,
                force=True,
                dry_run="All" if dry_run else None,
                _content_type="application/apply-patch+yaml",
            )
            out.append(Applied((kind, namespace, name), str(live["metadata"].get("resourceVersion", ""))))
        return out

    def managed_objects(self) -> list[dict[str, Any]]:
        """Every Istio object carrying meshops' label, in every namespace."""
        items: list[dict[str, Any]] = []
        for kind, (group, version, plural) in ISTIO_KINDS.items():
            listed = self.custom.list_cluster_custom_object(group, version, plural, label_selector=MANAGED)
            items += [{**i, "kind": kind} for i in listed.get("items", [])]
        return items

    def prune(self, keep: set[Key], *, dry_run: bool = False) -> list[Key]:
        """Delete meshops' objects not in `keep`; returns what was (or, dry-run, would be) deleted."""
        gone = sorted(_key(i) for i in self.managed_objects() if _key(i) not in keep)
        for kind, namespace, name in gone:
            group, version, plural = ISTIO_KINDS[kind]
            if not dry_run:
                self.custom.delete_namespaced_custom_object(group, version, namespace, plural, name)
        return gone

    # --- istiod -------------------------------------------------------------------------------------------

    def istiod_pod(self) -> str:
        pods = self.core.list_namespaced_pod(ISTIO_NAMESPACE, label_selector="app=istiod").items
        running = sorted(p.metadata.name for p in pods if p.status and p.status.phase == "Running")
        if not running:
            raise TargetError(
                "no running istiod pod in istio-system",
                hint="is Istio installed? `mesh up --target kubernetes` installs it; `kubectl -n istio-system get pods`",
            )
        return str(running[0])

    def istiod_debug(self, path: str) -> Any:
        """istiod's /debug/<path> as JSON, through the API server's pod proxy."""
        raw = self.core.connect_get_namespaced_pod_proxy_with_path(
            f"{self.istiod_pod()}:{ISTIOD_DEBUG_PORT}", ISTIO_NAMESPACE, f"debug/{path}", _preload_content=False
        )
        return json.loads(raw.data or b"null")

    def proxy_status(self) -> list[ProxyStatus]:
        rows = self.istiod_debug("syncz") or []
        return [
            ProxyStatus(
                proxy=str(r.get("proxy", "")),
                id=str(r.get("proxy", "")),
                kind=str(r.get("proxy_type", "") or "sidecar").lower().replace("router", "gateway"),
                state=sync_state(r),
                versions={short: str(r.get(f"{t}_acked", ""))[:8] for t, short in _XDS.items()},
            )
            for r in sorted(rows, key=lambda r: str(r.get("proxy", "")))
        ]

    def wait_propagated(self, versions: set[str], timeout: float = 90.0, poll: float = 0.5) -> None:
        """istiod holds every applied resourceVersion, then every proxy reports SYNCED on 3 polls in a row."""

        def istiod_has_config() -> bool:
            seen = {str(c.get("metadata", c).get("resourceVersion", "")) for c in self.istiod_debug("configz") or []}
            return versions <= seen

        synced_polls = 0

        def proxies_synced() -> bool:
            nonlocal synced_polls
            states = [p.state for p in self.proxy_status()]
            synced_polls = synced_polls + 1 if states and all(s == "SYNCED" for s in states) else 0
            return synced_polls >= SYNCED_POLLS

        _poll(istiod_has_config, timeout, poll, "istiod did not see the applied config")
        _poll(proxies_synced, timeout, poll, "proxies did not sync")

    # --- workloads ----------------------------------------------------------------------------------------

    def pods(self, namespace: str, selector: str = "") -> list[Any]:
        return cast(list[Any], self.core.list_namespaced_pod(namespace, label_selector=selector or None).items)

    def restarts(self, namespace: str = "default") -> int:
        return sum(c.restart_count or 0 for p in self.pods(namespace) for c in (p.status.container_statuses or []))


def _poll(check: Callable[[], bool], timeout: float, every: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise TargetError(f"{what} within {timeout:.0f}s", hint="`mesh proxy-status --target kubernetes` shows who")
        time.sleep(every)
