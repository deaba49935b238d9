"""Every page under streamlit.testing.v1.AppTest: no exception, its key elements shown; audits
submitted as jobs and run by a real worker, followed through widget changes and reloads."""

from __future__ import annotations

import hashlib

import pytest

from audit.store import HistoryStore, default_store_path
from tests.dashboard.conftest import (
    QUICK_SPEC,
    errors,
    jobs_in_store,
    new_app,
    run_jobs,
    synthetic_report,
    uploader,
)

PAGES = {
    "new": "app_pages/new_audit.py",
    "findings": "app_pages/findings.py",
    "jobs": "app_pages/jobs.py",
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

    at.switch_page(PAGES["jobs"]).run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Jobs"]
    assert [s.value for s in at.subheader] == ["Queued and running (0)", "Recently finished"]
    assert [c.value for c in at.caption][1:] == ["No job is queued or running.", "No job has finished yet."]

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


def _upload_quick(at, skops_model, test_csv):
    uploader(at, "upload_spec").set_value(("quick.toml", QUICK_SPEC, "application/toml"))
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("applicants.csv", test_csv, "text/csv"))
    return at.run()


def _progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_upload_run_audit_and_read_findings(dash_env, skops_model, test_csv):
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    assert not at.exception and not errors(at)
    assert at.success[0].value.startswith("Model **model.skops**: skops, Pipeline(ColumnTransformer, LogisticRegression)")
    assert "Ignored (the uploads are used instead): model, data.test." in at.info[0].value
    # the form took the spec's choices
    assert at.multiselect[0].value == ["sex"]
    assert at.multiselect[1].value == ["fairness.group_metrics", "fairness.demographic_parity"]
    at.button(key="run_audit").click().run()
    assert not at.exception and not errors(at)

    # the page ran nothing: it queued a job with the form's spec and follows it (session and URL)
    (job,) = jobs_in_store()
    assert (job.kind, job.state, job.project, job.submitted_by) == ("audit", "queued", "local", "dashboard")
    assert job.spec == {"data": {"target": "approved", "positive_label": "1", "sensitive": ["sex"]},
                        "checks": ["fairness.group_metrics", "fairness.demographic_parity"], "seed": 7}
    assert (job.inputs["model"]["name"], job.inputs["data"]["name"]) == ("model.skops", "applicants.csv")
    assert job.inputs["data"]["sha256"] == hashlib.sha256(test_csv).hexdigest()
    assert at.query_params["job"] == job.job_id
    assert [t.value for t in at.title] == ["New audit"]
    assert _progress_texts(at)[0].startswith("Queued (next in line) for ")
    assert at.button(key=f"new_cancel_{job.job_id}").label == "Cancel"
    # uploads go to the job folder under generated names only (never the visitor's file names)
    folder = dash_env.parent / "jobs" / job.inputs["folder"]
    stored = sorted(q.name for q in folder.iterdir())
    assert len(stored) == 2 and all(n.endswith(".upload") and "applicants" not in n for n in stored)

    run_jobs()  # a worker takes it: the audit runs in its child process
    at.run()
    assert not at.exception and not errors(at)
    assert [t.value for t in at.title] == ["Findings"]
    headline = _markdown(at)[0]
    assert headline.startswith("### Audit `") and "FAIL" in headline
    assert [m.label for m in at.metric] == ["Pass", "Warn", "Fail", "Error", "Skipped"]
    assert [m.value for m in at.metric] == ["1", "0", "1", "0", "0"]
    assert [d.label for d in at.download_button] == ["JSON", "HTML", "Markdown", "JUnit XML", "SARIF"]
    assert "fairness.demographic_parity" in at.dataframe[0].value["check"].tolist()
    assert "job" not in at.query_params  # done: the New audit page no longer follows it

    # recorded in the history by the worker, with the uploaded names, not paths the spec named
    (job,) = jobs_in_store()
    assert job.state == "succeeded" and job.audit_id
    rows = HistoryStore(default_store_path()).list()
    assert len(rows) == 1
    assert (rows[0]["audit_id"], rows[0]["model_path"], rows[0]["data_path"], rows[0]["project"]) == (
        job.audit_id, "model.skops", "applicants.csv", "local")
    report = at.session_state["trustaudit_report"]
    assert report.audit_id == job.audit_id
    assert report.inputs["data"]["test"]["sha256"] == hashlib.sha256(test_csv).hexdigest()
    assert not folder.exists()  # the worker removed the job's inputs after the job

    at.session_state["findings_tab"] = "Fairness"
    at.run()
    assert not at.exception
    assert "#### By group and intersection" in _markdown(at)
    assert _count(at, "vega_lite_chart") >= 2


def test_the_audit_survives_widget_changes_and_reloads(dash_env, skops_model, test_csv):
    """The issue's bug: touching the seed during an audit threw it away. Now the job lives in the
    store: widget changes rerun the page around it, a reload (a new session on the same URL) picks
    it up, and it finishes into the history."""
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    at.button(key="run_audit").click().run()
    (job,) = jobs_in_store()
    url = dict(at.query_params)
    seed = next(n for n in at.number_input if n.key.startswith("form_seed"))
    seed.set_value(123).run()
    at.selectbox(key=next(s.key for s in at.selectbox if s.key.startswith("form_target"))).set_value("region").run()
    assert not at.exception and not errors(at)
    assert at.query_params["job"] == job.job_id
    assert _progress_texts(at)[0].startswith("Queued")
    assert [(j.job_id, j.state) for j in jobs_in_store()] == [(job.job_id, "queued")]  # nothing lost, nothing added

    reloaded = new_app()  # a reload: a new session, no uploads, the same URL
    reloaded.query_params.update(url)
    reloaded.run()
    assert not reloaded.exception and not errors(reloaded)
    assert _progress_texts(reloaded)[0].startswith("Queued")
    assert [i.value for i in reloaded.info] == ["Upload a model and the data to audit to continue."]

    assert run_jobs() == {"succeeded": 1}
    reloaded.run()
    assert [t.value for t in reloaded.title] == ["Findings"]
    (done,) = jobs_in_store()
    assert done.state == "succeeded"
    assert [r["audit_id"] for r in HistoryStore(default_store_path()).list()] == [done.audit_id]
    assert done.spec["seed"] == 7  # the job kept the spec it was submitted with


def test_cancel_a_queued_audit_and_the_jobs_page(dash_env, skops_model, test_csv):
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    at.button(key="run_audit").click().run()
    at.button(key="run_audit").click().run()  # a second audit: the page follows the newer one
    second, first = jobs_in_store()
    assert at.query_params["job"] == second.job_id
    assert _progress_texts(at)[0].startswith("Queued (1 job ahead) for ")

    jobs = new_app().run()
    jobs.switch_page(PAGES["jobs"]).run()
    assert not jobs.exception and not errors(jobs)
    assert jobs.subheader[0].value == "Queued and running (2)"
    texts = _progress_texts(jobs)
    assert texts[0].startswith("Queued (next in line)") and texts[1].startswith("Queued (1 job ahead)")
    assert "Audit of model.skops on applicants.csv" in _markdown(jobs)[0]
    jobs.button(key=f"jobs_cancel_{first.job_id}").click().run()
    assert not jobs.exception
    assert jobs.subheader[0].value == "Queued and running (1)"
    finished = jobs.dataframe[0].value
    assert finished[["job", "state", "reason"]].to_dict("records") == [
        {"job": first.job_id[:12], "state": "cancelled", "reason": "cancelled before it started"}]

    # the worker runs what is left; the cancelled job never starts
    assert run_jobs() == {"succeeded": 1}
    states = {j.job_id: j.state for j in jobs_in_store()}
    assert states == {first.job_id: "cancelled", second.job_id: "succeeded"}
    jobs.run()
    assert jobs.subheader[0].value == "Queued and running (0)"
    assert sorted(jobs.dataframe[0].value["state"]) == ["cancelled", "succeeded"]
    jobs.button(key="jobs_open").click().run()
    assert [t.value for t in jobs.title] == ["Findings"]
    assert jobs.session_state["trustaudit_report"].audit_id == jobs_in_store()[0].audit_id

    # the New audit page, following the second job, shows its findings
    at.run()
    assert [t.value for t in at.title] == ["Findings"]


def test_a_failed_audit_is_one_line_and_can_be_dismissed(dash_env, skops_model, test_csv):
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    at.button(key="run_audit").click().run()
    (job,) = jobs_in_store()
    folder = dash_env.parent / "jobs" / job.inputs["folder"]
    (folder / job.inputs["data"]["stored"]).write_bytes(b"changed after the upload")
    assert run_jobs() == {"failed": 1}
    at.run()
    assert not at.exception
    assert errors(at) == ["data file applicants.csv of this job does not match its recorded sha256 (changed after it "
                          "was uploaded)"]
    assert [t.value for t in at.title] == ["New audit"]
    at.button(key="dismiss_job").click().run()
    assert not errors(at) and "job" not in at.query_params
    assert not at.button(key="run_audit").disabled  # the form is still there, still usable


def test_an_unknown_job_in_the_url(dash_env):
    at = new_app()
    at.query_params["job"] = "0" * 32
    at.run()
    assert not at.exception
    assert [w.value for w in at.warning] == [f"No audit job {'0' * 12} in the history store; start a new audit below."]
    assert "job" not in at.query_params
    at2 = new_app()
    at2.query_params["job"] = "../../etc/passwd"
    at2.run()
    assert not at2.exception and not at2.warning and "job" not in at2.query_params


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
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    at.button(key="run_audit").click().run()
    assert not at.exception
    message = f"history store path {folder} is a folder; give a file path"
    assert [t.value for t in at.title] == ["New audit"]
    assert errors(at) == [message]  # nothing could be queued: said in one line, the form stays
    jobs = dash_env.parent / "jobs"
    assert not jobs.exists() or not list(jobs.iterdir())  # and no job folder is left behind
    at.switch_page(PAGES["history"]).run()
    assert errors(at) == [message]
    at.switch_page(PAGES["jobs"]).run()
    assert errors(at) == [message]


def test_audit_job_on_a_postgresql_store(dash_env, monkeypatch, pg_url, skops_model, test_csv):
    """The same path with the store on PostgreSQL: the page queues, a worker runs, history lists it."""
    monkeypatch.setenv("TRUSTAUDIT_STORE", pg_url)
    at = _upload_quick(new_app().run(), skops_model, test_csv)
    at.button(key="run_audit").click().run()
    assert not at.exception and not errors(at)
    assert run_jobs() == {"succeeded": 1}
    at.run()
    assert [t.value for t in at.title] == ["Findings"]
    (job,) = jobs_in_store()
    at.switch_page(PAGES["history"]).run()
    assert not at.exception and not errors(at)
    assert at.dataframe[0].value["audit"].tolist() == [job.audit_id[:12]]
    assert at.caption[0].value.startswith("1 audit(s) in the history store postgresql+psycopg://")
