"""trustaudit's audit spine: safe model intake, spec, runner, results, reports, history.

    from audit import run_audit
    report = run_audit("audit.toml")          # or a mapping / AuditSpec, model=..., frames=...
    report.exit_code()                        # 0 pass, 1 a check failed its policy, 2 nothing audited
"""

from __future__ import annotations

from audit.context import AuditContext, DataSplit
from audit.exceptions import (
    CheckNotApplicable,
    DataError,
    ModelError,
    SpecError,
    TrustAuditError,
    UnsafeModelError,
)
from audit.registry import get_check, iter_checks, register_check
from audit.results import AuditReport, CheckResult, EvidenceTable, PlotSpec, Provenance, Verdict
from audit.runner import build_context, context_from_frames, run_audit, run_checks
from audit.spec import AuditSpec, load_spec

__all__ = [
    "AuditContext",
    "AuditReport",
    "AuditSpec",
    "CheckNotApplicable",
    "CheckResult",
    "DataError",
    "DataSplit",
    "EvidenceTable",
    "ModelError",
    "PlotSpec",
    "Provenance",
    "SpecError",
    "TrustAuditError",
    "UnsafeModelError",
    "Verdict",
    "build_context",
    "context_from_frames",
    "get_check",
    "iter_checks",
    "load_spec",
    "register_check",
    "run_audit",
    "run_checks",
]
