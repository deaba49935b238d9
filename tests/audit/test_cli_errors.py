"""Bad inputs: each gives one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audit.cli import main
from tests.audit.helpers import audit_args, frame_csv, write_case


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_case(tmp_path_factory.mktemp("case"))


def run_err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def with_data(case: dict[str, Path], data: Path, *extra: str) -> list[str]:
    args = audit_args(case, *extra)
    args[args.index("--data") + 1] = str(data)
    return args


def test_missing_data_file(case, capsys, tmp_path):
    missing = tmp_path / "nope.csv"
    assert run_err(capsys, with_data(case, missing)) == f"trustaudit: error: data file not found: {missing}"


def test_missing_model_file(case, capsys, tmp_path):
    args = audit_args(case)
    args[args.index("--model") + 1] = str(tmp_path / "nope.skops")
    assert run_err(capsys, args) == f"trustaudit: error: model file not found: {tmp_path / 'nope.skops'}"


def test_empty_csv(case, capsys, tmp_path):
    p = tmp_path / "empty.csv"
    p.write_bytes(b"")
    assert run_err(capsys, with_data(case, p)) == f"trustaudit: error: data file {p} is empty"


def test_header_only_csv(case, capsys, tmp_path):
    p = tmp_path / "header.csv"
    p.write_text("a,b,approved\n")
    assert run_err(capsys, with_data(case, p)) == f"trustaudit: error: data file {p} has no rows"


def test_unparsable_csv(case, capsys, tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("a,b,c\n1,2,3\n4,5,6,7,8\n")
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: data file {p} could not be parsed as CSV: "
        "Error tokenizing data. C error: Expected 3 fields in line 3, saw 5"
    )


def test_binary_file_named_csv(case, capsys, tmp_path):
    p = tmp_path / "image.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: data file {p} is not a CSV or Parquet file (binary content)"
    )


def test_target_missing(case, capsys):
    args = audit_args(case)
    args[args.index("--target") + 1] = "outcome"
    assert run_err(capsys, args) == (
        f"trustaudit: error: target column 'outcome' not found in data file '{case['test']}' "
        "(columns: sex, age_group, region, education, years_experience, marketing_segment, income, "
        "debt_ratio, approved)"
    )


def test_sensitive_missing(case, capsys):
    args = audit_args(case, "--sensitive", "religion")
    assert run_err(capsys, args) == (
        f"trustaudit: error: sensitive column 'religion' not found in data file '{case['test']}' "
        "(columns: sex, age_group, region, education, years_experience, marketing_segment, income, "
        "debt_ratio, approved)"
    )


def test_positive_label_not_among_values(case, capsys):
    args = audit_args(case)
    args[args.index("--positive-label") + 1] = "yes"
    assert run_err(capsys, args) == "trustaudit: error: positive label 'yes' is not among the model's classes (0, 1)"


def test_positive_label_not_in_target(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"])
    df["approved"] = 0
    p = frame_csv(tmp_path, "zeros.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: positive label '1' is not among the values of target 'approved' in data file "
        f"'{p}' (values: 0)"
    )


def test_target_single_class(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"])
    df["approved"] = 1
    p = frame_csv(tmp_path, "ones.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: target column 'approved' in data file '{p}' has a single class (1); "
        "an audit needs both outcomes"
    )


def test_nan_in_target(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"])
    df.loc[[3, 7], "approved"] = np.nan
    p = frame_csv(tmp_path, "nan.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: target column 'approved' in data file '{p}' has 2 missing value(s)"
    )


def test_sensitive_single_group(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"])
    df["sex"] = "female"
    p = frame_csv(tmp_path, "onesex.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: sensitive column 'sex' in data file '{p}' has a single group (female); "
        "fairness needs at least two"
    )


def test_model_expects_missing_columns(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"]).drop(columns=["income", "debt_ratio"])
    p = frame_csv(tmp_path, "fewer.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: model expects columns the data lacks: income, debt_ratio (in data file '{p}')"
    )


def test_model_output_wrong_shape(case, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from audit.io import save_torchscript

    class ThreeLogits(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :3]

    model = tmp_path / "three.pt"
    save_torchscript(ThreeLogits(), model, {"classes": [0, 1], "output": "logits",
                                            "feature_names": ["education", "income", "debt_ratio"]})
    args = audit_args(case)
    args[args.index("--model") + 1] = str(model)
    assert run_err(capsys, args) == (
        "trustaudit: error: model output has shape (1500, 3), expected (1500, 2) (one probability per row and class)"
    )


def test_unknown_spec_key(case, capsys, tmp_path):
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'[model]\npath = "{case["model"]}"\n[data]\ntest = "{case["test"]}"\ntarget = "approved"\n'
        'positive_label = 1\nsensitive = ["sex"]\n[policy.fairness]\ndemographic_parity_max = 0.1\n'
    )
    assert run_err(capsys, ["audit", "--spec", str(spec), "--quiet"]) == (
        "trustaudit: error: spec audit.toml: unknown key 'policy.fairness.demographic_parity_max'"
    )


def test_threshold_out_of_range(case, capsys, tmp_path):
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'[model]\npath = "{case["model"]}"\n[data]\ntest = "{case["test"]}"\ntarget = "approved"\n'
        'positive_label = 1\nsensitive = ["sex"]\n[policy.fairness]\ndisparate_impact_ratio_min = 1.5\n'
    )
    assert run_err(capsys, ["audit", "--spec", str(spec), "--quiet"]) == (
        "trustaudit: error: spec audit.toml: field 'policy.fairness.disparate_impact_ratio_min' "
        "input should be less than or equal to 1 (got 1.5)"
    )


def test_invalid_toml(capsys, tmp_path):
    spec = tmp_path / "bad.toml"
    spec.write_text("[model\npath = 1\n")
    line = run_err(capsys, ["audit", "--spec", str(spec)])
    assert line.startswith(f"trustaudit: error: spec file {spec} is not valid TOML: ")


def test_unknown_check_family(case, capsys):
    args = audit_args(case)
    args[args.index("--checks") + 1] = "fairnes"
    assert run_err(capsys, args) == (
        "trustaudit: error: flags: field 'checks' unknown check family 'fairnes'; closest: fairness "
        "(got ['fairnes'])"
    )


def test_unknown_check_id_flag(case, capsys):
    """A misspelt check id used to select nothing and PASS with exit 0."""
    args = audit_args(case)
    args[args.index("--checks") + 1] = "fairness.demographic_parit"
    assert run_err(capsys, args) == (
        "trustaudit: error: flags: field 'checks' unknown check 'fairness.demographic_parit'; closest: "
        "fairness.demographic_parity, fairness.group_metrics, fairness.equal_opportunity "
        "(got ['fairness.demographic_parit'])"
    )


def test_unknown_check_id_in_spec(case, capsys, tmp_path):
    spec = tmp_path / "audit.toml"
    spec.write_text(
        f'checks = ["fairness.demographic_parit"]\n[model]\npath = "{case["model"]}"\n[data]\n'
        f'test = "{case["test"]}"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n'
    )
    assert run_err(capsys, ["audit", "--spec", str(spec), "--quiet", "--no-store"]) == (
        "trustaudit: error: spec audit.toml: field 'checks' unknown check 'fairness.demographic_parit'; "
        "closest: fairness.demographic_parity, fairness.group_metrics, fairness.equal_opportunity "
        "(got ['fairness.demographic_parit'])"
    )


def test_unknown_check_without_a_close_match_lists_the_families(case, capsys):
    args = audit_args(case)
    args[args.index("--checks") + 1] = "fairness,robustness.noise"
    assert run_err(capsys, args) == (
        "trustaudit: error: flags: field 'checks' unknown check 'robustness.noise'; no close match; "
        "families: fairness, explain, privacy, causal (got ['fairness', 'robustness.noise'])"
    )


def test_unknown_check_id_python_api(case):
    import pandas as pd

    from audit.exceptions import SpecError
    from audit.io import load_model
    from audit.runner import run_audit

    raw = {
           "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"]},
           "checks": ["fairness.demographic_parit"]}
    with pytest.raises(SpecError) as exc:
        run_audit(load_model(case["model"]), pd.read_csv(case["test"]), spec=raw)
    assert str(exc.value) == (
        "spec: field 'checks' unknown check 'fairness.demographic_parit'; closest: fairness.demographic_parity, "
        "fairness.group_metrics, fairness.equal_opportunity (got ['fairness.demographic_parit'])"
    )
    assert exc.value.exit_code == 2


def test_missing_required_flags(capsys):
    assert run_err(capsys, ["audit", "--model", "m.skops"]) == (
        "trustaudit: error: audit: give --spec or all of --model, --data, --target, --positive-label "
        "(missing: --data, --target, --positive-label)"
    )


def test_unknown_flag(capsys):
    assert run_err(capsys, ["audit", "--colour", "red"]) == (
        "trustaudit: error: unrecognized arguments: --colour red"
    )


def test_pickle_refused_without_flag(case, capsys, tmp_path):
    import joblib

    from audit.datasets import make_lending_data
    from tests.audit.helpers import lr_pipeline

    p = tmp_path / "model.joblib"
    joblib.dump(lr_pipeline(make_lending_data(300, 0, 0, seed=1)), p)
    args = audit_args(case)
    args[args.index("--model") + 1] = str(p)
    assert run_err(capsys, args) == (
        f"trustaudit: error: model file {p} is a pickle/joblib file: loading it can run arbitrary code; "
        "refused. Save the model with skops (or ONNX/TorchScript), or pass --unsafe-pickle only if you trust its source"
    )


def test_unknown_subcommand(capsys):
    assert run_err(capsys, ["audti"]).startswith("trustaudit: error: argument command: invalid choice: 'audti'")


def test_bad_seed_type(case, capsys):
    assert run_err(capsys, audit_args(case, "--seed", "abc")) == (
        "trustaudit: error: audit: argument --seed: invalid int value: 'abc'"
    )


# --- issue 12: nothing audited, output locations, OS errors, a locked store ---------------------


def test_nothing_audited_is_exit_2_naming_the_inputs(case, capsys, tmp_path):
    """`--checks privacy` without train/holdout rows used to exit 0 with every check SKIPPED."""
    out = tmp_path / "r.json"
    args = audit_args(case, "--json", str(out))
    args[args.index("--checks") + 1] = "privacy"
    assert run_err(capsys, args) == (
        "trustaudit: error: nothing audited: all 2 selected checks were skipped; to run them: no DP claim to "
        "verify: state one in privacy.dp_claim (epsilon, delta, noise_multiplier, sample_rate or batch_size and "
        "dataset_size, steps or epochs, accountant) or ship it as 'dp_claim' in the model's metadata "
        "(privacy.dp_claim); membership inference needs both training rows (members) and holdout rows "
        "(non-members): give them with --train and --holdout (data.train, data.holdout) "
        "(privacy.membership_inference)"
    )
    assert not out.exists()  # an audit that ran nothing writes no report


def test_nothing_audited_python_api_raises_with_the_report(case):
    import pandas as pd

    from audit.exceptions import NothingAuditedError, SpecError
    from audit.io import load_model
    from audit.results import Verdict
    from audit.runner import run_audit

    raw = {
           "data": {"target": "approved", "positive_label": 1},
           "checks": ["fairness"]}
    with pytest.raises(NothingAuditedError) as exc:
        run_audit(load_model(case["model"]), pd.read_csv(case["test"]), spec=raw)
    assert isinstance(exc.value, SpecError) and exc.value.exit_code == 2
    assert str(exc.value).startswith("nothing audited: all 6 selected checks were skipped; to run them: "
                                     "no sensitive features given")
    assert len(exc.value.report.results) == 6
    assert {r.verdict for r in exc.value.report.results} == {Verdict.SKIPPED}
    assert exc.value.report.exit_code() == 2


def test_output_locations_checked_before_the_audit(case, capsys, monkeypatch, tmp_path):
    import audit.runner

    def never(*a, **k):
        raise AssertionError("the audit ran before its outputs were checked")

    monkeypatch.setattr(audit.runner, "run_audit", never)
    assert run_err(capsys, audit_args(case, "--json", "/proc/x/r.json")) == (
        "trustaudit: error: --json /proc/x/r.json cannot be written: no such folder")
    assert run_err(capsys, audit_args(case, "--out", str(case["test"]))) == (
        f"trustaudit: error: --out {case['test']} cannot be written: it is a file, not a folder")
    assert run_err(capsys, audit_args(case, "--sarif", str(tmp_path))) == (
        f"trustaudit: error: --sarif {tmp_path} cannot be written: it is a folder; give a file path")
    assert not (tmp_path / ".trustaudit-").exists() and list(tmp_path.iterdir()) == []  # the probe is removed


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (PermissionError(13, "Permission denied", "/srv/reports/r.json"), "/srv/reports/r.json: permission denied"),
        (IsADirectoryError(21, "Is a directory", "/srv/reports"), "/srv/reports: is a directory"),
        (OSError(40, "Too many levels of symbolic links", "/srv/loop"), "/srv/loop: too many levels of symbolic links"),
        (OSError(28, "No space left on device", "/srv/reports/r.html"),
         "/srv/reports/r.html: no space left on device"),
        (OSError(18, "Invalid cross-device link", "/a", None, "/b"), "/a -> /b: invalid cross-device link"),
    ],
    ids=["EACCES", "EISDIR", "ELOOP", "ENOSPC", "EXDEV"],
)
def test_os_errors_at_the_top_level_are_one_line(case, capsys, monkeypatch, tmp_path, exc, line):
    """Any OSError that still reaches the CLI is exit 2 naming the path, not exit 1 with a traceback."""
    import audit.report

    def failing(*a, **k):
        raise exc

    monkeypatch.setattr(audit.report, "write_reports", failing)
    args = audit_args(case, "--json", str(tmp_path / "r.json"), "--no-store")
    args[args.index("--checks") + 1] = "fairness.demographic_parity"
    assert run_err(capsys, args) == f"trustaudit: error: {line}"


def _short_busy_timeout(monkeypatch, seconds: float = 0.3) -> None:
    import sqlite3

    real = sqlite3.connect

    def connect(*a, **k):
        k["timeout"] = seconds
        return real(*a, **k)

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_store_locked_when_recording_keeps_the_reports(case, capsys, monkeypatch, tmp_path):
    """Another process holds the store's write lock past the busy timeout: exit 2, one line, reports kept."""
    import json
    import sqlite3

    import audit.report
    from audit.store import HistoryStore

    store = tmp_path / "h.sqlite"
    HistoryStore(store)
    real_write = audit.report.write_reports
    holders = []

    def write_then_lock(*a, **k):  # the audit has run (in its child); the reports are written next
        written = real_write(*a, **k)
        holder = sqlite3.connect(store, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # what a writer in another process holds
        holders.append(holder)
        return written

    monkeypatch.setattr(audit.report, "write_reports", write_then_lock)
    _short_busy_timeout(monkeypatch)
    out = tmp_path / "r.json"
    args = audit_args(case, "--json", str(out), "--store", str(store))
    args[args.index("--checks") + 1] = "fairness.demographic_parity"
    line = run_err(capsys, args)
    d = json.loads(out.read_text())
    assert line == (
        f"trustaudit: error: history store {store} is locked by another process (database is locked); the audit "
        f"{d['audit_id'][:12]} (verdict {d['verdict']}) was not recorded; its reports are written"
    )
    holders[0].execute("ROLLBACK")
    holders[0].close()
    assert HistoryStore(store).count() == 0


def test_store_locked_at_the_start_is_one_line(case, capsys, monkeypatch, tmp_path):
    import sqlite3

    from audit.store import HistoryStore

    store = tmp_path / "h.sqlite"
    HistoryStore(store)
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        _short_busy_timeout(monkeypatch)
        line = run_err(capsys, audit_args(case, "--store", str(store)))
        # the wording is the store's (audit/store.py): one line naming the store and the lock
        assert line == (f"trustaudit: error: history store {store} is locked by another process "
                        "(database is locked)")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


# --- issue 12: silently accepted inputs, unbounded work ---------------------------------------


def test_three_class_target_refused(case, capsys, tmp_path):
    import pandas as pd

    df = pd.read_csv(case["test"])
    df.loc[::7, "approved"] = 2
    p = frame_csv(tmp_path, "three.csv", df)
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: target column 'approved' in data file '{p}' has 3 classes (0, 1, 2); the audit needs "
        "a binary outcome: pass --multiclass one-vs-rest (data.multiclass = \"one-vs-rest\") to audit positive "
        "label '1' against the other classes"
    )


def test_duplicate_columns_of_an_in_memory_frame_refused(case):
    import pandas as pd

    from audit.exceptions import DataError
    from audit.io import load_model
    from audit.runner import run_audit

    df = pd.read_csv(case["test"])
    twice = pd.concat([df, df[["sex"]]], axis=1)
    raw = {
           "data": {"target": "approved", "positive_label": 1, "sensitive": ["sex"]},
           "checks": ["fairness"]}
    with pytest.raises(DataError) as exc:
        run_audit(load_model(case["model"]), twice, spec=raw)
    assert str(exc.value) == "sensitive column 'sex' appears 2 times in test data"


def test_too_many_groups_refused_fast(case, capsys, tmp_path):
    """10,000 distinct values on 50,000 rows used to run past 7 minutes; now one line in well under 2 s."""
    import time

    import pandas as pd

    df = pd.read_csv(case["test"])
    big = pd.concat([df] * 34, ignore_index=True).iloc[:50_000].copy()
    big["zip"] = np.arange(50_000) % 10_000
    p = frame_csv(tmp_path, "big.csv", big)
    main(audit_args(case, "--checks", "fairness.group_metrics"))  # warm: imports and model loading paid here
    capsys.readouterr()
    t0 = time.perf_counter()
    line = run_err(capsys, with_data(case, p, "--sensitive", "zip"))
    seconds = time.perf_counter() - t0
    assert line == (
        f"trustaudit: error: sensitive column 'zip' in data file '{p}' has 10000 distinct values; the limit is 50 "
        "groups per sensitive feature: raise it with --max-groups (policy.max_groups) or cut it into quantile "
        "bins: --bin-sensitive zip=4 (data.bin_sensitive = {zip = 4})"
    )
    assert seconds < 2.0, seconds


def test_runner_is_linear_in_the_number_of_columns(case):
    """Validation and the feature frame on 100,000 extra columns: a fraction of a second, not minutes."""
    import time

    import pandas as pd

    from audit.io import load_model
    from audit.runner import build_context
    from audit.spec import spec_from_mapping

    df = pd.read_csv(case["test"]).iloc[:300]
    k = 100_000
    wide = pd.concat([df, pd.DataFrame(np.zeros((300, k), dtype=np.int8), columns=[f"x{i}" for i in range(k)])],
                     axis=1)
    spec = spec_from_mapping({"checks": ["fairness.demographic_parity"],
                              "data": {"target": "approved", "positive_label": 1,
                                       "sensitive": ["sex"]}})
    model = load_model(case["model"])
    t0 = time.perf_counter()
    ctx, inputs = build_context(spec, model, {"test": wide})
    assert time.perf_counter() - t0 < 3.0
    assert inputs["data"]["test"]["columns"] == k + df.shape[1]
    assert ctx.test.X.shape == (300, 7)


def test_an_internal_error_is_exit_3_not_1(case, capsys, monkeypatch):
    """A bug must not look like a failed check to a CI gate (exit 1 means a check failed its policy)."""
    import audit.runner

    def broken(*a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(audit.runner, "run_audit", broken)
    assert main(audit_args(case, "--no-store")) == 3
    err = capsys.readouterr().err
    assert err == ("trustaudit: internal error: KeyError: 'oops' (a bug, not a verdict; TRUSTAUDIT_DEBUG=1 shows "
                   "the traceback)\n")
    monkeypatch.setenv("TRUSTAUDIT_DEBUG", "1")
    assert main(audit_args(case, "--no-store")) == 3
    assert "Traceback" in capsys.readouterr().err
