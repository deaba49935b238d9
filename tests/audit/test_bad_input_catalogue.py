"""A catalogue of named bad inputs: each exits 2 with exactly one line on stderr, never a traceback.

Every entry goes through the CLI's ``main()`` in-process (it returns the exit code; stderr is
captured) and asserts exit code 2 and its exact line: ``message`` is the text after
``trustaudit: error: ``. Entries marked ``unprivileged`` (permission denied) run, when the tests
run as root, in a forked process that has given up the capabilities that let root read any file.

The table reads as a list: name -> (how the bad input is built, what the user is told).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from audit.cli import main
from tests.audit.helpers import audit_args, write_case

Case = dict[str, Path]
Build = Callable[[Case, Path], list[str]]
Expect = Callable[[Case, Path], str]

COLUMNS = ("sex, age_group, region, education, years_experience, marketing_segment, income, debt_ratio, "
           "approved")


@dataclass(frozen=True)
class Bad:
    argv: Build
    message: Expect  # the exact line after "trustaudit: error: "
    skip_if: Callable[[], str | None] = lambda: None
    unprivileged: bool = False  # run without root's power to read any file (see run_main)


# --- builders -------------------------------------------------------------------------------


def with_data(case: Case, data: Path | str, *extra: str) -> list[str]:
    args = audit_args(case, *extra)
    args[args.index("--data") + 1] = str(data)
    return args


def with_model(case: Case, model: Path | str, *extra: str) -> list[str]:
    args = audit_args(case, *extra)
    args[args.index("--model") + 1] = str(model)
    return args


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(flag) + 1] = value
    return args


def variant(case: Case, tmp: Path, name: str, edit: Callable[[pd.DataFrame], pd.DataFrame | None]) -> Path:
    df = pd.read_csv(case["test"])
    out = edit(df)
    p = tmp / name
    (df if out is None else out).to_csv(p, index=False)
    return p


def spec_file(case: Case, tmp: Path, body: str, *, checks: str = '["fairness"]', data_extra: str = "",
              top: str = "") -> Path:
    p = tmp / "audit.toml"
    p.write_text(
        f"{top}checks = {checks}\n[model]\npath = \"{case['model']}\"\n[data]\ntest = \"{case['test']}\"\n"
        f"target = \"approved\"\npositive_label = 1\nsensitive = [\"sex\"]\n{data_extra}{body}"
    )
    return p


def spec_args(p: Path, *extra: str) -> list[str]:
    return ["audit", "--spec", str(p), "--quiet", "--no-store", *extra]


def three_class_model(case: Case, tmp: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    from audit.io import save_skops

    df = pd.read_csv(case["test"])
    y = np.asarray(df["approved"]).copy()
    y[::5] = 2
    p = tmp / "three.skops"
    save_skops(LogisticRegression(max_iter=300).fit(df[["income", "education"]], y), p)
    return p


class CustomClassifier(ClassifierMixin, BaseEstimator):
    """A type skops does not trust: a model file holding it is refused unless trusted by name."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.tile([0.5, 0.5], (len(X), 1))


def untrusted_skops(case: Case, tmp: Path) -> Path:
    from audit.io import save_skops

    df = pd.read_csv(case["test"])
    p = tmp / "untrusted.skops"
    save_skops(CustomClassifier().fit(df[["income"]], df["approved"]), p)
    return p


def pickle_model(case: Case, tmp: Path) -> Path:
    import joblib

    from audit.datasets import make_lending_data
    from tests.audit.helpers import lr_pipeline

    p = tmp / "model.joblib"
    joblib.dump(lr_pipeline(make_lending_data(300, 0, 0, seed=1)), p)
    return p


def torch_three_logits(case: Case, tmp: Path) -> Path:
    import torch

    from audit.io import save_torchscript

    class ThreeLogits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :3]

    p = tmp / "three.pt"
    save_torchscript(ThreeLogits(), p, {"classes": [0, 1], "output": "logits",
                                        "feature_names": ["education", "income", "debt_ratio"]})
    return p


def crafted_tree(kind: str) -> Callable[[Case, Path], Path]:
    """A skops tree whose node arrays point out of range (other helper's loader refuses it)."""

    def build(case: Case, tmp: Path) -> Path:
        from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
        from sklearn.tree import DecisionTreeClassifier

        from tests.audit.intake_builders import edit_skops_array, skops_bytes

        df = pd.read_csv(case["test"])
        X, y = df[["education", "income", "debt_ratio"]], df["approved"]
        ests = {"dt": (DecisionTreeClassifier(max_depth=3, random_state=0), "Tree", "nodes"),
                "rf": (RandomForestClassifier(3, max_depth=3, random_state=0), "Tree", "nodes"),
                "hgb": (HistGradientBoostingClassifier(max_iter=3, random_state=0), "TreePredictor", "nodes")}
        model_key, what = kind.split("-")
        est, cls, key = ests[model_key]
        est.fit(X, y)
        field = {("dt", "child"): "left_child", ("rf", "child"): "left_child", ("hgb", "child"): "left",
                 ("dt", "feature"): "feature", ("rf", "feature"): "feature", ("hgb", "feature"): "feature_idx"}
        big = 10**12 if what == "child" and model_key != "hgb" else 10**9

        def edit(a: np.ndarray) -> None:
            a[field[(model_key, what)]][0] = big

        p = tmp / f"{kind}.skops"
        p.write_bytes(edit_skops_array(skops_bytes(est), cls, key, edit))
        return p

    return build


def skops_bomb(case: Case, tmp: Path) -> Path:
    """A small skops file whose schema.json inflates to 1 GiB."""
    from tests.audit.intake_builders import deflate_member_stream

    p = tmp / "bomb.skops"
    with zipfile.ZipFile(p, "w") as zf:
        deflate_member_stream(zf, "schema.json", 1 << 30, prefix=b'{"__class__": "X", "content": "')
    return p


def parquet_bomb(case: Case, tmp: Path) -> Path:
    """A Parquet file of about 100 KB declaring 100 M rows (800 MB of int64 zeros, more rows than
    the limit): refused from its footer, before anything is decoded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp / "bomb.parquet"
    rows = 10_000_000
    table = pa.table({"approved": pa.array(np.zeros(rows, dtype=np.int64))})  # calloc'd, never touched
    with pq.ParquetWriter(p, table.schema, compression="zstd") as w:
        for _ in range(10):
            w.write_table(table, row_group_size=rows)
    assert p.stat().st_size < 1024**2
    return p


def onnx_external(case: Case, tmp: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    weights = tmp / "weights.bin"
    weights.write_bytes(np.ones(3, dtype=np.float32).tobytes())
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", "../" * 8 + str(case["test"]).lstrip("/")), ("offset", "0"), ("length", "12")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    node = helper.make_node("Mul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [w])
    p = tmp / "external.onnx"
    p.write_bytes(helper.make_model(graph).SerializeToString())
    del onnx
    return p


def _no_capabilities() -> str | None:
    """A reason to skip the unprivileged entries: root whose capabilities cannot be dropped."""
    if os.geteuid() != 0:
        return None
    return None if _capability_api() is not None else "root without capget/capset: permission denied cannot be produced"


def _capability_api():
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.capget, libc.capset
    except (OSError, AttributeError):
        return None


def _drop_file_access_capabilities() -> None:
    """Drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (this process only): a file of mode 000 is
    then unreadable for root too."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    capget, capset = _capability_api()
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE = 1, CAP_DAC_READ_SEARCH = 2
    data[0].effective &= keep
    data[0].permitted &= keep
    if capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _no_torch() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("torch") else "torch not installed"


def _no_onnx() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("onnx") else "onnx not installed"


def locked_file(tmp: Path, name: str = "locked.csv") -> Path:
    p = tmp / name
    p.write_text("a,approved\n1,1\n")
    p.chmod(0)
    return p


def fifo(tmp: Path) -> Path:
    p = tmp / "pipe.csv"
    os.mkfifo(p)
    return p


def loop(tmp: Path, name: str) -> Path:
    a, b = tmp / f"{name}.a", tmp / f"{name}.b"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def nul_padded(tmp: Path, case: Case) -> Path:
    p = tmp / "padded.csv"
    p.write_bytes(case["test"].read_bytes() + b"\x00" * (1 << 20))
    return p


def utf16(tmp: Path, case: Case) -> Path:
    p = tmp / "utf16.csv"
    p.write_bytes(case["test"].read_text().encode("utf-16"))
    return p


def duplicate_header(tmp: Path, case: Case) -> Path:
    text = case["test"].read_text().splitlines()
    p = tmp / "dup.csv"
    p.write_text("\n".join([text[0].replace("region", "sex"), *text[1:]]) + "\n")
    return p


def wide_csv(tmp: Path) -> Path:
    p = tmp / "wide.csv"
    n = 1_000_000
    with open(p, "w") as f:
        f.write(",".join(f"c{i}" for i in range(n)) + ",approved\n")
        f.write(",".join("1" for _ in range(n)) + ",1\n")
    return p


def sqlite_text(tmp: Path) -> Path:
    p = tmp / "store.sqlite"
    p.write_text("not a database, just text\n" * 100)
    return p


def unknown_format(tmp: Path) -> Path:
    p = tmp / "model.bin"
    p.write_bytes(b"hello, I am not a model" * 10)
    return p


# --- the catalogue --------------------------------------------------------------------------

NO_SENSITIVE = ("no sensitive features given: name them with --sensitive or data.sensitive (fairness.group_metrics, "
                "fairness.demographic_parity, fairness.equalized_odds, fairness.equal_opportunity, "
                "fairness.disparate_impact, fairness.mitigation)")
MULTICLASS_HINT = ("the audit needs a binary outcome: pass --multiclass one-vs-rest "
                   "(data.multiclass = \"one-vs-rest\") to audit positive label '1' against the other classes")


def groups_message(where: str, col: str, n: int, numeric: bool = True, limit: int = 50) -> str:
    hint = (f"or cut it into quantile bins: --bin-sensitive {col}=4 (data.bin_sensitive = {{{col} = 4}})"
            if numeric else "or merge its values into fewer groups")
    return (f"sensitive column '{col}' in {where} has {n} distinct values; the limit is {limit} groups per "
            f"sensitive feature: raise it with --max-groups (policy.max_groups) {hint}")


def df_where(tmp: Path, name: str) -> str:
    return f"data file '{tmp / name}'"


def tree_message(tmp: Path, kind: str, where: str, problem: str) -> str:
    """A crafted tree (crafted_tree): the file, the estimator holding the tree, the first bad node."""
    return f"model file {tmp / (kind + '.skops')} has a malformed tree and was refused: {where}: node 0: {problem}"


CATALOGUE: dict[str, Bad] = {
    # --- usage ---------------------------------------------------------------------------------
    "unknown subcommand": Bad(
        lambda c, t: ["audti"],
        lambda c, t: "argument command: invalid choice: 'audti' (choose from 'audit', 'demo', 'history', "
                     "'causal', 'dashboard', 'federated', 'privacy', 'worker', 'serve', 'token')"),
    "unknown flag": Bad(lambda c, t: ["audit", "--colour", "red"],
                        lambda c, t: "unrecognized arguments: --colour red"),
    "missing required flags": Bad(
        lambda c, t: ["audit", "--model", "m.skops"],
        lambda c, t: "audit: give --spec or all of --model, --data, --target, --positive-label "
                     "(missing: --data, --target, --positive-label)"),
    "seed not an integer": Bad(lambda c, t: audit_args(c, "--seed", "abc"),
                               lambda c, t: "audit: argument --seed: invalid int value: 'abc'"),
    "seed without a value": Bad(lambda c, t: ["audit", "--seed"],
                                lambda c, t: "audit: argument --seed: expected one argument"),
    "max-groups not an integer": Bad(lambda c, t: audit_args(c, "--max-groups", "many"),
                                     lambda c, t: "audit: argument --max-groups: invalid int value: 'many'"),
    "max-groups below 2": Bad(
        lambda c, t: audit_args(c, "--max-groups", "1"),
        lambda c, t: "flags: field 'policy.max_groups' input should be greater than or equal to 2 (got 1)"),
    "multiclass mode unknown": Bad(
        lambda c, t: audit_args(c, "--multiclass", "ovo"),
        lambda c, t: "audit: argument --multiclass: invalid choice: 'ovo' (choose from 'one-vs-rest')"),
    "bin-sensitive without bins": Bad(
        lambda c, t: audit_args(c, "--bin-sensitive", "income"),
        lambda c, t: "audit: --bin-sensitive takes COLUMN=BINS, e.g. age=4; got 'income'"),
    "bin-sensitive of a column not sensitive": Bad(
        lambda c, t: audit_args(c, "--bin-sensitive", "income=4"),
        lambda c, t: "flags: field 'data.bin_sensitive' names 'income', which is not a sensitive column "
                     "(sensitive: sex) (got {'income': 4})"),
    "bin-sensitive with one bin": Bad(
        lambda c, t: audit_args(c, "--sensitive", "income", "--bin-sensitive", "income=1"),
        lambda c, t: "flags: field 'data.bin_sensitive' gives 'income' 1 bins; allowed: 2 to 100 (got {'income': 1})"),
    "bin-sensitive of a text column": Bad(
        lambda c, t: audit_args(c, "--bin-sensitive", "sex=3"),
        lambda c, t: f"data.bin_sensitive: sensitive column 'sex' in data file '{c['test']}' is not numeric (str); "
                     "only numeric columns can be cut into quantile bins"),
    # --- the spec --------------------------------------------------------------------------------
    "spec file not found": Bad(lambda c, t: ["audit", "--spec", str(t / "none.toml")],
                               lambda c, t: f"spec file not found: {t / 'none.toml'}"),
    "spec not valid TOML": Bad(
        lambda c, t: ["audit", "--spec", str((t / "bad.toml", (t / "bad.toml").write_text("[model\npath = 1\n"))[0])],
        lambda c, t: f"spec file {t / 'bad.toml'} is not valid TOML: Expected ']' at the end of a table "
                     "declaration (at line 1, column 7)"),
    "spec not UTF-8": Bad(
        lambda c, t: ["audit", "--spec", str((t / "latin.toml", (t / "latin.toml").write_bytes(b"seed = 1 # \xe9\n"))[0])],
        lambda c, t: f"spec file {t / 'latin.toml'} is not UTF-8 text"),
    "spec unknown key": Bad(
        lambda c, t: spec_args(spec_file(c, t, "[policy.fairness]\ndemographic_parity_max = 0.1\n")),
        lambda c, t: "spec audit.toml: unknown key 'policy.fairness.demographic_parity_max'"),
    "spec threshold out of range": Bad(
        lambda c, t: spec_args(spec_file(c, t, "[policy.fairness]\ndisparate_impact_ratio_min = 1.5\n")),
        lambda c, t: "spec audit.toml: field 'policy.fairness.disparate_impact_ratio_min' input should be less than "
                     "or equal to 1 (got 1.5)"),
    "spec max_groups below 2": Bad(
        lambda c, t: spec_args(spec_file(c, t, "[policy]\nmax_groups = 0\n")),
        lambda c, t: "spec audit.toml: field 'policy.max_groups' input should be greater than or equal to 2 (got 0)"),
    "spec negative seed": Bad(
        lambda c, t: spec_args(spec_file(c, t, "", top="seed = -1\n")),
        lambda c, t: "spec audit.toml: field 'seed' input should be greater than or equal to 0 (got -1)"),
    "spec multiclass mode unknown": Bad(
        lambda c, t: spec_args(spec_file(c, t, "", data_extra='multiclass = "ovr"\n')),
        lambda c, t: "spec audit.toml: field 'data.multiclass' input should be 'refuse' or 'one-vs-rest' (got 'ovr')"),
    "spec sensitive named twice": Bad(
        lambda c, t: spec_args((t / "s.toml", (t / "s.toml").write_text(
            f'[model]\npath = "{c["model"]}"\n[data]\ntest = "{c["test"]}"\ntarget = "approved"\n'
            'positive_label = 1\nsensitive = ["sex", "region", "sex"]\n'))[0]),
        lambda c, t: "spec s.toml: field 'data.sensitive' names 'sex' twice (got ['sex', 'region', 'sex'])"),
    "spec target also sensitive": Bad(
        lambda c, t: spec_args((t / "s.toml", (t / "s.toml").write_text(
            f'[model]\npath = "{c["model"]}"\n[data]\ntest = "{c["test"]}"\ntarget = "approved"\n'
            'positive_label = 1\nsensitive = ["approved"]\n'))[0]),
        lambda c, t: "spec s.toml: field 'data.sensitive' names the target column 'approved' (got ['approved'])"),
    "spec missing target": Bad(
        lambda c, t: spec_args((t / "s.toml", (t / "s.toml").write_text(
            f'[model]\npath = "{c["model"]}"\n[data]\ntest = "{c["test"]}"\npositive_label = 1\n'))[0]),
        lambda c, t: "spec s.toml: missing required field 'data.target'"),
    "spec test and data both given": Bad(
        lambda c, t: spec_args((t / "s.toml", (t / "s.toml").write_text(
            f'[model]\npath = "{c["model"]}"\n[data]\ntest = "{c["test"]}"\ndata = "{c["test"]}"\n'
            'target = "approved"\npositive_label = 1\n'))[0]),
        lambda c, t: "spec s.toml: field 'data' give the audited rows as 'test' or 'data', not both"),
    "spec unknown check id": Bad(
        lambda c, t: spec_args(spec_file(c, t, "", checks='["fairness.demographic_parit"]')),
        lambda c, t: "spec audit.toml: field 'checks' unknown check 'fairness.demographic_parit'; closest: "
                     "fairness.demographic_parity, fairness.group_metrics, fairness.equal_opportunity "
                     "(got ['fairness.demographic_parit'])"),
    "spec empty check list": Bad(
        lambda c, t: spec_args(spec_file(c, t, "", checks="[]")),
        lambda c, t: "spec audit.toml: field 'checks' must name at least one of fairness, explain, privacy, causal "
                     "(got [])"),
    "flag unknown check family": Bad(
        lambda c, t: replace_flag(audit_args(c), "--checks", "fairnes"),
        lambda c, t: "flags: field 'checks' unknown check family 'fairnes'; closest: fairness (got ['fairnes'])"),
    "flag unknown check id": Bad(
        lambda c, t: replace_flag(audit_args(c), "--checks", "fairness.demographic_parit"),
        lambda c, t: "flags: field 'checks' unknown check 'fairness.demographic_parit'; closest: "
                     "fairness.demographic_parity, fairness.group_metrics, fairness.equal_opportunity "
                     "(got ['fairness.demographic_parit'])"),
    "flag unknown check, no close match": Bad(
        lambda c, t: replace_flag(audit_args(c), "--checks", "fairness,robustness.noise"),
        lambda c, t: "flags: field 'checks' unknown check 'robustness.noise'; no close match; families: fairness, "
                     "explain, privacy, causal (got ['fairness', 'robustness.noise'])"),
    "flag sensitive named twice": Bad(
        lambda c, t: audit_args(c, "--sensitive", "sex"),
        lambda c, t: "flags: field 'data.sensitive' names 'sex' twice (got ['sex', 'sex'])"),
    "flag target also sensitive": Bad(
        lambda c, t: audit_args(c, "--sensitive", "approved"),
        lambda c, t: "flags: field 'data.sensitive' names the target column 'approved' (got ['sex', 'approved'])"),
    "flag feature named twice": Bad(
        lambda c, t: audit_args(c, "--features", "income,education,income"),
        lambda c, t: "flags: field 'data.features' names 'income' twice (got ['income', 'education', 'income'])"),
    "flag target among the features": Bad(
        lambda c, t: audit_args(c, "--features", "income,approved"),
        lambda c, t: "flags: field 'data.features' names the target column 'approved' (got ['income', 'approved'])"),
    # --- data values (the runner's validation) --------------------------------------------------
    "target column missing": Bad(
        lambda c, t: replace_flag(audit_args(c), "--target", "outcome"),
        lambda c, t: f"target column 'outcome' not found in data file '{c['test']}' (columns: {COLUMNS})"),
    "sensitive column missing": Bad(
        lambda c, t: audit_args(c, "--sensitive", "religion"),
        lambda c, t: f"sensitive column 'religion' not found in data file '{c['test']}' (columns: {COLUMNS})"),
    "positive label not a model class": Bad(
        lambda c, t: replace_flag(audit_args(c), "--positive-label", "yes"),
        lambda c, t: "positive label 'yes' is not among the model's classes (0, 1)"),
    "positive label absent from the target": Bad(
        lambda c, t: with_data(c, variant(c, t, "zeros.csv", lambda d: d.assign(approved=0))),
        lambda c, t: f"positive label '1' is not among the values of target 'approved' in {df_where(t, 'zeros.csv')} "
                     "(values: 0)"),
    "target with a single class": Bad(
        lambda c, t: with_data(c, variant(c, t, "ones.csv", lambda d: d.assign(approved=1))),
        lambda c, t: f"target column 'approved' in {df_where(t, 'ones.csv')} has a single class (1); "
                     "an audit needs both outcomes"),
    "target with missing values": Bad(
        lambda c, t: with_data(c, variant(c, t, "nan.csv", lambda d: d.assign(
            approved=d["approved"].where(~d.index.isin([3, 7]))))),
        lambda c, t: f"target column 'approved' in {df_where(t, 'nan.csv')} has 2 missing value(s)"),
    "target with three classes": Bad(
        lambda c, t: with_data(c, variant(c, t, "three.csv", lambda d: d.assign(
            approved=np.where(d.index % 7 == 0, 2, d["approved"])))),
        lambda c, t: f"target column 'approved' in {df_where(t, 'three.csv')} has 3 classes (0, 1, 2); "
                     + MULTICLASS_HINT),
    "model with three classes": Bad(
        lambda c, t: with_model(c, three_class_model(c, t)),
        lambda c, t: "the model has 3 classes (0, 1, 2); " + MULTICLASS_HINT),
    "sensitive with a single group": Bad(
        lambda c, t: with_data(c, variant(c, t, "onesex.csv", lambda d: d.assign(sex="female"))),
        lambda c, t: f"sensitive column 'sex' in {df_where(t, 'onesex.csv')} has a single group (female); "
                     "fairness needs at least two"),
    "sensitive with too many groups (text)": Bad(
        lambda c, t: with_data(c, variant(c, t, "ids.csv", lambda d: d.assign(sex=[f"id{i}" for i in range(len(d))]))),
        lambda c, t: groups_message(df_where(t, "ids.csv"), "sex", 1500, numeric=False)),
    "sensitive continuous (too many groups)": Bad(
        lambda c, t: audit_args(c, "--sensitive", "income"),
        lambda c, t: groups_message(f"data file '{c['test']}'", "income", int(pd.read_csv(c["test"])["income"].nunique()))),
    "sensitive over a lowered group limit": Bad(
        lambda c, t: audit_args(c, "--sensitive", "region", "--max-groups", "2"),
        lambda c, t: groups_message(f"data file '{c['test']}'", "region",
                                    int(pd.read_csv(c["test"])["region"].nunique()), numeric=False, limit=2)),
    "binned sensitive without numbers": Bad(
        lambda c, t: with_data(c, variant(c, t, "noinc.csv", lambda d: d.assign(debt_ratio=np.nan)),
                               "--sensitive", "debt_ratio", "--bin-sensitive", "debt_ratio=4"),
        lambda c, t: f"data.bin_sensitive: sensitive column 'debt_ratio' in {df_where(t, 'noinc.csv')} has no finite values"),
    "model expects columns the data lacks": Bad(
        lambda c, t: with_data(c, variant(c, t, "fewer.csv", lambda d: d.drop(columns=["income", "debt_ratio"]))),
        lambda c, t: f"model expects columns the data lacks: income, debt_ratio (in {df_where(t, 'fewer.csv')})"),
    # --- nothing audited ------------------------------------------------------------------------
    "nothing audited: fairness without sensitive": Bad(
        lambda c, t: [a for a in audit_args(c) if a not in ("--sensitive", "sex")],
        lambda c, t: f"nothing audited: all 6 selected checks were skipped; to run them: {NO_SENSITIVE}"),
    "nothing audited: membership inference without train and holdout": Bad(
        lambda c, t: replace_flag(audit_args(c), "--checks", "privacy.membership_inference"),
        lambda c, t: "nothing audited: the selected check was skipped; to run it: membership inference needs "
                     "both training rows (members) and holdout rows (non-members): give them with --train and "
                     "--holdout (data.train, data.holdout) (privacy.membership_inference)"),
    "nothing audited: gradients of a non-torch model": Bad(
        lambda c, t: replace_flag(audit_args(c), "--checks", "explain.gradients"),
        lambda c, t: "nothing audited: the selected check was skipped; to run it: needs a torch model "
                     "(TorchScript); this model is not one (explain.gradients)"),
    # --- output locations (checked before the work) -------------------------------------------
    "--json under a missing system folder": Bad(
        lambda c, t: audit_args(c, "--json", "/proc/x/r.json"),
        lambda c, t: "--json /proc/x/r.json cannot be written: no such folder"),
    "--json under a file": Bad(
        lambda c, t: audit_args(c, "--json", str(c["test"]) + "/r.json"),
        lambda c, t: f"--json {c['test']}/r.json cannot be written: a parent is not a folder"),
    "--json naming a folder": Bad(
        lambda c, t: audit_args(c, "--json", str(t)),
        lambda c, t: f"--json {t} cannot be written: it is a folder; give a file path"),
    "--html naming a device": Bad(
        lambda c, t: audit_args(c, "--html", "/dev/null"),
        lambda c, t: "--html /dev/null cannot be written: it is not a regular file"),
    "--out naming a file": Bad(
        lambda c, t: audit_args(c, "--out", str(c["test"])),
        lambda c, t: f"--out {c['test']} cannot be written: it is a file, not a folder"),
    "--out holding a folder named report.json": Bad(
        lambda c, t: audit_args(c, "--out", str((t / "o", (t / "o" / "report.json").mkdir(parents=True))[0])),
        lambda c, t: f"--out {t / 'o' / 'report.json'} cannot be written: it is a folder; give a file path"),
    "demo --out naming a file": Bad(
        lambda c, t: ["demo", "--out", str(c["test"]), "--no-store", "--quiet"],
        lambda c, t: f"--out {c['test']} cannot be written: it is a file, not a folder"),
    "federated --out naming a file": Bad(
        lambda c, t: ["federated", "simulate", "--num-clients", "3", "--n-rows", "300", "--out", str(c["test"]),
                      "--quiet"],
        lambda c, t: f"--out {c['test']} cannot be written: it is a file, not a folder"),
    "privacy train-dp --out naming a file": Bad(
        lambda c, t: ["privacy", "train-dp", "--out", str(c["test"]), "--quiet"],
        lambda c, t: f"--out {c['test']} cannot be written: it is a file, not a folder"),
    "causal discover --out under a missing system folder": Bad(
        lambda c, t: ["causal", "discover", "--data", str(c["test"]), "--out", "/proc/x/g.dot"],
        lambda c, t: "--out /proc/x/g.dot cannot be written: no such folder"),
    "causal discover --out naming a folder": Bad(
        lambda c, t: ["causal", "discover", "--data", str(c["test"]), "--out", str(t)],
        lambda c, t: f"--out {t} cannot be written: it is a folder; give a file path"),
    # --- the history store ----------------------------------------------------------------------
    "store path is a folder": Bad(
        lambda c, t: audit_args(c, "--store", str(t)),
        lambda c, t: f"history store path {t} is a folder; give a file path"),
    "store is not a database": Bad(
        lambda c, t: ["history", "--store", str(sqlite_text(t))],
        lambda c, t: f"history store {t / 'store.sqlite'} is not a usable SQLite database: file is not a database"),
    "history of an unknown audit": Bad(
        lambda c, t: ["history", "--store", str(t / "h.sqlite"), "--show", "abcdef123"],
        lambda c, t: f"no audit 'abcdef123' in the history store {t / 'h.sqlite'}"),
    "history id prefix too short": Bad(
        lambda c, t: ["history", "--store", str(t / "h.sqlite"), "--show", "abc"],
        lambda c, t: "audit id prefix must have at least 6 characters, got 'abc'"),
    # --- models with exact texts ----------------------------------------------------------------
    "pickle refused without the unsafe flag": Bad(
        lambda c, t: with_model(c, pickle_model(c, t)),
        lambda c, t: f"model file {t / 'model.joblib'} is a pickle/joblib file: loading it can run arbitrary code; "
                     "refused. Save the model with skops (or ONNX/TorchScript), or pass --unsafe-pickle only if you "
                     "trust its source"),
    "model output of the wrong shape": Bad(
        lambda c, t: with_model(c, torch_three_logits(c, t)),
        lambda c, t: "model output has shape (1500, 3), expected (1500, 2) (one probability per row and class)",
        skip_if=_no_torch),
    # --- federated, privacy and causal settings ---------------------------------------------------
    "federated unknown strategy": Bad(
        lambda c, t: ["federated", "simulate", "--strategy", "fedfoo", "--out", str(t / "f")],
        lambda c, t: "strategy must be one of fedavg, fedprox, fedadam, fedyogi, fedmedian, fedtrimmedavg, krum, "
                     "multikrum; got 'fedfoo'"),
    "federated alpha zero": Bad(
        lambda c, t: ["federated", "simulate", "--partition", "dirichlet", "--alpha", "0", "--out", str(t / "f")],
        lambda c, t: "alpha must be greater than 0 (the Dirichlet concentration); got 0.0"),
    "federated clients not a number": Bad(
        lambda c, t: ["federated", "simulate", "--num-clients", "ten", "--out", str(t / "f")],
        lambda c, t: "num-clients must be an integer; got 'ten'"),
    "federated data without target": Bad(
        lambda c, t: ["federated", "simulate", "--data", str(c["test"]), "--out", str(t / "f")],
        lambda c, t: "--data needs --target and --positive-label"),
    "federated secagg with central DP": Bad(
        lambda c, t: ["federated", "simulate", "--secagg", "--central-dp", "--out", str(t / "f")],
        lambda c, t: "secagg and central-dp cannot be combined: server-side clipping needs the individual updates "
                     "that secure aggregation hides; use local-dp with secagg"),
    "federated dropout of 1": Bad(
        lambda c, t: ["federated", "simulate", "--dropout", "1", "--out", str(t / "f")],
        lambda c, t: "dropout must be in [0, 1); got 1.0"),
    "privacy epsilons not numbers": Bad(
        lambda c, t: ["privacy", "train-dp", "--out", str(t / "dp"), "--epsilons", "abc"],
        lambda c, t: "train-dp: --epsilons takes positive numbers or 'inf', got 'abc'"),
    "privacy epsilons empty": Bad(
        lambda c, t: ["privacy", "train-dp", "--out", str(t / "dp"), "--epsilons", ","],
        lambda c, t: "train-dp: --epsilons needs at least one value, e.g. 1,3,8,inf"),
    "causal validate-graph without data": Bad(
        lambda c, t: ["causal", "validate-graph"],
        lambda c, t: "validate-graph: give --data FILE (or --spec TOML)"),
    "causal edge without an arrow": Bad(
        lambda c, t: ["causal", "validate-graph", "--data", str(c["test"]), "--edge", "a-b"],
        lambda c, t: "validate-graph: --edge must look like 'cause->effect', got 'a-b'"),
    "causal discover alpha out of range": Bad(
        lambda c, t: ["causal", "discover", "--data", str(c["test"]), "--alpha", "2"],
        lambda c, t: "discover: --alpha must be between 0 and 1, got 2.0"),
    # --- data and spec files: kinds, encodings, bounds, operating-system errors ---------------------
    "data file missing": Bad(lambda c, t: with_data(c, t / "nope.csv"),
                             lambda c, t: f"data file not found: {t / 'nope.csv'}"),
    "model file missing": Bad(lambda c, t: with_model(c, t / "nope.skops"),
                              lambda c, t: f"model file not found: {t / 'nope.skops'}"),
    "empty CSV": Bad(lambda c, t: with_data(c, (t / "e.csv", (t / "e.csv").write_bytes(b""))[0]),
                     lambda c, t: f"data file {t / 'e.csv'} is empty"),
    "header-only CSV": Bad(lambda c, t: with_data(c, (t / "h.csv", (t / "h.csv").write_text("a,b,approved\n"))[0]),
                           lambda c, t: f"data file {t / 'h.csv'} has no rows"),
    "ragged CSV": Bad(
        lambda c, t: with_data(c, (t / "r.csv", (t / "r.csv").write_text("a,b,c\n1,2,3\n4,5,6,7,8\n"))[0]),
        lambda c, t: f"data file {t / 'r.csv'} could not be parsed as CSV: Error tokenizing data. C error: "
                     "Expected 3 fields in line 3, saw 5"),
    "binary file named .csv": Bad(
        lambda c, t: with_data(c, (t / "i.csv", (t / "i.csv").write_bytes(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))))[0]),
        lambda c, t: f"data file {t / 'i.csv'} is not a CSV or Parquet file (binary content)"),
    "data file is a folder": Bad(lambda c, t: with_data(c, t), lambda c, t: f"data file {t} is a directory"),
    "data file is a FIFO": Bad(
        lambda c, t: with_data(c, fifo(t)),
        lambda c, t: f"data file {t / 'pipe.csv'} is not a regular file (it is a named pipe (FIFO))"),
    "data file is /dev/zero": Bad(
        lambda c, t: with_data(c, "/dev/zero"),
        lambda c, t: "data file /dev/zero is not a regular file (it is a character device)"),
    "data file is a symlink loop": Bad(lambda c, t: with_data(c, loop(t, "d")),
                                       lambda c, t: f"data file {t / 'd.a'} is a symbolic link loop"),
    "data file unreadable": Bad(
        lambda c, t: with_data(c, locked_file(t)),
        lambda c, t: f"data file {t / 'locked.csv'} cannot be read: permission denied",
        skip_if=_no_capabilities, unprivileged=True),
    "data file UTF-16": Bad(lambda c, t: with_data(c, utf16(t, c)),
                            lambda c, t: f"data file {t / 'utf16.csv'} is UTF-16 encoded; save it as UTF-8"),
    "data file NUL padded": Bad(
        lambda c, t: with_data(c, nul_padded(t, c)),
        lambda c, t: f"data file {t / 'padded.csv'} contains NUL bytes (the first at byte "
                     f"{c['test'].stat().st_size}); a CSV file is text"),
    "data file with a duplicate column name": Bad(
        lambda c, t: with_data(c, duplicate_header(t, c)),
        lambda c, t: f"data file {t / 'dup.csv'} has duplicate column names: sex"),
    "data file of a million columns": Bad(
        lambda c, t: with_data(c, wide_csv(t)),
        lambda c, t: f"data file {t / 'wide.csv'} has 1000001 columns; the limit is 10000 "
                     "(raise it with TRUSTAUDIT_LIMIT_TABLE_COLUMNS)"),
    "data file Parquet bomb": Bad(
        lambda c, t: with_data(c, parquet_bomb(c, t)),
        lambda c, t: f"data file {t / 'bomb.parquet'} has more than 20000000 rows "
                     "(raise it with TRUSTAUDIT_LIMIT_TABLE_ROWS)"),
    "spec file is a folder": Bad(lambda c, t: ["audit", "--spec", str(t)], lambda c, t: f"spec file {t} is a directory"),
    "spec file is a symlink loop": Bad(lambda c, t: ["audit", "--spec", str(loop(t, "s"))],
                                       lambda c, t: f"spec file {t / 's.a'} is a symbolic link loop"),
    # --- model files ---------------------------------------------------------------------------------
    "model format unknown": Bad(
        lambda c, t: with_model(c, unknown_format(t)),
        lambda c, t: f"model file {t / 'model.bin'} is not a recognised format; allowed: skops, ONNX, TorchScript "
                     "(pickle/joblib only with --unsafe-pickle)"),
    "model untrusted skops type": Bad(
        lambda c, t: with_model(c, untrusted_skops(c, t)),
        lambda c, t: f"model file {t / 'untrusted.skops'} contains types that are not trusted: "
                     "tests.audit.test_bad_input_catalogue.CustomClassifier; review them and trust each explicitly "
                     "with --trust TYPE (or model.trusted_types)"),
    "model file is a folder": Bad(lambda c, t: with_model(c, t), lambda c, t: f"model file {t} is a directory"),
    "model file is a symlink loop": Bad(lambda c, t: with_model(c, loop(t, "m")),
                                        lambda c, t: f"model file {t / 'm.a'} is a symbolic link loop"),
    "model file unreadable": Bad(
        lambda c, t: with_model(c, locked_file(t, "locked.skops")),
        lambda c, t: f"model file {t / 'locked.skops'} cannot be read: permission denied",
        skip_if=_no_capabilities, unprivileged=True),
    "model skops schema bomb": Bad(
        lambda c, t: with_model(c, skops_bomb(c, t)),
        lambda c, t: f"model file {t / 'bomb.skops'} has a member 'schema.json' of 1073741824 bytes uncompressed; "
                     "the limit is 67108864 (raise it with TRUSTAUDIT_LIMIT_SKOPS_SCHEMA_BYTES)"),
    "model ONNX with external data": Bad(
        lambda c, t: with_model(c, onnx_external(c, t)),
        lambda c, t: f"model file {t / 'external.onnx'} refers to external data "
                     f"({'../' * 8 + str(c['test']).lstrip('/')!r} for tensor 'w'); refused: a model must hold all "
                     "its weights (save it without external data)",
        skip_if=_no_onnx),
    "model tree child out of range (DecisionTree)": Bad(
        lambda c, t: with_model(c, crafted_tree("dt-child")(c, t)),
        lambda c, t: tree_message(t, "dt-child", "DecisionTreeClassifier.tree_ (DecisionTreeClassifier)",
                                  "left child 1000000000000 is outside 1..14")),
    "model tree feature out of range (DecisionTree)": Bad(
        lambda c, t: with_model(c, crafted_tree("dt-feature")(c, t)),
        lambda c, t: tree_message(t, "dt-feature", "DecisionTreeClassifier.tree_ (DecisionTreeClassifier)",
                                  "feature 1000000000 is outside 0..2")),
    "model tree child out of range (RandomForest)": Bad(
        lambda c, t: with_model(c, crafted_tree("rf-child")(c, t)),
        lambda c, t: tree_message(t, "rf-child", "RandomForestClassifier.estimators_[0].tree_ (DecisionTreeClassifier)",
                                  "left child 1000000000000 is outside 1..14")),
    "model tree feature out of range (RandomForest)": Bad(
        lambda c, t: with_model(c, crafted_tree("rf-feature")(c, t)),
        lambda c, t: tree_message(t, "rf-feature", "RandomForestClassifier.estimators_[0].tree_ (DecisionTreeClassifier)",
                                  "feature 1000000000 is outside 0..2")),
    "model tree child out of range (HistGradientBoosting)": Bad(
        lambda c, t: with_model(c, crafted_tree("hgb-child")(c, t)),
        lambda c, t: tree_message(t, "hgb-child", "HistGradientBoostingClassifier._predictors[0][0] "
                                  "(HistGradientBoostingClassifier)", "left child 1000000000 is outside 1..60")),
    "model tree feature out of range (HistGradientBoosting)": Bad(
        lambda c, t: with_model(c, crafted_tree("hgb-feature")(c, t)),
        lambda c, t: tree_message(t, "hgb-feature", "HistGradientBoostingClassifier._predictors[0][0] "
                                  "(HistGradientBoostingClassifier)", "feature 1000000000 is outside 0..2")),
}


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    return write_case(tmp_path_factory.mktemp("catalogue"))


def test_the_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 60


def run_main(argv: list[str], unprivileged: bool, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` -> (exit code, stderr). ``unprivileged`` as root: in a forked process without
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, its result sent back through a pipe."""
    if not (unprivileged and os.geteuid() == 0):
        capsys.readouterr()
        rc = main(argv)
        return rc, capsys.readouterr().err
    import contextlib
    import io
    import json

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            os.close(read_end)
            err = io.StringIO()
            try:
                _drop_file_access_capabilities()
                with contextlib.redirect_stderr(err):
                    rc = main(argv)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent as a failure
                rc, err = -1, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
            with os.fdopen(write_end, "w") as f:
                json.dump([rc, err.getvalue()], f)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        rc, err = json.loads(f.read())
    os.waitpid(pid, 0)
    return rc, err


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_bad_input(name: str, case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = CATALOGUE[name]
    reason = bad.skip_if()
    if reason:
        pytest.skip(reason)
    argv = bad.argv(case, tmp_path)
    rc, err = run_main(argv, bad.unprivileged, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0] == "trustaudit: error: " + bad.message(case, tmp_path)
