"""`mesh dashboard`: one loopback-only page (same token as the control API) with the service graph, golden signals,
the live split of every weighted route, proxy sync status, recent traces, and the reconcile history once there is
one. Rendered on the server as HTML with inline SVG (no scripts, no CDN: the page works offline); it refreshes
itself every few seconds.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from mesh.observability.prometheus import PrometheusClient
from mesh.observability.traces import Span, TraceStore, build_tree, is_error

COOKIE = "mesh_token"
WINDOW = "1m"


@dataclass(frozen=True)
class WeightedRoute:
    """One weighted route as configured: `weights` maps subset (version) to weight."""

    name: str  # VirtualService namespace/name and rule index
    service: str  # destination FQDN
    weights: dict[str, int]


@dataclass
class Sources:
    """Where the page's data comes from; each part is optional and shown as 'not available' when missing."""

    prometheus: PrometheusClient | None = None
    traces: TraceStore | None = None
    proxy_status: Callable[[], list[dict[str, str]]] | None = None
    weighted_routes: Callable[[], list[WeightedRoute]] | None = None
    # the GitOps reconciler's history (rows with revision, result, message, time) plugs in here
    reconcile_history: Callable[[], list[dict[str, str]]] | None = None
    refresh_seconds: int = 5
    extra_sections: list[Callable[[], str]] = field(default_factory=list)


# --- data -----------------------------------------------------------------------------------------


@dataclass
class Edge:
    source: str
    target: str
    total: float = 0.0
    rate: float = 0.0
    errors: float = 0.0
    p99: float | None = None
    mtls: str = "unknown"  # mutual_tls | none | mixed | unknown


EDGE_BY = "source_workload, destination_workload"


def graph(prom: PrometheusClient) -> list[Edge]:
    """Workload -> workload edges from the callers' reports (Kiali's graph reads the same series)."""
    edges: dict[tuple[str, str], Edge] = {}

    def edge(m: dict[str, str]) -> Edge:
        key = (m.get("source_workload", "unknown"), m.get("destination_workload", "unknown"))
        return edges.setdefault(key, Edge(*key))

    # last_over_time: a missed scrape (stale markers) must not blank the totals for a moment
    for m, v in prom.query(f'sum by ({EDGE_BY}) (last_over_time(istio_requests_total{{reporter="source"}}[5m]))'):
        edge(m).total = v
    for m, v in prom.query(f'sum by ({EDGE_BY}) (rate(istio_requests_total{{reporter="source"}}[{WINDOW}]))'):
        edge(m).rate = v
    for m, v in prom.query(
        f'sum by ({EDGE_BY}) (rate(istio_requests_total{{reporter="source",response_code=~"5.."}}[{WINDOW}]))'
    ):
        edge(m).errors = v
    for m, v in prom.query(
        f"histogram_quantile(0.99, sum by ({EDGE_BY}, le) "
        f'(rate(istio_request_duration_milliseconds_bucket{{reporter="source"}}[{WINDOW}])))'
    ):
        if not math.isnan(v):
            edge(m).p99 = v
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for m, v in prom.query(
        f"sum by ({EDGE_BY}, connection_security_policy) "
        f'(last_over_time(istio_requests_total{{reporter="destination"}}[5m]))'
    ):
        if v > 0:
            seen[(m.get("source_workload", ""), m.get("destination_workload", ""))].add(
                m.get("connection_security_policy", "unknown")
            )
    for key, policies in seen.items():
        if key in edges:
            edges[key].mtls = policies.pop() if len(policies) == 1 else "mixed"
    return sorted(edges.values(), key=lambda e: (e.source, e.target))


@dataclass
class Golden:
    service: str
    rate: float = 0.0
    error_ratio: float = 0.0
    p50: float | None = None
    p99: float | None = None
    history: list[float] = field(default_factory=list)


def golden_signals(prom: PrometheusClient) -> list[Golden]:
    by = "destination_service"
    rows: dict[str, Golden] = {}

    def row(m: dict[str, str]) -> Golden:
        return rows.setdefault(m.get(by, "unknown"), Golden(m.get(by, "unknown")))

    sel = 'reporter="destination"'
    for m, v in prom.query(f"sum by ({by}) (rate(istio_requests_total{{{sel}}}[{WINDOW}]))"):
        row(m).rate = v
    for m, v in prom.query(
        f'sum by ({by}) (rate(istio_requests_total{{{sel},response_code=~"5.."}}[{WINDOW}])) '
        f"/ sum by ({by}) (rate(istio_requests_total{{{sel}}}[{WINDOW}]))"
    ):
        if not math.isnan(v):
            row(m).error_ratio = v
    for q, attr in ((0.5, "p50"), (0.99, "p99")):
        for m, v in prom.query(
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{WINDOW}])))"
        ):
            if not math.isnan(v):
                setattr(row(m), attr, v)
    now = time.time()
    for m, values in prom.query_range(
        f"sum by ({by}) (rate(istio_requests_total{{{sel}}}[{WINDOW}]))", now - 600, now, 15
    ):
        row(m).history = values
    return sorted(rows.values(), key=lambda g: g.service)


def observed_split(prom: PrometheusClient, service: str) -> dict[str, float]:
    """Requests per destination version since the mesh started, as the callers saw them."""
    return prom.by(
        "sum by (destination_version) "
        f'(last_over_time(istio_requests_total{{reporter="source",destination_service="{service}"}}[5m]))',
        "destination_version",
    )


# --- rendering ------------------------------------------------------------------------------------


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms")


def layout(edges: Sequence[Edge]) -> dict[str, tuple[float, float]]:
    """Nodes in columns by their longest distance from a caller nobody calls (gateway left, leaves right)."""
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    depth = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):  # longest path relaxation; cycles stop at len(nodes) rounds
        for e in edges:
            if e.source != e.target and depth[e.target] < depth[e.source] + 1:
                depth[e.target] = min(depth[e.source] + 1, len(nodes))
    columns: dict[int, list[str]] = defaultdict(list)
    for n in nodes:
        columns[depth[n]].append(n)
    pos: dict[str, tuple[float, float]] = {}
    for col, names in columns.items():
        for i, n in enumerate(sorted(names)):
            pos[n] = (100 + col * 330, 60 + i * 110)
    return pos


def graph_svg(edges: Sequence[Edge]) -> str:
    if not edges:
        return '<p class="empty">No traffic yet: the graph draws the edges requests take.</p>'
    pos = layout(edges)
    width = max(x for x, _ in pos.values()) + 140
    height = max(y for _, y in pos.values()) + 70
    parts = [
        f'<svg class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="service graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    ]
    for e in edges:
        (x1, y1), (x2, y2) = pos[e.source], pos[e.target]
        ratio = e.errors / e.rate if e.rate else 0.0
        color = "#c62828" if ratio > 0.05 else ("#ef6c00" if ratio > 0 else "#2e7d32")
        dash = "" if e.mtls == "mutual_tls" else ' stroke-dasharray="6 4"'
        lock = "mTLS" if e.mtls == "mutual_tls" else ("plaintext" if e.mtls == "none" else f"mTLS {e.mtls}")
        first = f"{e.total:.0f} req · {e.rate:.2f} rps · {ratio:.0%} err"
        second = f"p99 {_ms(e.p99)} · {lock}"
        label = f"{first} · {second}"
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2 - 14
        parts.append(
            f'<g class="edge" data-source="{esc(e.source)}" data-target="{esc(e.target)}" '
            f'data-mtls="{esc(e.mtls)}" data-total="{e.total:.0f}"><title>{esc(e.source)} → {esc(e.target)}: '
            f'{esc(label)}</title><line x1="{x1 + 75}" y1="{y1}" x2="{x2 - 75}" y2="{y2}" stroke="{color}" '
            f'stroke-width="2"{dash} marker-end="url(#arrow)"/><text x="{mx}" y="{my}" text-anchor="middle" '
            f'class="edge-label"><tspan x="{mx}">{esc(first)} · </tspan><tspan x="{mx}" dy="12">{esc(second)}</tspan>'
            "</text></g>"
        )
    for n, (x, y) in sorted(pos.items()):
        parts.append(
            f'<g class="node" data-name="{esc(n)}"><rect x="{x - 75}" y="{y - 18}" width="150" height="36" rx="8"/>'
            f'<text x="{x}" y="{y + 5}" text-anchor="middle">{esc(n)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: Sequence[float], width: int = 140, height: int = 28) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if len(finite) < 2:
        return '<svg class="spark" width="140" height="28"></svg>'
    top = max(finite) or 1.0
    step = width / (len(finite) - 1)
    pts = " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(finite))
    return (
        f'<svg class="spark" width="{width}" height="{height}" aria-label="request rate, last 10 minutes">'
        f'<polyline fill="none" stroke="#1565c0" stroke-width="1.5" points="{pts}"/></svg>'
    )


def split_bar(weights: dict[str, float], cls: str) -> str:
    total = sum(weights.values()) or 1.0
    x = 0.0
    parts = [f'<svg class="split {cls}" width="320" height="22">']
    palette = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f"]
    for i, (version, w) in enumerate(sorted(weights.items())):
        width = 320 * w / total
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{width:.1f}" height="22" fill="{palette[i % len(palette)]}"/>'
            f'<text x="{x + 4:.1f}" y="15" fill="#fff">{esc(version)} {w / total:.0%}</text>'
        )
        x += width
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(title: str, body: str, ident: str) -> str:
    return f'<section id="{ident}"><h2>{esc(title)}</h2>{body}</section>'


def _safe(render: Callable[[], str], what: str) -> str:
    try:
        return render()
    except Exception as e:  # a missing source must not take the page down
        return f'<p class="unavailable">{esc(what)} not available: {esc(e)}</p>'


def render_splits(src: Sources) -> str:
    if src.weighted_routes is None:
        return '<p class="unavailable">weighted routes not available</p>'
    routes = src.weighted_routes()
    if not routes:
        return '<p class="empty">No weighted routes.</p>'
    rows = []
    for r in routes:
        seen = observed_split(src.prometheus, r.service) if src.prometheus else {}
        counts = ", ".join(f"{esc(v)}: {n:.0f}" for v, n in sorted(seen.items())) or "no traffic yet"
        rows.append(
            [
                esc(r.name),
                esc(r.service),
                split_bar({k: float(v) for k, v in r.weights.items()}, "configured"),
                (split_bar(seen, "observed") if seen else "") + f'<div class="observed-counts">{counts}</div>',
            ]
        )
    return _table(["route", "service", "configured", "observed (requests since start)"], rows, "splits")


def render_golden(src: Sources) -> str:
    if src.prometheus is None:
        return '<p class="unavailable">Prometheus not available</p>'
    rows = [
        [esc(g.service), f"{g.rate:.2f}/s", f"{g.error_ratio:.1%}", _ms(g.p50), _ms(g.p99), sparkline(g.history)]
        for g in golden_signals(src.prometheus)
    ]
    return _table(["service", "rate", "errors", "p50", "p99", "last 10 min"], rows, "golden")


def render_traces(src: Sources, base: str) -> str:
    if src.traces is None:
        return '<p class="unavailable">trace store not available</p>'
    recent = src.traces.recent(limit=15)
    if not recent:
        return '<p class="empty">No traces yet.</p>'
    longest = max(t.duration_ms for t in recent) or 1.0
    rows = [
        [
            f'<a href="{base}trace?id={esc(t.trace_id)}">{esc(t.trace_id[:16])}</a>',
            esc(t.root),
            esc(", ".join(t.services)),
            f'<svg width="160" height="10"><rect width="{160 * t.duration_ms / longest:.1f}" height="10" '
            f'fill="{"#c62828" if t.errors else "#1565c0"}"/></svg> {_ms(t.duration_ms)}',
            str(t.spans),
        ]
        for t in recent
    ]
    return _table(["trace", "root", "services", "duration", "spans"], rows, "traces")


def waterfall(spans: Sequence[Span]) -> str:
    roots = build_tree(list(spans))
    flat = [(d, s) for r in roots for d, s in r.walk()]
    if not flat:
        return '<p class="empty">No such trace.</p>'
    t0 = min(s.start_ns for _, s in flat)
    total = max(max(s.end_ns for _, s in flat) - t0, 1)
    width, row_h = 900, 26
    parts = [f'<svg class="waterfall" width="{width + 420}" height="{row_h * len(flat) + 10}">']
    for i, (depth, s) in enumerate(flat):
        x = 420 + width * (s.start_ns - t0) / total
        w = max(width * (s.end_ns - s.start_ns) / total, 1.0)
        flags = s.attributes.get("response_flags", "")
        note = f" {flags}" if flags and flags != "-" else ""
        parts.append(
            f'<g class="span" data-service="{esc(s.service)}" data-ms="{s.duration_ms:.1f}">'
            f'<text x="{4 + depth * 14}" y="{i * row_h + 18}">{esc(s.service)}: {esc(s.name)[:40]}</text>'
            f'<rect x="{x:.1f}" y="{i * row_h + 5}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{"#c62828" if is_error(s) else "#1565c0"}"/>'
            f'<text x="{min(x + w + 4, width + 340):.1f}" y="{i * row_h + 18}">{_ms(s.duration_ms)}{esc(note)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222} h1{font-size:20px} h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse} td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;vertical-align:middle}
.graph rect{fill:#e3f2fd;stroke:#1565c0} .graph text{font-size:12px} .edge-label{font-size:10px;fill:#333}
.unavailable,.empty{color:#777} .SYNCED{color:#2e7d32} .STALE,.NACK{color:#c62828}
"""


def page(src: Sources, base: str = "/") -> str:
    sections = [
        _section("Service graph", _safe(lambda: _render_graph(src), "graph"), "graph"),
        _section("Golden signals", _safe(lambda: render_golden(src), "golden signals"), "golden"),
        _section("Weighted routes: configured vs observed", _safe(lambda: render_splits(src), "splits"), "splits"),
        _section("Proxy sync status", _safe(lambda: _render_status(src), "proxy status"), "proxies"),
        _section("Recent traces", _safe(lambda: render_traces(src, base), "traces"), "traces"),
        _section("Reconcile history", _safe(lambda: _render_history(src), "reconcile history"), "history"),
        *(s() for s in src.extra_sections),
    ]
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" '
        f'content="{src.refresh_seconds}"><title>mesh dashboard</title><style>{STYLE}</style></head><body>'
        f"<h1>mesh dashboard</h1>{''.join(sections)}</body></html>"
    )


def _render_graph(src: Sources) -> str:
    if src.prometheus is None:
        return '<p class="unavailable">Prometheus not available</p>'
    return graph_svg(graph(src.prometheus))


def _render_status(src: Sources) -> str:
    if src.proxy_status is None:
        return '<p class="unavailable">proxy status not available</p>'
    rows = src.proxy_status()
    if not rows:
        return '<p class="empty">No proxies.</p>'
    headers = list(rows[0])
    return _table(
        headers,
        [[f'<span class="{esc(r.get(h, ""))}">{esc(r.get(h, ""))}</span>' for h in headers] for r in rows],
        "proxies",
    )


def _render_history(src: Sources) -> str:
    if src.reconcile_history is None:
        return '<p class="empty">No reconciler running (the GitOps reconciler reports its history here).</p>'
    rows = src.reconcile_history()
    if not rows:
        return '<p class="empty">No reconciles yet.</p>'
    headers = list(rows[0])
    return _table(headers, [[esc(r.get(h, "")) for h in headers] for r in rows], "history")


# --- serving --------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    sources: Sources
    token: str

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _authorized(self, query: dict[str, list[str]]) -> bool:
        offered = [*query.get("token", [])]
        auth = self.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            offered.append(auth[7:])
        cookie = SimpleCookie(self.headers.get("cookie", ""))
        if COOKIE in cookie:
            offered.append(cookie[COOKIE].value)
        return any(hmac.compare_digest(o.encode(), self.token.encode()) for o in offered)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if not self._authorized(query):
            self._send(401, "<h1>401</h1><p>Open the link `mesh dashboard` printed (it carries the token).</p>")
            return
        if "token" in query:  # trade the token in the URL for a cookie, and drop it from the address bar
            self.send_response(303)
            self.send_header("set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/")
            rest = {k: v for k, v in query.items() if k != "token"}
            target = url.path + ("?" + "&".join(f"{k}={v[0]}" for k, v in rest.items()) if rest else "")
            self.send_header("location", target)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        if url.path == "/":
            self._send(200, page(self.sources))
        elif url.path == "/trace":
            tid = query.get("id", [""])[0]
            store = self.sources.traces
            spans = store.spans(tid) if store is not None else []
            body = waterfall(spans)
            self._send(
                200,
                f'<!doctype html><html><head><meta charset="utf-8"><title>trace {esc(tid)}</title>'
                f'<style>{STYLE}</style></head><body><h1>trace {esc(tid)}</h1><p><a href="/">back</a></p>'
                f"{body}</body></html>",
            )
        else:
            self._send(404, "<h1>404</h1>")

    def _send(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        self.wfile.write(data)


class Dashboard:
    """The page's server; loopback only (it shows the mesh's workloads and identities)."""

    def __init__(self, sources: Sources, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the dashboard listens on loopback only, not {host}")
        handler = type("Handler", (_Handler,), {"sources": sources, "token": token})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self.token = token
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/?token={self.token}"

    def start(self) -> Dashboard:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dashboard", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
