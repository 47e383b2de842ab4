"""The data-path clients live with the targets (`mesh.targets.traffic`); re-exported for tests written against it."""

from mesh.targets.traffic import HttpClient, Reply

__all__ = ["HttpClient", "Reply"]
