"""Host names as Istio reads them (pkg/config/host): short names resolved against a namespace, `*` wildcards.

`resolve_host` stays in `mesh.api.workloads` because `Service.fqdn` needs it below this package; it is re-exported
here so callers learn one place for host rules.
"""

from __future__ import annotations

from mesh.api.workloads import resolve_host

__all__ = ["host_matches", "resolve_host"]


def host_matches(pattern: str, host: str) -> bool:
    """Whether two hosts can name the same thing: a leading `*` wildcard on either side (`*` alone matches all)."""
    if pattern == "*" or host == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if host.startswith("*."):
        return pattern.endswith(host[1:])
    return pattern == host


def hosts_overlap(a: str, b: str) -> bool:
    """Whether two claimed hosts collide: the same host, or wildcards one of which covers the other
    (`*.d` and `*.productpage.d`). An exact host under a wildcard does not collide: the exact host wins."""
    if a == b:
        return True
    if a.startswith("*") and b.startswith("*"):
        return host_matches(a, b) or host_matches(b, a)
    return False
