"""The sample app believes X-Forwarded-Client-Cert only where its own sidecar is the only possible caller."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

XFCC = "By=spiffe://cluster.local/ns/default/sa/reviews;URI=spiffe://cluster.local/ns/default/sa/forged"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(connect: socket.socket) -> dict[str, object]:
    connect.sendall(
        f"GET / HTTP/1.1\r\nHost: x\r\nx-forwarded-client-cert: {XFCC}\r\nConnection: close\r\n\r\n".encode()
    )
    data = b""
    while chunk := connect.recv(65536):
        data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def _serve(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.sampleapp"], env={**os.environ, **env}, stderr=subprocess.DEVNULL
    )


def _connect(make: Callable[[], socket.socket]) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return make()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_xfcc_is_ignored_on_tcp(tmp_path: Path) -> None:
    port = _free_port()
    proc = _serve({"HOST": "127.0.0.1", "PORT": str(port), "UNIX_SOCKET": ""})
    try:
        with _connect(lambda: socket.create_connection(("127.0.0.1", port), timeout=5)) as s:
            assert _get(s)["peer"] is None
    finally:
        proc.terminate()
        proc.wait(10)


def test_xfcc_is_believed_on_the_owner_only_socket(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    proc = _serve({"UNIX_SOCKET": str(path)})

    def unix() -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(str(path))
        except OSError:
            s.close()
            raise
        return s

    try:
        with _connect(unix) as s:
            assert _get(s)["peer"] == "spiffe://cluster.local/ns/default/sa/forged"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    finally:
        proc.terminate()
        proc.wait(10)
