"""An Envoy stand-in for the xDS server tests: one gRPC stream, requests queued in, responses collected by a pump
thread. The state-of-the-world (`test_xds_server.Client`) and delta (`test_vhds.DeltaClient`) clients differ only in
the messages they send."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import grpc
from envoy.config.core.v3 import base_pb2

from mesh.controlplane.xds.server import NodeCredentials

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class StreamClient(Generic[Req, Resp]):
    def __init__(
        self, channel: grpc.Channel, open_stream: Callable[[Iterator[Req]], Iterator[Resp]], token: str = ""
    ) -> None:
        self.channel = channel
        self.token = token
        self.requests: queue.Queue[Req | None] = queue.Queue()
        self.responses: queue.Queue[Resp] = queue.Queue()
        self._call = open_stream(iter(self.requests.get, None))
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for r in self._call:
                self.responses.put(r)
        except grpc.RpcError:
            pass

    def node(self, node_id: str) -> base_pb2.Node:
        """The node a request names, with this client's credential when it has one."""
        node = base_pb2.Node(id=node_id, cluster="test")
        if self.token:
            node.metadata.fields[NodeCredentials.KEY].string_value = self.token
        return node

    def recv(self, timeout: float = 2.0) -> Resp:
        return self.responses.get(timeout=timeout)

    def silent(self, timeout: float = 0.3) -> bool:
        try:
            self.responses.get(timeout=timeout)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()
