"""ACME credentials' state as `mesh status` shows it, read from the status file `AcmeCertificates` keeps
(`<credentials>/acme-status.json`). Apart from acme.py so reading it needs no ACME client library."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel


class AcmeCredential(BaseModel):
    """One ACME credential as `mesh status` shows it: read back from the status file the manager keeps."""

    issuer: str
    name: str
    hosts: list[str]
    ready: bool
    not_after: str | None = None
    last_success: str | None = None
    last_attempt: str | None = None
    error: str | None = None


def read_status(path: Path) -> list[AcmeCredential]:
    """The credentials recorded at `path` (`<credentials>/acme-status.json`); none when there is no such file."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    issuer = str(raw.get("issuer", ""))
    return [
        AcmeCredential(issuer=issuer, **{k: v for k, v in fields.items() if k in AcmeCredential.model_fields})
        for fields in raw.get("certificates", {}).values()
    ]


def status_file(directory: Path, issuer: str) -> Path:
    """Where one issuer's manager keeps its credentials' state (one file per issuer: managers never share one)."""
    return directory / f"acme-status-{issuer}.json"


def read_all(directory: Path) -> list[AcmeCredential]:
    """Every issuer's credentials under `directory` (`acme-status*.json`), by file name."""
    return [c for path in sorted(directory.glob("acme-status*.json")) for c in read_status(path)]
