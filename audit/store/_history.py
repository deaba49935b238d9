"""The store: every audit recorded atomically, audit jobs, and API tokens, in SQLite or PostgreSQL.

Location: ``--store PATH_OR_URL``, else ``$TRUSTAUDIT_STORE``, else
``$XDG_DATA_HOME/trustaudit/history.sqlite`` (``~/.local/share/trustaudit/history.sqlite``); a
``postgresql+psycopg://USER@HOST/DB`` URL puts it on a PostgreSQL server (``_engine.py``).

One transaction per audit writes the audit row (with the full JSON report and its sha256) and one
row per finding: a process killed mid-write leaves either the whole record or nothing. WAL mode
lets the dashboard read a SQLite file while the CLI or a worker writes.

Jobs (``submit_job`` ... ``finish_job``) are audits to run: a worker claims one atomically
(PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: ``BEGIN IMMEDIATE``, the file's one
write lock, then a conditional update), heartbeats while it runs, and records the report and the
job's success in one transaction, so a report is never half visible. A job whose heartbeat lapsed
is re-queued once, then failed with the reason. Timestamps come from the database's clock on
PostgreSQL (workers on several machines agree) and from this machine's on SQLite.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import re
import secrets
import uuid
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Interval,
    Text,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from audit.exceptions import StoreError, UsageError
from audit.results import AuditReport
from audit.store import _schema as s
from audit.store._engine import (
    NotFoundError,
    QueueFullError,
    default_store_path,
    engine_for,
    ensure_schema,
    errors,
    resolve_target,
    sqlite_write_lock,
)
from audit.store._models import JOB_KINDS, JOB_STATES, Job, TokenInfo

__all__ = ["STORE_SCHEMA_VERSION", "HistoryStore", "Store", "compare_reports", "default_store_path", "open_store"]

#: the ``store_schema_version`` row of the ``meta`` table (1: audits and findings; 2: jobs, tokens)
STORE_SCHEMA_VERSION = 2

_PG_TIME_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'
_SUBMIT_LOCK_KEY = 0x7472757374_02  # pg_advisory_xact_lock key: counting queued jobs and adding one
_PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOKEN_RE = re.compile(r"^ta_[A-Za-z0-9_-]{20,100}$")
_MAX_ERROR = 1000


def _utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _one_line(text_: str, limit: int = _MAX_ERROR) -> str:
    return " ".join(str(text_).split())[:limit]


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} cannot be stored as JSON: {_one_line(str(exc), 200)}") from None


def _check_project(project: str) -> str:
    if not isinstance(project, str) or not _PROJECT_RE.match(project):
        raise UsageError(f"project name {project!r} is not allowed; use 1 to 64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return project


class Store:
    """The history of audits, the job queue and the API tokens, in one database.

    Cheap to construct: a SQLite store has a small connection pool of its own (closed by ``close()``,
    ``with``, or when the store is collected); PostgreSQL stores share one pool per URL per process. Constructing one brings the schema to the newest revision.
    ``path`` is the SQLite file (for a PostgreSQL store: its URL without the password, for messages);
    ``url`` the database URL without the password; ``backend`` "sqlite" or "postgresql".
    """

    def __init__(self, url_or_path: str | Path | None = None, *, busy_timeout: float = 30.0) -> None:
        target = resolve_target(url_or_path)
        self._target = target
        self.backend = target.backend
        #: seconds a write waits for another process's lock (SQLite), or a connection waits (PostgreSQL)
        self.busy_timeout = float(busy_timeout)
        self.path: Path | str = target.path if target.path is not None else target.display
        self.url = target.display if target.backend == "postgresql" else f"sqlite:///{target.path}"
        if target.path is not None:
            if target.path.exists() and target.path.is_dir():
                raise StoreError(f"history store path {target.path} is a folder; give a file path")
            try:
                target.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"history store folder {target.path.parent} cannot be created: {exc.strerror}"
                ) from None
        self.engine = engine_for(target, self.busy_timeout)
        # a SQLite store's connections are its own: closed with it, or when it is collected
        self._finalizer = weakref.finalize(self, self.engine.dispose) if target.backend == "sqlite" else None
        try:
            ensure_schema(self.engine, target)
        except BaseException:
            self.close()
            raise
        self._pg = target.backend == "postgresql"
        self._rowid: Any = literal_column("seq" if self._pg else "rowid")  # insertion order

    def connection_url(self) -> str:
        """The URL to open this same store in another process (a worker), password included:
        hand it over, never print it (``url`` is the printable one)."""
        if self._pg:
            return self._target.url.render_as_string(hide_password=False)
        return str(self._target.path)

    def __repr__(self) -> str:
        return f"Store({self._target.display!r})"

    def __str__(self) -> str:
        return self._target.display

    def close(self) -> None:
        """Close a SQLite store's connections (the last one to close checkpoints the WAL file).
        PostgreSQL pools are shared per URL in a process and closed at exit
        (``audit.store._engine.dispose_engines`` closes them earlier)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with errors(self._target, "read"), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction; on SQLite it holds the file's write lock from its first statement."""
        if self._pg:
            with errors(self._target, "written"), self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with sqlite_write_lock(self._target, self.busy_timeout), errors(self._target, "written"), \
                self.engine.connect() as conn:
            conn.execution_options(ta_write=True)
            with conn.begin():
                yield conn

    def _now(self) -> Any:
        """The current UTC time as the store's text timestamps, from the database's clock on PostgreSQL."""
        if self._pg:
            return func.to_char(func.timezone("UTC", func.statement_timestamp()), _PG_TIME_FORMAT)
        return literal(_utcnow(), Text)

    def _ago(self, seconds: float) -> Any:
        if self._pg:
            moment = func.statement_timestamp(type_=DateTime(timezone=True)) - literal(timedelta(seconds=seconds), Interval)
            return func.to_char(func.timezone("UTC", moment), _PG_TIME_FORMAT)
        return literal((datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="microseconds"), Text)

    # --- audits ---------------------------------------------------------------------------------

    def _insert_report(self, conn: Connection, report: AuditReport, label: str | None, project: str | None) -> None:
        d = report.to_dict()
        text_ = json.dumps(d, allow_nan=False, separators=(",", ":"))
        sha = hashlib.sha256(text_.encode()).hexdigest()
        data = dict(report.inputs.get("data", {})).get("test", {}) or {}
        c = report.counts()
        row = {
            "audit_id": report.audit_id, "created_at": report.created_at, "verdict": report.verdict.value,
            "model_path": str(report.model.get("path") or report.model.get("source") or ""),
            "model_sha256": report.model.get("sha256"),
            "data_path": str(data.get("path") or data.get("source") or ""), "data_sha256": data.get("sha256"),
            "n_checks": len(report.results), "n_pass": c["PASS"], "n_fail": c["FAIL"], "n_warn": c["WARN"],
            "n_error": c["ERROR"], "n_skipped": c["SKIPPED"], "seconds": float(report.seconds),
            "schema_version": report.schema_version, "label": label, "report_json": text_, "report_sha256": sha,
            "project": project,
        }
        try:  # a failed statement ends the whole transaction: nothing of this audit is kept
            conn.execute(insert(s.audits), [row])
        except IntegrityError:
            raise StoreError(f"audit {report.audit_id} is already in the history store") from None
        if report.results:
            conn.execute(insert(s.findings), [
                {"audit_id": report.audit_id, "check_id": r.check_id, "family": r.family,
                 "verdict": r.verdict.value, "summary": r.summary}
                for r in report.results
            ])

    def record(self, report: AuditReport, label: str | None = None, *, project: str | None = None) -> str:
        """Write one audit and its findings in a single transaction; returns the audit id.

        ``project``: the project the audit belongs to (default "local": a CLI or dashboard run).
        """
        project = _check_project(project) if project is not None else "local"
        with self._write() as conn:
            self._insert_report(conn, report, label, project)
        return report.audit_id

    def list(
        self, *, limit: int = 50, verdict: str | None = None, search: str | None = None, project: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Newest first. ``search`` matches model or data path or audit id (substring, any case);
        ``project`` keeps that project's audits only."""
        if limit < 1:
            raise StoreError(f"limit must be at least 1, got {limit}")
        a = s.audits.c
        q = select(
            a.audit_id, a.created_at, a.verdict, a.model_path, a.model_sha256, a.data_path, a.data_sha256,
            a.n_checks, a.n_pass, a.n_fail, a.n_warn, a.n_error, a.n_skipped, a.seconds, a.label, a.project,
        )
        if verdict:
            q = q.where(a.verdict == verdict)
        if search:
            q = q.where(a.model_path.icontains(search, autoescape=True) | a.data_path.icontains(search, autoescape=True)
                        | a.audit_id.icontains(search, autoescape=True))
        if project is not None:
            q = q.where(a.project == project)
        q = q.order_by(a.created_at.desc(), self._rowid.desc()).limit(limit)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def count(self, *, project: str | None = None) -> int:
        q = select(func.count()).select_from(s.audits)
        if project is not None:
            q = q.where(s.audits.c.project == project)
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    def get(self, audit_id: str, project: str | None = None) -> AuditReport:
        """One report by id or unique id prefix (at least 6 characters); with ``project``, only that
        project's (another project's audit is "no audit", as an unknown one)."""
        if len(audit_id) < 6:
            raise StoreError(f"audit id prefix must have at least 6 characters, got {audit_id!r}")
        a = s.audits.c
        q = select(a.audit_id, a.report_json, a.report_sha256).where(
            a.audit_id.istartswith(audit_id.replace("%", "").replace("_", ""), autoescape=True)
        )
        if project is not None:
            q = q.where(a.project == project)
        with self._read() as conn:
            rows = conn.execute(q.limit(2)).fetchall()
        if not rows:
            raise NotFoundError(f"no audit {audit_id!r} in the history store {self.path}")
        if len(rows) > 1:
            raise StoreError(f"audit id prefix {audit_id!r} is ambiguous; give more characters")
        text_, sha = rows[0].report_json, rows[0].report_sha256
        if hashlib.sha256(text_.encode()).hexdigest() != sha:
            raise StoreError(f"audit {rows[0].audit_id} in the history store is corrupted (hash mismatch)")
        return AuditReport.from_dict(json.loads(text_))

    def findings(self, audit_id: str) -> builtins.list[dict[str, Any]]:
        f = s.findings.c
        q = select(f.check_id, f.family, f.verdict, f.summary).where(f.audit_id == audit_id).order_by(self._rowid)
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def integrity(self) -> dict[str, Any]:
        """The database's own check (SQLite) plus ours: every audit has all its findings and a valid
        hash, no finding without its audit, every succeeded audit job has its report."""
        problems: builtins.list[str] = []
        with self._read() as conn:
            if not self._pg:
                ok = conn.exec_driver_sql("PRAGMA integrity_check").scalar_one()
                if ok != "ok":
                    problems.append(f"sqlite: {ok}")
            for row in conn.execute(text(
                "SELECT a.audit_id, a.n_checks, a.report_json, a.report_sha256, "
                "(SELECT COUNT(*) FROM findings f WHERE f.audit_id = a.audit_id) AS nf FROM audits a"
            )):
                if row.nf != row.n_checks:
                    problems.append(f"{row.audit_id}: {row.nf} findings for {row.n_checks} checks")
                if hashlib.sha256(row.report_json.encode()).hexdigest() != row.report_sha256:
                    problems.append(f"{row.audit_id}: report hash mismatch")
            orphans = conn.execute(text(
                "SELECT COUNT(*) FROM findings WHERE audit_id NOT IN (SELECT audit_id FROM audits)"
            )).scalar_one()
            if orphans:
                problems.append(f"{orphans} orphan findings")
            for row in conn.execute(text(
                "SELECT job_id, state, kind, audit_id, worker_id FROM jobs WHERE "
                "(state = 'succeeded' AND kind = 'audit' AND audit_id IS NULL AND result_json IS NULL) "
                "OR (state = 'running' AND worker_id IS NULL) OR (state <> 'succeeded' AND audit_id IS NOT NULL)"
            )):
                problems.append(f"job {row.job_id}: {row.state} {row.kind} job with audit {row.audit_id} "
                                f"and worker {row.worker_id}")
        return {"ok": not problems, "problems": problems}

    # --- jobs -----------------------------------------------------------------------------------

    def submit_job(
        self, kind: str, spec: dict[str, Any], inputs: dict[str, Any], *, project: str, submitted_by: str,
        max_queued: int | None = None,
    ) -> str:
        """Queue a job; returns its id. ``QueueFullError`` when ``max_queued`` jobs are queued already."""
        if kind not in JOB_KINDS:
            raise UsageError(f"job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
        _check_project(project)
        if not isinstance(submitted_by, str) or not submitted_by or len(submitted_by) > 200:
            raise UsageError(f"submitted_by must be a token id or 'local', got {submitted_by!r}")
        job_id = uuid.uuid4().hex
        row = {
            "job_id": job_id, "kind": kind, "state": "queued", "project": project, "submitted_by": submitted_by,
            "created_at": self._now(), "attempts": 0, "spec_json": _dumps(spec, "job spec"),
            "inputs_json": _dumps(inputs, "job inputs"), "progress_json": "{}", "cancel_requested": False,
        }
        with self._write() as conn:
            if max_queued is not None:
                if self._pg:  # count-then-insert as one step across processes
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SUBMIT_LOCK_KEY})
                n = conn.execute(select(func.count()).select_from(s.jobs).where(s.jobs.c.state == "queued")).scalar_one()
                if n >= max_queued:
                    raise QueueFullError(f"the job queue is full ({n} jobs queued, at most {max_queued}); "
                                         "try again later")
            conn.execute(insert(s.jobs).values(**row))
        return job_id

    def claim_job(self, worker_id: str, *, kinds: Iterable[str] = JOB_KINDS) -> Job | None:
        """The oldest queued job of ``kinds``, now running on ``worker_id``; None when none is queued.

        Atomic across threads, processes and machines: each queued job is claimed by one worker.
        """
        kinds = tuple(kinds)
        j = s.jobs.c
        pick = (select(j.job_id).where(j.state == "queued", j.kind.in_(kinds))
                .order_by(j.created_at, j.job_id).limit(1))
        if self._pg:
            pick = pick.with_for_update(skip_locked=True)
        else:  # an idle worker polling an empty queue does not take the file's write lock
            with self._read() as conn:
                if conn.execute(pick).first() is None:
                    return None
        with self._write() as conn:
            job_id = conn.execute(pick).scalar_one_or_none()
            if job_id is None:
                return None
            now = self._now()
            row = conn.execute(
                update(s.jobs).where(j.job_id == job_id, j.state == "queued")
                .values(state="running", started_at=now, heartbeat_at=now, attempts=j.attempts + 1,
                        worker_id=worker_id, progress_json="{}")
                .returning(*s.jobs.c)
            ).first()
        return Job.from_row(row) if row is not None else None

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """The worker is alive; False if the job is no longer running on it, or a cancel was requested."""
        j = s.jobs.c
        with self._write() as conn:
            row = conn.execute(
                update(s.jobs).where(j.job_id == job_id, j.worker_id == worker_id, j.state == "running")
                .values(heartbeat_at=self._now()).returning(j.cancel_requested)
            ).first()
        return row is not None and not row.cancel_requested

    def set_progress(self, job_id: str, worker_id: str, progress: dict[str, Any]) -> bool:
        """Store the job's progress (and count it as a heartbeat); False if the job is not this worker's."""
        j = s.jobs.c
        with self._write() as conn:
            n = conn.execute(
                update(s.jobs).where(j.job_id == job_id, j.worker_id == worker_id, j.state == "running")
                .values(progress_json=_dumps(progress, "job progress"), heartbeat_at=self._now())
            ).rowcount
        return n == 1

    def _held(self, conn: Connection, job_id: str, worker_id: str) -> Any:
        q = select(*s.jobs.c).where(s.jobs.c.job_id == job_id)
        if self._pg:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in the history store {self.path}")
        if row.state != "running" or row.worker_id != worker_id:
            raise StoreError(f"job {job_id} is not running on worker {worker_id} (it is {row.state}"
                             f"{' on ' + row.worker_id if row.worker_id and row.state == 'running' else ''}); "
                             "its result was not recorded")
        return row

    def finish_job(
        self, job_id: str, worker_id: str, report: AuditReport | None = None, *,
        result: dict[str, Any] | None = None, label: str | None = None,
    ) -> None:
        """Record the job's report (audit and findings rows) and mark it succeeded: one transaction.

        ``StoreError`` (and nothing recorded) when the job is no longer running on this worker, e.g.
        it was re-queued after its heartbeat lapsed. ``result``: a JSON summary (federated jobs).
        """
        j = s.jobs.c
        result_json = _dumps(result, "job result") if result is not None else None
        with self._write() as conn:
            job = self._held(conn, job_id, worker_id)
            if report is not None:
                self._insert_report(conn, report, label, job.project)
            conn.execute(
                update(s.jobs).where(j.job_id == job_id)
                .values(state="succeeded", finished_at=self._now(), heartbeat_at=self._now(),
                        audit_id=report.audit_id if report is not None else None, result_json=result_json,
                        error=None)
            )

    def fail_job(self, job_id: str, worker_id: str, error: str) -> bool:
        """Mark the job failed with a one-line reason; False if it was not running on this worker."""
        return self._end(job_id, worker_id, "failed", _one_line(error) or "failed")

    def mark_cancelled(self, job_id: str, worker_id: str, reason: str = "cancelled while running") -> bool:
        """The worker stopped a job whose cancel was requested; False if it was not running on this worker."""
        return self._end(job_id, worker_id, "cancelled", _one_line(reason))

    def release_job(self, job_id: str, worker_id: str) -> bool:
        """A worker that stops (SIGTERM) gives its running job back: queued again with its worker,
        start, heartbeat and progress cleared and the attempt not counted — or cancelled if a cancel
        was requested. False if the job was not running on this worker."""
        j = s.jobs.c
        still = (j.job_id == job_id, j.worker_id == worker_id, j.state == "running")
        with self._write() as conn:
            row = conn.execute(select(j.cancel_requested, j.attempts).where(*still)).first()
            if row is None:
                return False
            if row.cancel_requested:
                values = {"state": "cancelled", "finished_at": self._now(),
                          "error": "cancelled; its worker stopped"}
            else:
                values = {"state": "queued", "worker_id": None, "heartbeat_at": None, "started_at": None,
                          "progress_json": "{}", "attempts": max(0, int(row.attempts) - 1)}
            return conn.execute(update(s.jobs).where(*still).values(**values)).rowcount == 1

    def _end(self, job_id: str, worker_id: str, state: str, error: str) -> bool:
        j = s.jobs.c
        with self._write() as conn:
            n = conn.execute(
                update(s.jobs).where(j.job_id == job_id, j.worker_id == worker_id, j.state == "running")
                .values(state=state, finished_at=self._now(), error=error)
            ).rowcount
        return n == 1

    def cancel_job(self, job_id: str, *, project: str | None = None) -> Job:
        """Queued: cancelled at once. Running: ``cancel_requested`` (its worker stops it and marks it
        cancelled). Finished: unchanged. Returns the job as it is now."""
        j = s.jobs.c
        with self._write() as conn:
            q = select(*s.jobs.c).where(j.job_id == job_id)
            if project is not None:
                q = q.where(j.project == project)
            if self._pg:
                q = q.with_for_update()
            row = conn.execute(q).first()
            if row is None:
                raise NotFoundError(f"no job {job_id!r} in the history store {self.path}")
            if row.state == "queued":
                conn.execute(update(s.jobs).where(j.job_id == job_id).values(
                    state="cancelled", cancel_requested=True, finished_at=self._now(),
                    error="cancelled before it started"))
            elif row.state == "running":
                conn.execute(update(s.jobs).where(j.job_id == job_id).values(cancel_requested=True))
            row = conn.execute(select(*s.jobs.c).where(j.job_id == job_id)).first()
        return Job.from_row(row)

    def requeue_stale(self, heartbeat_timeout: float) -> builtins.list[str]:
        """Running jobs whose heartbeat is older than ``heartbeat_timeout`` seconds: re-queued after a
        first lost worker, failed after a second ("worker lost twice ..."), cancelled if a cancel was
        requested. Returns their ids."""
        j = s.jobs.c
        q = select(j.job_id, j.attempts, j.worker_id, j.cancel_requested).where(
            j.state == "running", j.heartbeat_at < self._ago(heartbeat_timeout))
        if self._pg:
            q = q.with_for_update(skip_locked=True)
        else:  # nothing stale (the usual answer): no write lock taken
            with self._read() as conn:
                if conn.execute(q.limit(1)).first() is None:
                    return []
        done: builtins.list[str] = []
        with self._write() as conn:
            for row in conn.execute(q).fetchall():
                lost = f"heartbeat lapsed {heartbeat_timeout:g} s, last on worker {row.worker_id}"
                still = (j.job_id == row.job_id, j.state == "running")
                if row.cancel_requested:
                    values = {"state": "cancelled", "finished_at": self._now(), "error": f"cancelled; worker lost ({lost})"}
                elif row.attempts < 2:
                    values = {"state": "queued", "worker_id": None, "heartbeat_at": None, "started_at": None,
                              "progress_json": "{}"}
                else:
                    values = {"state": "failed", "finished_at": self._now(),
                              "error": f"worker lost twice ({lost})"}
                if conn.execute(update(s.jobs).where(*still).values(**values)).rowcount:
                    done.append(row.job_id)
        return done

    def get_job(self, job_id: str, project: str | None = None) -> Job:
        j = s.jobs.c
        q = select(*s.jobs.c).where(j.job_id == job_id)
        if project is not None:
            q = q.where(j.project == project)
        with self._read() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise NotFoundError(f"no job {job_id!r} in the history store {self.path}")
        return Job.from_row(row)

    def list_jobs(
        self, project: str | None = None, state: str | Iterable[str] | None = None, limit: int = 50
    ) -> builtins.list[Job]:
        """Newest first; ``state`` one state or several."""
        if limit < 1:
            raise StoreError(f"limit must be at least 1, got {limit}")
        j = s.jobs.c
        q = select(*s.jobs.c)
        if project is not None:
            q = q.where(j.project == project)
        if state is not None:
            states = (state,) if isinstance(state, str) else tuple(state)
            unknown = [x for x in states if x not in JOB_STATES]
            if unknown:
                raise UsageError(f"job state {unknown[0]!r} is not one of {', '.join(JOB_STATES)}")
            q = q.where(j.state.in_(states))
        q = q.order_by(j.created_at.desc(), j.job_id.desc()).limit(limit)
        with self._read() as conn:
            return [Job.from_row(r) for r in conn.execute(q)]

    def count_jobs(self, project: str | None = None, state: str | None = None) -> int:
        j = s.jobs.c
        q = select(func.count()).select_from(s.jobs)
        if project is not None:
            q = q.where(j.project == project)
        if state is not None:
            q = q.where(j.state == state)
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    # --- tokens ---------------------------------------------------------------------------------

    def create_token(self, project: str, name: str = "") -> tuple[str, str]:
        """A new API token of ``project``: returns ``(token_id, secret)``. Only the secret's sha256 is
        stored: the secret cannot be shown again."""
        _check_project(project)
        if not isinstance(name, str) or len(name) > 200 or "\n" in name:
            raise UsageError("token name must be one line of at most 200 characters")
        token_id = secrets.token_hex(8)
        secret = "ta_" + secrets.token_urlsafe(32)
        with self._write() as conn:
            conn.execute(insert(s.tokens).values(
                token_id=token_id, project=project, name=name,
                sha256=hashlib.sha256(secret.encode()).hexdigest(), created_at=self._now()))
        return token_id, secret

    def verify_token(self, secret: str) -> TokenInfo | None:
        """The token whose secret this is, if it exists and is not revoked; else None."""
        if not isinstance(secret, str) or not _TOKEN_RE.match(secret):
            return None
        digest = hashlib.sha256(secret.encode()).hexdigest()
        t = s.tokens.c
        with self._read() as conn:
            row = conn.execute(select(*s.tokens.c).where(t.sha256 == digest, t.revoked_at.is_(None))).first()
        if row is None or not hmac.compare_digest(row.sha256.encode(), digest.encode()):
            return None
        return TokenInfo.from_row(row)

    def revoke_token(self, token_id: str) -> TokenInfo:
        """Revoke a token (it stops working at once); revoking twice keeps the first time."""
        t = s.tokens.c
        with self._write() as conn:
            conn.execute(update(s.tokens).where(t.token_id == token_id, t.revoked_at.is_(None))
                         .values(revoked_at=self._now()))
            row = conn.execute(select(*s.tokens.c).where(t.token_id == token_id)).first()
        if row is None:
            raise NotFoundError(f"no token {token_id!r} in the history store {self.path}")
        return TokenInfo.from_row(row)

    def list_tokens(self, project: str | None = None) -> builtins.list[TokenInfo]:
        t = s.tokens.c
        q = select(*s.tokens.c).order_by(t.created_at, t.token_id)
        if project is not None:
            q = q.where(t.project == project)
        with self._read() as conn:
            return [TokenInfo.from_row(r) for r in conn.execute(q)]


#: the old name: the store was a history of audits before it held jobs and tokens too
HistoryStore = Store


def open_store(url_or_path: str | Path | None = None, *, busy_timeout: float = 30.0) -> Store:
    """The store at a path or URL (None: ``$TRUSTAUDIT_STORE``, else the default SQLite file)."""
    return Store(url_or_path, busy_timeout=busy_timeout)


def compare_reports(old: AuditReport, new: AuditReport) -> builtins.list[dict[str, Any]]:
    """Per check present in either report: verdicts and the deltas of shared metrics.

    ``change`` is "better", "worse" or "same" by verdict severity (ERROR > FAIL > WARN > PASS).
    """
    out: builtins.list[dict[str, Any]] = []
    old_by = {r.check_id: r for r in old.results}
    new_by = {r.check_id: r for r in new.results}
    for cid in builtins.list(dict.fromkeys([*old_by, *new_by])):
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
