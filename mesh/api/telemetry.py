"""telemetry.istio.io/v1 Telemetry: tracing, metrics and access logging per workload or namespace."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from mesh.api._base import Float, IstioModel, Resource, check_duration
from mesh.api.networking import PolicyTargetReference, WorkloadSelector

WorkloadMode = Literal["CLIENT_AND_SERVER", "CLIENT", "SERVER"]


class ProviderRef(IstioModel):
    name: str = Field(min_length=1)


class TracingSelector(IstioModel):
    mode: WorkloadMode | None = None


class CustomTagLiteral(IstioModel):
    value: str


class CustomTagEnvironment(IstioModel):
    name: str = Field(min_length=1)
    default_value: str | None = None


class CustomTagHeader(IstioModel):
    name: str = Field(min_length=1)
    default_value: str | None = None


class CustomTagFormatter(IstioModel):
    value: str = Field(min_length=1)


class CustomTag(IstioModel):
    literal: CustomTagLiteral | None = None
    environment: CustomTagEnvironment | None = None
    header: CustomTagHeader | None = None
    formatter: CustomTagFormatter | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CustomTag:
        if sum(getattr(self, n) is not None for n in ("literal", "environment", "header", "formatter")) != 1:
            raise ValueError("a custom tag is exactly one of literal, environment, header or formatter")
        return self


class Tracing(IstioModel):
    match: TracingSelector | None = None
    providers: list[ProviderRef] = []
    random_sampling_percentage: Float | None = Field(default=None, ge=0.0, le=100.0)
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = {}
    use_request_id_for_trace_sampling: bool | None = None
    enable_istio_tags: bool | None = None
    disable_context_propagation: bool | None = None


IstioMetric = Literal[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
]


class MetricSelector(IstioModel):
    metric: IstioMetric | None = None
    custom_metric: str | None = None
    mode: WorkloadMode | None = None

    @model_validator(mode="after")
    def _one_of(self) -> MetricSelector:
        if self.metric is not None and self.custom_metric is not None:
            raise ValueError("set metric or customMetric, not both")
        return self


class TagOverride(IstioModel):
    operation: Literal["UPSERT", "REMOVE"] | None = None
    value: str | None = None


class MetricsOverrides(IstioModel):
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: dict[str, TagOverride] = {}


class Metrics(IstioModel):
    providers: list[ProviderRef] = []
    overrides: list[MetricsOverrides] = []
    reporting_interval: str | None = None

    _d = field_validator("reporting_interval")(check_duration)


class LogSelector(IstioModel):
    mode: WorkloadMode | None = None


class AccessLogFilter(IstioModel):
    expression: str | None = None


class AccessLogging(IstioModel):
    match: LogSelector | None = None
    providers: list[ProviderRef] = []
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


class Telemetry(Resource):
    api_version: ClassVar[str] = "telemetry.istio.io/v1"
    kind: ClassVar[str] = "Telemetry"

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] = []
    tracing: list[Tracing] = []
    metrics: list[Metrics] = []
    access_logging: list[AccessLogging] = []

    @model_validator(mode="after")
    def _one_target(self) -> Telemetry:
        if sum((self.selector is not None, self.target_ref is not None, bool(self.target_refs))) > 1:
            raise ValueError("set only one of selector, targetRef and targetRefs")
        return self
