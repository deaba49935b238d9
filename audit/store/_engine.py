"""Where a store lives (a path or a URL), the engine that reaches it, its errors, its migrations.

* A plain path or ``sqlite:///PATH`` is a SQLite file: WAL journal, foreign keys on,
  ``synchronous=FULL``, a busy timeout; each store has its own small pool of connections, closed
  when the store is closed or collected; a forked child drops (without closing) what it inherited.
* ``postgresql+psycopg://USER@HOST[:PORT]/DB`` (``postgresql://`` and ``postgres://`` mean the same)
  is PostgreSQL through psycopg 3; one pooled engine per URL per process.
* Anything else is one line (``StoreError``, exit 2), and so is a server that cannot be reached: the
  message names the host and the database, never the password.

Opening a store brings its schema to the newest Alembic revision under a lock (SQLite: the write
lock of ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so two processes
opening a new store at once are safe. A history file written before the migrations existed
(tables ``meta``, ``audits``, ``findings`` and no version table) is stamped at revision 0001 and
upgraded in place, its audits kept. The check costs one small query: Alembic is imported only when
a migration is due, and a PostgreSQL engine already found at the head revision is not asked again
in the same process.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from audit.exceptions import StoreError
from audit.store._schema import HEAD_REVISION, VERSION_TABLE

__all__ = [
    "NotFoundError",
    "QueueFullError",
    "StoreLockedError",
    "StoreTarget",
    "StoreUnavailableError",
    "default_store_path",
    "default_store_url",
    "engine_for",
    "ensure_schema",
    "map_error",
    "resolve_target",
    "sqlite_write_lock",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
OLD_TABLES = frozenset({"meta", "audits", "findings"})
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_SCHEME_PART_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:$")  # "postgresql:" - a URL that lost its "//"
_PG_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_MIGRATION_LOCK_KEY = 0x7472757374_01  # pg_advisory_xact_lock key of the store's migrations
_USAGE = "use a file path, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"


class StoreUnavailableError(StoreError):
    """The store is there but cannot be read or written now (locked, disk error, server gone)."""


class StoreLockedError(StoreUnavailableError):
    """Another process holds the SQLite write lock past the busy timeout."""


class NotFoundError(StoreError):
    """No audit, job or token with that id (in that project)."""


class QueueFullError(StoreError):
    """``submit_job`` refused: as many jobs are queued as ``max_queued`` allows (HTTP 429)."""


def default_store_url() -> str:
    """``$TRUSTAUDIT_STORE`` as given (a path or a URL), else the default SQLite file."""
    env = os.environ.get("TRUSTAUDIT_STORE")
    if env:
        return env
    return str(_default_file())


def _default_file() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustaudit" / "history.sqlite"


def default_store_path() -> Path:
    """The default store as a path (``$TRUSTAUDIT_STORE``, else the XDG data file); kept for callers
    that want a file. A URL in ``$TRUSTAUDIT_STORE`` is better read with :func:`default_store_url`."""
    env = os.environ.get("TRUSTAUDIT_STORE")
    if env:
        return Path(env)
    return _default_file()


@dataclass(frozen=True)
class StoreTarget:
    """Where a store lives. ``display`` names it in messages (a path, or the URL without password)."""

    backend: str  # "sqlite" | "postgresql"
    url: URL
    path: Path | None
    display: str


def _mask(text: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (for text that is not a parsable URL)."""
    return re.sub(r"(:/{1,2}[^/:@]*:)[^@/]*@", r"\1***@", text)


def _pg_display(url: URL) -> str:
    shown = URL.create(url.drivername, username=url.username, host=url.host, port=url.port, database=url.database)
    text_ = shown.render_as_string(hide_password=False)
    if url.password is not None and url.username:
        text_ = text_.replace(f"//{url.username}@", f"//{url.username}:***@", 1)
    return text_


def resolve_target(url_or_path: str | os.PathLike[str] | None) -> StoreTarget:
    """Parse what the user gave; one-line ``StoreError`` for anything unusable."""
    raw = default_store_url() if url_or_path is None else url_or_path
    text_ = os.fspath(raw)
    m = _URL_RE.match(text_)
    if m is None:
        path = Path(text_).expanduser()
        for part in path.parts:
            if _SCHEME_PART_RE.match(part):
                raise StoreError(
                    f"history store path {_mask(text_)} looks like a URL that lost its '//' ({part!r}); "
                    f"give a URL as text: {_USAGE}"
                )
        return StoreTarget("sqlite", URL.create("sqlite+pysqlite", database=str(path)), path, str(path))
    scheme = m.group(1).lower()
    try:
        url = make_url(text_)
    except ArgumentError:
        raise StoreError(f"history store URL {_mask(text_)!r} cannot be parsed; {_USAGE}") from None
    if scheme in _SQLITE_DRIVERS:
        if not url.database or url.database == ":memory:":
            raise StoreError(f"history store URL {_mask(text_)!r} names no file; {_USAGE}")
        path = Path(url.database).expanduser()
        return StoreTarget("sqlite", URL.create("sqlite+pysqlite", database=str(path)), path, str(path))
    if scheme in _PG_DRIVERS:
        url = url.set(drivername="postgresql+psycopg")
        if not url.database:
            raise StoreError(f"history store URL {_pg_display(url)!r} names no database; {_USAGE}")
        return StoreTarget("postgresql", url, None, _pg_display(url))
    if scheme.startswith(("postgresql+", "postgres+")):
        raise StoreError(
            f"history store URL {_mask(text_)!r}: driver {scheme.split('+', 1)[1]!r} is not supported; "
            "use postgresql+psycopg://USER@HOST/DB"
        )
    raise StoreError(f"history store URL {_mask(text_)!r}: unknown scheme {scheme!r}; {_USAGE}")


# --- engines -------------------------------------------------------------------------------------

_PG_ENGINES: dict[tuple[str, float], Engine] = {}
_PG_AT_HEAD: weakref.WeakSet[Engine] = weakref.WeakSet()
_ENGINES_LOCK = threading.Lock()
_ALL_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


_SQLITE_WRITE_LOCKS: dict[str, threading.Lock] = {}


def _after_fork_in_child() -> None:
    # a forked child must not use (or close) the parent's pooled connections, nor wait on a lock a
    # thread of the parent held at the fork
    for engine in list(_ALL_ENGINES):
        engine.dispose(close=False)
    _SQLITE_WRITE_LOCKS.clear()


@contextmanager
def sqlite_write_lock(target: StoreTarget, timeout: float) -> Iterator[None]:
    """Threads of one process writing one SQLite file take turns here, not in SQLite's busy handler
    (which sleeps in steps of up to 100 ms); other processes are still held off by SQLite's lock."""
    key = str(target.path)
    with _ENGINES_LOCK:
        lock = _SQLITE_WRITE_LOCKS.setdefault(key, threading.Lock())
    if not lock.acquire(timeout=timeout):
        raise StoreLockedError(f"history store {target.display} is locked by another process (database is locked)")
    try:
        yield
    finally:
        lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _sqlite_engine(path: Path, busy_timeout: float) -> Engine:
    def connect() -> sqlite3.Connection:
        # sqlite3.connect looked up at each call: no implicit transactions (isolation_level None),
        # the store begins them itself below
        return sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False)

    # pooled: closing the last connection to a WAL file checkpoints and syncs it (~30 ms), so a
    # store keeps its connections until it is closed or collected (``Store.close``)
    engine = create_engine("sqlite+pysqlite://", creator=connect, poolclass=QueuePool, pool_size=5,
                           max_overflow=10, pool_timeout=max(busy_timeout, 1.0))

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        try:
            # switching a new file to WAL can answer "database is locked" at once, without SQLite's
            # busy handler, while another process switches it too: retry within the busy timeout
            deadline = time.monotonic() + max(busy_timeout, 1.0)
            while True:
                try:
                    cur.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=FULL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # writers take the write lock at once: no deadlock between two readers upgrading
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ta_write") else "BEGIN")

    return engine


def _pg_engine(url: URL, busy_timeout: float) -> Engine:
    connect_args = {"connect_timeout": max(1, min(round(busy_timeout), 10)), "application_name": "trustaudit"}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args)


def engine_for(target: StoreTarget, busy_timeout: float) -> Engine:
    """A new engine for a SQLite file; the process's engine for a PostgreSQL URL."""
    if target.backend == "sqlite":
        assert target.path is not None
        engine = _sqlite_engine(target.path, busy_timeout)
        _ALL_ENGINES.add(engine)
        return engine
    key = (target.url.render_as_string(hide_password=False), float(busy_timeout))
    with _ENGINES_LOCK:
        cached = _PG_ENGINES.get(key)
        if cached is None:
            cached = _PG_ENGINES[key] = _pg_engine(target.url, busy_timeout)
            _ALL_ENGINES.add(cached)
        return cached


def dispose_engines() -> None:
    """Close every pooled PostgreSQL connection of this process (tests; a long process reconfiguring)."""
    with _ENGINES_LOCK:
        for engine in _PG_ENGINES.values():
            engine.dispose()
        _PG_ENGINES.clear()
        _PG_AT_HEAD.clear()


# --- errors -------------------------------------------------------------------------------------


def _reason(exc: BaseException, target: StoreTarget) -> str:
    orig = getattr(exc, "orig", None) or exc
    text_ = " ".join(str(orig).split())
    if target.backend == "postgresql":
        # psycopg: 'connection failed: connection to server at "h" (ip), port 1 failed: FATAL: ...'
        text_ = re.sub(r"\(Background on this error at: [^)]*\)", "", text_).strip()
        if target.url.password:
            text_ = text_.replace(target.url.password, "***")
        text_ = text_[:300]
    return text_


def map_error(target: StoreTarget, exc: BaseException, action: str) -> StoreError:
    """A database error as one line naming the store; ``action``: "opened", "read" or "written"."""
    if isinstance(exc, StoreError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    reason = _reason(exc, target)
    where = target.display
    if target.backend == "sqlite":
        if isinstance(orig, sqlite3.OperationalError) and ("locked" in reason or "busy" in reason):
            return StoreLockedError(f"history store {where} is locked by another process ({reason})")
        if "unable to open database file" in reason:
            return StoreUnavailableError(f"history store {where} cannot be opened: {reason}")
        if action == "opened" or (isinstance(orig, sqlite3.DatabaseError)
                                  and not isinstance(orig, sqlite3.OperationalError)):
            return StoreError(f"history store {where} is not a usable SQLite database: {reason}")
        return StoreUnavailableError(f"history store {where} cannot be {action}: {reason}")
    url = target.url
    if action == "opened" or "connection" in reason.lower():
        return StoreUnavailableError(
            f"history store {where} cannot be reached (host {url.host or 'local socket'}, "
            f"database {url.database}): {reason}"
        )
    return StoreUnavailableError(f"history store {where} cannot be {action}: {reason}")


@contextmanager
def errors(target: StoreTarget, action: str) -> Iterator[None]:
    """Database errors inside become one-line ``StoreError``s."""
    try:
        yield
    except (DBAPIError, SQLAlchemyError, sqlite3.Error) as exc:
        raise map_error(target, exc, action) from None


# --- migrations ---------------------------------------------------------------------------------


def _tables(conn: Connection, target: StoreTarget) -> set[str]:
    names = (VERSION_TABLE, *sorted(OLD_TABLES))
    if target.backend == "sqlite":
        rows = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)", names
        )
    else:
        rows = conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                 "AND table_name IN (:a, :b, :c, :d)"),
            dict(zip("abcd", names, strict=True)),
        )
    return {r[0] for r in rows}


def _version(conn: Connection, target: StoreTarget) -> tuple[str | None, set[str]]:
    tables = _tables(conn, target)
    if VERSION_TABLE not in tables:
        return None, tables
    rows = [r[0] for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))]
    return (rows[0] if len(rows) == 1 else ",".join(sorted(rows)) or None), tables


def _migrate(conn: Connection, target: StoreTarget, version: str | None, tables: set[str]) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = conn
    script = ScriptDirectory.from_config(cfg)
    if version is not None:
        try:
            script.get_revision(version)
        except CommandError:
            raise StoreError(
                f"history store {target.display} has schema revision {version!r}, which this trustaudit "
                f"({_own_version()}) does not know; it was written by a newer trustaudit: upgrade trustaudit"
            ) from None
    elif OLD_TABLES <= tables:
        command.stamp(cfg, "0001")  # a history file from before the migrations: revision 0001 as is
    command.upgrade(cfg, "head")


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trustaudit")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "unknown version"


def ensure_schema(engine: Engine, target: StoreTarget) -> None:
    """Bring the store to the head revision (under the migration lock); cheap when it is there.

    On SQLite this takes the write lock briefly even at the head revision, as the store always did
    on open: a store another process keeps locked is reported now, before an audit runs, not after.
    """
    if target.backend == "postgresql" and engine in _PG_AT_HEAD:
        return
    with errors(target, "opened"), engine.connect() as conn:
        if target.backend == "sqlite":
            conn.execution_options(ta_write=True)
        with conn.begin():
            version, tables = _version(conn, target)
            if version != HEAD_REVISION and target.backend == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                version, tables = _version(conn, target)  # another process may have migrated meanwhile
            if version != HEAD_REVISION:
                _migrate(conn, target, version, tables)
    if target.backend == "postgresql":
        with _ENGINES_LOCK:
            _PG_AT_HEAD.add(engine)
