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
        "families: fairness, explain, causal, privacy (got ['fairness', 'robustness.noise'])"
    )


def test_unknown_check_id_python_api(case):
    import pandas as pd

    from audit.exceptions import SpecError
    from audit.io import load_model
    from audit.runner import run_audit

    raw = {"model": {"path": "<in memory>"},
           "data": {"test": "<in memory>", "target": "approved", "positive_label": 1, "sensitive": ["sex"]},
           "checks": ["fairness.demographic_parit"]}
    with pytest.raises(SpecError) as exc:
        run_audit(raw, model=load_model(case["model"]), frames={"test": pd.read_csv(case["test"])})
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
