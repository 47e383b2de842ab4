"""Verification: prove on the data path that a config does what it declares (below gitops, above targets)."""
