"""Pulumi entry point (Pulumi.yaml `main`)."""

from mesh.targets.kubernetes.program import program

program()
