"""The workload directory the telemetry collector reads: which workload owns an address.

Istio learns the peer of each request by metadata exchange between the two sidecars. Upstream Envoy has no such
filter, so the collector looks peers up by address instead: every pod's sidecar binds its upstream connections to
its own pod IP (`upstream_bind_config` in the bootstrap), which makes the direct peer address of a request at the
callee, and the upstream host at the caller, name exactly one workload. The mesh writes the directory as JSON
whenever pods come and go; the collector reloads it when the file changes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

TRUST_DOMAIN = "cluster.local"


class Workload(BaseModel):
    """One proxy's workload, with what Istio's labels need. `service` is the FQDN a sidecar's pod serves."""

    model_config = ConfigDict(frozen=True)

    ip: str
    name: str  # the workload (Istio: the Deployment), e.g. reviews-v1
    pod: str
    namespace: str
    app: str
    version: str
    service_account: str
    service: str = ""
    admin_port: int = 15000

    @property
    def principal(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/ns/{self.namespace}/sa/{self.service_account}"


def workload_name(pod: str) -> str:
    """`reviews-v1-0` -> `reviews-v1`: pods are named `<workload>-<index>`, as a Deployment's are (minus the hash)."""
    head, sep, tail = pod.rpartition("-")
    return head if sep and tail.isdigit() else pod


class WorkloadDirectory:
    """Address -> workload, reloaded when the file's mtime changes (cheap: one stat per lookup batch)."""

    def __init__(self, path: Path | None = None, workloads: Iterable[Workload] = ()) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_ip: dict[str, Workload] = {w.ip: w for w in workloads}
        self._mtime: float | None = None

    def refresh(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        try:
            rows = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return  # half-written: the writer renames atomically, so this is only a race with a deletion
        with self._lock:
            self._by_ip = {w.ip: w for w in (Workload.model_validate(r) for r in rows)}
            self._mtime = mtime

    def get(self, ip: str) -> Workload | None:
        with self._lock:
            return self._by_ip.get(ip)

    def by_principal(self, principal: str) -> Workload | None:
        """The workload that authenticated as `principal`, when that identity is one workload's (its replicas share
        every label): a peer whose address names nothing, such as a gateway outside the pods reaching them over the
        bridge under transparent capture. A service account several workloads share names none."""
        with self._lock:
            found = [w for w in self._by_ip.values() if w.principal == principal]
        return found[0] if found and len({(w.namespace, w.name) for w in found}) == 1 else None

    def all(self) -> list[Workload]:
        with self._lock:
            return sorted(self._by_ip.values(), key=lambda w: (w.namespace, w.pod))


def write_directory(path: Path, workloads: Iterable[Workload]) -> None:
    """Atomically (rename), so a reader never sees half a file."""
    rows = [w.model_dump() for w in sorted(workloads, key=lambda w: (w.namespace, w.pod))]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    os.replace(tmp, path)
