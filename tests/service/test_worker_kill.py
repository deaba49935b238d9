"""kill -9 of a worker at a random moment of a job: every job still ends, nothing is half recorded.

Worker processes (forked from the test process: the same ``Worker.run`` as ``trustaudit worker``,
started in milliseconds) run tiny audit jobs; the test repeatedly picks a worker that holds a running
job, waits a random fraction of a job's measured duration, kills it with SIGKILL (and starts a
replacement in the long campaign). Heartbeats lapse after 1 s, so the living workers re-queue the dead one's job once
and fail it after a second loss. At the end every job is succeeded or failed with a reason, the
database passes its own integrity check and ours (no audit row without all its findings or its
succeeded job, no succeeded job without its report, no report for a failed job), and every killed
worker's audit process died with it. The 20-kill campaign is ``slow``; 3 kills run by default.
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from audit.store import open_store
from tests.service.conftest import (
    ForkedWorker,
    assert_store_consistent,
    children_of,
    stop_process,
    submit_audit,
    wait_for,
)

FLAGS = {"heartbeat": 0.2, "heartbeat_timeout": 1.0, "poll": 0.05}


def _seconds(job) -> float:
    return (datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)).total_seconds()


def _pid_of(worker_id: str | None) -> int | None:
    try:
        return int(str(worker_id).split(":")[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_campaign(store_url: str, jobs_dir: Path, files, log: Path, kills: int, seed: int, *, workers_at_start: int,
                  replace: bool) -> dict[str, float]:
    """``kills`` times: a worker holding a running job is killed at a random moment of it (and
    replaced when ``replace``); then the living workers finish every job."""
    store = open_store(store_url)
    rng = random.Random(seed)
    ids = [submit_audit(store, jobs_dir, files) for _ in range(6)]
    workers = [ForkedWorker(store_url, jobs_dir, log, **FLAGS) for _ in range(workers_at_start)]
    orphans: list[int] = []
    interrupted = 0
    t0 = time.monotonic()
    try:
        for _ in range(kills):
            def victim():
                pids = {p.pid: p for p in workers if p.poll() is None}
                for job in store.list_jobs(state="running", limit=100):
                    pid = _pid_of(job.worker_id)
                    if pid in pids:
                        return pids[pid], job
                return None

            def topped_up():  # keep jobs queued: the living worker must not run out while the other restarts
                while store.count_jobs(state="queued") < 3:
                    ids.append(submit_audit(store, jobs_dir, files))
                return victim()

            proc, job = wait_for(topped_up, 300, "a worker running a job")
            done = [j for j in store.list_jobs(state="succeeded", limit=20) if j.started_at and j.finished_at]
            duration = max(0.2, sum(map(_seconds, done)) / len(done)) if done else 1.0
            time.sleep(rng.uniform(0, 1.2 * duration))  # a random moment of the job (or just after it)
            orphans += children_of(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
            # did it die holding a job (the one picked, or the next one it had just claimed)?
            interrupted += any(j.worker_id == job.worker_id for j in store.list_jobs(state="running", limit=100))
            workers.remove(proc)
            if replace:
                workers.append(ForkedWorker(store_url, jobs_dir, log, **FLAGS))
        # the living workers finish everything: re-queued jobs once the dead worker's heartbeat lapsed
        wait_for(lambda: all(store.get_job(i).finished for i in ids), 600, "every job to end")
    finally:
        codes = [stop_process(p) for p in workers]
    assert codes == [0] * len(codes)
    seconds = time.monotonic() - t0
    # every killed worker's audit process died with it (PR_SET_PDEATHSIG)
    wait_for(lambda: not any(_alive(p) for p in orphans), 10, "the killed workers' audit processes to die")

    jobs = [store.get_job(i) for i in ids]
    states = {j.job_id: j.state for j in jobs}
    assert set(states.values()) <= {"succeeded", "failed"}, states
    for j in jobs:
        assert 1 <= j.attempts <= 2, (j.job_id, j.attempts)
        if j.state == "failed":
            assert j.error.startswith("worker lost twice (heartbeat lapsed 1 s, last on worker "), j.error
            assert j.attempts == 2 and j.audit_id is None
        else:
            assert j.error is None and j.audit_id is not None
            report = store.get(j.audit_id)  # whole: its hash checks, all its findings are there
            assert [f["check_id"] for f in store.findings(j.audit_id)] == [r.check_id for r in report.results]
            assert report.model["path"] == "credit model.skops"
    counts = assert_store_consistent(store)
    succeeded = sum(j.state == "succeeded" for j in jobs)
    assert counts["audits"] == succeeded and counts["findings"] == 2 * succeeded
    # inputs: the folders of ended jobs are removed, except where a worker died between recording
    # the job's end and removing its folder (the folder whole), or while removing it (renamed to
    # .trash-*, which the next worker to start sweeps); a job folder never misses part of its inputs
    by_folder = {j.inputs["folder"]: j for j in jobs}
    trash = sorted(p.name for p in jobs_dir.iterdir() if p.name.startswith(".trash-"))
    left = sorted(p.name for p in jobs_dir.iterdir() if not p.name.startswith(".trash-"))
    for name in left:
        assert name in by_folder, name
        assert sorted(f.name for f in (jobs_dir / name).iterdir()) == sorted(
            by_folder[name].inputs[r]["stored"] for r in ("model", "data"))
    if trash:
        from audit.service._jobs import sweep_trash

        assert sweep_trash(jobs_dir) == len(trash)
    return {
        "kills": kills, "interrupted": interrupted, "jobs": len(jobs), "succeeded": succeeded,
        "requeued": sum(j.attempts == 2 for j in jobs), "failed": sum(j.state == "failed" for j in jobs),
        "requeued_then_succeeded": sum(j.attempts == 2 and j.state == "succeeded" for j in jobs),
        "folders_left": len(left), "trash_left": len(trash), "seconds": seconds,
    }


def _report(store_url: str, figures: dict[str, float]) -> None:
    backend = "postgresql" if store_url.startswith("postgresql") else "sqlite"
    print(f"\nkill -9 campaign on {backend}: " + ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))


def test_three_kills(store_url, jobs_dir, audit_files, tmp_path):
    # four workers start together; three are killed one after the other, the fourth finishes the work
    figures = kill_campaign(store_url, jobs_dir, audit_files, tmp_path / "workers.log", kills=3, seed=3,
                            workers_at_start=4, replace=False)
    _report(store_url, figures)
    assert figures["interrupted"] >= 1  # at least one kill landed while the job was running


@pytest.mark.slow
def test_twenty_kills(store_url, jobs_dir, audit_files, tmp_path):
    # three workers; each killed one is replaced at once
    figures = kill_campaign(store_url, jobs_dir, audit_files, tmp_path / "workers.log", kills=20, seed=20,
                            workers_at_start=3, replace=True)
    _report(store_url, figures)
    assert figures["interrupted"] >= 10  # most kills landed mid-job
    assert figures["requeued"] >= 1
