"""Shared fixtures: the ground-truth generator, the real public datasets (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.datasets import LendingData, make_lending_data

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRUSTAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def lending() -> LendingData:
    """The default generator at a fixed seed (train 8000 / holdout 4000 / test 6000)."""
    return make_lending_data(seed=11)


@pytest.fixture
def seed() -> int:
    return 1234


def shared_csv(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"public dataset {name} not found next to the repository ({SHARED_DATA}); "
                    "these tests need the shared data folder")
    return path


@pytest.fixture(scope="session")
def adult() -> pd.DataFrame:
    """UCI Adult, train and test concatenated (48,842 rows), '?' read as missing."""
    frames = [pd.read_csv(shared_csv(n), na_values=["?"], skipinitialspace=True)
              for n in ("adult_train.csv", "adult_test.csv")]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="session")
def german_credit() -> pd.DataFrame:
    return pd.read_csv(shared_csv("german_credit.csv"))


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the user's real history store from a test."""
    monkeypatch.setenv("TRUSTAUDIT_STORE", str(tmp_path_factory.mktemp("store") / "history.sqlite"))


@pytest.fixture(autouse=True)
def _numpy_seed() -> None:
    np.random.seed(0)  # libraries that still use the global RNG (lime, shap) get a fixed one


# --- the store on PostgreSQL (the CI server; tests skip with the reason when it is absent) ---

PG_ADMIN_URL = os.environ.get("TRUSTAUDIT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database ``trustaudit_t_<uuid>`` created through the ``postgres`` database for this
    test session and dropped after it; yields its ``postgresql+psycopg://`` URL."""
    import uuid

    psycopg = pytest.importorskip("psycopg")
    from sqlalchemy.engine import make_url

    admin_url = make_url(PG_ADMIN_URL)
    try:
        admin = psycopg.connect(admin_url.set(drivername="postgresql").render_as_string(hide_password=False),
                                autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:200]
        pytest.skip(f"PostgreSQL is not reachable at {admin_url.render_as_string()} ({reason}); "
                    "set TRUSTAUDIT_TEST_PG to a server's postgres database to run the PostgreSQL store tests")
    name = f"trustaudit_t_{uuid.uuid4().hex}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        from audit.store._engine import dispose_engines

        dispose_engines()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A PostgreSQL store of its own: a fresh schema of the session's database, chosen in the URL
    (``?options=-csearch_path=...``), so a test, its subprocesses and its workers see only theirs."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:16]}"
    libpq = make_url(pg_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: a SQLite file, then a PostgreSQL schema (``pg_url``)."""
    if request.param == "sqlite":
        return str(tmp_path / "store.sqlite")
    return request.getfixturevalue("pg_url")
