"""HTTP over a Unix socket, with the standard library only (`mesh status` uses it before anything heavy is loaded)."""

from __future__ import annotations

import http.client
import socket

from mesh.errors import MeshNotRunning


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (Envoy's admin pipe, the local mesh's control API)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def control_request(
    api: str, token: str, pid: object, method: str, path: str, body: bytes | None, timeout: float
) -> tuple[int, bytes]:
    """One request to a local mesh's control API (`unix:PATH`, bearer `token`): (status, body). A mesh that does not
    answer is MeshNotRunning, saying what to do (both the full client and the light `mesh status` ask through here)."""
    conn = UnixHTTPConnection(api.removeprefix("unix:"), timeout)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    except TimeoutError:
        raise MeshNotRunning(
            f"the mesh (pid {pid}) accepted a connection but did not answer within {timeout:.0f}s",
            hint="is it stopped (Ctrl-Z, SIGSTOP) or overloaded? `kill -CONT` it, or `mesh down --force`",
        ) from None
    except (OSError, http.client.HTTPException) as e:
        raise MeshNotRunning(
            f"the mesh's control API at {api} does not answer: {e}",
            hint="`mesh down --force` cleans up if the mesh is gone; then `mesh up`",
        ) from None
    finally:
        conn.close()
