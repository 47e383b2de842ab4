"""HTTP_PROXY carries HTTP only: the local target refuses TCP routing there, by name, before anything starts."""

from __future__ import annotations

import pytest

from mesh.api import MeshConfig
from mesh.compile import build_policies
from mesh.errors import TargetError
from mesh.targets.local.interception import check_mode
from policies.testbed import tcp_echo, tcp_echo_policies


def test_tcp_routing_is_refused_in_the_http_proxy_mode_and_runs_under_iptables() -> None:
    base = build_policies("e2e")
    config = MeshConfig(services=[*base.services, tcp_echo], resources=[*base.resources, *tcp_echo_policies()])
    with pytest.raises(TargetError) as e:
        check_mode("proxy", config)
    assert "need `--interception iptables`" in str(e.value)
    assert "Service default/tcp-echo port 9000 (TCP)" in str(e.value)
    assert "VirtualService default/tcp-echo (tcp routes)" in str(e.value)
    check_mode("iptables", config)
    check_mode("proxy", base)  # HTTP only: fine
