"""Shared fixtures of the service tests: a store on SQLite and one on the real PostgreSQL server,
small audit jobs (a skops model and CSVs from the lending generator), worker processes.

PostgreSQL: a fresh database ``trustaudit_w_<uuid>`` per session (created through the
``postgres`` database, dropped after) and a fresh schema per test, chosen in the URL, so a test,
its worker processes and concurrent test runs see only their own tables. Skipped with the reason
when no server answers at ``$TRUSTAUDIT_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the smallest useful audit: two fairness checks on 300 rows (well under a second)
TINY_SPEC: dict[str, Any] = {
    "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"]},
    "checks": ["fairness.group_metrics", "fairness.demographic_parity"],
}
#: an audit that takes seconds (20,000 rows, 100,000 bootstrap draws), for cancel and shutdown tests
SLOW_SPEC: dict[str, Any] = {
    "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex", "age_group"]},
    "checks": ["fairness.group_metrics", "fairness.demographic_parity", "fairness.equalized_odds",
               "fairness.equal_opportunity", "fairness.disparate_impact"],
    "policy": {"fairness": {"n_bootstrap": 100000}},
}


# --- stores ----------------------------------------------------------------------------------


# pg_database, pg_url and store_url (SQLite, then a PostgreSQL schema) come from tests/conftest.py


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    d = tmp_path / "jobs"
    d.mkdir()
    return d


# --- audit inputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFiles:
    model: Path
    data: Path
    slow_data: Path
    train: Path
    holdout: Path


@pytest.fixture(scope="session")
def audit_files(tmp_path_factory: pytest.TempPathFactory) -> AuditFiles:
    """A skops logistic-regression Pipeline and CSVs: 300 audited rows (tiny jobs), 20,000 (slow jobs)."""
    from audit.datasets import make_lending_data
    from audit.io import save_skops
    from tests.audit.helpers import lr_pipeline

    d = tmp_path_factory.mktemp("audit_files")
    data = make_lending_data(600, 200, 300, seed=3)
    save_skops(lr_pipeline(data), d / "model.skops")
    data.test.to_csv(d / "test.csv", index=False)
    data.train.to_csv(d / "train.csv", index=False)
    data.holdout.to_csv(d / "holdout.csv", index=False)
    big = make_lending_data(200, 200, 20000, seed=4)
    big.test.to_csv(d / "slow.csv", index=False)
    return AuditFiles(d / "model.skops", d / "test.csv", d / "slow.csv", d / "train.csv", d / "holdout.csv")


def submit_audit(store: Any, jobs_dir: Path, files: AuditFiles, *, spec: dict[str, Any] | None = None,
                 slow: bool = False, project: str = "p", model: tuple[str, Any] | None = None) -> str:
    """Stage a job folder (the model and the audited CSV under generated names) and queue the job."""
    from audit.service import stage_inputs

    inputs = stage_inputs(jobs_dir, {
        "model": model or ("credit model.skops", files.model),
        "data": ("applicants.csv", files.slow_data if slow else files.data),
    })
    return store.submit_job("audit", spec or (SLOW_SPEC if slow else TINY_SPEC), inputs, project=project,
                            submitted_by="local")


# --- worker processes --------------------------------------------------------------------------


def worker_command(store_url: str, jobs_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "audit.service", "worker", "--store", store_url, "--jobs-dir", str(jobs_dir),
            *flags]


def start_worker(store_url: str, jobs_dir: Path, log: Path, *flags: str) -> subprocess.Popen[bytes]:
    """``python -m audit.service worker`` as its own process (its log appended to ``log``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        return subprocess.Popen(worker_command(store_url, jobs_dir, *flags), cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)


def _forked_worker(store_url: str, jobs_dir: str, log: str, flags: dict[str, Any]) -> None:
    from audit.service import Worker, WorkerOptions

    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1)
    sys.exit(Worker(store_url, WorkerOptions(jobs_dir=Path(jobs_dir), **flags)).run())


class ForkedWorker:
    """A worker process forked from the test process: the same ``Worker.run`` as ``trustaudit
    worker`` (signals, heartbeats, child processes), without re-importing the audit stack, so a
    test can start many. ``pid``, ``poll()``, ``wait()`` and ``send_signal`` as a Popen's."""

    def __init__(self, store_url: str, jobs_dir: Path, log: Path, **flags: Any) -> None:
        import multiprocessing as mp

        self.proc = mp.get_context("fork").Process(target=_forked_worker,
                                                   args=(store_url, str(jobs_dir), str(log), flags))
        self.proc.start()
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise subprocess.TimeoutExpired("worker", timeout or 0)
        return self.proc.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill(self) -> None:
        self.proc.kill()

    @property
    def returncode(self) -> int | None:
        return self.proc.exitcode


def stop_process(proc: Any, timeout: float = 30.0) -> int:
    """SIGTERM, wait, SIGKILL if it does not go: the process's exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns something true; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def assert_store_consistent(store: Any) -> dict[str, int]:
    """The database's own check (SQLite ``PRAGMA integrity_check``), the store's, and ours read
    directly from the tables: every audit row belongs to exactly one succeeded job and has all its
    findings; no succeeded audit job without its report; no report for a job that did not succeed.
    Returns the row counts."""
    from sqlalchemy import text

    report = store.integrity()
    assert report["ok"], report["problems"]
    with store.engine.connect() as conn:
        if store.backend == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        q = lambda sql: conn.execute(text(sql)).scalar_one()  # noqa: E731
        audits = q("SELECT COUNT(*) FROM audits")
        findings = q("SELECT COUNT(*) FROM findings")
        assert q("SELECT COUNT(*) FROM audits a WHERE (SELECT COUNT(*) FROM jobs j WHERE j.audit_id = a.audit_id "
                 "AND j.state = 'succeeded') <> 1") == 0, "an audit row without exactly one succeeded job"
        assert q("SELECT COUNT(*) FROM audits a WHERE a.n_checks <> "
                 "(SELECT COUNT(*) FROM findings f WHERE f.audit_id = a.audit_id)") == 0, "an audit with missing findings"
        assert q("SELECT COUNT(*) FROM findings f WHERE NOT EXISTS "
                 "(SELECT 1 FROM audits a WHERE a.audit_id = f.audit_id)") == 0, "findings without their audit"
        assert q("SELECT COUNT(*) FROM jobs WHERE kind = 'audit' AND state = 'succeeded' AND audit_id IS NULL") == 0, \
            "a succeeded audit job without its report"
        assert q("SELECT COUNT(*) FROM jobs WHERE state <> 'succeeded' AND audit_id IS NOT NULL") == 0, \
            "a report recorded for a job that did not succeed"
        jobs = q("SELECT COUNT(*) FROM jobs")
    return {"audits": audits, "findings": findings, "jobs": jobs}
