"""Certificate rotation: a thread that pushes exactly when the CA says an SVID falls due.

The push re-translates, `CertificateAuthority.svid()` hands out new certificates for what is due, and the proxies
receive them over SDS: Envoy swaps secrets without closing a connection (pooled connections keep the old one until
they are re-established, which is fine: it stays valid until its own expiry, well past half-life).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from mesh.controlplane.ca.authority import CertificateAuthority

log = logging.getLogger("mesh.ca")


class Rotation:
    def __init__(self, ca: CertificateAuthority, push: Callable[[], object], *, idle: float = 1.0) -> None:
        self.ca = ca
        self.push = push
        self.idle = idle  # how often to look again when nothing is issued, or after a push left something due
        self.pushes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Rotation:
        self._thread = threading.Thread(target=self._run, name="ca-rotation", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.ca.next_renewal()
            now = dt.datetime.now(dt.UTC)
            if due is None or due > now:
                wait = self.idle if due is None else (due - now).total_seconds()
                self._stop.wait(min(wait, 60.0))
                continue
            try:
                self.push()
                self.pushes += 1
            except Exception as e:  # the next attempt comes after `idle`; the current certificates stay valid
                log.warning("certificate rotation push failed: %s", e)
            # an identity no proxy uses any more stays due: look again later rather than spin
            if (nxt := self.ca.next_renewal()) is not None and nxt <= dt.datetime.now(dt.UTC):
                self._stop.wait(self.idle)
