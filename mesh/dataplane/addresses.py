"""Loopback address blocks: each mesh gets 127.B.0.0/16 (gateway 127.B.0.1, pod k: 127.B.k.1, its app 127.B.k.2).

A block is chosen at random and probed, so a test run never collides with a mesh the user is running.
"""

from __future__ import annotations

import errno
import random
import socket
from dataclasses import dataclass, field

from mesh.errors import AddressesExhausted

_PROBE_PORT = 15000


@dataclass
class LoopbackBlock:
    b: int
    _next: int = field(default=1, repr=False)

    @property
    def gateway_ip(self) -> str:
        return f"127.{self.b}.0.1"

    def next_pod(self) -> tuple[str, str]:
        k = self._next
        if k > 254:
            raise AddressesExhausted(
                "a local mesh holds at most 254 pods", hint="lower the replicas, or run this config on Kubernetes"
            )
        self._next += 1
        return f"127.{self.b}.{k}.1", f"127.{self.b}.{k}.2"


def _free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((ip, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def allocate_block(preferred: int | None = None, rng: random.Random | None = None) -> LoopbackBlock:
    """A 127.B.0.0/16 block nobody is using (probed on the gateway and first pod admin ports)."""
    candidates = [preferred] if preferred else (rng or random.Random()).sample(range(20, 250), 40)
    for b in candidates:
        assert b is not None
        if _free(f"127.{b}.0.1", _PROBE_PORT) and _free(f"127.{b}.1.1", _PROBE_PORT):
            return LoopbackBlock(b)
    raise AddressesExhausted(
        f"no free loopback block among {candidates}",
        hint="other meshes hold them: `mesh down` the ones you no longer need (or pass another block)",
    )


def port_free(ip: str, port: int) -> bool:
    return _free(ip, port)
