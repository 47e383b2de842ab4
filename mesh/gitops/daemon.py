"""`mesh reconcile`: one worker thread per environment, woken by the hook, the webhook or its poll timer.

A worker waits on its event with a jittered poll interval as the timeout, clears the event, reconciles the newest
commit, and loops: triggers that arrive during a reconcile coalesce into one more cycle. Transient faults back off
(doubling up to the poll interval) while the last applied config keeps serving.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mesh.gitops.reconciler import Reconciler, Result
from mesh.gitops.render import fork_server
from mesh.gitops.triggers import HookListener, TriggerServer, WebhookConfig, _ref_matches

DEFAULT_POLL = 15.0
JITTER = 0.2


@dataclass
class DaemonSettings:
    poll: float = DEFAULT_POLL
    listen: tuple[str, int] | None = None  # webhook + /metrics
    webhook: WebhookConfig | None = None
    hook_socket: Path | None = None


class Daemon:
    def __init__(
        self,
        reconcilers: list[Reconciler],
        settings: DaemonSettings,
        on_result: Callable[[Result], None] = lambda _: None,
    ) -> None:
        self.reconcilers = {r.env: r for r in reconcilers}
        self.settings = settings
        self.on_result = on_result
        self.events = {env: threading.Event() for env in self.reconcilers}
        self.stop = threading.Event()
        self.rng = random.Random()
        self.server: TriggerServer | None = None
        self.hook: HookListener | None = None
        self.threads: list[threading.Thread] = []
        self.cycles = {env: 0 for env in self.reconcilers}

    def trigger(self, env: str) -> None:
        if env in self.events:
            self.events[env].set()

    def _on_ref(self, ref: str) -> None:
        for env, r in self.reconcilers.items():
            if not ref or _ref_matches(ref, r.spec.ref):
                self.trigger(env)

    def start(self) -> None:
        metrics = next(iter(self.reconcilers.values())).metrics
        if any(r.settings.fork_sandbox for r in self.reconcilers.values()):
            fork_server().warm()  # the first push does not pay for the sandbox's imports
        if self.settings.listen is not None:
            self.server = TriggerServer(self.settings.listen, self.trigger, metrics, self.settings.webhook)
            threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True).start()
        if self.settings.hook_socket is not None:
            self.hook = HookListener(self.settings.hook_socket, self._on_ref)
            self.hook.start()
        for env in self.reconcilers:
            t = threading.Thread(target=self._worker, args=(env,), name=f"reconcile-{env}", daemon=True)
            t.start()
            self.threads.append(t)

    @property
    def address(self) -> tuple[str, int] | None:
        if self.server is None:
            return None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def _worker(self, env: str) -> None:
        reconciler = self.reconcilers[env]
        backoff = 0.0
        self.events[env].set()  # reconcile once at start: converge whatever a previous run left
        while not self.stop.is_set():
            wait = backoff or self.settings.poll * (1 + self.rng.uniform(-JITTER, JITTER))
            self.events[env].wait(wait)
            if self.stop.is_set():
                return
            self.events[env].clear()
            try:
                result = reconciler.reconcile()
            except Exception as e:  # a config error (missing ref, unsafe source): report, keep serving, keep polling
                result = Result(env=env, action="error", reason=f"{type(e).__name__}: {str(e).splitlines()[0]}")
            self.cycles[env] += 1
            backoff = min(self.settings.poll, max(0.5, backoff * 2)) if result.action == "transient" else 0.0
            self.on_result(result)

    def shutdown(self) -> None:
        self.stop.set()
        for e in self.events.values():
            e.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.hook is not None:
            self.hook.close()
        for t in self.threads:
            t.join(timeout=30)
