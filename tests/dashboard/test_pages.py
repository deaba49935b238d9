"""Every page under streamlit.testing.v1.AppTest: no exception, its key elements shown."""

from __future__ import annotations

import pytest

from audit.store import HistoryStore, default_store_path
from tests.dashboard.conftest import QUICK_SPEC, errors, new_app, synthetic_report, uploader

PAGES = {
    "new": "app_pages/new_audit.py",
    "findings": "app_pages/findings.py",
    "history": "app_pages/history.py",
    "federated": "app_pages/federated.py",
}


def _markdown(at) -> list[str]:
    return [m.value for m in at.markdown]


def _count(at, kind: str) -> int:
    return len(at.get(kind))


def test_every_page_renders_its_empty_state(dash_env):
    at = new_app().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["New audit"]
    assert [u.key for u in at.file_uploader] == ["upload_model", "upload_data", "upload_train", "upload_holdout",
                                                 "upload_spec"]
    assert [i.value for i in at.info] == ["Upload a model and the data to audit to continue."]

    at.switch_page(PAGES["findings"]).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Findings"]
    assert [i.value for i in at.info] == ["No audit to show yet: run one, or open an earlier one from the history."]
    assert _count(at, "page_link") == 2

    at.switch_page(PAGES["history"]).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["History"]
    assert [i.value for i in at.info] == ["No audit recorded yet: run one on the New audit page."]

    at.switch_page(PAGES["federated"]).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Federated simulation"]
    assert [b.label for b in at.button] == ["Run the simulation"]
    assert at.info[0].value == "Configure the federation above and run it; the per-round charts appear here."
    assert not errors(at)


def test_upload_run_audit_and_read_findings(dash_env, skops_model, test_csv):
    at = new_app().run()
    uploader(at, "upload_spec").set_value(("quick.toml", QUICK_SPEC, "application/toml"))
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("applicants.csv", test_csv, "text/csv"))
    at.run()
    assert not at.exception and not errors(at)
    assert at.success[0].value.startswith("Model **model.skops**: skops, Pipeline(ColumnTransformer, LogisticRegression)")
    assert "Ignored (the uploads are used instead): model, data.test." in at.info[0].value
    # the form took the spec's choices
    assert at.multiselect[0].value == ["sex"]
    assert at.multiselect[1].value == ["fairness.group_metrics", "fairness.demographic_parity"]
    at.button(key="run_audit").click().run()
    assert not at.exception and not errors(at)
    assert [t.value for t in at.title] == ["Findings"]
    headline = _markdown(at)[0]
    assert headline.startswith("### Audit `") and "FAIL" in headline
    assert [m.label for m in at.metric] == ["Pass", "Warn", "Fail", "Error", "Skipped"]
    assert [m.value for m in at.metric] == ["1", "0", "1", "0", "0"]
    assert [d.label for d in at.download_button] == ["JSON", "HTML", "Markdown", "JUnit XML", "SARIF"]
    assert "fairness.demographic_parity" in at.dataframe[0].value["check"].tolist()

    # recorded in the history with the uploaded names, not paths the spec named
    rows = HistoryStore(default_store_path()).list()
    assert len(rows) == 1
    assert (rows[0]["model_path"], rows[0]["data_path"], rows[0]["label"]) == (
        "model.skops", "applicants.csv", "dashboard: applicants.csv")
    report = at.session_state["trustaudit_report"]
    assert report.inputs["data"]["test"]["sha256"] is not None
    assert report.inputs["data"]["test"]["stored_as"].startswith("test-")
    # uploads are stored under generated names only
    stored = sorted(p.name for p in (dash_env / "uploads").iterdir())
    assert stored and all(n.endswith(".upload") and "applicants" not in n for n in stored)

    at.session_state["findings_tab"] = "Fairness"
    at.run()
    assert not at.exception
    assert "#### By group and intersection" in _markdown(at)
    assert _count(at, "vega_lite_chart") >= 2


@pytest.mark.parametrize("tab, headings, charts, graphs", [
    ("Fairness", ["#### By group and intersection", "#### Disparities against the policy"], 2, 0),
    ("Explanations", ["#### Importance per method", "#### Agreement between methods", "#### SHAP summary"], 4, 0),
    ("Causal", ["#### Causal graph", "#### Effects", "#### Counterfactual flip rates"], 2, 1),
    ("Privacy", ["#### Membership inference: ROC curve", "#### True-positive rate at low false-positive rates",
                 "#### ε: claimed, recomputed, empirical"], 4, 0),
])
def test_findings_sections_of_every_family(dash_env, tab, headings, charts, graphs):
    at = new_app().run()
    at.session_state["trustaudit_report"] = synthetic_report()
    at.switch_page(PAGES["findings"]).run()
    assert [t.label for t in at.get("tab")] == ["Overview", "Fairness", "Explanations", "Causal", "Privacy"]
    at.session_state["findings_tab"] = tab
    at.run()
    assert not at.exception
    md = _markdown(at)
    for h in headings:
        assert h in md
    assert _count(at, "vega_lite_chart") >= charts
    assert _count(at, "graphviz_chart") == graphs
    if tab == "Explanations":
        assert errors(at) == ["ValueError: lime exploded"]
    if tab == "Causal":
        assert [m.value for m in at.metric][5:] == ["28.0%", "0.190"]
        effects = at.dataframe[0].value
        assert effects["estimate"].tolist() == [0.06, 0.19]
    if tab == "Privacy":
        eps = next(d.value for d in at.dataframe if "source" in d.value.columns)
        # copied from the checks, not recomputed
        assert eps.to_dict("records") == [
            {"source": "claimed", "epsilon": 2.0},
            {"source": "recomputed (RDP)", "epsilon": 2.25},
            {"source": "recomputed (PRV)", "epsilon": 2.125},
            {"source": "empirical lower bound (attack)", "epsilon": 0.75},
        ]
        at.toggle[0].set_value(True).run()  # log-scaled ROC curve
        assert not at.exception


def test_history_filter_open_and_compare(dash_env):
    store = HistoryStore(default_store_path())
    store.record(synthetic_report("b" * 32, seed_shift=0.0), label="before")
    later = synthetic_report("c" * 32, seed_shift=0.05)
    store.record(later, label="after")
    at = new_app().run()
    at.switch_page(PAGES["history"]).run()
    assert not at.exception and not errors(at)
    assert at.caption[0].value == "2 audit(s) in the history store history.sqlite."
    assert at.dataframe[0].value["audit"].tolist() == ["c" * 12, "b" * 12]
    assert [m.label for m in at.metric][:2] == ["Worse", "Better"]
    deltas = next(d.value for d in at.dataframe if "delta" in d.value.columns)
    row = deltas[deltas["metric"] == "sex.demographic_parity_difference"].iloc[0]
    assert row["before"] == pytest.approx(0.21) and row["after"] == pytest.approx(0.26)
    assert row["delta"] == pytest.approx(0.05)

    at.text_input(key="hist_search").set_value("bbbbbb").run()
    assert at.dataframe[0].value["audit"].tolist() == ["b" * 12]
    assert at.info[0].value == "Two audits are needed for a comparison."

    at.text_input(key="hist_search").set_value("").run()
    at.selectbox(key="hist_verdict").set_value("PASS").run()
    assert at.info[0].value == "No audit matches these filters."
    at.selectbox(key="hist_verdict").set_value("any").run()
    at.selectbox(key="hist_open_id").set_value("b" * 32).run()
    at.button(key="hist_open").click().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Findings"]
    assert at.caption[0].value == "Opened from the history."
    assert _markdown(at)[0].startswith("### Audit `bbbbbbbbbbbb`")


def test_a_tab_the_next_report_lacks_falls_back_to_overview(dash_env):
    from audit.results import AuditReport

    at = new_app().run()
    at.session_state["trustaudit_report"] = synthetic_report()
    at.switch_page(PAGES["findings"]).run()
    at.session_state["findings_tab"] = "Causal"
    at.run()
    full = synthetic_report()
    at.session_state["trustaudit_report"] = AuditReport(
        audit_id="d" * 32, created_at=full.created_at, results=full.results[:2], model=full.model)
    at.run()
    assert not at.exception
    assert [t.label for t in at.get("tab")] == ["Overview", "Fairness"]
    assert "#### What needs attention" in _markdown(at)


def test_misconfigured_server_says_so(dash_env, monkeypatch):
    monkeypatch.setenv("TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB", "0")
    at = new_app().run()
    assert not at.exception
    assert errors(at) == ["The dashboard is misconfigured: max-upload-mb must be a whole number of megabytes "
                          "from 1 to 4096; got '0'"]


@pytest.mark.slow
def test_real_audit_of_every_family_renders(dash_env, small_lending, skops_model):
    """Every family's real output (not the synthetic report) through the Findings page."""
    import skops.io as sio

    from audit.runner import run_audit

    model = sio.loads(skops_model, trusted=sio.get_untrusted_types(data=skops_model))
    spec = {
        "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"]},
        "checks": ["fairness.group_metrics", "fairness.demographic_parity", "explain.shap", "explain.permutation",
                   "explain.agreement", "privacy", "causal"],
        "policy": {"causal": {"sample_size": 300, "n_bootstrap": 10, "effect_sample_size": 500},
                   "explain": {"permutation_sample_size": 300, "permutation_repeats": 3}},
        "causal": {"edges": [list(e) for e in small_lending.edges], "treatment": "sex",
                   "mediators": ["income", "debt_ratio"]},
        "privacy": {"dp_claim": {"epsilon": 2.0, "delta": 1e-5, "noise_multiplier": 1.1, "sample_rate": 0.01,
                                 "steps": 1000}},
    }
    report = run_audit(model, small_lending.test, train=small_lending.train, holdout=small_lending.holdout, spec=spec)
    assert not [r.check_id for r in report.results if r.verdict.value == "ERROR"]
    at = new_app().run()
    at.session_state["trustaudit_report"] = report
    at.switch_page(PAGES["findings"]).run()
    expected = {
        "Fairness": ["#### By group and intersection", "#### Disparities against the policy"],
        "Explanations": ["#### Importance per method", "#### Agreement between methods", "#### SHAP summary"],
        "Privacy": ["#### Membership inference: ROC curve", "#### True-positive rate at low false-positive rates",
                    "#### ε: claimed, recomputed, empirical"],
        "Causal": ["#### Causal graph", "#### Effects", "#### Counterfactual flip rates"],
    }
    for tab, headings in expected.items():
        at.session_state["findings_tab"] = tab
        at.run()
        assert not at.exception and not errors(at)
        md = _markdown(at)
        assert all(h in md for h in headings), (tab, [m for m in md if m.startswith("####")])
    assert len(at.get("graphviz_chart")) == 1


def test_unusable_history_store_is_reported_not_fatal(dash_env, monkeypatch, tmp_path, skops_model, test_csv):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    monkeypatch.setenv("TRUSTAUDIT_STORE", str(folder))
    at = new_app().run()
    uploader(at, "upload_spec").set_value(("quick.toml", QUICK_SPEC, "application/toml"))
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("applicants.csv", test_csv, "text/csv"))
    at.run()
    at.button(key="run_audit").click().run()
    assert not at.exception
    message = f"history store path {folder} is a folder; give a file path"
    assert [t.value for t in at.title] == ["Findings"]
    assert [w.value for w in at.warning] == [f"The audit ran but could not be saved to the history: {message}"]
    at.switch_page(PAGES["history"]).run()
    assert errors(at) == [message]
