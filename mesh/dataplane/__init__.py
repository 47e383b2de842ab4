"""Data plane supervision: loopback addresses, Envoy bootstraps, and a supervisor that starts, restarts and reaps."""
