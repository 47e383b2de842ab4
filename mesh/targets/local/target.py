"""LocalTarget: the Target protocol for a mesh on this machine, as a client of the running mesh's control API.

The mesh itself (`LocalMesh` + `ControlServer`) runs in another process (`mesh up --detach`, or the foreground of
another `mesh up`) or, for the pytest harness, in this one (`detach=False`). Either way every operation below goes
through the control API, so the CLI, the reconciler and the tests drive the same code path.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from mesh.api.config import MeshConfig
from mesh.api.workloads import spiffe_id
from mesh.dataplane.procs import process_start
from mesh.errors import MeshNotRunning, StateCorrupt, TargetError
from mesh.runtime import GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, SIDECAR_OUTBOUND_PORT
from mesh.targets.base import ApplyResult, Client, Progress, ProxyStatus, TargetStatus
from mesh.targets.local.api import ApplyRequest, MeshDescription, PodInfo, WireConfig
from mesh.targets.local.control import (
    ControlClient,
    ControlServer,
    discard_state,
    read_state,
    state_path,
    write_state,
)
from mesh.targets.local.interception import remove_stale_networks
from mesh.targets.local.mesh import LocalMesh
from mesh.targets.local.options import LocalOptions
from mesh.targets.traffic import HttpClient

DETACHED_START_TIMEOUT = 60.0


class ServeRequest(BaseModel):
    """What a detached mesh process is started with (on its stdin): the options and the config, typed."""

    model_config = ConfigDict(extra="forbid")

    options: LocalOptions
    config: WireConfig
    env: str = ""
    policies: str = ""
    ready_fd: int | None = None  # written once the mesh serves: the starting `mesh up -d` waits on it, not a poll


class LocalTarget:
    """`detach=True`: `up` starts the mesh as a background process (`python -m mesh.targets.local`).
    `detach=False`: `up` runs it in this process until `down` (the harness, and the foreground `mesh up`)."""

    name = "local"

    def __init__(
        self, options: LocalOptions | None = None, *, detach: bool = True, env: str = "", policies: str = ""
    ) -> None:
        self.options = options or LocalOptions()
        self.detach = detach
        self.env = env
        self.policies = policies
        self.mesh: LocalMesh | None = None  # the in-process mesh (detach=False), for tests of its machinery
        self._server: ControlServer | None = None

    @property
    def foreground(self) -> bool:
        """`mesh up` without --detach serves in this process until Ctrl-C (the CLI waits on it)."""
        return not self.detach

    # --- lifecycle ----------------------------------------------------------------------------------------

    def up(self, config: MeshConfig, progress: Progress | None = None) -> TargetStatus:
        self.options.check()  # before a detached mesh is started: the error reaches the caller as itself
        state_dir = self.options.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        state_dir.chmod(0o700)  # owner-only: the state file, logs, bootstraps and credentials live here
        try:
            st = read_state(state_dir)  # a dead mesh's state is removed here: `up` starts cleanly in place
        except StateCorrupt:
            raise
        except MeshNotRunning:
            pass
        else:
            raise TargetError(
                f"a mesh is already running from {state_dir} (pid {st.pid}, ingress {st.ingress})",
                hint="use it, or stop it first with `mesh down`",
            )
        if self.detach:
            self._start_detached(config, progress or (lambda msg: None))
        else:
            self._start_here(config, progress)
        return self.status()

    def _start_here(self, config: MeshConfig, progress: Progress | None) -> None:
        mesh = LocalMesh(config, self.options, progress=progress)
        mesh.start()
        try:
            server = ControlServer(mesh).start()
        except BaseException:
            mesh.stop()
            raise
        self.mesh, self._server = mesh, server
        write_state(self.options.state_dir, server.state(self.env, self.policies))

    def _start_detached(self, config: MeshConfig, progress: Progress) -> None:
        log_path = self.options.state_dir / "mesh.log"
        ready_r, ready_w = os.pipe()  # the child writes one line once it serves; EOF first means it died
        request = ServeRequest(
            options=self.options, config=WireConfig.of(config), env=self.env, policies=self.policies, ready_fd=ready_w
        )
        try:
            with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as logf:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mesh.targets.local"],
                    stdin=subprocess.PIPE,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=(ready_w,),
                )
        finally:
            os.close(ready_w)
        with os.fdopen(ready_r, "rb", buffering=0) as ready:
            assert proc.stdin is not None
            proc.stdin.write(request.model_dump_json().encode())
            proc.stdin.close()
            progress(f"starting the mesh in the background (pid {proc.pid}, log {log_path}) ...")
            said = ready.read(64) if select.select([ready], [], [], DETACHED_START_TIMEOUT)[0] else None
        if said == b"ready\n":
            with contextlib.suppress(MeshNotRunning):
                if read_state(self.options.state_dir).pid == proc.pid:
                    return
        if said is None:
            os.killpg(proc.pid, signal.SIGTERM)  # our own child: its pid cannot have been reused while we hold it
            raise TargetError(f"the mesh did not become ready within {DETACHED_START_TIMEOUT:.0f}s; see {log_path}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)  # it closed the pipe without serving: it is exiting
        raise TargetError(f"the mesh exited while starting:\n{log_path.read_text(errors='replace')[-3000:]}")

    def remove_leftovers(self) -> list[str]:
        """The pod networks (bridge `mb<run>` and its namespaces) that killed meshes of this state dir left."""
        return [f"mb{run}" for run in remove_stale_networks(self.options.state_dir)]

    def down(self) -> None:
        if self._server is not None or self.mesh is not None:
            self._stop_here()
            return
        try:
            state = read_state(self.options.state_dir)
        except StateCorrupt:
            raise
        except MeshNotRunning:
            return  # nothing to stop (the CLI says so)
        _terminate(state.pid, state.pid_start)

    def force_down(self) -> str:
        """`mesh down --force`: stop the recorded mesh if it provably is ours, and remove the state file regardless."""
        pid = discard_state(self.options.state_dir)
        if pid is None:
            return "removed the state file; no running mesh process could be proven to be ours, so none was signalled"
        _terminate(pid, process_start(pid) or 0)
        return f"stopped the mesh (pid {pid}) and removed its state file"

    def _stop_here(self) -> None:
        try:
            if self._server is not None:
                self._server.stop()
        finally:
            if self.mesh is not None:
                self.mesh.stop()
            state_path(self.options.state_dir).unlink(missing_ok=True)
            self._server, self.mesh = None, None

    # --- operate ------------------------------------------------------------------------------------------

    def client(self) -> ControlClient:
        return ControlClient(self.options.state_dir)

    def apply(
        self,
        config: MeshConfig,
        *,
        dry_run: bool = False,
        prune: bool = True,
        wait: float = 10.0,
        analyze: bool = True,
        base_revision: int | None = None,
    ) -> ApplyResult:
        """`prune=False` merges like `kubectl apply -f`: the config's objects replace their namesakes, the rest stay.
        `base_revision`: refused (StaleRevision) unless the mesh still runs that revision."""
        request = ApplyRequest(
            config=WireConfig.of(config),
            merge=not prune,
            dry_run=dry_run,
            analyze=analyze,
            wait=wait,
            base_revision=base_revision,
        )
        return self.client().apply(request)

    def live_config(self) -> MeshConfig:
        return self.client().config()

    def describe(self) -> MeshDescription:
        return self.client().status()

    def status(self) -> TargetStatus:
        try:
            state = read_state(self.options.state_dir)
            desc = self.describe()
        except StateCorrupt:
            raise  # whether a mesh runs is unknown: say so, never report "not running"
        except MeshNotRunning as e:
            return TargetStatus(target=self.name, running=False, detail=str(e))
        return TargetStatus(
            target=self.name,
            env=state.env,
            running=True,
            revision=str(desc.revision),
            ingress_url=desc.ingress,
            ingress_https_url=desc.ingress_https,
        )

    def proxy_status(self) -> list[ProxyStatus]:
        return self.client().proxy_status()

    def data_path(self) -> LocalDataPath:
        return LocalDataPath(self)


class LocalDataPath:
    """Clients into the local mesh: the ingress address, pods' sidecars (their HTTP proxy port), Envoy admin."""

    gateway_identity = spiffe_id(GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT)

    def __init__(self, target: LocalTarget) -> None:
        self.target = target
        self._desc = target.describe()  # pods and addresses do not change under a running mesh

    def ingress(self, host: str | None = None) -> Client:
        return HttpClient(self._desc.ingress, host=host)

    def _pod(self, pod: str) -> PodInfo:
        for p in self._desc.pods:
            if pod in (p.name, p.service):
                return p
        raise KeyError(f"no pod {pod!r}; pods: {[p.name for p in self._desc.pods]}")

    def from_pod(self, pod: str) -> Client:
        p = self._pod(pod)
        if p.netns:  # transparent capture: the request leaves from inside the pod, as its app's would
            from mesh.targets.local.podclient import PodClient

            return PodClient(p.netns)
        return HttpClient("", proxy=f"http://{p.ip}:{SIDECAR_OUTBOUND_PORT}")

    def plaintext_to(self, pod: str) -> Client:
        p = self._pod(pod)
        return HttpClient(f"http://{p.ip}:{p.port}")

    def pods(self, service: str) -> list[str]:
        return [p.name for p in self._desc.pods if p.service == service]

    def proxy_stats(self, pod: str, pattern: str) -> dict[str, int]:
        from mesh.dataplane.envoy import Admin

        ip = self._pod(pod).ip
        proxy = next(p for p in self._desc.proxies if p.ip == ip)
        return Admin.at(proxy.admin).stats(pattern)

    def proxy_histogram(self, pod: str, name: str) -> list[tuple[float, int]]:
        from mesh.dataplane.envoy import Admin

        ip = self._pod(pod).ip
        proxy = next(p for p in self._desc.proxies if p.ip == ip)
        return Admin.at(proxy.admin).histogram(name)

    def restarts(self) -> int:
        return sum(p.restarts for p in self.target.describe().processes)


def _terminate(pid: int, start: int, grace: float = 15.0) -> None:
    """SIGTERM the mesh process (it stops everything it started), SIGKILL after `grace` seconds; returns as soon as
    it has exited. Each signal goes only to the process that started at `start`: never pid <= 1, never a process
    that reused the pid (the pidfd is opened first, then checked: it cannot come to name another process)."""
    if pid <= 1 or start <= 0:
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if process_start(pid) != start:
            return
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], grace)[0]:  # readable once the process has exited
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    finally:
        os.close(pidfd)


def serve(
    request: ServeRequest,
    progress: Progress | None = None,
    on_ready: Callable[[LocalTarget], None] = lambda target: None,
) -> None:
    """Run a mesh in this process until SIGTERM or SIGINT (the foreground `mesh up` and the detached child)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    target = LocalTarget(request.options, detach=False, env=request.env, policies=request.policies)
    target.up(request.config.to_config(), progress)
    try:
        if request.ready_fd is not None:  # the `mesh up -d` that started us returns now
            os.write(request.ready_fd, b"ready\n")
            os.close(request.ready_fd)
        on_ready(target)
        stop.wait()
    finally:
        target.down()
