"""ADS server (state of the world over one stream). Streams only: config comes from the SnapshotCache.

Envoy's quirks handled here (each pinned by a test in tests/unit/controlplane/test_xds_server.py): stale nonces
are ignored; a request with an empty nonce is always answered; after a parent (CDS/LDS) response Envoy re-requests children (EDS/RDS/SDS) with an
unchanged version and nonce, which must be answered, not taken for a duplicate ACK.

Every stream is authenticated before it is served or counted (`NodeCredentials`): a local user who can reach the
server cannot claim another proxy's node id, fetch its key over SDS, or veto pushes with fake NACKs.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.cache import NodeStatus, SnapshotCache, TypeStatus

log = logging.getLogger("mesh.xds")

_nonces = itertools.count(1)

# At most this many state-of-the-world responses are built or being sent at once, over all streams (Istio's
# PILOT_PUSH_THROTTLE). Each holds its own copy of the bytes in Python and in gRPC until the proxy has read them:
# 1,000 unscoped proxies at 5,000 services were sent 15 MB each at once, and the control plane passed 6 GB.
# A response that waited SEND_SLOT_WAIT seconds for a slot goes anyway: a proxy that stopped reading holds its slot
# until its stream ends, and that must not stall every other proxy's push.
SENDING = threading.BoundedSemaphore(16)
SEND_SLOT_WAIT = 5.0


class NodeCredentials:
    """Per-proxy bootstrap credentials, like the workload's own credential Istio binds SDS to: the token is an HMAC of
    the node id under a secret only this control plane holds, carried in the (owner-only) bootstrap's node metadata.
    A stream whose token does not match the node id it claims is closed unserved."""

    KEY = "MESH_XDS_TOKEN"

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token(self, node_id: str) -> str:
        return hmac.new(self._secret, node_id.encode(), hashlib.sha256).hexdigest()

    def check(self, node: base_pb2.Node) -> bool:
        value = node.metadata.fields.get(self.KEY)
        given = value.string_value if value is not None else ""
        return bool(node.id) and hmac.compare_digest(given.encode(), self.token(node.id).encode())


@dataclass
class _TypeState:
    nonce: str = ""
    version: str = ""
    names: frozenset[str] = frozenset()
    subscribed: bool = False
    fresh: bool = True  # False once a parent type was sent after this type's last response


_SUBSCRIPTIONS: dict[frozenset[str], frozenset[str]] = {}
_SUBSCRIPTIONS_LOCK = threading.Lock()


def _shared(names: frozenset[str]) -> frozenset[str]:
    """One object for equal subscriptions: proxies of one namespace and scope ask for the same names, and each stream
    kept its own decoded copy (1,000 unscoped proxies x 5,000 EDS names were ~2 GB of strings). The most recent
    distinct sets are kept (a changed subscription is a new set)."""
    with _SUBSCRIPTIONS_LOCK:
        found = _SUBSCRIPTIONS.get(names)
        if found is None:
            if len(_SUBSCRIPTIONS) >= 256:
                _SUBSCRIPTIONS.pop(next(iter(_SUBSCRIPTIONS)))
            found = _SUBSCRIPTIONS[names] = names
        return found


class Wire:
    """A response's bytes in pieces (`Resources.wire`), joined by gRPC as it sends. gRPC keeps the last response a
    stream yielded until the next one: a joined copy kept there was one 5 MB route table per idle unscoped proxy at
    5,000 services (5 GB at 1,000 proxies); the pieces are shared with the snapshot, so keeping them costs nothing."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = pieces

    def join(self) -> bytes:
        return b"".join(self.pieces)


@dataclass
class _Event:
    kind: str  # request | snapshot | closed
    request: Any = None


def _admitted(credentials: NodeCredentials | None, node: base_pb2.Node, protocol: str) -> bool:
    """Whether a stream's first request may be served: it names a node, and carries that node's credential. Every
    stream kind checks here, so none is served on weaker terms than ADS."""
    if not node.id:
        log.warning("%s stream without node id; closing", protocol)
        return False
    if credentials is not None and not credentials.check(node):
        log.warning("%s stream for %s without its credential; closing unserved", protocol, node.id)
        return False
    return True


@dataclass
class _Stream:
    cache: SnapshotCache
    credentials: NodeCredentials | None = None
    events: queue.Queue[_Event] = field(default_factory=queue.Queue)
    node_id: str = ""
    types: dict[str, _TypeState] = field(default_factory=dict)

    def state(self, type_url: str) -> _TypeState:
        return self.types.setdefault(type_url, _TypeState())

    def run(self, requests: Any) -> Any:
        reader = threading.Thread(target=_read, args=(requests, self.events), daemon=True, name="xds-reader")
        reader.start()
        cancel = None
        try:
            while True:
                ev = self.events.get()
                if ev.kind == "closed":
                    return
                if ev.kind == "request":
                    req: discovery_pb2.DiscoveryRequest = ev.request
                    if not self.node_id:
                        if not _admitted(self.credentials, req.node, "ADS"):
                            return
                        self.node_id = req.node.id
                        self.cache.record(self.node_id, _opened(time.time()))
                        cancel = self.cache.watch(self.node_id, lambda: self.events.put(_Event("snapshot")))
                    yield from self._on_request(req)
                else:
                    yield from self._on_snapshot()
        finally:
            if cancel:
                cancel()
            if self.node_id:

                def closed(st: NodeStatus) -> None:
                    st.streams -= 1
                    st.connected = st.streams > 0  # a reconnect may open the new stream before the old one ends

                self.cache.record(self.node_id, closed)

    def _on_request(self, req: discovery_pb2.DiscoveryRequest) -> Any:
        t = req.type_url
        if t not in rt.SHORT or t in rt.DELTA_ONLY:
            return
        st = self.state(t)
        if req.response_nonce and req.response_nonce != st.nonce:
            return  # stale: Envoy answering an older response
        names = _shared(frozenset(req.resource_names)) if t in rt.BY_NAME else frozenset()
        if req.response_nonce:
            sent = st.version
            if req.HasField("error_detail"):
                err = req.error_detail.message

                def nack(ns: NodeStatus) -> None:
                    ts = ns.type(t)
                    ts.nacked, ts.error = sent, err

                self.cache.record(self.node_id, nack)
                log.warning("%s NACKed %s %s: %s", self.node_id, rt.SHORT[t], sent, err)
            else:
                now = time.time()

                def ack(ns: NodeStatus) -> None:
                    ts = ns.type(t)
                    ts.acked, ts.acked_at = sent, now
                    if ts.nacked == sent:
                        ts.nacked, ts.error = "", ""

                self.cache.record(self.node_id, ack)
        answer = (
            not req.response_nonce  # first request on this stream, or a reconnect
            or names != st.names  # subscription changed
            or not st.fresh  # a parent was re-sent: Envoy needs this type again
        )
        st.subscribed, st.names = True, names
        snap = self.cache.get_snapshot(self.node_id)
        if snap is not None and not answer and not req.HasField("error_detail"):
            answer = snap.version(t) != st.version  # a snapshot arrived while this type was in flight
        if answer and snap is not None:
            yield from self._send(t)

    def _on_snapshot(self) -> Any:
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None:
            return
        for t in rt.ORDER:
            st = self.types.get(t)
            if st and st.subscribed and t not in rt.DELTA_ONLY and snap.version(t) != st.version:
                yield from self._send(t)

    def _send(self, t: str) -> Any:
        """One response, built and sent while holding one of SENDING's slots: the slot is taken before the bytes
        are built and given back once gRPC has sent them (the generator resumes after the write completed)."""
        took = SENDING.acquire(timeout=SEND_SLOT_WAIT)  # a proxy that stops reading must not stall the others
        try:
            yield self._respond(t)
        finally:
            if took:
                SENDING.release()

    def _respond(self, t: str) -> Wire:
        """A DiscoveryResponse as pieces. Protobuf messages concatenate field by field, so the resources are
        serialized once per snapshot part and shared by every stream; only version, type and nonce are per stream."""
        snap = self.cache.get_snapshot(self.node_id)
        assert snap is not None
        res = snap.resources(t)
        st = self.state(t)
        body = res.wire(None if t not in rt.BY_NAME else st.names)
        nonce = str(next(_nonces))
        head = discovery_pb2.DiscoveryResponse(version_info=res.version, type_url=t, nonce=nonce).SerializeToString()
        st.nonce, st.version, st.fresh = nonce, res.version, True
        for child, parents in rt.PARENTS.items():
            if t in parents:
                self.state(child).fresh = False
        now = time.time()

        def sent(ns: NodeStatus) -> None:
            ts = ns.type(t)
            ts.sent, ts.sent_at = res.version, now

        self.cache.record(self.node_id, sent)
        return Wire((bytes(head), *body))


def _read(requests: Any, events: queue.Queue[_Event]) -> None:
    """A stream's requests, as events on its queue, then "closed" (on any end, clean or not)."""
    try:
        for req in requests:
            events.put(_Event("request", req))
    except grpc.RpcError:
        pass
    except Exception:  # pragma: no cover - a broken stream must not kill the server
        log.exception("xDS reader failed")
    finally:
        events.put(_Event("closed"))


@dataclass
class _InFlight:
    nonce: str
    version: str  # the snapshot's version of the type this response brings the proxy to
    changes: dict[str, str | None]  # resource -> version sent, None when removed


class _Siblings:
    """Each node's delta streams of a type. Envoy opens one VHDS stream per route table, so the node's status of the
    type is theirs together: ACKed once every one holds the version, NACKed when any rejected it (each stream's
    table validates the hosts on its own). Recorded under this lock so two streams' answers cannot cross."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._streams: dict[str, list[_DeltaStream]] = {}

    def join(self, stream: _DeltaStream) -> None:
        with self.lock:
            self._streams.setdefault(stream.node_id, []).append(stream)

    def leave(self, stream: _DeltaStream) -> None:
        with self.lock:
            self._streams[stream.node_id].remove(stream)
        stream.publish()

    def of(self, node_id: str) -> list[_DeltaStream]:
        return list(self._streams.get(node_id, ()))


@dataclass(eq=False)
class _DeltaStream:
    """Incremental xDS for one type (VHDS): Envoy holds resources one by one, so a response carries only the ones
    whose version changed since what Envoy holds, and the names it must drop.

    What the proxy holds (`known`) moves only on an ACK; a NACK leaves it as it was, because Envoy applied nothing
    of that response. One response is in flight at a time and the next is computed from the answer to it, so a
    rollback after a NACK sends nothing at all when the proxy still holds the previous config."""

    cache: SnapshotCache
    type_url: str
    siblings: _Siblings
    credentials: NodeCredentials | None = None
    events: queue.Queue[_Event] = field(default_factory=queue.Queue)
    node_id: str = ""
    subscribed: set[str] = field(default_factory=set)  # resource names, or namespaces (a route config's name)
    known: dict[str, str] = field(default_factory=dict)  # resource -> version the proxy holds
    in_flight: _InFlight | None = None
    nacked: str = ""  # a snapshot version the proxy rejected: not resent until the snapshot moves on
    owes_answer: bool = False  # the subscription changed: Envoy waits for a response, even an empty one
    status: TypeStatus = field(default_factory=TypeStatus)  # this stream's share of the node's status

    def run(self, requests: Any) -> Any:
        reader = threading.Thread(target=_read, args=(requests, self.events), daemon=True, name="xds-delta-reader")
        reader.start()
        cancel = None
        try:
            while True:
                ev = self.events.get()
                if ev.kind == "closed":
                    return
                if ev.kind == "request":
                    req: discovery_pb2.DeltaDiscoveryRequest = ev.request
                    if not self.node_id:
                        if not self._authenticated(req.node):
                            return
                        self.siblings.join(self)
                        self.publish()  # a new stream holds nothing yet: the node is not synced until it does
                        cancel = self.cache.watch(self.node_id, lambda: self.events.put(_Event("snapshot")))
                    self._on_request(req)
                yield from self._respond()
        finally:
            if cancel:
                cancel()
            if self.node_id:
                self.siblings.leave(self)

    def _authenticated(self, node: base_pb2.Node) -> bool:
        if not _admitted(self.credentials, node, "delta xDS"):
            return False
        self.node_id = node.id
        return True

    def publish(self) -> None:
        with self.siblings.lock:
            merged = _merged([s.status for s in self.siblings.of(self.node_id)])
            self.cache.record(self.node_id, _set_type(self.type_url, merged))

    def _on_request(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if req.type_url != self.type_url:
            return
        fl = self.in_flight
        if req.response_nonce and fl is not None and req.response_nonce == fl.nonce:  # else stale: answers nothing
            self.in_flight = None
            st = self.status
            if req.HasField("error_detail"):
                self.nacked = st.nacked = fl.version
                st.error = req.error_detail.message
                log.warning("%s NACKed %s %s: %s", self.node_id, rt.SHORT[self.type_url], fl.version, st.error)
            else:
                for name, version in fl.changes.items():
                    if version is None:
                        self.known.pop(name, None)
                    else:
                        self.known[name] = version
                st.acked, st.acked_at = fl.version, time.time()
                if st.nacked == fl.version:
                    st.nacked, st.error = "", ""
            self.publish()
        self.known.update(req.initial_resource_versions)  # a reconnecting Envoy says what it still holds
        if req.resource_names_subscribe or (not self.subscribed and not req.response_nonce):
            # an empty first request is a wildcard subscription
            self.subscribed.update(req.resource_names_subscribe or ["*"])
            self.owes_answer = True
        for name in req.resource_names_unsubscribe:
            self.subscribed.discard(name)
            for held in [n for n in self.known if n == name or _namespace(n) == name]:
                del self.known[held]

    def _wanted(self, name: str) -> bool:
        return "*" in self.subscribed or name in self.subscribed or _namespace(name) in self.subscribed

    def _respond(self) -> Any:
        if self.in_flight is not None or not self.node_id:
            return
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None:
            return
        res = snap.resources(self.type_url)
        if res.version == self.nacked and not self.owes_answer:
            return
        versions = res.versions()
        changed = sorted(n for n, v in versions.items() if self.known.get(n) != v and self._wanted(n))
        removed = sorted(n for n in self.known if n not in versions)
        st = self.status
        if not changed and not removed and not self.owes_answer:
            # the proxy already holds exactly this (a rollback to what it kept after a NACK, or a change elsewhere)
            self.nacked = ""
            if st.acked != res.version or st.nacked:
                st.acked, st.acked_at, st.nacked, st.error = res.version, time.time(), "", ""
                self.publish()
            return
        nonce = str(next(_nonces))
        self.in_flight = _InFlight(nonce, res.version, {**dict.fromkeys(removed), **{n: versions[n] for n in changed}})
        self.owes_answer, self.nacked = False, ""
        head = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=res.version, type_url=self.type_url, nonce=nonce, removed_resources=removed
        ).SerializeToString()
        st.sent, st.sent_at, st.sent_resources = res.version, time.time(), len(changed) + len(removed)
        self.publish()
        yield bytes(head) + res.delta_resources(tuple(changed))


def _namespace(name: str) -> str:
    """Envoy's namespace of a resource name: everything before the last '/' (a VHDS host's route config)."""
    return name.rpartition("/")[0]


def _merged(statuses: list[TypeStatus]) -> TypeStatus | None:
    """One node's status of a type from its streams': the latest send, a version ACKed only when all hold it, the
    first NACK. None when no stream is left."""
    if not statuses:
        return None
    last = max(statuses, key=lambda s: s.sent_at)
    acked = {s.acked for s in statuses}
    nack = next((s for s in statuses if s.nacked), None)
    return TypeStatus(
        sent=last.sent,
        acked=acked.pop() if len(acked) == 1 else "",
        nacked=nack.nacked if nack else "",
        error=nack.error if nack else "",
        sent_at=last.sent_at,
        acked_at=max(s.acked_at for s in statuses),
        sent_resources=last.sent_resources,
    )


def _set_type(type_url: str, status: TypeStatus | None) -> Callable[[NodeStatus], None]:
    def update(ns: NodeStatus) -> None:
        if status is None:
            ns.types.pop(type_url, None)
        else:
            ns.types[type_url] = status

    return update


def _opened(at: float) -> Callable[[NodeStatus], None]:
    """A new stream starts from nothing: what an earlier stream had ACKed says nothing about this Envoy."""

    def update(st: NodeStatus) -> None:
        st.streams += 1
        st.connected, st.connected_at = True, at
        st.types.clear()

    return update


class AggregatedDiscoveryService(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, cache: SnapshotCache, credentials: NodeCredentials | None = None) -> None:
        self.cache = cache
        self.credentials = credentials
        self.vhds_streams = _Siblings()

    def StreamAggregatedResources(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        stream = _Stream(self.cache, self.credentials)
        context.add_callback(lambda: stream.events.put(_Event("closed")))
        yield from stream.run(request_iterator)

    def DeltaAggregatedResources(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "meshops serves state-of-the-world ADS, and VHDS on its own delta stream"
        )

    def DeltaVirtualHosts(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        """VHDS (`VirtualHostDiscoveryService`): Envoy opens it for a route table whose `vhds` names a DELTA_GRPC
        source; it cannot ride our state-of-the-world ADS stream (Envoy wants the ADS stream itself in delta mode)."""
        stream = _DeltaStream(self.cache, rt.VIRTUAL_HOST, self.vhds_streams, self.credentials)
        context.add_callback(lambda: stream.events.put(_Event("closed")))
        yield from stream.run(request_iterator)


class XdsServer:
    """The gRPC server. Threads: two per stream (stream + reader) and up to two streams per proxy (ADS, VHDS), so
    size the pool for the mesh.

    `unix_socket` serves on a Unix socket instead of TCP: put it in an owner-only directory and only this user's
    processes can connect at all; `credentials` then tells this user's proxies apart."""

    def __init__(
        self,
        cache: SnapshotCache,
        host: str = "127.0.0.1",
        port: int = 0,
        max_proxies: int = 256,
        *,
        unix_socket: Path | None = None,
        credentials: NodeCredentials | None = None,
    ) -> None:
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2 * max_proxies + 8, thread_name_prefix="xds"),
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
        )
        service = AggregatedDiscoveryService(cache, credentials)
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                service.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=Wire.join,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                service.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            ),
        }
        vhds = {
            "DeltaVirtualHosts": grpc.stream_stream_rpc_method_handler(
                service.DeltaVirtualHosts,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=bytes,
            )
        }
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("envoy.service.discovery.v3.AggregatedDiscoveryService", handlers),
                grpc.method_handlers_generic_handler("envoy.service.route.v3.VirtualHostDiscoveryService", vhds),
            )
        )
        self.unix_socket = unix_socket
        if unix_socket is not None:
            unix_socket.unlink(missing_ok=True)
            address = f"unix:{unix_socket}"
        else:
            address = f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot bind the xDS server on {address}")
        self.host = host
        self.address = address

    def start(self) -> XdsServer:
        self._server.start()
        return self

    def stop(self, grace: float = 0.5) -> None:
        self._server.stop(grace).wait()
