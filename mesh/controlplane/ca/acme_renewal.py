"""Keeps a running mesh's ACME credentials current: obtained when the mesh starts, renewed once due, retried after
a failure (the previous certificate keeps serving meanwhile), each success handed to `on_issued` so the mesh pushes
it over SDS (and reloads the edge if the edge serves it). One thread; it sleeps until the next certificate falls due
or the next retry, never polling faster than `MIN_WAIT`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from mesh.api._base import parse_duration
from mesh.controlplane.ca.acme import AcmeCertificates, CertificateStatus

log = logging.getLogger("mesh.acme")

MIN_WAIT = 0.5  # seconds
MAX_WAIT = 300.0  # re-check at least this often (a certificate replaced or removed on disk by hand)


@dataclass(frozen=True)
class AcmeCredential:
    """One credentialName to keep current: its hosts and its issuer's client."""

    name: str
    hosts: tuple[str, ...]
    certificates: AcmeCertificates


class AcmeRenewal:
    def __init__(self, credentials: list[AcmeCredential], on_issued: Callable[[str], None]) -> None:
        self.credentials = list(credentials)
        self.on_issued = on_issued
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one order per credential at a time (the loop, or a forced renewal)
        self._thread: threading.Thread | None = None

    def run_once(self, *, force: bool = False) -> float:
        """Obtain or renew what is due (everything when forced); seconds until the next certificate falls due."""
        waits = [self._ensure(c, force=force) for c in self.credentials]
        return min([MAX_WAIT, *waits])

    def renew(self, name: str) -> CertificateStatus:
        """Renew one credential now, whether due or not (`mesh` tests, and an operator who rotates by hand)."""
        cred = next(c for c in self.credentials if c.name == name)
        self._ensure(cred, force=True)
        st = cred.certificates.status(name)
        assert st is not None
        return st

    def _ensure(self, cred: AcmeCredential, *, force: bool) -> float:
        with self._lock:
            before = cred.certificates.status(cred.name)
            issued = before.issued if before else 0  # read now: `ensure` updates that status in place
            st = cred.certificates.ensure(cred.name, list(cred.hosts), force=force)
            if st.issued != issued and not self._stop.is_set():  # a mesh that is stopping pushes nothing
                log.info("ACME: credential %s issued for %s (valid until %s)", cred.name, cred.hosts, st.not_after)
                self.on_issued(cred.name)
        return self._wait(cred, st)

    def _wait(self, cred: AcmeCredential, st: CertificateStatus) -> float:
        issuer = cred.certificates.issuer
        if cred.certificates.due(cred.name):  # the order failed: try again soon, the old certificate serves
            return max(MIN_WAIT, parse_duration(issuer.retry_interval))
        if st.renew_after is None:
            return MAX_WAIT
        left = (dt.datetime.fromisoformat(st.renew_after) - dt.datetime.now(dt.UTC)).total_seconds()
        return max(MIN_WAIT, left)

    # --- the thread ---------------------------------------------------------------------------------

    def start(self, wait: float) -> AcmeRenewal:
        """Keep renewing in the background, first after `wait` seconds (the result of a first `run_once`)."""
        self._thread = threading.Thread(target=self._loop, args=(wait,), name="acme-renewal", daemon=True)
        self._thread.start()
        return self

    def _loop(self, wait: float) -> None:
        while not self._stop.wait(wait):
            try:
                wait = self.run_once()
            except Exception:  # a bug must not end renewals: log it, try again later
                log.exception("ACME renewal round failed")
                wait = MAX_WAIT

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
