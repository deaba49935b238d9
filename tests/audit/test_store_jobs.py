"""The store's job queue and API tokens, on SQLite and on PostgreSQL (``store_url`` runs each test on both).

Ground truth: every claim is checked against the set of submitted ids (each claimed exactly once),
every state against the transition the contract allows, the database is read directly where the
store's own answer could hide a problem (no secret stored, no half-recorded report).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time

import pytest
from sqlalchemy import event, text

from audit.exceptions import StoreError, UsageError
from audit.store import (
    JOB_STATES,
    Job,
    NotFoundError,
    QueueFullError,
    TokenInfo,
    open_store,
)
from tests.audit.test_store import make_report


def submit(store, n: int = 1, *, project: str = "p", kind: str = "audit", **kw) -> list[str]:
    return [store.submit_job(kind, {"checks": ["fairness"], "i": i}, {"model": {"sha256": "ab" * 32}},
                             project=project, submitted_by="local", **kw) for i in range(n)]


def test_submit_get_list(store_url):
    store = open_store(store_url)
    ids = submit(store, 3) + submit(store, 1, project="other", kind="federated")
    job = store.get_job(ids[0])
    assert (job.state, job.kind, job.project, job.submitted_by, job.attempts) == ("queued", "audit", "p", "local", 0)
    assert job.spec == {"checks": ["fairness"], "i": 0} and job.inputs == {"model": {"sha256": "ab" * 32}}
    assert (job.started_at, job.finished_at, job.worker_id, job.audit_id, job.error) == (None,) * 5
    assert job.progress == {} and job.cancel_requested is False and not job.finished
    json.dumps(job.to_dict())  # what the API sends
    assert [j.job_id for j in store.list_jobs()] == ids[::-1]  # newest first
    assert [j.job_id for j in store.list_jobs(project="p")] == ids[2::-1]
    assert [j.job_id for j in store.list_jobs(state="queued", limit=2)] == ids[:1:-1]
    assert store.list_jobs(state=("running", "failed")) == []
    assert store.count_jobs() == 4 and store.count_jobs(project="other") == 1
    with pytest.raises(NotFoundError, match="no job 'nope'"):
        store.get_job("nope")
    with pytest.raises(NotFoundError):
        store.get_job(ids[3], project="p")  # another project's job is not found, as an unknown one
    # timestamps: one ISO format in UTC, in submission order
    created = [store.get_job(i).created_at for i in ids]
    assert created == sorted(created) and all(c.endswith("+00:00") and len(c) == 32 for c in created)


def test_submit_refuses_bad_arguments(store_url):
    store = open_store(store_url)
    with pytest.raises(UsageError, match="job kind 'shell' is not one of audit, federated"):
        store.submit_job("shell", {}, {}, project="p", submitted_by="local")
    with pytest.raises(UsageError, match=r"project name '\.\./x' is not allowed"):
        store.submit_job("audit", {}, {}, project="../x", submitted_by="local")
    with pytest.raises(UsageError, match="job spec cannot be stored as JSON"):
        store.submit_job("audit", {"x": float("nan")}, {}, project="p", submitted_by="local")
    with pytest.raises(UsageError, match="job state 'done' is not one of"):
        store.list_jobs(state="done")
    assert store.count_jobs() == 0


def test_claim_is_fifo_and_marks_running(store_url):
    store = open_store(store_url)
    ids = submit(store, 3)
    fed = submit(store, 1, kind="federated")[0]
    assert store.claim_job("w1", kinds=("federated",)).job_id == fed
    job = store.claim_job("w1")
    assert job.job_id == ids[0]
    assert (job.state, job.worker_id, job.attempts) == ("running", "w1", 1)
    assert job.started_at == job.heartbeat_at and job.started_at >= job.created_at
    assert store.get_job(ids[0]) == job
    assert [store.claim_job("w2").job_id for _ in range(2)] == ids[1:]
    assert store.claim_job("w2") is None


def test_claims_from_8_threads_take_each_job_once(store_url):
    store = open_store(store_url)
    ids = set(submit(store, 100))
    claimed: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    def work(k: int) -> None:
        start.wait()
        while (job := store.claim_job(f"w{k}")) is not None:
            claimed[k].append(job.job_id)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [j for c in claimed for j in c]
    assert len(flat) == 100 and set(flat) == ids  # none twice, none left out
    assert sum(1 for c in claimed if c) >= 2  # the threads really competed
    for k, c in enumerate(claimed):
        assert all(store.get_job(j).worker_id == f"w{k}" for j in c[:5])
    assert store.count_jobs(state="running") == 100


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked claimers (no interpreter start-up per process)")
def test_claims_from_4_processes_take_each_job_once(store_url):
    ctx = multiprocessing.get_context("fork")
    store = open_store(store_url)
    ids = set(submit(store, 100))
    go, results = ctx.Event(), ctx.Queue()

    def claimer(k: int) -> None:
        mine = open_store(store_url)  # each process opens the store itself, as a worker does
        go.wait()
        claimed = []
        while (job := mine.claim_job(f"p{k}")) is not None:
            claimed.append(job.job_id)
        results.put((k, claimed))

    procs = [ctx.Process(target=claimer, args=(k,)) for k in range(4)]
    for p in procs:
        p.start()
    go.set()  # all four start claiming together
    outs = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    flat = [j for o in outs.values() for j in o]
    assert len(flat) == 100 and set(flat) == ids  # none twice, none left out
    for k, o in outs.items():
        assert all(store.get_job(j).worker_id == f"p{k}" for j in o)


def test_heartbeat_and_progress_belong_to_the_claiming_worker(store_url):
    store = open_store(store_url)
    (jid,) = submit(store)
    assert store.heartbeat(jid, "w1") is False  # queued: nobody's
    first = store.claim_job("w1").heartbeat_at
    time.sleep(0.01)
    assert store.heartbeat(jid, "w1") is True
    assert store.get_job(jid).heartbeat_at > first
    assert store.heartbeat(jid, "w2") is False
    progress = {"done": 1, "total": 3, "current": "fairness.x", "checks": {"fairness.x": "running"}}
    assert store.set_progress(jid, "w1", progress) is True
    assert store.set_progress(jid, "w2", {"done": 99}) is False
    assert store.get_job(jid).progress == progress


def test_requeue_once_then_fail_with_the_reason(store_url):
    store = open_store(store_url)
    (jid,) = submit(store)
    store.claim_job("w1")
    assert store.requeue_stale(60) == []  # heartbeat fresh
    time.sleep(0.05)
    assert store.requeue_stale(0.01) == [jid]
    job = store.get_job(jid)
    assert (job.state, job.worker_id, job.attempts, job.heartbeat_at, job.error) == ("queued", None, 1, None, None)
    # the lost worker comes back: it holds nothing any more, and records nothing
    assert store.heartbeat(jid, "w1") is False
    with pytest.raises(StoreError, match=f"job {jid} is not running on worker w1 .*not recorded"):
        store.finish_job(jid, "w1", make_report(1))
    assert store.count() == 0
    assert store.fail_job(jid, "w1", "late") is False
    again = store.claim_job("w2")
    assert (again.job_id, again.attempts) == (jid, 2)
    time.sleep(0.05)
    assert store.requeue_stale(0.01) == [jid]
    job = store.get_job(jid)
    assert job.state == "failed" and job.finished
    assert job.error == "worker lost twice (heartbeat lapsed 0.01 s, last on worker w2)"
    assert store.claim_job("w3") is None
    assert store.integrity() == {"ok": True, "problems": []}


def test_cancel_queued_and_running(store_url):
    store = open_store(store_url)
    running, done, queued = submit(store, 3)
    assert store.claim_job("w1").job_id == running
    assert store.claim_job("w1").job_id == done
    store.finish_job(done, "w1", make_report(7))
    job = store.cancel_job(queued)
    assert (job.state, job.error) == ("cancelled", "cancelled before it started") and job.finished_at
    assert store.claim_job("w2") is None  # a cancelled job is never claimed
    job = store.cancel_job(running)
    assert (job.state, job.cancel_requested) == ("running", True)
    assert store.heartbeat(running, "w1") is False  # the worker learns it from its heartbeat
    assert store.mark_cancelled(running, "w2") is False
    assert store.mark_cancelled(running, "w1") is True
    job = store.get_job(running)
    assert (job.state, job.error) == ("cancelled", "cancelled while running")
    assert store.cancel_job(done).state == "succeeded"  # finished: unchanged
    with pytest.raises(NotFoundError):
        store.cancel_job(done, project="someone-else")
    with pytest.raises(NotFoundError):
        store.cancel_job("f" * 32)


def test_lapsed_job_with_a_cancel_request_ends_cancelled(store_url):
    store = open_store(store_url)
    (jid,) = submit(store)
    store.claim_job("w1")
    store.cancel_job(jid)
    time.sleep(0.05)
    assert store.requeue_stale(0.01) == [jid]
    job = store.get_job(jid)
    assert job.state == "cancelled" and job.error.startswith("cancelled; worker lost")


def test_finish_records_the_report_with_the_job(store_url):
    store = open_store(store_url)
    (jid,) = submit(store, project="team-a")
    store.claim_job("w1")
    report = make_report(3)
    with pytest.raises(StoreError, match="not running on worker w2"):
        store.finish_job(jid, "w2", report)
    store.finish_job(jid, "w1", report, label="api upload")
    job = store.get_job(jid)
    assert (job.state, job.audit_id, job.error) == ("succeeded", report.audit_id, None)
    assert job.finished_at >= job.started_at
    assert store.get(report.audit_id, project="team-a").to_dict() == report.to_dict()
    with pytest.raises(NotFoundError, match="no audit"):
        store.get(report.audit_id, project="team-b")
    rows = store.list(project="team-a")
    assert [(r["audit_id"], r["project"], r["label"]) for r in rows] == [(report.audit_id, "team-a", "api upload")]
    assert store.list(project="team-b") == []
    # a federated job finishes with a result and no report
    (fid,) = submit(store, kind="federated")
    store.claim_job("w1")
    store.finish_job(fid, "w1", result={"rounds": 3, "accuracy": 0.8})
    assert store.get_job(fid).result == {"rounds": 3, "accuracy": 0.8}
    assert store.integrity() == {"ok": True, "problems": []}


def _raw_counts(store, job_id):
    with store.engine.connect() as conn:
        audits = conn.execute(text("SELECT COUNT(*) FROM audits")).scalar_one()
        findings = conn.execute(text("SELECT COUNT(*) FROM findings")).scalar_one()
        state = conn.execute(text("SELECT state, audit_id FROM jobs WHERE job_id = :j"), {"j": job_id}).one()
    return audits, findings, tuple(state)


def test_finish_is_atomic(store_url):
    """A failure just before the commit leaves no audit, no finding, and the job still running."""
    store = open_store(store_url)
    (jid,) = submit(store)
    store.claim_job("w1")
    report = make_report(5, n_results=50)

    def fail_commit(conn):
        raise RuntimeError("injected: the machine died before the commit")

    event.listen(store.engine, "commit", fail_commit)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            store.finish_job(jid, "w1", report)
    finally:
        event.remove(store.engine, "commit", fail_commit)
    assert _raw_counts(store, jid) == (0, 0, ("running", None))
    # a failure inside the transaction: the report is recorded already (duplicate audit id)
    store.record(make_report(6))
    with pytest.raises(StoreError, match="already in the history store"):
        store.finish_job(jid, "w1", make_report(6))
    assert _raw_counts(store, jid) == (1, 5, ("running", None))
    store.finish_job(jid, "w1", report)  # the worker can still finish it
    assert _raw_counts(store, jid) == (2, 55, ("succeeded", report.audit_id))
    assert store.integrity() == {"ok": True, "problems": []}


def test_fail_job_keeps_one_line(store_url):
    store = open_store(store_url)
    (jid,) = submit(store)
    store.claim_job("w1")
    assert store.fail_job(jid, "w2", "not mine") is False
    assert store.fail_job(jid, "w1", "model.skops: refused\n  an unsafe type") is True
    job = store.get_job(jid)
    assert (job.state, job.error, job.audit_id) == ("failed", "model.skops: refused an unsafe type", None)
    assert store.fail_job(jid, "w1", "twice") is False and store.get_job(jid).error.startswith("model.skops")


def test_queue_full(store_url):
    store = open_store(store_url)
    submit(store, 3, max_queued=3)
    with pytest.raises(QueueFullError, match=r"the job queue is full \(3 jobs queued, at most 3\); try again later") as e:
        submit(store, 1, max_queued=3)
    assert isinstance(e.value, StoreError) and e.value.exit_code == 2
    store.claim_job("w1")
    submit(store, 1, max_queued=3)  # room again
    assert store.count_jobs(state="queued") == 3


def test_queue_limit_holds_under_concurrent_submissions(store_url):
    store = open_store(store_url)
    accepted, refused = [], []
    start = threading.Barrier(6)

    def work() -> None:
        start.wait()
        for _ in range(4):
            try:
                accepted.append(submit(store, 1, max_queued=7)[0])
            except QueueFullError:
                refused.append(1)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 7 and len(refused) == 17
    assert store.count_jobs(state="queued") == 7


def test_tokens(store_url):
    store = open_store(store_url)
    tid, secret = store.create_token("team-a", name="ci")
    other_id, other = store.create_token("team-b")
    assert secret.startswith("ta_") and len(secret) > 40 and tid != other_id
    info = store.verify_token(secret)
    assert info == TokenInfo(token_id=tid, project="team-a", name="ci", created_at=info.created_at)
    assert info.active and store.verify_token(other).project == "team-b"
    for bad in (secret + "x", secret[:-1], "", "ta_", "Bearer " + secret, None, 42, "ta_" + "A" * 5000):
        assert store.verify_token(bad) is None
    # only the secret's sha256 is stored
    import hashlib

    with store.engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text("SELECT * FROM tokens"))]
    assert secret not in repr(rows) and secret[3:] not in repr(rows)
    assert hashlib.sha256(secret.encode()).hexdigest() in repr(rows)
    assert [t.token_id for t in store.list_tokens(project="team-a")] == [tid]
    assert len(store.list_tokens()) == 2
    revoked = store.revoke_token(tid)
    assert revoked.revoked_at and not revoked.active
    assert store.verify_token(secret) is None and store.verify_token(other) is not None
    assert store.revoke_token(tid).revoked_at == revoked.revoked_at  # revoking twice keeps the first time
    with pytest.raises(NotFoundError, match="no token 'nope'"):
        store.revoke_token("nope")
    with pytest.raises(UsageError, match="project name '' is not allowed"):
        store.create_token("")


def test_job_states_are_the_contracts():
    assert JOB_STATES == ("queued", "running", "succeeded", "failed", "cancelled")
    job = Job(job_id="j", kind="audit", state="failed", project="p", submitted_by="local", created_at="t",
              started_at=None, finished_at="t", heartbeat_at=None, attempts=2, worker_id=None)
    assert job.finished and job.to_dict()["spec"] == {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_does_not_share_the_parents_connections(store_url):
    """A worker forks its audit child: the child must not touch the parent's pooled connections."""
    store = open_store(store_url)
    (jid,) = submit(store)
    store.claim_job("w1")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os._exit(0 if open_store(store_url).get_job(jid).state == "running" else 1)
        except BaseException:  # noqa: BLE001 - whatever it is, the child exits with a code
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.heartbeat(jid, "w1") is True  # the parent's connections still work


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked worker")
def test_worker_killed_mid_write_leaves_no_partial_report(store_url):
    """A process claiming jobs and recording 400-finding reports, killed -9 at three moments: every
    audit is whole and belongs to a succeeded job; every other job has no audit."""
    import signal

    store = open_store(store_url)
    submit(store, 200)
    for k, delay in enumerate((0.15, 0.3, 0.5)):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child, killed below
            mine = open_store(store_url)
            i = 1000 * (k + 1)
            while (job := mine.claim_job(f"w{k}")) is not None:
                mine.finish_job(job.job_id, f"w{k}", make_report(i, n_results=400))
                i += 1
            os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert store.integrity() == {"ok": True, "problems": []}
    succeeded = store.list_jobs(state="succeeded", limit=1000)
    assert succeeded and store.count() == len(succeeded)
    for job in succeeded[:20]:
        assert len(store.findings(job.audit_id)) == 400
    assert all(j.audit_id is None for j in store.list_jobs(state=("queued", "running"), limit=1000))


def test_a_stopping_worker_gives_its_job_back(store_url) -> None:
    """release_job: the job is queued again, its attempt not counted (or cancelled when a cancel was
    asked); another worker's release is refused."""
    from audit.store import open_store

    store = open_store(store_url)
    jid = store.submit_job("audit", {"checks": ["fairness"]}, {}, project="p", submitted_by="t")
    job = store.claim_job("w1")
    assert job is not None and job.job_id == jid and job.attempts == 1
    assert store.release_job(jid, "w2") is False  # not that worker's
    assert store.release_job(jid, "w1") is True
    back = store.get_job(jid)
    assert back.state == "queued" and back.attempts == 0 and back.worker_id is None
    again = store.claim_job("w2")
    assert again is not None and again.job_id == jid and again.attempts == 1
    store.cancel_job(jid)
    assert store.release_job(jid, "w2") is True
    assert store.get_job(jid).state == "cancelled"
    assert store.release_job(jid, "w2") is False
