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


# --- the SQLAlchemy store: both backends, migrations, URLs ---------------------------------------

# The history file as trustaudit wrote it before the store had migrations (audit/store.py until the
# store became a package): its schema and its INSERTs, verbatim.
_OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audits (
    audit_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    verdict TEXT NOT NULL,
    model_path TEXT,
    model_sha256 TEXT,
    data_path TEXT,
    data_sha256 TEXT,
    n_checks INTEGER NOT NULL,
    n_pass INTEGER NOT NULL,
    n_fail INTEGER NOT NULL,
    n_warn INTEGER NOT NULL,
    n_error INTEGER NOT NULL,
    n_skipped INTEGER NOT NULL,
    seconds REAL NOT NULL,
    schema_version TEXT NOT NULL,
    label TEXT,
    report_json TEXT NOT NULL,
    report_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS findings (
    audit_id TEXT NOT NULL REFERENCES audits(audit_id) ON DELETE CASCADE,
    check_id TEXT NOT NULL,
    family TEXT NOT NULL,
    verdict TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (audit_id, check_id)
);
CREATE INDEX IF NOT EXISTS audits_created ON audits(created_at);
"""


def write_old_history(path: Path, reports: list[AuditReport]) -> None:
    import hashlib
    import json

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(_OLD_SCHEMA)
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('store_schema_version', ?)", ("1",))
    for report in reports:
        text = json.dumps(report.to_dict(), allow_nan=False, separators=(",", ":"))
        data = dict(report.inputs.get("data", {})).get("test", {}) or {}
        c = report.counts()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO audits VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
            report.audit_id, report.created_at, report.verdict.value,
            str(report.model.get("path") or ""), report.model.get("sha256"), str(data.get("path") or ""),
            data.get("sha256"), len(report.results), c["PASS"], c["FAIL"], c["WARN"], c["ERROR"], c["SKIPPED"],
            float(report.seconds), report.schema_version, f"old {report.audit_id[:6]}", text,
            hashlib.sha256(text.encode()).hexdigest()))
        conn.executemany("INSERT INTO findings VALUES (?,?,?,?,?)", [
            (report.audit_id, r.check_id, r.family, r.verdict.value, r.summary) for r in report.results])
        conn.execute("COMMIT")
    conn.close()


def _version_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT version_num FROM trustaudit_alembic_version")]


def test_history_on_both_backends(store_url):
    store = HistoryStore(store_url)
    for i in range(3):
        store.record(make_report(i, verdict=Verdict.FAIL if i == 1 else Verdict.PASS))
    store.record(make_report(9), label="ci", project="team-a")
    rows = store.list()
    assert [r["audit_id"][:6] for r in rows] == ["000009", "000002", "000001", "000000"]
    assert [r["project"] for r in rows] == ["team-a", "local", "local", "local"]
    assert [r["audit_id"][:6] for r in store.list(project="team-a")] == ["000009"]
    assert [r["verdict"] for r in store.list(verdict="FAIL")] == ["FAIL"]
    assert store.list(search="MODEL2")[0]["model_path"] == "model2.skops"  # any case, as SQLite's LIKE was
    assert store.list(search="%") == []  # a wildcard character is a character
    assert store.get("000001AA").to_dict() == make_report(1, verdict=Verdict.FAIL).to_dict()
    assert [f["check_id"] for f in store.findings("000001" + "a" * 26)] == [f"fairness.c{j}" for j in range(5)]
    assert store.count() == 4 and store.count(project="team-a") == 1
    with pytest.raises(StoreError, match="already in the history store"):
        store.record(make_report(1))
    with pytest.raises(StoreError, match="no audit '000009'"):
        store.get("000009", project="local")
    import dataclasses

    store.record(dataclasses.replace(make_report(9), audit_id="000009" + "b" * 26))
    with pytest.raises(StoreError, match="audit id prefix '000009' is ambiguous"):
        store.get("000009")
    assert store.get("000009B").audit_id == "000009" + "b" * 26
    assert store.count() == 5
    assert store.integrity() == {"ok": True, "problems": []}


def test_the_schema_objects_match_the_migrated_database(store_url):
    from sqlalchemy import inspect

    from audit.store import _schema

    store = HistoryStore(store_url)
    with store.engine.connect() as conn:
        insp = inspect(conn)
        for table in _schema.metadata.sorted_tables:
            found = {c["name"] for c in insp.get_columns(table.name)} - {"seq"}  # PostgreSQL's rowid
            assert found == {c.name for c in table.columns}, table.name
            pk = set(insp.get_pk_constraint(table.name)["constrained_columns"])
            assert pk == {c.name for c in table.primary_key.columns}, table.name


def test_old_history_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "history.sqlite"
    old = [make_report(i, verdict=Verdict.WARN if i == 2 else Verdict.PASS) for i in range(4)]
    write_old_history(path, old)
    store = HistoryStore(path)
    assert _version_rows(path) == ["0002"]
    assert store.count() == 4
    for report in old:
        assert store.get(report.audit_id).to_dict() == report.to_dict()
    rows = store.list()
    assert [r["audit_id"] for r in rows] == [r.audit_id for r in old[::-1]]
    assert [r["label"] for r in rows] == [f"old {r.audit_id[:6]}" for r in old[::-1]]
    assert [r["project"] for r in rows] == [None] * 4  # recorded before projects existed
    assert store.list(project="local") == []
    assert store.integrity() == {"ok": True, "problems": []}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'store_schema_version'").fetchone() == ("2",)
    # the migrated file takes jobs and new audits; opening it again changes nothing
    store.record(make_report(7))
    jid = store.submit_job("audit", {}, {}, project="p", submitted_by="local")
    assert HistoryStore(path).get_job(jid).state == "queued" and _version_rows(path) == ["0002"]


def test_half_created_old_file_is_completed(tmp_path):
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as conn:  # a first open killed after its first table
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    store = HistoryStore(path)
    store.record(make_report(1))
    assert store.count() == 1 and _version_rows(path) == ["0002"]


def test_newer_schema_is_refused_in_one_line(tmp_path):
    path = tmp_path / "history.sqlite"
    HistoryStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE trustaudit_alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError, match=r"has schema revision '0099', which this trustaudit .* does not know; "
                                         r"it was written by a newer trustaudit: upgrade trustaudit$"):
        HistoryStore(path)


def _open_at_once(url: str, n: int = 4) -> list[object]:
    """``n`` forked processes open the store at the same moment; what each counted (or its error)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()

    def opener() -> None:
        go.wait()
        try:
            results.put(HistoryStore(url).count())
        except Exception as exc:  # noqa: BLE001 - the parent shows it
            results.put(repr(exc))

    procs = [ctx.Process(target=opener) for _ in range(n)]
    for p in procs:
        p.start()
    go.set()
    counts = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return counts


def _versions(store) -> list[str]:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM trustaudit_alembic_version"))]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked openers (no interpreter start-up per process)")
def test_processes_creating_a_store_at_once(store_url):
    assert _open_at_once(store_url) == [0] * 4  # each waited for the migration lock, none failed
    store = HistoryStore(store_url)
    assert _versions(store) == ["0002"] and store.integrity()["ok"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked openers (no interpreter start-up per process)")
def test_processes_migrating_an_old_file_at_once(tmp_path):
    path = tmp_path / "history.sqlite"
    write_old_history(path, [make_report(i) for i in range(3)])
    assert _open_at_once(str(path)) == [3] * 4
    store = HistoryStore(path)
    assert _versions(store) == ["0002"] and store.count() == 3 and store.integrity()["ok"]


_OPENER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from audit.store import open_store
    store = open_store({url!r})
    print(store.count(), "alembic" in sys.modules, flush=True)
""")


def test_opening_a_store_at_head_does_not_load_alembic(tmp_path):
    path = tmp_path / "h.sqlite"
    HistoryStore(path)
    code = _OPENER.format(root=str(ROOT), url=str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_url_errors_are_one_line(tmp_path, monkeypatch):
    from audit.store import open_store

    monkeypatch.chdir(tmp_path)
    cases = {
        "mysql://u:secret@db.example/audits": (
            "history store URL 'mysql://u:***@db.example/audits': unknown scheme 'mysql'; use a file path, "
            "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"),
        "postgresql+psycopg2://u@h/db": (
            "history store URL 'postgresql+psycopg2://u@h/db': driver 'psycopg2' is not supported; "
            "use postgresql+psycopg://USER@HOST/DB"),
        "sqlite://": "history store URL 'sqlite://' names no file; use a file path",
        "postgresql://u@localhost": "history store URL 'postgresql+psycopg://u@localhost' names no database",
        # what Path() makes of a URL: refused, not turned into folders
        "postgresql:/u:secret@localhost/db": "history store path postgresql:/u:***@localhost/db looks like a URL "
                                             "that lost its '//' ('postgresql:')",
    }
    for url, message in cases.items():
        with pytest.raises(StoreError) as e:
            open_store(url)
        assert e.value.message.startswith(message), e.value.message
        assert "secret" not in e.value.message and "\n" not in e.value.message
        assert e.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []  # no file, no folder


def test_unreachable_postgresql_is_one_line_without_the_password():
    from audit.store import open_store

    with pytest.raises(StoreError) as e:
        open_store("postgresql://auditor:s3cret-pw@127.0.0.1:1/history", busy_timeout=2)
    msg = e.value.message
    assert msg.startswith("history store postgresql+psycopg://auditor:***@127.0.0.1:1/history cannot be reached "
                          "(host 127.0.0.1, database history): ")
    assert "s3cret" not in msg and "\n" not in msg and e.value.exit_code == 2


def test_missing_postgresql_database_is_one_line(pg_database):
    from sqlalchemy.engine import make_url

    from audit.store import open_store

    url = make_url(pg_database).set(database="trustaudit_no_such_db").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match=r"cannot be reached \(host .*, database trustaudit_no_such_db\): .*"
                                         r"database \"trustaudit_no_such_db\" does not exist"):
        open_store(url)


def test_store_url_from_the_environment(store_url, monkeypatch):
    from audit.store import open_store

    monkeypatch.setenv("TRUSTAUDIT_STORE", store_url)
    HistoryStore(store_url).record(make_report(3))
    assert open_store().count() == 1
    assert open_store(None).backend == ("postgresql" if "://" in store_url else "sqlite")


def test_cli_with_a_postgresql_url_it_cannot_use_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    """The issue's bug: this used to create ./postgresql:/u:p@localhost/db as a SQLite file and exit 0."""
    from audit.cli import main
    from tests.audit.helpers import audit_args

    paths = {"model": tmp_path / "model.skops", "test": tmp_path / "test.csv"}  # the store is checked first
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    url = "postgresql://u:p@localhost/db"
    for argv in (["history", "--store", url],
                 audit_args(paths, "--store", url, "--out", str(work / "out"))):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("trustaudit: error: history store postgresql+psycopg://u:***@localhost/db "
                                 "cannot be reached (host localhost, database db): ")
        assert ":p@" not in err[0]
    assert list(work.iterdir()) == []  # no ./postgresql: folder, no SQLite file, no report
