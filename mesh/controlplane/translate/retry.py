"""Retry policies, as Istio's route/retry: the mesh default once per virtual host, a rule's own policy replacing it."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2

from mesh.api.networking import HTTPRetry
from mesh.controlplane.translate.protos import duration, packed, u32

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def default_retry_policy() -> rc.RetryPolicy:
    """Istio's outbound default: 2 retries on connection-level failures, never the same host twice."""
    return rc.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=u32(2),
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=packed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=5,
    )


def retry_policy(retries: HTTPRetry | None) -> rc.RetryPolicy | None:
    """None inherits the virtual host's policy (Istio's default); `attempts: 0` is an explicit no-retry policy."""
    if retries is None:
        return None
    if retries.attempts == 0:
        return rc.RetryPolicy(num_retries=u32(0))
    p = default_retry_policy()
    p.num_retries.value = retries.attempts
    if retries.retry_on:
        words, codes = [], []
        for part in (s.strip() for s in retries.retry_on.split(",")):
            if part.isdigit():
                codes.append(int(part))
            elif part:
                words.append(part)
        if codes and "retriable-status-codes" not in words:
            words.append("retriable-status-codes")
        p.retry_on = ",".join(words)
        p.retriable_status_codes.extend(codes)
    if retries.per_try_timeout:
        p.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    return p
