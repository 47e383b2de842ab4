"""xDS serving: snapshots (immutable), a cache keyed by proxy (no gRPC), and the ADS server (streams only)."""
