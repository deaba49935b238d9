"""The Federated page: configuration errors, the simulation submitted as a job and followed from the
store (per-round progress while a worker runs it, its failure as one line), and (slow) a real
Flower run and audit through a worker."""

from __future__ import annotations

import threading
import time

import pytest

from tests.dashboard.conftest import errors, jobs_in_store, new_app, run_jobs

PAGE = "app_pages/federated.py"


def _page():
    at = new_app(timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _number(at, label: str):
    return next(n for n in at.number_input if n.label == label)


def test_bad_configuration_is_one_line(dash_env):
    at = _page()
    at.selectbox[0].set_value("dirichlet")  # partition
    _number(at, "Dirichlet α").set_value(0.0)
    at.button[0].click().run()
    assert not at.exception
    assert errors(at) == ["alpha must be greater than 0 (the Dirichlet concentration); got 0.0"]
    assert at.info[-1].value == "Configure the federation above and run it; the per-round charts appear here."
    assert jobs_in_store() == []  # nothing queued


def test_upload_source_needs_a_file(dash_env):
    at = _page()
    at.radio[0].set_value("upload a CSV or Parquet file")
    at.button[0].click().run()
    assert errors(at) == ["choose a data file to upload, or use the lending generator"]
    assert jobs_in_store() == []


def test_uploaded_rows_go_into_the_job_folder(dash_env, test_csv):
    at = _page()
    at.radio[0].set_value("upload a CSV or Parquet file")
    next(u for u in at.file_uploader if u.key == "fed_data").set_value(("clients.csv", test_csv, "text/csv"))
    at.button[0].click().run()
    assert not at.exception and not errors(at)
    (job,) = jobs_in_store()
    assert job.kind == "federated" and job.inputs["data"]["name"] == "clients.csv"
    assert "data" not in job.spec and "output-dir" not in job.spec  # no server path in the job
    stored = dash_env.parent / "jobs" / job.inputs["folder"] / job.inputs["data"]["stored"]
    assert stored.read_bytes() == test_csv
    assert any("Federated simulation: fedavg, 10 clients, 5 rounds on clients.csv, then an audit" in m.value
               for m in at.markdown)


def test_rounds_are_shown_as_the_worker_reports_them(dash_env, monkeypatch, tmp_path):
    """The page follows the job the worker runs: each round it reports, then its failure as one
    line (the engine faked; the fake is inherited by the worker's forked child)."""
    import federated._engine
    from audit.exceptions import ConfigError
    from federated import RoundProgress

    release = tmp_path / "release"

    def fake_simulate(cfg, *, progress=None, **kwargs):
        for r in (1, 2):
            progress(RoundProgress(round=r, num_rounds=cfg.num_rounds, run_index=0, accuracy=0.7 + r / 100,
                                   loss=0.6 - r / 100, answered=3, sampled=3, epsilon=None, seconds=0.1))
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise ConfigError("the engine stopped after round 2")

    monkeypatch.setattr(federated._engine, "simulate", fake_simulate)
    at = _page()
    _number(at, "Clients").set_value(3)
    _number(at, "Rounds").set_value(4)
    _number(at, "Generated training rows (holdout and test: half as many each)").set_value(500)
    at.button[0].click().run()
    assert not at.exception and not errors(at)
    (job,) = jobs_in_store()
    assert (job.spec["num-clients"], job.spec["num-rounds"], job.spec["n-rows"]) == (3, 4, 500)
    assert job.spec["audit"] is True and job.spec["checks"] == "fairness,privacy"
    assert at.query_params["job"] == job.job_id

    worker = threading.Thread(target=run_jobs, daemon=True)
    worker.start()
    deadline = time.monotonic() + 120
    while (jobs_in_store()[0].progress.get("round") or {}).get("round") != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    at.run()
    assert not at.exception and not errors(at)
    assert at.get("progress")[0].proto.text.startswith("Round 2/4: accuracy 0.720, 3/3 clients answered (")
    assert len(at.get("arrow_vega_lite_chart")) + len(at.get("vega_lite_chart")) == 1  # the live chart
    release.touch()
    worker.join(120)
    assert not worker.is_alive()
    at.run()
    assert not at.exception
    assert errors(at) == ["The simulation failed: the engine stopped after round 2"]
    assert jobs_in_store()[0].state == "failed"


@pytest.mark.slow
def test_real_simulation_and_audit(dash_env):
    """Flower's simulation engine in a worker, then the audit of the exported model, shown here."""
    at = _page()
    _number(at, "Clients").set_value(3)
    _number(at, "Rounds").set_value(2)
    _number(at, "Generated training rows (holdout and test: half as many each)").set_value(600)
    at.multiselect[0].set_value(["fairness"])
    at.button[0].click().run()
    assert run_jobs() == {"succeeded": 1}
    at.run(timeout=300)
    assert not at.exception and not errors(at)
    assert at.subheader[0].value == "Last run"
    assert [m.label for m in at.metric][:2] == ["Final accuracy", "Final loss"]
    report = at.session_state["trustaudit_federated_audit"]
    assert report.results and report.model["format"] == "torchscript"
    assert report.model["path"].startswith("federated job ") and report.model["path"].endswith(": model.pt")
    (job,) = jobs_in_store()
    assert job.audit_id == report.audit_id and job.result["trained"] is True
    # a reload (new session, same URL) shows the same run from the store
    again = new_app(timeout=120)
    again.query_params["job"] = job.job_id
    again.switch_page(PAGE).run()
    assert again.subheader[0].value == "Last run"
    assert again.session_state["trustaudit_federated_audit"].audit_id == report.audit_id
