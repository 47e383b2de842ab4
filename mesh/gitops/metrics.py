"""Reconciler metrics in the Prometheus text format (no client library: a few counters and gauges)."""

from __future__ import annotations

import threading
from collections import defaultdict


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[tuple[str, str], int] = defaultdict(int)
        self.duration_sum: dict[str, float] = defaultdict(float)
        self.duration_count: dict[str, int] = defaultdict(int)
        self.last_duration: dict[str, float] = {}
        self.last_applied: dict[str, float] = {}
        self.webhook: dict[int, int] = defaultdict(int)

    def reconciled(self, env: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self.outcomes[(env, outcome)] += 1
            self.duration_sum[env] += seconds
            self.duration_count[env] += 1
            self.last_duration[env] = seconds

    def applied(self, env: str, when: float) -> None:
        with self._lock:
            self.last_applied[env] = when

    def webhook_answer(self, status: int) -> None:
        with self._lock:
            self.webhook[status] += 1

    def text(self) -> str:
        out = [
            "# HELP meshops_reconcile_total Reconcile attempts by environment and outcome.",
            "# TYPE meshops_reconcile_total counter",
        ]
        with self._lock:
            for (env, outcome), n in sorted(self.outcomes.items()):
                out.append(f'meshops_reconcile_total{{env="{env}",outcome="{outcome}"}} {n}')
            out += [
                "# HELP meshops_reconcile_duration_seconds Time spent reconciling.",
                "# TYPE meshops_reconcile_duration_seconds summary",
            ]
            for env in sorted(self.duration_count):
                out.append(f'meshops_reconcile_duration_seconds_sum{{env="{env}"}} {self.duration_sum[env]:.6f}')
                out.append(f'meshops_reconcile_duration_seconds_count{{env="{env}"}} {self.duration_count[env]}')
            out += [
                "# HELP meshops_last_applied_timestamp_seconds When the last commit was applied and verified.",
                "# TYPE meshops_last_applied_timestamp_seconds gauge",
            ]
            for env, when in sorted(self.last_applied.items()):
                out.append(f'meshops_last_applied_timestamp_seconds{{env="{env}"}} {when:.3f}')
            out += [
                "# HELP meshops_webhook_requests_total Webhook deliveries by HTTP status answered.",
                "# TYPE meshops_webhook_requests_total counter",
            ]
            for status, n in sorted(self.webhook.items()):
                out.append(f'meshops_webhook_requests_total{{code="{status}"}} {n}')
        return "\n".join(out) + "\n"
