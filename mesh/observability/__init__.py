"""Istio's telemetry for the local mesh: the Envoy side (access logs, tracing), the collector, the trace store,
Prometheus and the dashboard."""
