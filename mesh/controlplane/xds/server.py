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
from mesh.controlplane.xds.cache import NodeStatus, SnapshotCache

log = logging.getLogger("mesh.xds")

_nonces = itertools.count(1)


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


@dataclass
class _Event:
    kind: str  # request | snapshot | closed
    request: Any = None


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
        reader = threading.Thread(target=self._read, args=(requests,), daemon=True, name="xds-reader")
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
                        if not req.node.id:
                            log.warning("ADS stream without node id; closing")
                            return
                        if self.credentials is not None and not self.credentials.check(req.node):
                            log.warning("ADS stream for %s without its credential; closing unserved", req.node.id)
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

    def _read(self, requests: Any) -> None:
        try:
            for req in requests:
                self.events.put(_Event("request", req))
        except grpc.RpcError:
            pass
        except Exception:  # pragma: no cover - a broken stream must not kill the server
            log.exception("ADS reader failed")
        finally:
            self.events.put(_Event("closed"))

    def _on_request(self, req: discovery_pb2.DiscoveryRequest) -> Any:
        t = req.type_url
        if t not in rt.SHORT:
            return
        st = self.state(t)
        if req.response_nonce and req.response_nonce != st.nonce:
            return  # stale: Envoy answering an older response
        names = frozenset(req.resource_names) if t in rt.BY_NAME else frozenset()
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
            yield self._respond(t)

    def _on_snapshot(self) -> Any:
        snap = self.cache.get_snapshot(self.node_id)
        if snap is None:
            return
        for t in rt.ORDER:
            st = self.types.get(t)
            if st and st.subscribed and snap.version(t) != st.version:
                yield self._respond(t)

    def _respond(self, t: str) -> bytes:
        """A serialized DiscoveryResponse. Protobuf messages concatenate field by field, so the resources are
        serialized once per snapshot part and shared by every stream; only version, type and nonce are per stream."""
        snap = self.cache.get_snapshot(self.node_id)
        assert snap is not None
        res = snap.resources(t)
        st = self.state(t)
        body = res.serialized(None if t not in rt.BY_NAME else st.names)
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
        return bytes(head) + body


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

    def StreamAggregatedResources(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        stream = _Stream(self.cache, self.credentials)
        context.add_callback(lambda: stream.events.put(_Event("closed")))
        yield from stream.run(request_iterator)

    def DeltaAggregatedResources(self, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "meshops serves state-of-the-world ADS only")


class XdsServer:
    """The gRPC server. Threads: two per connected proxy (stream + reader), so size the pool for the mesh.

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
            futures.ThreadPoolExecutor(max_workers=max_proxies + 8, thread_name_prefix="xds"),
            options=[("grpc.max_send_message_length", 64 << 20), ("grpc.so_reuseport", 0)],
        )
        service = AggregatedDiscoveryService(cache, credentials)
        handlers = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                service.StreamAggregatedResources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=bytes,  # _respond already serialized
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                service.DeltaAggregatedResources,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DeltaDiscoveryResponse.SerializeToString,
            ),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("envoy.service.discovery.v3.AggregatedDiscoveryService", handlers),)
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
