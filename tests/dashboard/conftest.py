"""Fixtures of the dashboard tests: a small generator data set, a skops model, AppTest helpers, and
a worker that runs the jobs the pages submit (the dashboard itself runs no audit)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from audit.datasets import LendingData, make_lending_data

FEATURES = ["age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]
#: A spec restricting the audit to two quick fairness checks (tests stay fast).
QUICK_SPEC = b"""checks = ["fairness.group_metrics", "fairness.demographic_parity"]
seed = 7

[model]
path = "/somewhere/else/model.skops"   # ignored: the uploaded model is used

[data]
test = "/etc/passwd"                   # ignored: never opened
target = "approved"
positive_label = 1
sensitive = ["sex"]
"""


@pytest.fixture(scope="session")
def small_lending() -> LendingData:
    return make_lending_data(1500, 600, 1200, seed=5)


@pytest.fixture(scope="session")
def skops_model(small_lending: LendingData) -> bytes:
    """A logistic-regression pipeline on the generator's features, as skops bytes."""
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = ["age_group", "region"]
    num = [c for c in FEATURES if c not in cat]
    model = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cat),
                                    ("num", StandardScaler(), num)])),
        ("clf", LogisticRegression(max_iter=500)),
    ])
    model.fit(small_lending.train[FEATURES], small_lending.train[small_lending.target])
    return sio.dumps(model)


@pytest.fixture(scope="session")
def pickle_model(skops_model: bytes) -> bytes:
    import joblib
    import skops.io as sio

    buf = io.BytesIO()
    joblib.dump(sio.loads(skops_model, trusted=sio.get_untrusted_types(data=skops_model)), buf)
    return buf.getvalue()


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode("utf-8")


@pytest.fixture(scope="session")
def test_csv(small_lending: LendingData) -> bytes:
    return csv_bytes(small_lending.test)


@pytest.fixture
def dash_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The server settings the command line would set: a fresh data folder and jobs folder
    (``data_dir.parent / "jobs"``; store: conftest's temp file)."""
    data_dir = tmp_path / "dashboard-data"
    monkeypatch.setenv("TRUSTAUDIT_DASHBOARD_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TRUSTAUDIT_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.delenv("TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB", raising=False)
    monkeypatch.delenv("TRUSTAUDIT_DASHBOARD_UNSAFE_PICKLE", raising=False)
    return data_dir


def run_jobs(*, unsafe_pickle: bool = False, max_jobs: int | None = None) -> dict[str, int]:
    """Run the queued jobs of the test's store with a real worker (each job in a child process,
    as ``trustaudit worker --once`` does) until none is queued; how they ended."""
    import os

    from audit.service import Worker, WorkerOptions
    from audit.store import open_store

    options = WorkerOptions(jobs_dir=Path(os.environ["TRUSTAUDIT_JOBS_DIR"]), once=True, quiet=True,
                            heartbeat=0.5, heartbeat_timeout=10.0, unsafe_pickle=unsafe_pickle, max_jobs=max_jobs)
    with open_store(None) as store:
        worker = Worker(store, options)
        worker.run()
    return dict(worker.counts)


def jobs_in_store() -> list:
    from audit.store import open_store

    with open_store(None) as store:
        return store.list_jobs()


def new_app(timeout: float = 90) -> AppTest:  # noqa: F821 - imported lazily
    from streamlit.testing.v1 import AppTest

    from dashboard import APP_PATH

    return AppTest.from_file(APP_PATH, default_timeout=timeout)


def uploader(at: AppTest, key: str):  # noqa: F821
    for u in at.file_uploader:
        if u.key == key:
            return u
    raise AssertionError(f"no file uploader {key!r}; have {[u.key for u in at.file_uploader]}")


def errors(at: AppTest) -> list[str]:  # noqa: F821
    return [e.value for e in at.error]


def synthetic_report(audit_id: str = "a" * 32, seed_shift: float = 0.0):
    """A report holding every PlotSpec kind under the check and table names the real checks use.

    The numbers are placeholders (the dashboard shows, never computes); the real checks' output
    is rendered by the slow test that runs every family.
    """
    from audit.results import (
        AuditReport,
        CheckResult,
        ErrorInfo,
        EvidenceTable,
        PlotSpec,
        Provenance,
        Verdict,
    )

    by_group = EvidenceTable("by_group", (
        {"feature": "sex", "group": "female", "count": 600, "small": False, "selection_rate": 0.31 + seed_shift,
         "selection_rate_lo": 0.27, "selection_rate_hi": 0.35, "tpr": 0.6, "tpr_lo": 0.55, "tpr_hi": 0.65},
        {"feature": "sex", "group": "male", "count": 600, "small": False, "selection_rate": 0.52,
         "selection_rate_lo": 0.48, "selection_rate_hi": 0.56, "tpr": 0.8, "tpr_lo": 0.75, "tpr_hi": 0.85},
        {"feature": "sex×age_group", "group": "female|18-29", "count": 20, "small": True, "selection_rate": 0.2,
         "selection_rate_lo": 0.05, "selection_rate_hi": 0.4, "tpr": 0.5, "tpr_lo": 0.2, "tpr_hi": 0.8},
    ), PlotSpec("bar", x="group", y="selection_rate", lo="selection_rate_lo", hi="selection_rate_hi",
                group="feature", title="Selection rate by group (95% bootstrap CI)"))
    disparities = EvidenceTable("disparities", (
        {"feature": "sex", "metric": "demographic_parity_difference", "estimate": 0.21, "ci_low": 0.15,
         "ci_high": 0.27, "limit": 0.1, "verdict": "FAIL"},
    ), PlotSpec("bar", x="feature", y="estimate", lo="ci_low", hi="ci_high", reference=0.1))
    importance = EvidenceTable("global_importance", tuple(
        {"feature": f, "importance": v, "lo": v * 0.9, "hi": v * 1.1} for f, v in (("income", 1.2), ("region", 0.1))
    ), PlotSpec("bar", x="feature", y="importance", lo="lo", hi="hi", title="SHAP global importance"))
    beeswarm = EvidenceTable("beeswarm", tuple(
        {"feature": f, "shap": s, "feature_value": v} for f, s, v in
        (("income", 1.0, 0.9), ("income", -0.8, 0.1), ("region", 0.05, 0.5))
    ), PlotSpec("scatter", x="shap", y="feature", value="feature_value", title="SHAP summary of the top features"))
    by_method = EvidenceTable("importance_by_method", tuple(
        {"feature": f, "method": m, "share": s} for f, m, s in
        (("income", "SHAP", 0.9), ("region", "SHAP", 0.1), ("income", "LIME", 0.8), ("region", "LIME", 0.2))
    ), PlotSpec("bar", x="feature", y="share", group="method", title="Global importance per method"))
    matrix = EvidenceTable("agreement_matrix", tuple(
        {"method_a": a, "method_b": b, "spearman": 1.0 if a == b else 0.7} for a in ("SHAP", "LIME")
        for b in ("SHAP", "LIME")
    ), PlotSpec("heatmap", x="method_a", y="method_b", value="spearman", title="Rank agreement"))
    dot = 'digraph "causal" { "sex" -> "income"; "income" -> "approved"; "sex" -> "approved"; }'
    graph = EvidenceTable("causal_graph", ({"dot": dot},), PlotSpec("graph", title="Causal graph"))
    paths = EvidenceTable("path_decomposition", (
        {"contrast": "male vs female", "component": "natural direct effect", "effect": 0.06, "ci_low": 0.05,
         "ci_high": 0.07},
        {"contrast": "male vs female", "component": "total effect", "effect": 0.19, "ci_low": 0.17, "ci_high": 0.21},
    ), PlotSpec("bar", x="component", y="effect", lo="ci_low", hi="ci_high", group="contrast", reference=0.05))
    flips = EvidenceTable("flip_rate_by_group", (
        {"group": "female", "n": 500, "flip_rate": 0.28, "flip_rate_ci_low": 0.25, "flip_rate_ci_high": 0.31},
    ), PlotSpec("bar", x="group", y="flip_rate", lo="flip_rate_ci_low", hi="flip_rate_ci_high", reference=0.05))
    roc = EvidenceTable("roc_curve", tuple(
        {"attack": "loss", "fpr": x, "tpr": min(1.0, x * 1.1)} for x in (0.0, 0.001, 0.01, 0.5, 1.0)
    ), PlotSpec("line", x="fpr", y="tpr", group="attack", title="Membership-inference ROC curve"))
    attacks = EvidenceTable("attacks", ({
        "attack": "loss", "auc": 0.53, "auc_lo": 0.52, "auc_hi": 0.55, "tpr_at_0.1pct_fpr": 0.002,
        "tpr_at_0.1pct_fpr_lo": 0.001, "tpr_at_0.1pct_fpr_hi": 0.004, "tpr_at_1pct_fpr": 0.0155,
        "tpr_at_1pct_fpr_lo": 0.0119, "tpr_at_1pct_fpr_hi": 0.0198},
    ), PlotSpec("bar", x="attack", y="auc", lo="auc_lo", hi="auc_hi", reference=0.6))
    accountants = EvidenceTable("accountants", (
        {"accountant": "rdp", "epsilon": 2.25, "claimed_epsilon": 2.0},
        {"accountant": "prv", "epsilon": 2.125, "claimed_epsilon": 2.0},
    ), PlotSpec("bar", x="accountant", y="epsilon", reference=2.0))
    prov = Provenance(params={"rows": 1200}, seed=7, seconds=0.5)
    results = (
        CheckResult("fairness.group_metrics", Verdict.PASS, "Groups measured.", {"sex=female.count": 600},
                    {"min_group_size": 30}, (by_group,), prov, "fairness"),
        CheckResult("fairness.demographic_parity", Verdict.FAIL, "Parity gap 0.21 over 0.1.",
                    {"sex.demographic_parity_difference": 0.21 + seed_shift,
                     "sex.demographic_parity_difference.ci_low": 0.15}, {"demographic_parity_difference_max": 0.1},
                    (disparities,), prov, "fairness"),
        CheckResult("explain.shap", Verdict.PASS, "SHAP ranks income first.", {"importance.income": 1.2}, {},
                    (importance, beeswarm), prov, "explain"),
        CheckResult("explain.agreement", Verdict.PASS, "Methods agree.", {"min_spearman": 0.7}, {},
                    (by_method, matrix), prov, "explain"),
        CheckResult("explain.lime", Verdict.ERROR, "The check could not run: ValueError: lime exploded",
                    {}, {}, (), prov, "explain", ErrorInfo("ValueError", "lime exploded", "Traceback ...")),
        CheckResult("causal.path_decomposition", Verdict.FAIL, "Direct effect 0.06 over 0.05.",
                    {"natural_direct_effect": 0.06}, {"direct_effect_max": 0.05}, (paths, graph), prov, "causal"),
        CheckResult("causal.counterfactual_fairness", Verdict.FAIL, "28% of decisions flip.",
                    {"flip_rate": 0.28, "flip_rate.ci_low": 0.25, "flip_rate.ci_high": 0.31, "mean_abs_delta": 0.19},
                    {}, (flips, graph), prov, "causal"),
        CheckResult("causal.treatment_effect", Verdict.SKIPPED, "Skipped: no outcome", provenance=prov,
                    family="causal"),
        CheckResult("privacy.dp_claim", Verdict.WARN, "The claimed ε = 2 is below the RDP accountant's 2.25.",
                    {"claimed_epsilon": 2.0, "epsilon_rdp": 2.25}, {"epsilon_tolerance": 0.05}, (accountants,),
                    prov, "privacy"),
        CheckResult("privacy.membership_inference", Verdict.PASS, "Best attack AUC 0.53.",
                    {"epsilon_lower_bound": 0.75, "best.auc": 0.53}, {"attack_auc_max": 0.6}, (attacks, roc),
                    prov, "privacy"),
    )
    return AuditReport(audit_id=audit_id, created_at="2026-01-02T03:04:05+00:00", results=results,
                       model={"path": "model.skops", "format": "skops", "type": "Pipeline"},
                       inputs={"data": {"test": {"path": "test.csv", "rows": 1200}}}, seconds=1.5)
