"""Small builders shared by the spine's tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from audit.datasets import LendingData, make_lending_data
from audit.io import save_skops

FEATURES = ["age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]


def lr_pipeline(data: LendingData, features: list[str] | None = None) -> Pipeline:
    feats = list(features or FEATURES)
    cat = [c for c in feats if c in ("sex", "age_group", "region")]
    num = [c for c in feats if c not in cat]
    model = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cat),
                                    ("num", StandardScaler(), num)])),
        ("clf", LogisticRegression(max_iter=1000)),
    ])
    return model.fit(data.train[feats], data.train[data.target])


def write_case(tmp: Path, n_test: int = 1500, seed: int = 5) -> dict[str, Path]:
    """A model file and train/holdout/test CSVs from the generator; returns their paths."""
    data = make_lending_data(1500, 800, n_test, seed=seed)
    model = lr_pipeline(data)
    paths = {"model": tmp / "model.skops", "train": tmp / "train.csv", "holdout": tmp / "holdout.csv",
             "test": tmp / "test.csv"}
    save_skops(model, paths["model"])
    for role in ("train", "holdout", "test"):
        getattr(data, role).to_csv(paths[role], index=False)
    return paths


def audit_args(paths: dict[str, Path], *extra: str) -> list[str]:
    return ["audit", "--model", str(paths["model"]), "--data", str(paths["test"]), "--target", "approved",
            "--positive-label", "1", "--sensitive", "sex", "--checks", "fairness", "--quiet", *extra]


def frame_csv(tmp: Path, name: str, df: pd.DataFrame) -> Path:
    p = tmp / name
    df.to_csv(p, index=False)
    return p
