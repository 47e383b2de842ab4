"""A small local trace store: OTLP spans in (the `opentelemetry-proto` types), SQLite underneath, span trees out.

It is not Jaeger: no UI of its own beyond `mesh traces` and the dashboard, no sampling strategies, no retention
policy beyond `max_traces`. It keeps what a person needs to see which hop was slow and where a fault fired.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status INTEGER NOT NULL,
    attributes TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns);
CREATE INDEX IF NOT EXISTS spans_service ON spans (service, start_ns);
"""
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    attributes: dict[str, Any]
    children: list[Span] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def walk(self, depth: int = 0) -> Iterable[tuple[int, Span]]:
        yield depth, self
        for c in self.children:
            yield from c.walk(depth + 1)


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root: str
    services: tuple[str, ...]
    start_ns: int
    duration_ms: float
    spans: int
    errors: int


def _value(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which) if which else None


def _attrs(kvs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def scopes(rs: trace_pb2.ResourceSpans) -> Any:
    """`scope_spans` (field 2). xds-protos ships an older copy of these modules that names the same field
    `instrumentation_library_spans`, and whichever package installed last wins: the wire format is the same."""
    if "scope_spans" in rs.DESCRIPTOR.fields_by_name:
        return rs.scope_spans
    return rs.instrumentation_library_spans


def rows(request: ts.ExportTraceServiceRequest) -> list[tuple[Any, ...]]:
    out = []
    for rs in request.resource_spans:
        service = str(_attrs(rs.resource.attributes).get("service.name", "unknown"))
        for ss in scopes(rs):
            for s in ss.spans:
                out.append(_row(s, service))
    return out


def _row(s: trace_pb2.Span, service: str) -> tuple[Any, ...]:
    return (
        s.trace_id.hex(),
        s.span_id.hex(),
        s.parent_span_id.hex(),
        service,
        s.name,
        int(s.kind),
        int(s.start_time_unix_nano),
        int(s.end_time_unix_nano),
        int(s.status.code),
        json.dumps(_attrs(s.attributes), sort_keys=True),
    )


class TraceStore:
    """One SQLite file (WAL: the collector writes while `mesh traces` and the dashboard read)."""

    def __init__(self, path: Path | str, max_traces: int = 10000) -> None:
        self.path = str(path)
        self.max_traces = max_traces
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.received = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, request: ts.ExportTraceServiceRequest) -> int:
        batch = rows(request)
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO spans VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
            self.received += len(batch)
            if self.received % 1000 < len(batch):
                self._trim()
        return len(batch)

    def _trim(self) -> None:
        """Keep the newest `max_traces` traces: a store on a laptop must not grow without bound."""
        self._db.execute(
            "DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM spans GROUP BY trace_id "
            "ORDER BY MIN(start_ns) DESC LIMIT -1 OFFSET ?)",
            (self.max_traces,),
        )

    # --- queries ----------------------------------------------------------------------------------

    def spans(self, trace_id: str) -> list[Span]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns", (trace_id.lower(),))
            return [_span(r) for r in cur.fetchall()]

    def tree(self, trace_id: str) -> list[Span]:
        """Root spans with their children linked (a span whose parent never arrived is a root too)."""
        return build_tree(self.spans(trace_id))

    def recent(self, service: str | None = None, limit: int = 20) -> list[TraceSummary]:
        with self._lock:
            if service:
                ids = self._db.execute(
                    "SELECT trace_id FROM spans WHERE service = ? OR service LIKE ? GROUP BY trace_id "
                    "ORDER BY MAX(start_ns) DESC LIMIT ?",
                    (service, f"{service}.%", limit),
                ).fetchall()
            else:
                ids = self._db.execute(
                    "SELECT trace_id FROM spans GROUP BY trace_id ORDER BY MAX(start_ns) DESC LIMIT ?", (limit,)
                ).fetchall()
            out = []
            for (tid,) in ids:
                spans = [_span(r) for r in self._db.execute("SELECT * FROM spans WHERE trace_id = ?", (tid,))]
                out.append(summarize(spans))
            return out


def _span(r: Sequence[Any]) -> Span:
    return Span(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9]))


def build_tree(spans: Sequence[Span]) -> list[Span]:
    by_id = {s.span_id: s for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(s.parent_span_id)
        if parent is not None and parent is not s:
            parent.children.append(s)
        else:
            roots.append(s)
    return roots


def is_error(s: Span) -> bool:
    code = str(s.attributes.get("http.status_code", ""))
    return s.status == 2 or bool(s.attributes.get("error")) or code.startswith("5")


def summarize(spans: Sequence[Span]) -> TraceSummary:
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    roots = build_tree([_copy(s) for s in spans])
    root = roots[0] if roots else spans[0]
    return TraceSummary(
        trace_id=spans[0].trace_id,
        root=f"{root.service}: {root.name}",
        services=tuple(sorted({s.service for s in spans})),
        start_ns=start,
        duration_ms=(end - start) / 1e6,
        spans=len(spans),
        errors=sum(1 for s in spans if is_error(s)),
    )


def _copy(s: Span) -> Span:
    return Span(**{**s.__dict__, "children": []})


NOTABLE = ("http.status_code", "response_flags", "upstream_cluster", "error")


def render_tree(roots: Sequence[Span]) -> str:
    """The span tree as text: offset from the trace's start, duration, and what tells where time went."""
    if not roots:
        return "(no spans)"
    t0 = min(s.start_ns for r in roots for _, s in r.walk())
    lines = []
    for root in roots:
        for depth, s in root.walk():
            notes = " ".join(f"{k}={s.attributes[k]}" for k in NOTABLE if s.attributes.get(k) not in (None, "", "-"))
            lines.append(
                f"{(s.start_ns - t0) / 1e6:9.1f} ms {s.duration_ms:9.1f} ms  {'  ' * depth}"
                f"{s.service} [{KINDS.get(s.kind, s.kind)}] {s.name}" + (f"  ({notes})" if notes else "")
            )
    return "\n".join(lines)
