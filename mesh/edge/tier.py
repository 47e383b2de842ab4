"""The edge tier: an `Edge` policy, the gateway replicas behind it, and the HAProxy that runs it.

Standalone (`start`/`stop`) it runs HAProxy under its own supervisor; inside a local mesh the mesh's supervisor
runs `spec()` instead. Either way `apply` and `set_replicas` change the running edge by a master-worker reload.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from mesh.api.edge import Edge
from mesh.dataplane.supervisor import ProcessSpec, StartupFailed, Supervisor
from mesh.edge import config, haproxy
from mesh.edge.errors import EdgeConfigRejected, EdgePolicyError, EdgeUnavailable

log = logging.getLogger("mesh.edge")

PROCESS_NAME = "edge/haproxy"


class EdgeTier:
    def __init__(
        self,
        edge: Edge,
        replicas: list[config.Replica],
        run_dir: Path,
        credentials_dir: Path | None = None,
        socket_dir: Path | None = None,
    ) -> None:
        """`socket_dir`: where HAProxy's admin and master sockets go (default `run_dir`). A Unix socket path is at
        most 107 bytes (HAProxy allows 97), so a mesh puts them in its short owner-only directory, whatever the
        depth of its state directory."""
        self.edge = edge
        self.replicas = list(replicas)
        self.run_dir = run_dir
        self.credentials_dir = credentials_dir
        self.config_path = run_dir / "haproxy.cfg"
        sockets = socket_dir or run_dir
        self.runtime = haproxy.Runtime(
            sockets / "edge-admin.sock", sockets / "edge-master.sock", run_dir / "haproxy.pid"
        )
        self.acme_map = run_dir / "acme-challenges.map"
        self._supervisor: Supervisor | None = None
        self._lock = threading.Lock()

    # --- configuration ------------------------------------------------------------------------------

    def render(self, edge: Edge | None = None, replicas: list[config.Replica] | None = None) -> str:
        edge = edge or self.edge
        paths = config.Paths(
            admin_socket=self.runtime.admin_socket, certificates=self._certificates(edge), acme_challenges=self.acme_map
        )
        return config.render(edge, replicas if replicas is not None else self.replicas, paths)

    def _certificates(self, edge: Edge) -> dict[str, Path]:
        """Each TLS listener's credential as the one PEM HAProxy wants (chain then key), readable by us only."""
        out: dict[str, Path] = {}
        for lst in edge.listeners:
            if lst.tls is None or lst.tls.credential in out:
                continue
            name = lst.tls.credential
            src = (self.credentials_dir or Path("/nonexistent")) / name
            crt, key = src / "tls.crt", src / "tls.key"
            if not (crt.exists() and key.exists()):
                raise EdgePolicyError(
                    f"{edge.ref}: listener {lst.name!r} terminates TLS with credential {name!r}, "
                    f"but {crt} and {key} do not both exist",
                    hint=f"put the certificate chain and key at {src}/tls.crt and tls.key (as a Kubernetes TLS Secret)",
                )
            pem = self.run_dir / "certs" / f"{name}.pem"
            pem.parent.mkdir(parents=True, exist_ok=True)
            _write_private(pem, crt.read_bytes().rstrip(b"\n") + b"\n" + key.read_bytes())
            out[name] = pem
        return out

    def _write_checked(self, text: str) -> None:
        """Validate a candidate file with `haproxy -c`, then move it into place (the running one is untouched
        until the candidate is known good)."""
        candidate = self.config_path.with_suffix(".cfg.next")
        _write_private(candidate, text.encode())
        haproxy.validate(candidate)
        os.replace(candidate, self.config_path)

    # --- process ------------------------------------------------------------------------------------

    def spec(self) -> ProcessSpec:
        """The HAProxy process for a supervisor (ours or the local mesh's); the config is written and checked."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.runtime.admin_socket, self.runtime.master_socket):
            stale.unlink(missing_ok=True)
        self.acme_map.write_text("")  # challenges live in HAProxy's memory; the file only declares the map
        self._write_checked(self.render())
        return ProcessSpec(
            name=PROCESS_NAME,
            argv=haproxy.command(self.config_path, self.runtime.master_socket, self.runtime.pid_file),
            log_path=self.run_dir / "haproxy.log",
            ready=self.runtime.ready,
            kind="edge",
        )

    def start(self, timeout: float = 15.0) -> EdgeTier:
        supervisor = Supervisor(on_event=log.info)
        try:
            supervisor.start([self.spec()], timeout=timeout)
        except StartupFailed as e:
            raise EdgeUnavailable(str(e), hint="the HAProxy log named above says why") from None
        self._supervisor = supervisor
        return self

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None

    def __enter__(self) -> EdgeTier:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- changes ------------------------------------------------------------------------------------

    def apply(self, edge: Edge) -> None:
        """A new policy, by reload: connections in flight finish on the old worker, new ones go to the new."""
        with self._lock:
            self._write_checked(self.render(edge))
            self.runtime.reload()
            self.edge = edge

    def refresh_certificates(self) -> None:
        """Credentials changed on disk (an ACME renewal): load them by reload, which drops no connection."""
        self.apply(self.edge)

    def set_replicas(self, replicas: list[config.Replica]) -> None:
        with self._lock:
            self._write_checked(self.render(replicas=replicas))
            self.runtime.reload()
            self.replicas = list(replicas)

    def url(self, listener: str | None = None) -> str:
        lst = next((x for x in self.edge.listeners if listener in (None, x.name)), None)
        if lst is None:
            raise KeyError(f"{self.edge.ref} has no listener {listener!r}")
        return f"{'https' if lst.tls else 'http'}://{lst.address}:{lst.port}"


class EdgeChallenges:
    """ACME HTTP-01 answers served by the edge: entries of its challenge map, edited over the admin socket."""

    def __init__(self, tier: EdgeTier) -> None:
        self.tier = tier
        self._answers: dict[str, str] = {}

    def present(self, token: str, key_authorization: str) -> None:
        self._answers[token] = key_authorization
        self._save()  # a reload in between re-reads the file: the answer survives it
        self._edit(f"add map {self.tier.acme_map} {token} {key_authorization}")

    def cleanup(self, token: str) -> None:
        self._answers.pop(token, None)
        self._save()
        self._edit(f"del map {self.tier.acme_map} {token}")

    def _save(self) -> None:
        self.tier.acme_map.write_text("".join(f"{t} {a}\n" for t, a in sorted(self._answers.items())))

    def _edit(self, command: str) -> None:
        answer = haproxy.ask(self.tier.runtime.admin_socket, command).strip()
        if answer:
            raise EdgeConfigRejected(f"HAProxy refused `{command.split()[0]} map`: {answer}")


def _write_private(path: Path, data: bytes) -> None:
    """Key material: created 0600 (never world-readable, not even for an instant)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
