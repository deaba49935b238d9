"""What the pages say about a job, from its row alone: description, progress, timestamps."""

from __future__ import annotations

from dataclasses import replace

from audit.store import Job
from dashboard._jobs import describe, elapsed, progress_of, stamp

T0 = "2026-01-02T03:04:05.250000+00:00"
T1 = "2026-01-02T03:04:17.250000+00:00"


def _job(**kw) -> Job:
    base = Job(job_id="f" * 32, kind="audit", state="queued", project="local", submitted_by="dashboard",
               created_at=T0, started_at=None, finished_at=None, heartbeat_at=None, attempts=0, worker_id=None,
               inputs={"folder": "x", "model": {"name": "model.skops"}, "data": {"name": "rows.csv"}})
    return replace(base, **kw)


def test_describe_names_the_uploads_or_the_federation():
    assert describe(_job()) == "Audit of model.skops on rows.csv"
    fed = _job(kind="federated", inputs={}, spec={"strategy": "fedprox", "num-clients": 4, "num-rounds": 3,
                                                  "audit": True})
    assert describe(fed) == "Federated simulation: fedprox, 4 clients, 3 rounds on generated lending rows, then an audit"


def test_progress_of_each_state():
    done = _job(state="succeeded", started_at=T0, finished_at=T1)
    assert elapsed(done) == 12.0 and stamp(T1) == "2026-01-02 03:04:17"
    assert progress_of(done) == (1.0, "Succeeded in 12 s")
    assert progress_of(_job(), ahead=0)[1].startswith("Queued (next in line) for ")
    assert progress_of(_job(), ahead=2)[1].startswith("Queued (2 jobs ahead) for ")
    running = _job(state="running", started_at=T0)
    assert progress_of(running)[1].startswith("Starting: loading the model and the data … ")
    # checks run side by side: both running ones are named, the done ones counted
    lanes = replace(running, progress={"done": 1, "total": 4, "current": "explain.lime", "checks": {
        "fairness.group_metrics": "done", "fairness.demographic_parity": "done", "explain.lime": "running",
        "explain.shap": "running"}})
    fraction, text = progress_of(lanes)
    assert fraction == 0.5 and text.startswith("2/4 checks done; running explain.lime, explain.shap (")
    assert progress_of(replace(lanes, cancel_requested=True))[1].startswith("Cancelling … (")
    failed = _job(state="failed", started_at=T0, finished_at=T1, error="bad")
    assert progress_of(failed) == (0.0, "Failed after 12 s")


def test_progress_of_a_federated_job():
    fed = _job(kind="federated", state="running", started_at=T0, inputs={})
    assert progress_of(fed)[1].startswith("Starting the simulation engine … ")
    rounds = replace(fed, progress={"stage": "simulation", "done": 2, "total": 5, "round": {
        "round": 2, "rounds": 5, "accuracy": 0.8123, "answered": 3, "sampled": 4}})
    fraction, text = progress_of(rounds)
    assert fraction == 0.4 and text.startswith("Round 2/5: accuracy 0.812, 3/4 clients answered (")
    audit = replace(fed, progress={"stage": "audit", "done": 1, "total": 2, "checks": {
        "fairness.group_metrics": "done", "fairness.demographic_parity": "running"}})
    assert progress_of(audit)[1].startswith(
        "Auditing the final model: 1/2 checks done; running fairness.demographic_parity (")
