"""What `mesh up --observability` asks for: a model of its own, so the start path's options (LocalOptions) carry it
without importing the telemetry stack (and `requests` with it) before the first request is served."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ObservabilityOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    sampling: float = Field(default=100.0, ge=0.0, le=100.0)
    scrape_interval: float = Field(default=5.0, gt=0.0)  # seconds
    prometheus: bool = True
