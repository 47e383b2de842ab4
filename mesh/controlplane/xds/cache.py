"""SnapshotCache: the latest snapshot per proxy and what each proxy has ACKed or NACKed. No gRPC here.

Servers watch a node; setting a snapshot wakes its watchers. `wait_synced` lets callers (mesh apply, tests,
benchmarks) wait on real ACKs instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.snapshot import Snapshot


@dataclass
class TypeStatus:
    sent: str = ""  # version last sent
    acked: str = ""  # version last ACKed
    nacked: str = ""  # version last NACKed ("" once a later version is ACKed)
    error: str = ""  # Envoy's error_detail for the NACK
    sent_at: float = 0.0
    acked_at: float = 0.0
    sent_resources: int = -1  # resources in the last response (delta types count only changed ones; -1: all)


@dataclass
class NodeStatus:
    node_id: str
    connected: bool = False
    connected_at: float = 0.0
    types: dict[str, TypeStatus] = field(default_factory=dict)
    streams: int = 0

    def type(self, type_url: str) -> TypeStatus:
        return self.types.setdefault(type_url, TypeStatus())


@dataclass(frozen=True)
class SyncResult:
    node_id: str
    state: str  # SYNCED | NACK | STALE | NOT_CONNECTED
    errors: dict[str, str] = field(default_factory=dict)  # type short name -> Envoy error


Watcher = Callable[[], None]


class SnapshotCache:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._snapshots: dict[str, Snapshot] = {}
        self._status: dict[str, NodeStatus] = {}
        self._watchers: dict[str, list[Watcher]] = {}
        self._changes: dict[str, int] = {}  # per node: bumped on every snapshot or status change (for wait_synced)

    # --- snapshots --------------------------------------------------------------------------------

    def set_snapshot(self, node_id: str, snapshot: Snapshot) -> None:
        snapshot.consistent()
        with self._lock:
            self._snapshots[node_id] = snapshot
            self._changes[node_id] = self._changes.get(node_id, 0) + 1
            watchers = list(self._watchers.get(node_id, ()))
            self._lock.notify_all()
        for w in watchers:
            w()

    def get_snapshot(self, node_id: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(node_id)

    # --- watches (used by the server) -------------------------------------------------------------

    def watch(self, node_id: str, watcher: Watcher) -> Callable[[], None]:
        with self._lock:
            self._watchers.setdefault(node_id, []).append(watcher)

        def cancel() -> None:
            with self._lock:
                ws = self._watchers.get(node_id, [])
                if watcher in ws:
                    ws.remove(watcher)

        return cancel

    # --- status (written by the server, read by everyone) -----------------------------------------

    def record(self, node_id: str, update: Callable[[NodeStatus], None]) -> None:
        with self._lock:
            update(self._status.setdefault(node_id, NodeStatus(node_id)))
            self._changes[node_id] = self._changes.get(node_id, 0) + 1
            self._lock.notify_all()

    def status(self, node_id: str) -> NodeStatus:
        with self._lock:
            st = self._status.get(node_id) or NodeStatus(node_id)
            types = {k: TypeStatus(**vars(v)) for k, v in st.types.items()}
            return NodeStatus(st.node_id, st.connected, st.connected_at, types, st.streams)

    def sync_state(self, node_id: str) -> SyncResult:
        """Compare what the proxy ACKed with the snapshot it should have (istioctl proxy-status semantics)."""
        with self._lock:
            return self._sync_state_locked(node_id)

    def _sync_state_locked(self, node_id: str) -> SyncResult:
        snap = self._snapshots.get(node_id)
        st = self._status.get(node_id)
        if st is None or not st.connected:
            return SyncResult(node_id, "NOT_CONNECTED")
        errors = {}
        stale = False
        for type_url in rt.ORDER:
            if snap is None or type_url not in snap.by_type:
                continue
            want = snap.version(type_url)
            ts = st.types.get(type_url)
            if ts is None:
                # Envoy asks for EDS/RDS/SDS by name only when a cluster or listener needs them (no TLS, no SDS):
                # never subscribed is fine once the parents are ACKed. Start-up waits on Envoy's /ready as well.
                # Not so for VHDS: a table naming it makes Envoy open the stream, and until the hosts arrive the
                # table is not what the snapshot says.
                parents = rt.PARENTS.get(type_url, ())
                if type_url == rt.VIRTUAL_HOST and snap.resources(type_url).items:
                    stale = True
                    continue
                if type_url in rt.BY_NAME and all(
                    (pt := st.types.get(p)) is not None and pt.acked == snap.version(p) for p in parents
                ):
                    continue
                stale = True
                continue
            if ts.nacked == want:
                errors[rt.SHORT[type_url]] = ts.error
            elif ts.acked != want:
                stale = True
        if errors:
            return SyncResult(node_id, "NACK", errors)
        return SyncResult(node_id, "STALE" if stale else "SYNCED")

    def wait_synced(self, node_ids: Iterable[str], timeout: float) -> dict[str, SyncResult]:
        """Block until every node has ACKed or NACKed its current snapshot, or the timeout passes."""
        nodes = list(node_ids)
        deadline = time.monotonic() + timeout
        results: dict[str, SyncResult] = {}
        seen: dict[str, int] = {}
        with self._lock:
            while True:
                # Only nodes whose snapshot or status moved since the last look: every ACK of every proxy wakes this
                # loop, and recomputing all 1,000 proxies' states each time (under the lock the streams record
                # into) made a 1,000-proxy sync quadratic.
                for n in nodes:
                    change = self._changes.get(n, 0)
                    if n not in results or seen[n] != change:
                        results[n], seen[n] = self._sync_state_locked(n), change
                if all(r.state in ("SYNCED", "NACK") for r in results.values()):
                    return dict(results)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return dict(results)
                self._lock.wait(remaining)
