"""From a federated run into the audit: the model file, the metrics files, the run report, the audit.

The final global model is exported as TorchScript with the trustaudit metadata block
(``audit.io.save_torchscript``), so it enters the audit through the same safe intake as any
model: ``encoder`` (computed federatedly, see ``federated._encoder``), ``classes`` [0, 1],
``output`` "logits", ``dp_claim`` and ``dp_conditions`` (how the run sampled and drew its noise,
and what the ε does not cover) when DP was used, and ``federated`` (the run's settings and
summary). :func:`audit_run` audits that file against the run's held-out rows: the test split
as the audited data, the pooled client rows as ``train`` and the holdout split as ``holdout``
(membership inference needs both; in a simulation they exist on one machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federated._run import FederatedRun

__all__ = ["audit_run", "export_model", "write_audit_reports", "write_run_outputs"]

MODEL_FILE = "model.pt"


def export_model(run: FederatedRun, path: str | Path) -> Path:
    """Write the final global model as TorchScript with its metadata; returns the path."""
    from audit.io import save_torchscript

    meta: dict[str, Any] = {
        "encoder": run.encoder,
        "classes": [0, 1],
        "output": "logits",
        "federated": run.metadata(),
    }
    claim = run.dp_claim()
    if claim is not None:
        meta["dp_claim"] = claim
        meta["dp_conditions"] = run.dp_conditions()
    return save_torchscript(run.build_module(), path, metadata=meta)


def audit_run(run: FederatedRun, model_path: str | Path, *, checks: tuple[str, ...] = (),
              policy: dict[str, Any] | None = None,
              progress: Callable[[str, str, int, int], None] | None = None) -> Any:
    """Audit the exported model file on the run's test rows (train and holdout given too).

    ``checks`` selects families or check ids (default: all); ``policy`` overrides thresholds and
    budgets (``{"fairness": {"n_bootstrap": 200}}``), as in an audit spec.
    """
    from audit.io import load_model
    from audit.runner import run_audit
    from federated._data import load_run_data

    cfg = run.config
    data = load_run_data(cfg.data_setup_json())
    return run_audit(load_model(model_path), data.test, train=data.train, holdout=data.holdout,
                     target=data.target, positive_label=data.positive_label, sensitive=list(data.sensitive),
                     seed=cfg.seed, checks=list(checks) or None, policy=policy, progress=progress)


def write_audit_reports(report: Any, out_dir: str | Path) -> dict[str, Path]:
    """The audit's reports next to the run's files (the audit's own renderers when available)."""
    out = Path(out_dir)
    try:
        from audit.report import write_reports
    except ImportError:
        write_reports = None
    if write_reports is not None:
        return dict(write_reports(report, {"json": out / "audit.json", "html": out / "audit.html",
                                           "markdown": out / "audit.md"}))
    from audit.io import write_text_atomic

    return {"json": write_text_atomic(out / "audit.json", json.dumps(report.to_dict(), indent=2, default=str))}


def write_run_outputs(run: FederatedRun, out_dir: str | Path, *, audit: bool = False,
                      policy: dict[str, Any] | None = None,
                      progress: Callable[[str, str, int, int], None] | None = None) -> dict[str, Path]:
    """Write metrics (JSON + CSV), the run report, the model and optionally the audit; returns paths."""
    from audit.io import write_text_atomic
    from federated._report import render_run_report

    out = Path(out_dir)
    written: dict[str, Path] = {}
    written["metrics"] = write_text_atomic(out / "metrics.json", json.dumps(run.to_dict(), indent=2))
    for name, frame in (("rounds", run.rounds_frame()), ("clients", run.clients_frame()),
                        ("groups", run.groups_frame()), ("partitions", run.partitions_frame())):
        written[name] = write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    written["model"] = export_model(run, out / MODEL_FILE)
    written["report"] = write_text_atomic(out / "report.html", render_run_report(run))
    if audit:
        report = audit_run(run, written["model"], checks=run.config.audit_checks, policy=policy, progress=progress)
        for kind, path in write_audit_reports(report, out).items():
            written[f"audit_{kind}"] = Path(path)
    return written
