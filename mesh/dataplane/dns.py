"""DNS for the pod network: the wire format (A queries and answers), a client that asks from inside a pod, and the
test world's upstream resolver.

The upstream resolver stands where a cluster's DNS server would: it answers only the names of hosts the mesh
or a test created in their own namespaces (the "external" services), and NXDOMAIN for everything else, so no
query ever leaves the namespaces the mesh made. Each sidecar's DNS proxy forwards what it does not know here.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
from collections.abc import Mapping

A, AAAA, IN = 1, 28, 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".") if p) + b"\0"


def query(name: str, qtype: int = A, ident: int | None = None) -> bytes:
    ident = random.randrange(65536) if ident is None else ident
    return struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, IN)


def _read_name(data: bytes, i: int) -> tuple[str, int]:
    """A (possibly compressed) name at offset i: the name and the offset after it."""
    labels, end = [], -1
    while True:
        n = data[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 == 0xC0:
            if end < 0:
                end = i + 2
            i = ((n & 0x3F) << 8) | data[i + 1]
            continue
        labels.append(data[i + 1 : i + 1 + n].decode(errors="replace"))
        i += 1 + n
    return ".".join(labels), (end if end >= 0 else i)


def parse_question(packet: bytes) -> tuple[int, str, int]:
    """(id, name, qtype) of a query."""
    ident = struct.unpack(">H", packet[:2])[0]
    name, i = _read_name(packet, 12)
    qtype = struct.unpack(">H", packet[i : i + 2])[0]
    return ident, name.lower(), qtype


def parse_answer(packet: bytes) -> tuple[int, list[str]]:
    """(rcode, IPv4 addresses of the A records) of a response."""
    flags, qd, an = struct.unpack(">HHH", packet[2:8])
    i = 12
    for _ in range(qd):
        _, i = _read_name(packet, i)
        i += 4
    out = []
    for _ in range(an):
        _, i = _read_name(packet, i)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", packet[i : i + 10])
        i += 10
        if rtype == A and length == 4:
            out.append(socket.inet_ntoa(packet[i : i + 4]))
        i += length
    return flags & 0xF, out


def answer(packet: bytes, names: Mapping[str, str], ttl: int = 30) -> bytes:
    """The response to a query from a table name -> IPv4: A records for a known name, an empty NOERROR for its
    other types (so resolvers asking A and AAAA together keep the A answer), NXDOMAIN for unknown names."""
    ident, name, qtype = parse_question(packet)
    _, end = _read_name(packet, 12)
    question = packet[12 : end + 4]
    ip = names.get(name)
    rcode = NXDOMAIN if ip is None else NOERROR
    answers = b""
    if ip is not None and qtype == A:
        answers = struct.pack(">HHHIH", 0xC00C, A, IN, ttl, 4) + socket.inet_aton(ip)
    header = struct.pack(">HHHHHH", ident, 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    return header + question + answers


def resolve_over(
    sock: socket.socket, server: tuple[str, int], name: str, timeout: float = 2.0
) -> tuple[int, list[str]]:
    """Ask `server` for `name`'s A records over a UDP socket the caller made (inside a pod, say)."""
    q = query(name)
    sock.settimeout(timeout)
    sock.sendto(q, server)
    while True:
        data, _ = sock.recvfrom(4096)
        if data[:2] == q[:2]:
            return parse_answer(data)


class UpstreamResolver:
    """The test world's DNS server on the pod bridge (`host_ip:53`): external test hosts by name, NXDOMAIN else."""

    def __init__(self, ip: str, port: int = 53) -> None:
        self.names: dict[str, str] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((ip, port))
        self.address = self._sock.getsockname()
        self._thread = threading.Thread(target=self._serve, name="dns-upstream", daemon=True)
        self._stopped = False
        self._thread.start()

    def add(self, name: str, ip: str) -> None:
        self.names[name.lower().rstrip(".")] = ip

    def remove(self, name: str) -> None:
        self.names.pop(name.lower().rstrip("."), None)

    def _serve(self) -> None:
        while not self._stopped:
            try:
                packet, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(Exception):  # a malformed packet gets no answer, as from any server
                self._sock.sendto(answer(packet, dict(self.names)), peer)

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=2)
