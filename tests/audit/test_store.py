"""History store: atomic records, listing, lookup, corruption detection, kill safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from audit.exceptions import StoreError
from audit.results import AuditReport, CheckResult, Verdict
from audit.store import HistoryStore, compare_reports

ROOT = Path(__file__).resolve().parents[2]


def make_report(i: int, n_results: int = 5, verdict: Verdict = Verdict.PASS) -> AuditReport:
    results = tuple(
        CheckResult(check_id=f"fairness.c{j}", family="fairness", verdict=verdict if j == 0 else Verdict.PASS,
                    summary=f"check {j} of audit {i}", metrics={"m": float(i + j)})
        for j in range(n_results)
    )
    return AuditReport(audit_id=f"{i:06x}" + "a" * 26, created_at=f"2026-01-01T00:00:{i % 60:02d}+00:00", results=results,
                       model={"path": f"model{i}.skops", "sha256": "ab" * 32},
                       inputs={"data": {"test": {"path": "test.csv", "sha256": "cd" * 32, "rows": 10, "columns": 3}}})


def test_record_list_get_roundtrip(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    for i in range(3):
        store.record(make_report(i, verdict=Verdict.FAIL if i == 1 else Verdict.PASS))
    rows = store.list()
    assert [r["audit_id"] for r in rows] == [f"{i:06x}" + "a" * 26 for i in (2, 1, 0)]
    assert [r["verdict"] for r in store.list(verdict="FAIL")] == ["FAIL"]
    assert store.list(search="model2")[0]["model_path"] == "model2.skops"
    back = store.get("000001aa")  # a unique prefix
    assert back.to_dict() == make_report(1, verdict=Verdict.FAIL).to_dict()
    assert len(store.findings("000001" + "a" * 26)) == 5
    assert store.integrity() == {"ok": True, "problems": []}


def test_duplicate_and_unknown_ids(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    store.record(make_report(1))
    with pytest.raises(StoreError, match="already in the history store"):
        store.record(make_report(1))
    assert store.count() == 1
    with pytest.raises(StoreError, match="no audit 'ffffff'"):
        store.get("ffffff")
    with pytest.raises(StoreError, match="at least 6 characters"):
        store.get("00")


def test_not_a_database(tmp_path):
    p = tmp_path / "h.sqlite"
    p.write_text("this is not sqlite, but it is precious" * 100)
    before = p.read_bytes()
    with pytest.raises(StoreError, match="is not a usable SQLite database"):
        HistoryStore(p)
    assert p.read_bytes() == before  # nothing stored was lost or overwritten


def test_tampered_report_is_detected(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite")
    store.record(make_report(4))
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE audits SET report_json = replace(report_json, 'check 0', 'check X')")
    with pytest.raises(StoreError, match="corrupted"):
        store.get("000004" + "a" * 26)
    assert not store.integrity()["ok"]


def test_compare_reports():
    a, b = make_report(1), make_report(2, verdict=Verdict.FAIL)
    rows = {r["check_id"]: r for r in compare_reports(a, b)}
    assert rows["fairness.c0"]["change"] == "worse"
    assert rows["fairness.c1"]["change"] == "same"
    assert rows["fairness.c1"]["metric_deltas"] == {"m": 1.0}


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.audit.test_store import make_report
    from audit.store import HistoryStore
    store = HistoryStore({path!r})
    i = {start}
    print("ready", flush=True)
    while True:
        store.record(make_report(i, n_results=400))
        i += 1
""")


def test_killed_writer_leaves_store_consistent(tmp_path):
    path = tmp_path / "h.sqlite"
    HistoryStore(path)
    for k, delay in enumerate((0.05, 0.13, 0.21, 0.34, 0.55)):
        code = _WRITER.format(root=str(ROOT), path=str(path), start=10_000 * (k + 1))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    store = HistoryStore(path)
    check = store.integrity()
    assert check == {"ok": True, "problems": []}
    assert store.count() > 0
    for row in store.list(limit=1000):
        assert len(store.findings(row["audit_id"])) == 400


def test_audit_killed_mid_run_records_nothing(tmp_path):
    from tests.audit.helpers import write_case

    paths = write_case(tmp_path)
    store = tmp_path / "h.sqlite"
    HistoryStore(store).record(make_report(1))
    cmd = [sys.executable, "-m", "audit.cli", "audit", "--model", str(paths["model"]), "--data", str(paths["test"]),
           "--train", str(paths["train"]), "--target", "approved", "--positive-label", "1", "--sensitive", "sex",
           "--checks", "fairness", "--store", str(store), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "TRUSTAUDIT_PROGRESS": "0"})
    # wait until the checks are running, then kill
    assert proc.stderr is not None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stderr.readline().decode()
        if "fairness." in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    hs = HistoryStore(store)
    assert hs.count() == 1
    assert hs.integrity()["ok"]
    assert not (tmp_path / "out" / "report.json").exists()


def test_store_locked_at_open_says_so(tmp_path):
    import sqlite3

    from audit.exceptions import StoreError
    from audit.store import HistoryStore

    path = tmp_path / "h.sqlite"
    HistoryStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match=r"is locked by another process \(database is locked\)$"):
            HistoryStore(path, busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
