"""What wakes a reconcile: a git push hook (Unix socket), a GitHub webhook, or polling with jitter.

Triggers are only hints: each sets the environment's event, and the worker fetches the ref itself. Bursts coalesce:
ten pushes while a reconcile runs set the event once more, and the next cycle reconciles the newest commit once.

The webhook accepts only a valid `X-Hub-Signature-256` (HMAC-SHA256 of the raw body, compared in constant time);
missing, SHA-1-only and bad signatures answer 401, a replayed `X-GitHub-Delivery` 400, the wrong repository or ref
400, bodies over the limit 413; nothing is fetched for any of them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import os
import socket
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mesh.errors import SourceError
from mesh.gitops.metrics import Metrics

MAX_BODY = 1 << 20  # GitHub caps push payloads at 25 MB; ours need only the ref and repository


class ReplayGuard:
    """Remembers recent delivery ids; a second delivery with the same id is a replay."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def first_time(self, delivery: str) -> bool:
        with self._lock:
            if delivery in self._seen:
                return False
            self._seen[delivery] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True


@dataclass
class WebhookConfig:
    secret: bytes
    envs: dict[str, str]  # env -> ref (branch or tag pattern) it follows
    repo: str | None = None  # owner/name the pushes must come from (None: any)
    max_body: int = MAX_BODY
    replays: ReplayGuard = field(default_factory=ReplayGuard)


def _ref_matches(pushed: str, follows: str) -> bool:
    if pushed.startswith("refs/tags/"):
        return fnmatch.fnmatchcase(pushed.removeprefix("refs/tags/"), follows)
    return pushed.removeprefix("refs/heads/") == follows


def check_delivery(cfg: WebhookConfig, headers: dict[str, str], body: bytes) -> tuple[int, str, list[str]]:
    """(HTTP status, message, environments to reconcile) for one delivery. Pure: no I/O, no fetch."""
    h = {k.lower(): v for k, v in headers.items()}
    signature = h.get("x-hub-signature-256", "")
    if not signature.startswith("sha256="):
        why = "SHA-1 signatures are not accepted" if "x-hub-signature" in h else "missing X-Hub-Signature-256"
        return 401, why, []
    expected = "sha256=" + hmac.new(cfg.secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return 401, "bad signature", []
    delivery = h.get("x-github-delivery", "")
    if not delivery:
        return 400, "missing X-GitHub-Delivery", []
    if not cfg.replays.first_time(delivery):
        return 400, f"replayed delivery {delivery}", []
    event = h.get("x-github-event", "push")
    if event == "ping":
        return 200, "pong", []
    if event != "push":
        return 202, f"ignored event {event}", []
    try:
        payload: dict[str, Any] = json.loads(body)
    except ValueError:
        return 400, "body is not JSON", []
    repo = str((payload.get("repository") or {}).get("full_name", ""))
    if cfg.repo and repo.lower() != cfg.repo.lower():
        return 400, f"push from {repo or 'an unnamed repository'}, expected {cfg.repo}", []
    ref = str(payload.get("ref", ""))
    envs = [env for env, follows in cfg.envs.items() if _ref_matches(ref, follows)]
    if not envs:
        return 202, f"no environment follows {ref}", []
    return 202, f"reconciling {', '.join(envs)}", envs


class _Handler(BaseHTTPRequestHandler):
    server: TriggerServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: the daemon prints its own progress
        pass

    def _answer(self, status: int, text: str, content_type: str = "text/plain") -> None:
        data = (text + ("\n" if not text.endswith("\n") else "")).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            self._answer(200, self.server.metrics.text(), "text/plain; version=0.0.4")
        elif self.path == "/healthz":
            self._answer(200, "ok")
        else:
            self._answer(404, "not found")

    def do_POST(self) -> None:
        cfg = self.server.webhook
        if self.path != "/webhook" or cfg is None:
            self._answer(404, "not found")
            return
        length = self.headers.get("Content-Length")
        envs: list[str] = []
        if length is None or not length.isdigit():
            status, text = 411, "Content-Length required"
        elif int(length) > cfg.max_body:
            status, text = 413, f"body over {cfg.max_body} bytes"
            self.close_connection = True
        else:
            body = self.rfile.read(int(length))
            status, text, envs = check_delivery(cfg, dict(self.headers.items()), body)
        self.server.metrics.webhook_answer(status)
        for env in envs:
            self.server.trigger(env)
        self._answer(status, text)


class TriggerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        trigger: Callable[[str], None],
        metrics: Metrics,
        webhook: WebhookConfig | None,
    ) -> None:
        super().__init__(address, _Handler)
        self.trigger = trigger
        self.metrics = metrics
        self.webhook = webhook


class HookListener:
    """A Unix datagram socket the post-receive hook writes pushed refs to."""

    def __init__(self, path: Path, on_ref: Callable[[str], None]) -> None:
        self.path = path
        self.on_ref = on_ref
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.thread = threading.Thread(target=self._serve, name="hook-listener", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            for line in data.decode(errors="replace").splitlines():
                self.on_ref(line.strip())

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


HOOK = """#!/bin/sh
# installed by `mesh reconcile install-hook`: tell the reconciler which refs were pushed (a hint; it fetches itself)
exec {python} -I -m mesh.gitops.hook {socket}
"""


def install_hook(repo: Path, socket_path: Path) -> Path:
    """Write hooks/post-receive into a bare repository (or a clone's .git) so a push reconciles at once."""
    hooks = repo / "hooks" if (repo / "HEAD").exists() else repo / ".git" / "hooks"
    if not hooks.parent.exists() or not (hooks.parent / "HEAD").exists():
        raise SourceError(f"{repo} is not a git repository", hint="give the path of the bare repository you push to")
    hooks.mkdir(exist_ok=True)
    hook = hooks / "post-receive"
    import shlex

    hook.write_text(HOOK.format(python=shlex.quote(sys.executable), socket=shlex.quote(str(socket_path.resolve()))))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return hook
