"""Pilot: owns the current config, pushes per-proxy snapshots, waits on ACKs, and rolls back on NACK.

The last good config keeps serving: a push is only "applied" once every proxy ACKed it; if any proxy NACKs,
every proxy is pushed the previous snapshots again and the caller gets PushRejected with Envoy's error text. A proxy
that does not answer within the wait is treated the same way (PushTimedOut): the record never claims a config that
only some proxies run.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mesh.api.config import MeshConfig
from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.ca.credentials import CredentialStore
from mesh.controlplane.translate import (
    MeshOptions,
    ProxySecrets,
    PushCache,
    PushContext,
    build_snapshot,
    rebuild_routes,
    required_credentials,
)
from mesh.controlplane.translate.changes import EVERYTHING, ConfigChanges, Inputs, config_changes
from mesh.controlplane.xds.cache import SnapshotCache, SyncResult
from mesh.controlplane.xds.snapshot import Snapshot
from mesh.errors import PushRejected, PushTimedOut
from mesh.runtime import Proxy, Registry

log = logging.getLogger("mesh.pilot")


@dataclass
class PushResult:
    revision: int
    results: dict[str, SyncResult]
    translate_ms: float
    sync_ms: float
    changed: list[str] = field(default_factory=list)  # proxies whose snapshot changed

    @property
    def synced(self) -> bool:
        return all(r.state == "SYNCED" for r in self.results.values())


def resolve_secrets(
    ca: CertificateAuthority, store: CredentialStore, push: PushContext, proxy: Proxy, root_pem: bytes | None = None
) -> ProxySecrets:
    """The certificates a proxy's snapshot serves: its SVID issued (or renewed) by the CA, gateway credentials from
    the store. Translation takes these as input; only the Pilot touches the CA and the credential files.
    `root_pem`: the CA's trust bundle, when the caller read it once for many proxies."""
    credentials = {name: store.get(name, hosts) for name, hosts in required_credentials(push, proxy)}
    return ProxySecrets(ca.svid(proxy.identity), root_pem or ca.root_pem, credentials)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Translation allocates hundreds of thousands of objects (protos, keys) and no reference cycles; each
    allocation burst set off full collections that walked every live object of a large config again (at 5,000
    services x 1,000 proxies, most of a full push's translation time in the profile). What survives the push
    (config, memo, snapshots) is then frozen out of the collector's scans: it is freed by reference counting when
    dropped, and it holds no cycles.

    Disabling is process-wide: other threads (ADS streams, the control API) may leave cyclic garbage meanwhile,
    and a frozen object is never collected, so the young generation (only what was allocated during the push:
    ~1-6 ms at 1,000 services) is collected before freezing; a push that raised freezes nothing (its traceback
    still holds its frames)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    except BaseException:
        gc.enable()
        raise
    gc.collect(0)
    gc.freeze()
    gc.enable()


@dataclass(frozen=True)
class Translation:
    """One push's output with what it was translated from: the next push starts from the last one that took effect
    (an accepted push, or a republish), never from a rejected one."""

    inputs: Inputs
    push: PushContext
    snapshots: dict[str, Snapshot]
    secrets: dict[str, ProxySecrets]
    changes: ConfigChanges = EVERYTHING
    translated: int = 0  # proxies translated (the others kept their snapshot)
    since_full: int = 0  # pushes since every proxy was last translated


FULL_EVERY = 32  # translate every proxy at least this often, so the memo forgets pieces no proxy uses any more


class Pilot:
    def __init__(
        self,
        registry: Registry,
        ca: CertificateAuthority,
        cache: SnapshotCache | None = None,
        credentials: CredentialStore | None = None,
        options: MeshOptions | None = None,
    ) -> None:
        self.options = options or MeshOptions()
        self.registry = registry
        self.ca = ca
        self.credentials = credentials or CredentialStore(ca)
        self.cache = cache or SnapshotCache()
        self.config = MeshConfig()
        self.revision = 0
        self._lock = threading.RLock()
        self._memo: dict[Hashable, Any] = {}  # translation pieces reused while their inputs are unchanged
        self._applied: Translation | None = None  # the last translation that took effect
        self.last: Translation | None = None  # the last translation made (applied or not)
        registry.on_change(self._on_registry_change)

    def snapshots(self, config: MeshConfig) -> tuple[dict[str, Snapshot], float]:
        t0 = time.perf_counter()
        self.last = self.translate(config)
        return self.last.snapshots, (time.perf_counter() - t0) * 1000

    @property
    def applied(self) -> Translation | None:
        """The last translation that took effect: the next push starts from it."""
        return self._applied

    def translate(self, config: MeshConfig) -> Translation:
        """Every proxy's snapshot for `config`. Starting from the last applied translation, only the indexes of
        changed kinds are rebuilt and only the proxies a change reaches are translated: the others keep their
        snapshot object (Istio's ProxyNeedsPush). Nothing is applied here."""
        entries = self.registry.entries  # services the runtime provides (the egress gateway's)
        world = MeshConfig(config.services, [*config.resources, *entries]) if entries else config
        inputs = Inputs(world, self.registry.pods, self.registry.proxies, self.options)
        before = self._applied
        with _no_cycle_collection():
            changes = config_changes(before.inputs if before else None, inputs)
            if before is not None and before.since_full >= FULL_EVERY:
                changes = EVERYTHING
            push = before.push.updated(world, changes) if before and not changes.everything else None
            if push is None or before is None or push.features != before.push.features:
                changes, push = EVERYTHING, PushContext(world, inputs.pods, options=self.options)
            cache = PushCache(push, self._memo)
            old = before if before is not None and not changes.everything else None
            snaps, secrets, translated, root = {}, {}, 0, self.ca.root_pem
            for p in inputs.proxies:
                secrets[p.id] = resolve_secrets(self.ca, self.credentials, push, p, root)
                kept = old.snapshots.get(p.id) if old else None
                if old is None or kept is None or secrets[p.id] != old.secrets.get(p.id):
                    kept = build_snapshot(push, p, secrets[p.id], cache)
                    translated += 1
                elif self._reaches(changes, push, p):
                    if self._routes_only(changes, old.push, push, p):
                        kept = rebuild_routes(push, p, kept, cache)
                    else:
                        kept = build_snapshot(push, p, secrets[p.id], cache)
                    translated += 1
                snaps[p.id] = kept
            whole = translated == len(inputs.proxies)
            self._memo = cache.kept(prune=whole)  # a kept snapshot's pieces stay until every proxy is translated
        since = 0 if whole or before is None else before.since_full + 1
        return Translation(inputs, push, snaps, secrets, changes, translated, since)

    @staticmethod
    def _routes_only(changes: ConfigChanges, before: PushContext, push: PushContext, proxy: Proxy) -> bool:
        """Whether only the sidecar's route tables can differ: VirtualServices alone changed (DestinationRules reach
        clusters), the scope holds the same services, and no VirtualService-read listener exists (interception)."""
        if changes.destination_rules or proxy.kind != "sidecar" or push.options.interception == "iptables":
            return False
        now, then = push.proxy_scope(proxy).services, before.proxy_scope(proxy).services
        return now is then or now.keys() == then.keys()

    @staticmethod
    def _reaches(changes: ConfigChanges, push: PushContext, proxy: Proxy) -> bool:
        """Whether a change reaches the proxy's config: gateways always (their routes read every VirtualService
        bound to them), sidecars when a change claims a service their scope holds (Istio's DependsOnConfig)."""
        if changes.none:
            return False
        return proxy.kind != "sidecar" or changes.reaches(push.proxy_scope(proxy).services)

    def secrets(self, push: PushContext, proxy: Proxy) -> ProxySecrets:
        return resolve_secrets(self.ca, self.credentials, push, proxy)

    def push(self, config: MeshConfig, *, wait: float = 10.0, rollback: bool = True) -> PushResult:
        """Translate, publish, and wait for every proxy to ACK or NACK. Raises PushRejected after rolling back."""
        with self._lock:
            snaps, translate_ms = self.snapshots(config)
            assert self.last is not None
            translation = self.last
            previous = {n: s for n in snaps if (s := self.cache.get_snapshot(n)) is not None}
            changed = self._publish(snaps)
            t0 = time.perf_counter()
            results = self.cache.wait_synced(changed, timeout=wait) if wait else {}
            sync_ms = (time.perf_counter() - t0) * 1000
            rejected = {
                n: "; ".join(f"{t}: {e}" for t, e in r.errors.items()) for n, r in results.items() if r.state == "NACK"
            }
            silent = {n: r.state for n, r in results.items() if r.state not in ("SYNCED", "NACK")}
            if (rejected or silent) and rollback:
                restored = [n for n in changed if n in previous]
                for node in restored:
                    self.cache.set_snapshot(node, previous[node])
                self.cache.wait_synced(restored, timeout=wait)
                raise PushRejected(rejected) if rejected else PushTimedOut(silent, wait)
            self._applied = translation
            self.config = config
            self.revision += 1
            return PushResult(self.revision, results, translate_ms, sync_ms, changed)

    def _on_registry_change(self) -> None:
        """Endpoint health changed: republish (EDS versions move, everything else stays identical)."""
        threading.Thread(target=self._republish, name="eds-push", daemon=True).start()

    def _publish(self, snaps: dict[str, Snapshot]) -> list[str]:
        """Set the snapshots whose content changed (an unchanged one has nothing to send); return their nodes."""
        changed = []
        for node, snap in snaps.items():
            old = self.cache.get_snapshot(node)
            if old is None or old.version_key != snap.version_key:
                self.cache.set_snapshot(node, snap)
                changed.append(node)
        return changed

    def _republish(self) -> None:
        with self._lock:
            translation = self.translate(self.config)
            self._publish(translation.snapshots)
            self._applied = translation
