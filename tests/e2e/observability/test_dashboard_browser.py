"""The dashboard in a real headless Chromium, asserting what a person sees: the graph has exactly the edges the
traffic took (with mTLS shown), and the split shown for the weighted route is the split the client observed."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh.compile import build_policies
from mesh.observability.dashboard import Dashboard, Sources
from mesh.observability.live import routes_from_proxies
from tests.e2e.observability.test_mesh_telemetry import REVIEWS_BY_VERSION, ObservedMesh

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# what works on these machines: no sandbox as root, no background connections to a closed network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: .ci/run must install the Debian packages `chromium` and `chromium-driver`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_dashboard_shows_the_edges_traffic_took_and_the_split_it_saw(browser: Any, tmp_path: Path) -> None:
    m = ObservedMesh(build_policies("e2e"))
    dash = None
    try:
        client = m.ingress()
        n = 60
        seen: Counter[str] = Counter()
        for _ in range(n):
            seen[client.get("/productpage").call("reviews")["body"]["version"]] += 1
        m.settled(REVIEWS_BY_VERSION, n)
        sources = Sources(
            prometheus=m.prom,
            traces=m.traces,
            proxy_status=lambda: [{"proxy": p["proxy"], "status": p["state"]} for p in m.mesh.proxy_status()],
            weighted_routes=routes_from_proxies(lambda: [f"http://{p.ip}:15000" for p in m.mesh.registry.proxies]),
        )
        dash = Dashboard(sources, token="t0ken").start()
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{dash.port}/")
        assert "401" in page.inner_text("body")  # no token, no dashboard
        page.goto(dash.url)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        edges = {
            (e.get_attribute("data-source"), e.get_attribute("data-target")): e.locator(
                "text.edge-label"
            ).text_content()
            for e in page.locator("svg.graph g.edge").all()
        }
        expected = {("istio-ingressgateway", "productpage-v1"), ("productpage-v1", "details-v1")}
        expected |= {("productpage-v1", f"reviews-{v}") for v in seen}
        expected |= {(f"reviews-{v}", "ratings-v1") for v in seen if v != "v1"}  # v1 does not call ratings
        assert set(edges) == expected, f"graph edges {sorted(edges)} (screenshot {tmp_path / 'dashboard.png'})"
        for v, count in seen.items():
            label = edges[("productpage-v1", f"reviews-{v}")]
            assert label.startswith(f"{count} req") and "mTLS" in label, label
        assert edges[("istio-ingressgateway", "productpage-v1")].startswith(f"{n} req")

        row = page.locator("table.splits tr", has_text="reviews.default.svc.cluster.local").first
        shown = row.locator(".observed-counts").inner_text()
        assert shown == ", ".join(f"{v}: {c}" for v, c in sorted(seen.items())), shown
        configured = row.locator("svg.configured").text_content() or ""  # SVG text: no inner_text
        assert "v1 50%" in configured and "v3 50%" in configured, configured

        statuses = page.locator("table.proxies").inner_text()
        assert "SYNCED" in statuses and "productpage-v1-0.default" in statuses
        assert page.locator("table.traces tr").count() > 1  # recent traces listed
    finally:
        if dash is not None:
            dash.stop()
        m.stop()
