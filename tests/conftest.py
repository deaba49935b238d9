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
