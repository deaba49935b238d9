"""History store: every audit recorded atomically in a SQLite file.

Location: ``--store PATH``, else ``$TRUSTAUDIT_STORE``, else ``$XDG_DATA_HOME/trustaudit/history.sqlite``
(``~/.local/share/trustaudit/history.sqlite``). One transaction per audit writes the audit row (with
the full JSON report and its sha256) and one row per finding: a process killed mid-write leaves
either the whole record or nothing (SQLite's journal rolls the rest back). WAL mode lets the
dashboard read while the CLI writes.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit.exceptions import StoreError
from audit.results import AuditReport

__all__ = ["STORE_SCHEMA_VERSION", "HistoryStore", "compare_reports", "default_store_path"]

STORE_SCHEMA_VERSION = 1

_SCHEMA = """
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


def default_store_path() -> Path:
    env = os.environ.get("TRUSTAUDIT_STORE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustaudit" / "history.sqlite"


class HistoryStore:
    """A SQLite file of past audits. Cheap to construct; opens a connection per operation."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        #: seconds a write waits for another process's lock before giving up
        self.busy_timeout = float(busy_timeout)
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"history store path {self.path} is a folder; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"history store folder {self.path.parent} cannot be created: {exc.strerror}") from None
        with self._connect() as conn:
            try:
                conn.executescript(_SCHEMA)
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('store_schema_version', ?)",
                    (str(STORE_SCHEMA_VERSION),),
                )
                conn.commit()
            except sqlite3.DatabaseError as exc:
                raise StoreError(self._unusable(exc)) from None

    def _unusable(self, exc: sqlite3.DatabaseError) -> str:
        reason = " ".join(str(exc).split())
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in reason or "busy" in reason):
            return f"history store {self.path} is locked by another process ({reason})"
        return f"history store {self.path} is not a usable SQLite database: {reason}"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"history store {self.path} cannot be opened: {exc}") from None
        try:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.DatabaseError as exc:
                raise StoreError(self._unusable(exc)) from None
            conn.row_factory = sqlite3.Row
            yield conn
        finally:
            conn.close()

    def record(self, report: AuditReport, label: str | None = None) -> str:
        """Write one audit and its findings in a single transaction; returns the audit id."""
        d = report.to_dict()
        text = json.dumps(d, allow_nan=False, separators=(",", ":"))
        sha = hashlib.sha256(text.encode()).hexdigest()
        data = dict(report.inputs.get("data", {})).get("test", {}) or {}
        c = report.counts()
        with self._connect() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO audits VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        report.audit_id, report.created_at, report.verdict.value,
                        str(report.model.get("path") or report.model.get("source") or ""), report.model.get("sha256"),
                        str(data.get("path") or data.get("source") or ""), data.get("sha256"),
                        len(report.results), c["PASS"], c["FAIL"], c["WARN"], c["ERROR"], c["SKIPPED"],
                        float(report.seconds), report.schema_version, label, text, sha,
                    ),
                )
                conn.executemany(
                    "INSERT INTO findings VALUES (?,?,?,?,?)",
                    [(report.audit_id, r.check_id, r.family, r.verdict.value, r.summary) for r in report.results],
                )
                conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                raise StoreError(f"audit {report.audit_id} is already in the history store") from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return report.audit_id

    def list(
        self, *, limit: int = 50, verdict: str | None = None, search: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first. ``search`` matches model or data path (substring)."""
        if limit < 1:
            raise StoreError(f"limit must be at least 1, got {limit}")
        where, args = [], []
        if verdict:
            where.append("verdict = ?")
            args.append(verdict)
        if search:
            where.append("(model_path LIKE ? OR data_path LIKE ? OR audit_id LIKE ?)")
            args += [f"%{search}%"] * 3
        sql = (
            "SELECT audit_id, created_at, verdict, model_path, model_sha256, data_path, data_sha256, "
            "n_checks, n_pass, n_fail, n_warn, n_error, n_skipped, seconds, label FROM audits"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        )
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(sql, (*args, limit))]

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM audits").fetchone()[0])

    def get(self, audit_id: str) -> AuditReport:
        """One report by id or unique id prefix (at least 6 characters)."""
        if len(audit_id) < 6:
            raise StoreError(f"audit id prefix must have at least 6 characters, got {audit_id!r}")
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT audit_id, report_json, report_sha256 FROM audits WHERE audit_id LIKE ? LIMIT 2",
                (audit_id.replace("%", "").replace("_", "") + "%",),
            ).fetchall()
        if not rows:
            raise StoreError(f"no audit {audit_id!r} in the history store {self.path}")
        if len(rows) > 1:
            raise StoreError(f"audit id prefix {audit_id!r} is ambiguous; give more characters")
        text, sha = rows[0]["report_json"], rows[0]["report_sha256"]
        if hashlib.sha256(text.encode()).hexdigest() != sha:
            raise StoreError(f"audit {rows[0]['audit_id']} in the history store is corrupted (hash mismatch)")
        return AuditReport.from_dict(json.loads(text))

    def findings(self, audit_id: str) -> builtins.list[dict[str, Any]]:
        with self._connect() as conn:
            return [dict(r) for r in conn.execute(
                "SELECT check_id, family, verdict, summary FROM findings WHERE audit_id = ? ORDER BY rowid",
                (audit_id,),
            )]

    def integrity(self) -> dict[str, Any]:
        """SQLite's integrity check plus ours: every audit has all its findings and a valid hash."""
        problems: list[str] = []
        with self._connect() as conn:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                problems.append(f"sqlite: {ok}")
            for row in conn.execute(
                "SELECT a.audit_id, a.n_checks, a.report_json, a.report_sha256, "
                "(SELECT COUNT(*) FROM findings f WHERE f.audit_id = a.audit_id) AS nf FROM audits a"
            ):
                if row["nf"] != row["n_checks"]:
                    problems.append(f"{row['audit_id']}: {row['nf']} findings for {row['n_checks']} checks")
                if hashlib.sha256(row["report_json"].encode()).hexdigest() != row["report_sha256"]:
                    problems.append(f"{row['audit_id']}: report hash mismatch")
            orphans = conn.execute(
                "SELECT COUNT(*) FROM findings WHERE audit_id NOT IN (SELECT audit_id FROM audits)"
            ).fetchone()[0]
            if orphans:
                problems.append(f"{orphans} orphan findings")
        return {"ok": not problems, "problems": problems}


def compare_reports(old: AuditReport, new: AuditReport) -> list[dict[str, Any]]:
    """Per check present in either report: verdicts and the deltas of shared metrics.

    ``change`` is "better", "worse" or "same" by verdict severity (ERROR > FAIL > WARN > PASS).
    """
    out: list[dict[str, Any]] = []
    old_by = {r.check_id: r for r in old.results}
    new_by = {r.check_id: r for r in new.results}
    for cid in list(dict.fromkeys([*old_by, *new_by])):
        a, b = old_by.get(cid), new_by.get(cid)
        row: dict[str, Any] = {
            "check_id": cid,
            "old_verdict": a.verdict.value if a else None,
            "new_verdict": b.verdict.value if b else None,
        }
        if a and b:
            sa, sb = a.verdict.severity, b.verdict.severity
            row["change"] = "worse" if sb > sa else "better" if sb < sa else "same"
            deltas = {}
            for k in a.metrics.keys() & b.metrics.keys():
                va, vb = a.metrics[k], b.metrics[k]
                if va == va and vb == vb:  # not NaN
                    deltas[k] = vb - va
            row["metric_deltas"] = dict(sorted(deltas.items()))
        else:
            row["change"] = "added" if b else "removed"
            row["metric_deltas"] = {}
        out.append(row)
    return out
