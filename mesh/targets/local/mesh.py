"""LocalMesh: compile -> analyze -> register pods -> serve xDS -> start apps and Envoys -> wait for ACKs."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from mesh import analyze as analysis
from mesh.api.config import MeshConfig
from mesh.api.issuer import Issuer, issued_credentials
from mesh.api.workloads import Service
from mesh.controlplane.ca import acme_status
from mesh.controlplane.ca.authority import CertificateAuthority
from mesh.controlplane.ca.credentials import CredentialStore
from mesh.controlplane.ca.rotation import Rotation
from mesh.controlplane.pilot import Pilot, PushResult
from mesh.controlplane.translate.context import MeshOptions
from mesh.controlplane.xds import resources as rt
from mesh.controlplane.xds.server import NodeCredentials, XdsServer
from mesh.dataplane import envoy
from mesh.dataplane.addresses import LoopbackBlock, allocate_block, port_free
from mesh.dataplane.supervisor import ProcessSpec, StartupFailed, Supervisor
from mesh.dataplane.zygote import Forked, Zygote, forkable
from mesh.dataplane.zygote import adopt as adopt_zygote
from mesh.dataplane.zygote import discard as discard_zygote
from mesh.edge import local as edge_local
from mesh.errors import MeshError, TargetError, WorkloadChange
from mesh.istio import EGRESS_GATEWAY_LABELS, EGRESS_GATEWAY_NAME
from mesh.istio.serviceentries import egress_gateway_entry, egress_gateway_servers
from mesh.observability.envoyconfig import add_to_bootstrap
from mesh.observability.layout import TelemetryLayout
from mesh.runtime import (
    GATEWAY_NAMESPACE,
    SIDECAR_OUTBOUND_PORT,
    Pod,
    Proxy,
    Registry,
    gateway_proxy,
    pods_for,
    sidecar_for,
)
from mesh.targets import capabilities
from mesh.targets.base import ProxyStatus, SyncState
from mesh.targets.local import interception
from mesh.targets.local.api import MeshDescription, PodInfo, ProxyInfo
from mesh.targets.local.interception import CapturedPods
from mesh.targets.local.options import LocalOptions

if TYPE_CHECKING:  # loaded when a mesh uses them, not before its first request is served
    from mesh.controlplane.ca.acme_renewal import AcmeRenewal
    from mesh.edge.tier import EdgeTier
    from mesh.observability.options import ObservabilityOptions
    from mesh.observability.stack import TelemetryStack

log = logging.getLogger("mesh.local")

SAMPLE_APP = "mesh.sampleapp"  # the app that can listen on a Unix socket (UNIX_SOCKET) and trusts XFCC only there

Progress = Callable[[str], None]


def gateway_listen(config: MeshConfig, host: str, port: int, https_port: int) -> dict[int, tuple[str, int]]:
    """Gateway server port -> host address: 80 -> the ingress port, 443 -> the HTTPS port (both always exposed,
    so `mesh apply` can add servers there); other privileged ports +8000."""
    out = {80: (host, port), 443: (host, https_port)}
    for gw in config.gateways:
        for s in gw.servers:
            p = s.port.number
            out.setdefault(p, (host, p + 8000 if p < 1024 else p))
    return out


def configured_ports(config: MeshConfig) -> set[int]:
    return {s.port.number for gw in config.gateways for s in gw.servers} or {80}


class LocalMesh:
    def __init__(
        self, config: MeshConfig, options: LocalOptions | None = None, progress: Progress | None = None
    ) -> None:
        self.config = config
        self.options = options or LocalOptions()
        self.progress: Progress = progress or (lambda msg: log.info(msg))
        self.registry = Registry()
        self.ca = self._certificate_authority()
        self.rotation: Rotation | None = None  # pushes when a workload certificate falls due
        self.pilot = Pilot(
            self.registry,
            self.ca,
            credentials=CredentialStore(self.ca, self.options.state_dir / "credentials"),
            options=MeshOptions(
                access_log=self.options.access_log,
                outbound_traffic_policy=self.options.outbound_traffic_policy,
                h2_upgrade_policy=self.options.h2_upgrade_policy,
            ),
        )
        self.supervisor = Supervisor(on_event=self.progress)
        self.supervisor.on_health = self._on_health
        self.block: LoopbackBlock | None = None
        self.gateway: Proxy | None = None
        self.gateways: list[Proxy] = []  # the ingress gateway replicas (`--gateway-replicas`); gateway is the first
        self.edge: EdgeTier | None = None  # HAProxy in front of them (`--edge haproxy`)
        self.acme: AcmeRenewal | None = None  # keeps credentials from ACME issuers current (`Issuer`)
        self._acme_plan: dict[str, tuple[str, tuple[str, ...]]] = {}  # what `acme` keeps: name -> (issuer, hosts)
        self.xds: XdsServer | None = None
        self.credentials = NodeCredentials()
        self.run_dir = self.options.state_dir / "run"
        self._private_dir: Path | None = None
        self.started_at = 0.0
        self.telemetry: TelemetryStack | None = None
        self.capture: CapturedPods | None = None  # the pod network under --interception iptables
        self.egress: Proxy | None = None  # the egress gateway, when a Gateway selects one (iptables mode)
        self.interception = "proxy"
        self.zygote: Zygote | None = None  # forks the sample-app workloads (one interpreter start for all of them)

    @property
    def private_dir(self) -> Path:
        """Owner-only (mkdtemp: 0700, unpredictable name) and short (Unix socket paths are limited to 107 bytes):
        the xDS socket and every Envoy's admin socket live here, so no other local user can connect to them.
        Made on first use (by `start`), removed by `stop`: a mesh that is never started leaves nothing behind."""
        if self._private_dir is None:
            self._private_dir = Path(tempfile.mkdtemp(prefix="meshops-"))
        return self._private_dir

    # --- start ------------------------------------------------------------------------------------

    def start(self) -> LocalMesh:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalMesh:
        t0 = time.perf_counter()
        opts = self.options
        opts.check()
        self._start_zygote()  # first: its imports overlap everything below
        self._acme_credentials(self.config)  # a bad Issuer reference fails here, before anything starts
        findings = analysis.check(self.config, capabilities("local"))
        for f in findings:
            self.progress(f"  {f}")
        listen = gateway_listen(self.config, opts.ingress_host, opts.ingress_port, opts.ingress_https_port)
        in_use = configured_ports(self.config)
        for port, (host, host_port) in sorted(listen.items()):
            if port in in_use and not port_free(host, host_port):
                raise TargetError(
                    f"ingress port {host}:{host_port} (gateway port {port}) is already in use",
                    hint="pass --ingress-port / --ingress-https-port with a free port, or stop what is listening there "
                    "(is a mesh already up? `mesh status`)",
                )
        self.block = allocate_block(opts.loopback_block)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.options.state_dir, self.run_dir):  # logs and bootstraps name ports, node ids and credentials
            d.chmod(0o700)
        # clients of HTTPS gateway servers trust this root (certificates the mesh CA issued for credentialNames)
        (self.options.state_dir / "ca.crt").write_bytes(self.ca.root_pem)
        for old in self.run_dir.glob("*.log"):
            old.unlink()

        block = self.block
        mode, why = interception.choose(opts.interception)
        self.interception = mode
        self.progress(f"interception: {mode} — {why}")
        interception.check_mode(mode, self.config)
        if mode == "iptables":
            self.capture = CapturedPods(opts.state_dir, dns_proxy=opts.dns_proxy)
            for run in self.capture.removed_stale:
                self.progress(f"removed the pod network mb{run} a killed mesh left behind")
            self.pilot.options = replace(self.pilot.options, interception="iptables")
        next_ips = self.capture.next_pod if self.capture else block.next_pod
        pods = [
            p if self.capture else self._private_app(p)
            for s in sorted(self.config.services, key=lambda s: (s.namespace, s.name))
            for p in pods_for(s, next_ips)
        ]
        if self.capture:
            self.capture.add_pods(pods, self.config.services)
            self.pilot.options = replace(
                self.pilot.options,
                dns_proxy=opts.dns_proxy,
                dns_auto_allocate=opts.dns_proxy and opts.dns_auto_allocate,
                service_vips=tuple(sorted(self.capture.vips.items())),
                dns_upstream=self.capture.dns_upstream,
            )
            if opts.dns_proxy:
                self.progress("DNS: each sidecar answers its pod's queries (service VIPs, ServiceEntry hosts)")
        for pod in pods:
            self.registry.add_pod(pod)
        self.gateways = self._gateway_replicas(block, listen)
        self.gateway = self.gateways[0]
        for gateway in self.gateways:
            self.registry.add_proxy(gateway)
        for note in edge_local.per_replica_limits(self.config, self.gateways):
            self.progress(f"note: {note}")
        self.egress = self._egress_gateway()

        if opts.observability is not None:  # collector and Prometheus start before any proxy logs to them
            self._start_telemetry(
                opts.observability, self.capture.telemetry_ip if self.capture else f"127.{block.b}.0.3"
            )
        self.xds = self.serve_xds()
        if self.capture:  # Envoy runs as the proxy user inside the pods: let it reach xDS and place its admin socket
            self.capture.share(self.private_dir, self.private_dir / "xds.sock")
        # the Envoys first: they take longest to become ready
        specs = [self._envoy_spec(sidecar_for(p)) for p in pods]
        specs += [self._envoy_spec(g) for g in self.gateways]
        if self.egress is not None:
            specs.append(self._envoy_spec(self.egress))
        specs += [self._app_spec(p) for p in pods]
        if opts.edge is not None:
            try:
                specs.append(self._edge_spec())
            except MeshError:
                self.stop()
                raise

        def step(done: int, total: int) -> None:
            if done == total or done % max(1, total // 4) == 0:
                self.progress(f"  {done}/{total} processes ready")

        def push() -> None:  # while the processes start: an Envoy waits on its ADS stream for the first push
            assert self.xds is not None
            self.pilot.push(self.config, wait=0)
            where = str(self.capture.net.subnet) if self.capture else f"127.{block.b}.0.0/16"
            self.progress(f"control plane: xDS on {self.xds.address}, {len(pods)} pods on {where}")

        self.progress(f"starting {len(pods)} apps, {len(pods)} sidecars and the ingress gateway")
        try:
            self.supervisor.start(specs, timeout=opts.start_timeout, progress=step, meanwhile=push)
        except StartupFailed as e:
            raise TargetError(
                str(e), hint="the log named above says why; `mesh up --log-level debug` for more"
            ) from None
        ids = [p.id for p in self.registry.proxies]
        results = self.pilot.cache.wait_synced(ids, timeout=opts.start_timeout)
        stale = {n: r.state for n, r in results.items() if r.state != "SYNCED"}
        if stale:
            raise TargetError(f"proxies did not sync their config: {stale}")
        self.rotation = Rotation(self.ca, lambda: self.pilot.push(self.config)).start()
        self._start_acme()
        self.started_at = time.time()
        self.progress(f"mesh ready in {time.perf_counter() - t0:.2f}s")
        return self

    def _start_zygote(self) -> None:
        """The sample app's zygote (the one `mesh up` prestarted, if any), when some workload runs the sample app."""
        commands = (
            [sys.executable if a == "{python}" else a for a in v.command]
            for s in self.config.services
            for v in s.versions
        )
        if any(forkable(argv) is not None for argv in commands):
            self.zygote = adopt_zygote(self.options.state_dir / "zygote.log")
        else:
            discard_zygote()

    def _certificate_authority(self) -> CertificateAuthority:
        """The mesh CA: a plug-in one from Istio's `cacerts` files (`--ca-dir`), else a self-made root."""
        ttl = dt.timedelta(seconds=self.options.workload_cert_ttl)
        if self.options.ca_dir is not None:
            return CertificateAuthority.from_cacerts(self.options.ca_dir, workload_ttl=ttl)
        return CertificateAuthority(workload_ttl=ttl)

    def _gateway_replicas(self, block: LoopbackBlock, listen: dict[int, tuple[str, int]]) -> list[Proxy]:
        """One gateway Envoy, or N behind the edge, each listening on its own address (the edge owns the ingress
        port); without an edge there is one replica (`LocalOptions.check`) and it keeps the ingress port."""
        opts = self.options
        out = []
        for i in range(opts.gateway_replicas):
            ip, at = edge_local.replica_ip(block.b, i), edge_local.replica_listen_ip(block.b, i)
            on = listen if opts.edge is None else {p: (at, port) for p, (_, port) in listen.items()}
            out.append(gateway_proxy(ip, on, edge_local.replica_name(i)))
        return out

    def _egress_gateway(self) -> Proxy | None:
        """Istio's egress gateway, when a Gateway selects it: an Envoy in a namespace of its own on the pod bridge
        (external hosts see its address), not captured, with its Service in the registry so sidecars route to it."""
        ports = egress_gateway_servers(self.config.resources)
        if not ports:
            return None
        if self.capture is None:
            self.progress("egress gateway: not started (it needs --interception iptables: pods reach it by address)")
            return None
        ip = self.capture.add_gateway(EGRESS_GATEWAY_NAME, GATEWAY_NAMESPACE)
        listen = {p.number: (ip, p.number) for p in ports}
        proxy = Proxy(
            "router",
            ip,
            EGRESS_GATEWAY_NAME,
            GATEWAY_NAMESPACE,
            EGRESS_GATEWAY_LABELS,
            f"{EGRESS_GATEWAY_NAME}-service-account",
            None,
            listen,
        )
        self.registry.add_proxy(proxy)
        self.registry.add_entry(egress_gateway_entry(ip, ports, GATEWAY_NAMESPACE))
        self.progress(f"egress gateway: {ip} (ports {', '.join(str(p.number) for p in ports)})")
        return proxy

    # --- ACME credentials (Issuer) --------------------------------------------------------------------

    def _acme_credentials(self, config: MeshConfig) -> dict[str, tuple[Issuer, list[str]]]:
        """credentialName -> (issuer, hosts) the policies ask of ACME issuers. Locally the HTTP-01 answers are
        served by the edge (as cert-manager's solver is reached through the ingress): refused without it."""
        plan = issued_credentials(config.gateways, config.of_kind(Issuer))
        if plan and self.options.edge is None:
            names = ", ".join(sorted(plan))
            raise TargetError(
                f"credentials {names} come from an ACME issuer, whose HTTP-01 challenges the local mesh answers "
                "through its edge, and no edge runs",
                hint="add `--edge haproxy` to `mesh up` (the ACME server must reach the ingress port as port 80 of "
                "the hosts: a private ACME server such as pebble is told which port to validate on)",
            )
        return plan

    def _start_acme(self) -> None:
        """Obtain every ACME credential now (progress per credential; a failure is reported, never fatal: the
        mesh CA's certificate serves until an order succeeds), then keep them renewed in the background."""
        plan = self._acme_credentials(self.config)
        self._acme_plan = {n: (i.ref, tuple(h)) for n, (i, h) in plan.items()}
        if not plan:
            return
        from mesh.controlplane.ca.acme import AcmeCertificates, AcmeIssuer
        from mesh.controlplane.ca.acme_renewal import AcmeCredential, AcmeRenewal
        from mesh.edge.tier import EdgeChallenges

        assert self.edge is not None
        responder, creds_dir = EdgeChallenges(self.edge), self.options.state_dir / "credentials"
        clients: dict[str, AcmeCertificates] = {}
        wanted = []
        for name, (issuer, hosts) in sorted(plan.items()):
            key = f"{issuer.namespace}-{issuer.name}"
            if key not in clients:
                spec = issuer.acme
                acme_issuer = AcmeIssuer(
                    name=key,
                    directory_url=spec.server,
                    email=spec.email,
                    account_key=self.options.state_dir / "acme" / f"{key}-account.pem",
                    ca_bundle=Path(spec.ca_bundle) if spec.ca_bundle else None,
                    renew_before=spec.renew_before,
                    timeout=spec.timeout,
                    retry_interval=spec.retry_interval,
                )
                clients[key] = AcmeCertificates(
                    acme_issuer, creds_dir, responder, acme_status.status_file(creds_dir, key)
                )
            wanted.append(AcmeCredential(name, tuple(hosts), clients[key]))
        self.acme = AcmeRenewal(wanted, self._acme_issued)
        self.progress(f"acme: obtaining {len(wanted)} credential(s) ({', '.join(w.name for w in wanted)})")
        wait = self.acme.run_once()
        for w in wanted:
            st = w.certificates.status(w.name)
            if st is not None and st.error is None:
                self.progress(f"  {w.name}: certificate for {', '.join(w.hosts)} valid until {st.not_after}")
            else:
                self.progress(f"  {w.name}: not obtained ({st.error if st else '?'}); retrying, see `mesh status`")
        self.acme.start(wait)

    def _acme_issued(self, name: str) -> None:
        """A new certificate on disk: push it over SDS; reload the edge if one of its listeners serves it."""
        self.pilot.push(self.config)
        if self.edge is not None and any(x.tls and x.tls.credential == name for x in self.edge.edge.listeners):
            self.edge.refresh_certificates()

    def _reconcile_acme(self, config: MeshConfig) -> None:
        """After `mesh apply`: restart the renewals when the issued credentials, their hosts or issuers changed."""
        plan = self._acme_credentials(config)
        if {n: (i.ref, tuple(h)) for n, (i, h) in plan.items()} == self._acme_plan:
            return
        if self.acme is not None:
            self.acme.stop()
            self.acme = None
        self._start_acme()

    def _edge_spec(self) -> ProcessSpec:
        from mesh.edge.tier import EdgeTier

        opts = self.options
        policy = edge_local.edge_policy(self.config, opts.ingress_host, opts.ingress_port)
        replicas = edge_local.replicas(self.gateways)
        self.edge = EdgeTier(
            policy, replicas, self.run_dir / "edge", opts.state_dir / "credentials", socket_dir=self.private_dir
        )
        self.progress(f"edge: HAProxy at {self.edge.url()} in front of {len(replicas)} gateway replicas")
        return self.edge.spec()

    def serve_xds(self) -> XdsServer:
        """The ADS server on the owner-only socket, serving only proxies that present their own credential."""
        return XdsServer(
            self.pilot.cache,
            max_proxies=2 * len(self.registry.proxies) + 16,
            unix_socket=self.private_dir / "xds.sock",
            credentials=self.credentials,
        ).start()

    def admin(self, proxy: Proxy | Pod) -> envoy.Admin:
        """The full admin API of a proxy (or a pod's sidecar), on its owner-only socket."""
        return envoy.Admin.at(self.admin_address(proxy))

    def admin_address(self, proxy: Proxy | Pod) -> str:
        return f"unix:{self.private_dir / f'admin-{proxy.name}.sock'}"

    def _start_telemetry(self, options: ObservabilityOptions, ip: str) -> None:
        from mesh.observability.stack import TelemetryStack

        self.telemetry = TelemetryStack(TelemetryLayout(self.options.state_dir), ip, options)
        self.telemetry.prepare(self.registry.proxies)
        self.pilot.options = replace(self.pilot.options, telemetry=self.telemetry.telemetry())
        try:
            self.supervisor.start(self.telemetry.specs(self.run_dir), timeout=self.options.start_timeout)
        except StartupFailed as e:
            self.stop()
            raise TargetError(str(e), hint="the log named above says why") from None
        self.progress(f"telemetry: collector on {ip}, Prometheus at {self.telemetry.prometheus.url}")

    def _on_health(self, process: str, ready: bool) -> None:
        """An app that exits leaves EDS (UNHEALTHY) until it is ready again, like a failing readiness probe."""
        kind, _, name = process.partition("/")
        if kind == "app":
            pod = next((p for p in self.registry.pods if p.name == name), None)
            if pod is not None:
                self.registry.set_health(pod.name, pod.namespace, ready)

    def _private_app(self, pod: Pod) -> Pod:
        """The sample app listens on a Unix socket in the owner-only dir: no other local user can reach it around
        its sidecar, forge XFCC to it, or take its address over while it restarts. Other apps keep `app_ip`."""
        version = next(v for v in self._service(pod).versions if v.name == pod.version)
        if SAMPLE_APP not in " ".join(version.command) or len(pod.ports) != 1:
            return pod
        return replace(pod, app_socket=str(self.private_dir / f"app-{pod.name}.sock"))

    def _app_spec(self, pod: Pod) -> ProcessSpec:
        svc = self._service(pod)
        version = next(v for v in svc.versions if v.name == pod.version)
        port = pod.ports[0]
        argv = [sys.executable if a == "{python}" else a for a in version.command]
        proxy = f"http://{pod.ip}:{SIDECAR_OUTBOUND_PORT}"
        env = {
            **version.env,
            "SERVICE_NAME": svc.name,
            "SERVICE_VERSION": version.name,
            "POD_NAME": pod.name,
            "POD_NAMESPACE": pod.namespace,
            "POD_IP": pod.ip,
            "HOST": pod.app_ip,
            "PORT": str(port.target_port or port.number),
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NO_PROXY": "",
            "no_proxy": "",
            "PYTHONUNBUFFERED": "1",
        }
        if pod.app_socket:
            env["UNIX_SOCKET"] = pod.app_socket
        target = (pod.app_ip, port.target_port or port.number)
        netns: str | None = None
        plain = argv  # what the zygote forks (it enters the pod's namespaces itself)

        def ready() -> bool:  # a socket in our 0700 dir can only be our own app's
            return _unix_ready(pod.app_socket) if pod.app_socket else _tcp_ready(*target)

        if self.capture is not None:  # transparent: no proxy variables, the app runs inside its pod
            for k in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
                env.pop(k)
            env["XFCC_TRUSTED"] = "1"  # only its sidecar can reach it
            netns = self.capture.namespace(pod.name)
            argv = self.capture.app_argv(pod, argv)
            capture, port_number = self.capture, target[1]

            def ready() -> bool:  # probed from inside the pod: its own traffic to itself is not captured
                return capture.app_ready(pod, port_number)

        log_path = self.run_dir / f"app-{pod.name}.log"
        fork = None
        if self.zygote is not None:
            parent = self.zygote

            def fork(env: dict[str, str]) -> Forked | None:  # in its pod's namespaces, under iptables
                return parent.spawn(plain, env, log_path, netns)

        return ProcessSpec(
            name=f"app/{pod.name}", argv=argv, env=env, log_path=log_path, ready=ready, kind="app", fork=fork
        )

    def _envoy_spec(self, proxy: Proxy) -> ProcessSpec:
        assert self.xds is not None
        config = envoy.bootstrap(
            proxy,
            "",
            0,
            xds_socket=self.private_dir / "xds.sock",
            admin_socket=Path(self.admin_address(proxy).removeprefix("unix:")),
            node_metadata={NodeCredentials.KEY: self.credentials.token(proxy.id)},
            stats_flush_interval=self.options.stats_flush_interval,
        )
        # a gateway outside the pods cannot send from its loopback address over the bridge: it binds nothing there
        bind = None if self.capture is not None and proxy.pod is None else proxy.ip
        config = add_to_bootstrap(config, self.pilot.options.telemetry, bind)
        path = envoy.write_bootstrap(self.run_dir / f"envoy-{proxy.name}.json", config)
        admin = self.admin(proxy)
        argv = envoy.command(path, log_level=self.options.envoy_log_level)
        log_path = self.run_dir / f"envoy-{proxy.name}.log"
        if self.capture is not None and proxy.pod is not None:
            argv = self.capture.envoy_argv(proxy.pod, argv, config, log_path)
        elif self.capture is not None and proxy is self.egress:  # in its own namespace, as the proxy user
            argv = self.capture.envoy_argv(proxy.name, argv, config, log_path)
        return ProcessSpec(
            name=f"envoy/{proxy.name}",
            argv=argv,
            log_path=log_path,
            ready=admin.ready,
            kind="envoy",
        )

    def _service(self, pod: Pod) -> Service:
        return next(s for s in self.config.services if s.name == pod.service and s.namespace == pod.namespace)

    # --- operate ----------------------------------------------------------------------------------

    def apply(self, config: MeshConfig, *, analyze: bool = True, wait: float = 10.0) -> PushResult:
        """Push new policies to the running proxies. Workloads cannot change under a running mesh."""
        self.check_workloads(config)
        interception.check_mode(cast(interception.Mode, self.interception), config)
        self._acme_credentials(config)  # a bad Issuer reference is refused before anything is pushed
        if analyze:
            analysis.check(config, capabilities("local"))
        result = self.pilot.push(config, wait=wait)
        self._wait_warm(result.changed, timeout=wait)
        if self.edge is not None:  # a changed Edge policy: a checked config, then a hitless reload
            policy = edge_local.edge_policy(config, self.options.ingress_host, self.options.ingress_port)
            if policy != self.edge.edge:
                self.edge.apply(policy)
        self.config = config
        self._reconcile_acme(config)
        return result

    def check_workloads(self, config: MeshConfig) -> None:
        """Workloads (services, versions, replicas) are started by `mesh up`: an apply that changes them is refused
        by name, never reported as applied with the change dropped."""
        old = {(s.namespace, s.name): s.model_dump() for s in self.config.services}
        new = {(s.namespace, s.name): s.model_dump() for s in config.services}
        changed = sorted(
            f"{ns}/{name}" for ns, name in old.keys() | new.keys() if old.get((ns, name)) != new.get((ns, name))
        )
        if changed:
            raise WorkloadChange(
                f"the new config changes workloads ({', '.join(changed)}: services, versions or replicas); "
                "`mesh apply` only changes policies, so nothing was applied",
                hint="workload changes need `mesh up`: `mesh down && mesh up` with the new workloads",
            )

    def _wait_warm(self, node_ids: list[str], timeout: float) -> None:
        """An ACK is not yet service: a listener that needs a new secret, or a cluster its endpoints, warms until
        they arrive. Wait until no changed proxy has anything warming (read from each Envoy's admin)."""
        proxies = [p for p in self.registry.proxies if p.id in set(node_ids)]
        deadline = time.monotonic() + timeout
        pending = {p.id: self.admin(p) for p in proxies}
        while pending and time.monotonic() < deadline:
            for node, admin in list(pending.items()):
                if not admin.warming():
                    del pending[node]
            if pending:
                time.sleep(0.01)
        if pending:
            raise TargetError(
                f"config still warming after {timeout:.0f}s on: {', '.join(sorted(pending))}",
                hint="`mesh proxy-config listeners PROXY` shows what is warming; its log is under STATE_DIR/run",
            )

    @property
    def ingress_https_url(self) -> str:
        assert self.gateway is not None
        host, port = self.gateway.listen[443]
        return f"https://{host}:{port}"

    @property
    def ingress_url(self) -> str:
        """Where clients send traffic: the edge when one runs (the replicas behind it are not the ingress)."""
        if self.edge is not None:
            return self.edge.url()
        assert self.gateway is not None
        host, port = self.gateway.listen.get(80) or next(iter(self.gateway.listen.values()))
        return f"http://{host}:{port}"

    def proxy_status(self) -> list[ProxyStatus]:
        out = []
        for p in self.registry.proxies:
            sync = self.pilot.cache.sync_state(p.id)
            st = self.pilot.cache.status(p.id)
            errors = dict(sync.errors)
            if self.admin(p).state() == "DRAINING":  # ACKed but not serving: its listeners were told to drain
                errors["admin"] = "listeners are draining: the proxy refuses new connections"
            out.append(
                ProxyStatus(
                    proxy=p.short,
                    id=p.id,
                    kind=p.kind,
                    state=cast(SyncState, sync.state),
                    errors=errors,
                    versions={short: (st.types[t].acked[:8] if t in st.types else "") for t, short in rt.SHORT.items()},
                )
            )
        return out

    def describe(self) -> MeshDescription:
        """What `mesh status` shows and what the state file records."""
        return MeshDescription(
            pid=os.getpid(),
            ingress=self.ingress_url,
            ingress_https=self.ingress_https_url if self.gateway else None,
            ca=str((self.options.state_dir / "ca.crt").resolve()),
            xds=self.xds.address if self.xds else None,
            revision=self.pilot.revision,
            started_at=self.started_at,
            block=self.block.b if self.block else None,
            interception=self.interception,
            proxies=[
                ProxyInfo(name=p.short, id=p.id, kind=p.kind, ip=p.ip, admin=self.admin_address(p))
                for p in self.registry.proxies
            ],
            pods=[
                PodInfo(
                    name=p.name,
                    namespace=p.namespace,
                    service=p.service,
                    version=p.version,
                    ip=p.ip,
                    app=f"unix:{p.app_socket}" if p.app_socket else p.app_ip,
                    port=p.ports[0].number,
                    netns=self.capture.net.namespaces.get(p.name) if self.capture else None,
                )
                for p in self.registry.pods
            ],
            processes=self.supervisor.status(),
            observability=self.telemetry.layout.read_endpoints() if self.telemetry else None,
            edge=self._describe_edge(),
            acme=acme_status.read_all(self.options.state_dir / "credentials"),
        )

    def _describe_edge(self) -> edge_local.EdgeInfo | None:
        if self.edge is None:
            return None
        return edge_local.describe(self.edge.edge, self.edge.replicas, self.edge.runtime, str(self.edge.config_path))

    def stop(self) -> None:
        if self.acme is not None:
            self.acme.stop()
            self.acme = None
        if self.rotation is not None:
            self.rotation.stop()
            self.rotation = None
        self.supervisor.stop()
        if self.zygote is not None:  # after its children: the supervisor stopped them one by one
            self.zygote.stop()
            self.zygote = None
        if self.xds is not None:
            self.xds.stop()
            self.xds = None
        if self.capture is not None:  # after the processes: a namespace goes once nothing runs in it
            self.capture.destroy()
            self.capture = None
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None


def _unix_ready(path: str) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def _tcp_ready(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
