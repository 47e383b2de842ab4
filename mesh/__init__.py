"""meshops: Istio traffic policy as typed Python, analyzed before it is applied, proven on real Envoy.

Start with `mesh.api` (the typed model) and the `mesh` command; see README.md.
"""

__version__ = "0.1.0"
