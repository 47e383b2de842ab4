"""The pod rules Istio's istio-iptables installs, and how the local mesh picks its interception mode."""

from __future__ import annotations

import pytest

from mesh.dataplane import netns
from mesh.dataplane.iptables import CaptureRules
from mesh.errors import TargetError
from mesh.targets.local import interception


def test_rules_capture_tcp_both_ways_and_spare_the_proxy() -> None:
    text = CaptureRules(allowed_subnet="10.1.0.0/16", blocked=("10.1.255.0/24",)).restore_input()
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in text
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in text
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in text
    assert "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN" in text
    assert "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN" in text  # the admin port stays reachable
    nat = text.split("*filter")[0]
    # the proxy's own loopback traffic to its pod is inbound again; the order is what makes it so
    assert nat.index("! -d 127.0.0.1/32 -o lo -p tcp -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT") < nat.index(
        "-m owner --uid-owner 1337 -j RETURN"
    )
    assert text.rstrip().endswith("-A OUTPUT -j REJECT\nCOMMIT")  # nothing escapes the mesh's subnet


def test_the_mode_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "available", lambda: (False, "network namespaces and iptables need root"))
    assert interception.choose("auto") == (
        "proxy",
        "auto: network namespaces and iptables need root; apps reach their sidecar through HTTP_PROXY",
    )
    with pytest.raises(TargetError, match="need root"):
        interception.choose("iptables")
    monkeypatch.setattr(netns, "available", lambda: (True, "root with ip, iptables and setpriv"))
    assert interception.choose("auto")[0] == "iptables"
    assert interception.choose("proxy")[0] == "proxy"
    assert "--interception iptables" in interception.choose("proxy")[1]  # says how to capture instead
