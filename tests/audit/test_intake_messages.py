"""Loaders say what is wrong with a file: its kind, its encoding, NUL padding, the bad column."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.cli import main
from audit.exceptions import DataError, DataFileError, ModelLoadError
from audit.io import load_model, load_table, read_json, read_text, write_bytes_atomic
from tests.audit.helpers import audit_args, write_case


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_case(tmp_path_factory.mktemp("case"), n_test=400)


def run_err(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def with_data(case, data: Path) -> list[str]:
    args = audit_args(case)
    args[args.index("--data") + 1] = str(data)
    return args


def with_model(case, model: Path | str) -> list[str]:
    args = audit_args(case)
    args[args.index("--model") + 1] = str(model)
    return args


def test_directory_given_as_data_or_model(case, capsys, tmp_path):
    assert run_err(capsys, with_data(case, tmp_path)) == f"trustaudit: error: data file {tmp_path} is a directory"
    assert run_err(capsys, with_model(case, tmp_path)) == f"trustaudit: error: model file {tmp_path} is a directory"


def test_fifo_and_device_are_not_regular_files(case, capsys, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    assert run_err(capsys, with_data(case, fifo)) == (
        f"trustaudit: error: data file {fifo} is not a regular file (it is a named pipe (FIFO))")
    assert run_err(capsys, with_model(case, fifo)) == (
        f"trustaudit: error: model file {fifo} is not a regular file (it is a named pipe (FIFO))")
    assert run_err(capsys, with_data(case, Path("/dev/zero"))) == (
        "trustaudit: error: data file /dev/zero is not a regular file (it is a character device)")
    assert run_err(capsys, with_model(case, "/dev/zero")) == (
        "trustaudit: error: model file /dev/zero is not a regular file (it is a character device)")


def test_symlink_loop(tmp_path):
    # (the CLI resolves its paths first, in audit/cli.py; the loaders name the loop themselves)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(DataFileError) as exc:
        load_table(a)
    assert str(exc.value) == f"data file {a} is a symbolic link loop"
    with pytest.raises(ModelLoadError) as exc2:
        load_model(a)
    assert str(exc2.value) == f"model file {a} is a symbolic link loop"
    with pytest.raises(DataFileError, match=r"^file .* is a symbolic link loop$"):
        read_text(a)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file regardless of its mode")
def test_unreadable_files_real_permissions(case, capsys, tmp_path):
    p = tmp_path / "secret.csv"
    p.write_text("a,b\n1,2\n")
    p.chmod(0)
    assert run_err(capsys, with_data(case, p)) == f"trustaudit: error: data file {p} cannot be read: permission denied"


def test_unreadable_files_permission_denied(case, capsys, tmp_path, monkeypatch):
    """Permission errors raised by open() become one line (simulated: these tests may run as root)."""
    import builtins

    real_open = builtins.open
    data = Path(case["test"])
    model = Path(case["model"])

    def deny(file, *args, **kwargs):
        if str(file) in (str(data), str(model)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(DataFileError) as exc:
        load_table(data)
    assert str(exc.value) == f"data file {data} cannot be read: permission denied"
    with pytest.raises(ModelLoadError) as exc2:
        load_model(model)
    assert str(exc2.value) == f"model file {model} cannot be read: permission denied"


def test_utf16_csv_named_as_such(case, capsys, tmp_path):
    df = pd.read_csv(case["test"])
    for enc, label in (("utf-16", "UTF-16"), ("utf-16-le", "UTF-16"), ("utf-32", "UTF-32")):
        p = tmp_path / f"{enc}.csv"
        p.write_bytes(df.to_csv(index=False).encode(enc))
        assert run_err(capsys, with_data(case, p)) == (
            f"trustaudit: error: data file {p} is {label} encoded; save it as UTF-8"), enc
    p = tmp_path / "g.txt"
    p.write_bytes("x -> y\n".encode("utf-16"))
    with pytest.raises(DataFileError, match=r"is UTF-16 encoded; save it as UTF-8$"):
        read_text(p)


def test_utf8_bom_is_read_with_clean_names(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert list(load_table(p).columns) == ["a", "b"]


def test_nul_padding_refused_not_called_missing(case, capsys, tmp_path):
    p = tmp_path / "padded.csv"
    text = Path(case["test"]).read_bytes()
    with open(p, "wb") as f:
        f.write(text)
        f.write(b"\x00" * (8 * 1024**2))  # the report had 2 GB; the first NUL is what counts
    assert run_err(capsys, with_data(case, p)) == (
        f"trustaudit: error: data file {p} contains NUL bytes (the first at byte {len(text)}); a CSV file is text")
    q = tmp_path / "early.csv"
    q.write_bytes(b"a,b,approved\n1,2,1\n" + b"\x00" * 100)
    with pytest.raises(DataFileError, match=r"contains NUL bytes \(the first at byte 19\)"):
        load_table(q)


def test_compressed_csv_not_decompressed_by_name(tmp_path):
    import gzip

    p = tmp_path / "data.csv.gz"
    p.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(DataFileError) as exc:
        load_table(p)
    assert str(exc.value) == f"data file {p} is gzip-compressed; decompress it first (CSV or Parquet)"


def test_non_numeric_value_names_the_column(case, capsys, tmp_path):
    df = pd.read_csv(case["test"])
    df["income"] = df["income"].astype(object)
    df.loc[[5, 9], "income"] = "n/a-ish"
    p = tmp_path / "bad.csv"
    df.to_csv(p, index=False)
    assert run_err(capsys, with_data(case, p)) == (
        "trustaudit: error: column 'income' has 2 non-numeric value(s) where the model expects numbers "
        "(e.g. 'n/a-ish')")


def test_non_numeric_value_in_torch_and_onnx_inputs(tmp_path):
    from audit.model import TabularEncoder

    enc = TabularEncoder.fit(pd.DataFrame({"age": [1.0, 2.0], "sex": ["f", "m"]}))
    with pytest.raises(DataError) as exc:
        enc.transform(pd.DataFrame({"age": ["3", "old", None], "sex": ["f", "m", "f"]}))
    assert str(exc.value) == "column 'age' has 1 non-numeric value(s) where the model expects numbers (e.g. 'old')"
    # missing values are not refused: they take the column's fill
    assert enc.transform(pd.DataFrame({"age": [None, "2"], "sex": ["f", "m"]})).shape == (2, 3)

    from audit.model import _onnx_cast

    with pytest.raises(DataError, match=r"^column 'b' has 1 non-numeric value\(s\) .* \(e\.g\. 'x'\)$"):
        _onnx_cast(pd.DataFrame({"a": [1.0, 2.0], "b": ["1", "x"]}), "tensor(float)")


def test_torchscript_sigmoid_overflow_is_silent_and_exact(tmp_path):
    torch = pytest.importorskip("torch")
    from audit.io import save_torchscript

    class Huge(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 1e30

    p = tmp_path / "huge.pt"
    save_torchscript(Huge(), p, {"classes": [0, 1], "output": "logits", "feature_names": ["a"]})
    adapter = load_model(p).adapter
    X = pd.DataFrame({"a": [-1.0, 0.0, 1.0, -5.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = adapter.predict_proba(X)
    np.testing.assert_array_equal(proba[:, 1], [0.0, 0.5, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        soft = adapter.to_proba(np.array([[1e308, -1e308], [0.0, 0.0]]))
    np.testing.assert_allclose(soft, [[1.0, 0.0], [0.5, 0.5]])


def test_read_json_names_kind_and_encoding(tmp_path):
    with pytest.raises(DataFileError, match=r"^file .* is a directory$"):
        read_json(tmp_path)
    p = tmp_path / "r.json"
    p.write_bytes('{"a": 1}'.encode("utf-16"))
    with pytest.raises(DataFileError, match="is UTF-16 encoded; save it as UTF-8"):
        read_json(p)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_reports_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        p = write_bytes_atomic(tmp_path / f"r{umask:o}.json", b"{}")
        q = write_bytes_atomic(tmp_path / f"r{umask:o}.json", b"{}")  # replacing keeps the rule
    finally:
        os.umask(old)
    assert p == q
    assert (p.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".")]  # no temp file left


def test_report_written_through_cli_respects_umask(case, tmp_path):
    from tests.audit.intake_builders import run_cli

    out = tmp_path / "out.json"
    args = [*audit_args(case), "--no-store", "--json", str(out)]
    old = os.umask(0o027)
    try:
        rc, _out, err, _ = run_cli(args)
    finally:
        os.umask(old)
    assert rc in (0, 1), err
    assert (out.stat().st_mode & 0o777) == 0o640


def test_report_write_failure_is_one_line(tmp_path, monkeypatch):
    from audit import report as report_mod
    from audit._preflight import check_output_file
    from audit.exceptions import UsageError
    from audit.report import write_reports
    from audit.results import AuditReport

    monkeypatch.setitem(report_mod.RENDERERS, "json", lambda r: "{}")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError) as exc:
        write_reports(AuditReport.__new__(AuditReport), {"json": blocker / "r.json"})
    assert str(exc.value) == f"--json {blocker / 'r.json'} cannot be written: file exists"
    with pytest.raises(UsageError) as exc2:
        check_output_file("/proc/x/r.json", "--json")
    assert str(exc2.value).startswith("--json /proc/x/r.json cannot be written: ")
    with pytest.raises(UsageError, match=r"cannot be written: it is a folder; give a file path$"):
        check_output_file(tmp_path, "--json")
