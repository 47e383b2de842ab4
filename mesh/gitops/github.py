"""GitHub commit statuses (`POST /repos/{owner}/{repo}/statuses/{sha}`), when a token is configured.

Tested against a local HTTP server that records the calls; the live GitHub API is not exercised by the test suite.
A failure to post is logged in the attempt, never fails a reconcile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import requests

State = Literal["pending", "success", "failure", "error"]


@dataclass(frozen=True)
class GitHubStatus:
    repo: str  # owner/name
    token: str
    api: str = "https://api.github.com"
    context: str = "meshops"
    timeout: float = 5.0

    def post(self, sha: str, state: State, description: str, env: str) -> str | None:
        """Post one status; returns an error text instead of raising."""
        url = f"{self.api.rstrip('/')}/repos/{self.repo}/statuses/{sha}"
        body = {"state": state, "description": description[:140], "context": f"{self.context}/{env}"}
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            session = requests.Session()
            session.trust_env = False
            r = session.post(url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as e:
            return f"GitHub status not posted: {type(e).__name__}"
        return None if r.status_code < 300 else f"GitHub status not posted: HTTP {r.status_code}"
