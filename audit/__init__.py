"""trustaudit's audit spine: safe model intake, spec, runner, results, reports, history.

    import audit
    report = audit.run_audit(pipe, test_df, target="income", positive_label=">50K",
                             sensitive=["sex", "race"], train=train_df, holdout=holdout_df)
    report.verdict, report.to_frame(), report.to_html()
    report = audit.run_spec("audit.toml")      # the file door, as ``trustaudit audit --spec``
    report.exit_code()                         # 0 pass, 1 a check failed its policy, 2 nothing audited

Add a check family in one file: ``register_family`` (its policy model, title, help) and
``register_check``, declared in the ``trustaudit.checks`` entry-point group (CONTRIBUTING.md).
"""

from __future__ import annotations

from audit.context import AuditContext, DataSplit, Intermediate, ResolvedClaim
from audit.exceptions import (
    CheckNotApplicable,
    DataError,
    ModelError,
    SpecError,
    TrustAuditError,
    UnsafeModelError,
)
from audit.registry import (
    discover_plugins,
    families,
    get_check,
    iter_checks,
    register_check,
    register_family,
)
from audit.results import AuditReport, CheckResult, EvidenceTable, PlotSpec, Provenance, Verdict
from audit.runner import build_context, context_from_frames, make_spec, run_audit, run_checks, run_spec
from audit.spec import AuditSpec, PolicyModel, Sources, SpecFile, load_spec, load_spec_file

__all__ = [
    "AuditContext",
    "AuditReport",
    "AuditSpec",
    "CheckNotApplicable",
    "CheckResult",
    "DataError",
    "DataSplit",
    "EvidenceTable",
    "Intermediate",
    "ModelError",
    "PlotSpec",
    "PolicyModel",
    "Provenance",
    "ResolvedClaim",
    "Sources",
    "SpecError",
    "SpecFile",
    "TrustAuditError",
    "UnsafeModelError",
    "Verdict",
    "build_context",
    "context_from_frames",
    "discover_plugins",
    "families",
    "get_check",
    "iter_checks",
    "load_spec",
    "load_spec_file",
    "make_spec",
    "register_check",
    "register_family",
    "run_audit",
    "run_checks",
    "run_spec",
]
