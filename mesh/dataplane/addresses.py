"""Loopback address blocks: each mesh gets 127.B.0.0/16 (gateway 127.B.0.1, pod k: 127.B.k.1, its app 127.B.k.2).

A block is chosen at random, claimed and probed, so a test run never collides with a mesh the user is running, nor
with a parallel test worker that probed the same block a moment earlier.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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


_CLAIMS: dict[str, int] = {}  # claim name -> the locked descriptor, held for this process's life


def claim(name: str) -> bool:
    """An advisory lock on `name` for the rest of this process (False: another process holds it).

    Probing a block and binding it are seconds apart; two processes (pytest-xdist workers, two users' runs) that
    picked the same random block would both find it free. The lock closes that window; the kernel drops it when
    the process exits, so nothing is left to clean up."""
    if name in _CLAIMS:
        return False  # this process took it already (for a mesh of its own that may still be starting)
    path = Path(tempfile.gettempdir()) / f"meshops-claim-{name}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS[name] = fd
    return True


def allocate_block(preferred: int | None = None, rng: random.Random | None = None) -> LoopbackBlock:
    """A 127.B.0.0/16 block nobody is using (probed on the gateway and first pod admin ports). A random block is
    also claimed (see `claim`); a preferred one was chosen by the caller, who may have claimed it already."""
    candidates = [preferred] if preferred else (rng or random.Random()).sample(range(20, 250), 40)
    for b in candidates:
        assert b is not None
        if not preferred and not claim(f"block-{b}"):
            continue
        if _free(f"127.{b}.0.1", _PROBE_PORT) and _free(f"127.{b}.1.1", _PROBE_PORT):
            return LoopbackBlock(b)
    raise AddressesExhausted(
        f"no free loopback block among {candidates}",
        hint="other meshes hold them: `mesh down` the ones you no longer need (or pass another block)",
    )


def port_free(ip: str, port: int) -> bool:
    return _free(ip, port)
