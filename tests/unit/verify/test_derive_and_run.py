"""Checks derived from the sample policies, run against an in-memory mesh: right configs pass, wrong ones fail."""

from __future__ import annotations

from mesh.api import helpers as h
from mesh.compile.policies import build
from mesh.verify.derive import derive
from mesh.verify.probes import DeniedProbe, FractionProbe, PlaintextRefusedProbe, SplitProbe, StatusProbe
from mesh.verify.run import verify

from .fakemesh import FakeTarget


def test_dev_policies_derive_every_kind_of_check() -> None:
    derived = derive(build("dev"))
    kinds = {type(p) for p in derived.probes}
    assert kinds == {StatusProbe, SplitProbe, FractionProbe, PlaintextRefusedProbe, DeniedProbe}
    split = next(p for p in derived.probes if isinstance(p, SplitProbe))
    assert split.weights == {"v1": 50.0, "v3": 50.0} and split.via == "pod:productpage"


def test_a_correct_mesh_verifies_and_a_broken_subset_fails_with_evidence() -> None:
    config = build("prod")
    target = FakeTarget()
    target.apply(config)
    derived = derive(config)
    ok = verify(target.data_path(), derived.probes)
    assert ok.ok, ok.summary()
    assert 0 < ok.requests < 3000
    target.broken = {"v3"}
    bad = verify(target.data_path(), derived.probes)
    assert not bad.ok
    failure = next(r for r in bad.failures() if r.kind == "split")
    assert "status 500" in failure.detail and "expected" in failure.detail


def test_a_mesh_serving_other_weights_fails_the_split() -> None:
    config = build("prod")
    target = FakeTarget()
    target.apply(config)
    wrong = build("prod")
    wrong.resources = [r for r in wrong.resources if r.name != "reviews" or r.kind != "VirtualService"]
    wrong.add(h.canary("reviews", stable="v1", candidate="v3", weight=25))
    target.config = wrong  # out of band: the mesh serves 75/25 while the policies say 90/10
    result = verify(target.data_path(), [p for p in derive(config).probes if isinstance(p, SplitProbe)])
    assert not result.ok
    assert result.results[0].evidence["observed"]["v3"] > result.results[0].evidence["expected"]["v3"]
