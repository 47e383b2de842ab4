"""python -m bench [cli|coldstart|push|scale|curve|hop|observability|edge|gitops|suite ...]  (default: all)."""

from __future__ import annotations

import sys

from bench import cli, coldstart, curve, edge, gitops, hop, interception, observability, push, scale, suite

SUITES = {
    "cli": cli.main,
    "coldstart": coldstart.main,
    "push": push.main,
    "scale": scale.main,
    "curve": curve.main,
    "hop": hop.main,
    "observability": observability.main,
    "gitops": gitops.main,
    "edge": edge.main,
    "interception": interception.main,
    "suite": suite.main,
}


def main() -> None:
    names = sys.argv[1:] or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {list(SUITES)}")
    for n in names:
        print(f"\n=== {n} ===", flush=True)
        SUITES[n]()


main()
