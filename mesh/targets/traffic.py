"""Traffic as users send it: through the ingress gateway, or from inside a pod via its sidecar (every target)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported by the first client made: `mesh up` serves its first request before needing one
    import requests


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any
    text: str
    elapsed: float  # seconds

    @property
    def json(self) -> dict[str, Any]:
        assert isinstance(self.body, dict), f"not a JSON object (status {self.status}): {self.text[:200]}"
        return self.body

    def call(self, service: str) -> dict[str, Any]:
        """The upstream call this service made to `service` (from the sample app's `calls`)."""
        for c in self.json.get("calls", []):
            if f"//{service}:" in c["url"] or f"//{service}/" in c["url"]:
                return c  # type: ignore[no-any-return]
        raise AssertionError(f"{self.json.get('service')} made no call to {service}: {self.text[:300]}")


@dataclass
class HttpClient:
    """requests with proxies from the environment ignored (a user's HTTP_PROXY must not hijack tests)."""

    base_url: str
    host: str | None = None
    proxy: str | None = None
    timeout: float = 15.0
    session: requests.Session = field(default_factory=lambda: _session())

    def __post_init__(self) -> None:
        self.session.trust_env = False
        if self.proxy:
            self.session.proxies = {"http": self.proxy}

    def get(self, path: str, headers: dict[str, str] | None = None, *, host: str | None = None) -> Reply:
        return self.request("GET", path, headers, host=host)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, *, host: str | None = None
    ) -> Reply:
        h = dict(headers or {})
        if host or self.host:
            h["Host"] = host or self.host or ""
        t0 = time.perf_counter()
        r = self.session.request(method, self.base_url + path, headers=h, timeout=self.timeout, allow_redirects=False)
        elapsed = time.perf_counter() - t0
        try:
            body = r.json()
        except ValueError:
            body = None
        return Reply(r.status_code, dict(r.headers), body, r.text, elapsed)


def _session() -> requests.Session:
    import requests

    return requests.Session()
