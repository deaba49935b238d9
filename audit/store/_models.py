"""What the store hands out besides reports: jobs and API tokens (frozen, plain data)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["JOB_KINDS", "JOB_STATES", "TERMINAL_STATES", "Job", "TokenInfo"]

JOB_KINDS = ("audit", "federated")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Job:
    """One row of the ``jobs`` table; the ``*_json`` columns parsed (``spec``, ``inputs``, ``progress``,
    ``result``).

    ``attempts`` counts claims by a worker; ``audit_id`` is set, in the transaction that records the
    report, when an audit job succeeded; ``error`` is one line when it failed or was cancelled.
    """

    job_id: str
    kind: str
    state: str
    project: str
    submitted_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    attempts: int
    worker_id: str | None
    spec: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    audit_id: str | None = None
    cancel_requested: bool = False
    result: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """True once the job is succeeded, failed or cancelled (it will not change again)."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(
            job_id=m["job_id"], kind=m["kind"], state=m["state"], project=m["project"],
            submitted_by=m["submitted_by"], created_at=m["created_at"], started_at=m["started_at"],
            finished_at=m["finished_at"], heartbeat_at=m["heartbeat_at"], attempts=int(m["attempts"]),
            worker_id=m["worker_id"], spec=json.loads(m["spec_json"]), inputs=json.loads(m["inputs_json"]),
            progress=json.loads(m["progress_json"] or "{}"), error=m["error"], audit_id=m["audit_id"],
            cancel_requested=bool(m["cancel_requested"]),
            result=json.loads(m["result_json"]) if m["result_json"] is not None else None,
        )


@dataclass(frozen=True)
class TokenInfo:
    """An API token without its secret (the store keeps only the secret's sha256)."""

    token_id: str
    project: str
    name: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Any) -> TokenInfo:
        m = row._mapping
        return cls(token_id=m["token_id"], project=m["project"], name=m["name"], created_at=m["created_at"],
                   revoked_at=m["revoked_at"])
