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
import stat
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
    """Whether something listens on ip:port. Bound as Envoy, HAProxy and the apps bind (SO_REUSEADDR), so the
    TIME_WAIT connections a mesh that just went down left on its ingress (60 s on Linux) do not make the address look
    taken: without it, a run that drew a block another run had used a moment before failed with "ingress port ...
    already in use" while nothing listened there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


_CLAIMS: dict[str, int] = {}  # claim name -> the locked descriptor, held for this process's life


def _claims_dir() -> Path | None:
    """This user's owner-only directory for claim locks, or None when it cannot be trusted.

    Never a shared name in /tmp: another local user could pre-create it (then our open fails, or is redirected
    through a symlink) or hold its lock forever. Cross-user collisions stay covered by the bind probe."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and os.path.isabs(runtime) else Path(tempfile.gettempdir())
    path = base / f"meshops-claims-{os.getuid()}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # someone else's, a symlink, or opened up: do without the lock rather than trust it
    return path


def claim(name: str) -> bool:
    """An advisory lock on `name` for the rest of this process (False: another process holds it).

    Probing a block and binding it are seconds apart; two processes of this user (pytest-xdist workers, two runs)
    that picked the same random block would both find it free. The lock closes that window; the kernel drops it
    when the process exits. The lock files (one per block or subnet, so bounded) live in an owner-only directory;
    when that directory cannot be trusted the claim falls back to the bind probe alone."""
    if name in _CLAIMS:
        return False  # this process took it already (for a mesh of its own that may still be starting)
    directory = _claims_dir()
    if directory is None:
        return True
    try:
        fd = os.open(directory / f"{name}.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS[name] = fd
    return True


def release(name: str) -> None:
    """Drop a claim early and remove its lock file (tests claim throwaway names; blocks are held for life)."""
    fd = _CLAIMS.pop(name, None)
    if fd is None:
        return
    directory = _claims_dir()
    if directory is not None:
        (directory / f"{name}.lock").unlink(missing_ok=True)
    os.close(fd)


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
