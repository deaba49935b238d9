"""Decompression bombs and oversized tables are refused from their metadata, in bounded memory.

Each bomb is built here, small on disk, and given to the console script in a subprocess whose own
peak RSS (``os.wait4``) must stay under 700 MB while it refuses the file with exit 2.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from audit._limits import reset_limits, set_limits
from audit.exceptions import DataFileError, ModelLoadError, UnsafeModelError
from audit.io import load_model, load_model_bytes, load_table
from tests.audit.intake_builders import (
    FEATURES3,
    audit_cli_args,
    deflate_member_stream,
    run_cli,
    skops_bytes,
    small_frame,
    write_data,
)

GiB = 1024**3
RSS_LIMIT = 700 * 1024**2


@pytest.fixture(autouse=True)
def _clean_limits():
    reset_limits()
    yield
    reset_limits()


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("data"))


def _lr_skops() -> bytes:
    df = small_frame()
    return skops_bytes(LogisticRegression().fit(df[FEATURES3], df["y"]))


def _refused(model: Path, data: Path) -> tuple[str, int]:
    rc, _out, err, rss = run_cli(audit_cli_args(model, data))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert 0 < rss < RSS_LIMIT, f"peak RSS {rss / 1024**2:.0f} MB"
    print(f"\n{model.name} + {data.name}: exit 2, peak RSS {rss / 1024**2:.0f} MB")
    return lines[0], rss


def test_skops_schema_bomb(tmp_path, data_csv):
    """schema.json inflating to 1 GiB (valid JSON: the real schema, then spaces)."""
    good = zipfile.ZipFile(io.BytesIO(_lr_skops()))
    p = tmp_path / "schema-bomb.skops"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info in good.infolist():
            if info.filename != "schema.json":
                z.writestr(info.filename, good.read(info.filename))
        deflate_member_stream(z, "schema.json", GiB, prefix=good.read("schema.json"))
    assert p.stat().st_size < 4 * 1024**2
    line, _ = _refused(p, data_csv)
    assert line == (f"trustaudit: error: model file {p} has a member 'schema.json' of {GiB} bytes uncompressed; "
                    "the limit is 67108864 (raise it with TRUSTAUDIT_LIMIT_SKOPS_SCHEMA_BYTES)")


def test_skops_huge_array_member(tmp_path, data_csv):
    """One .npy member declaring 2^28 float64 (2 GiB) zeros, deflated to a few MB."""
    good = zipfile.ZipFile(io.BytesIO(_lr_skops()))
    victim = next(n for n in good.namelist() if n.endswith(".npy"))
    n = 2**28
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    p = tmp_path / "array-bomb.skops"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for info in good.infolist():
            if info.filename != victim:
                z.writestr(info.filename, good.read(info.filename))
        deflate_member_stream(z, victim, len(header.getvalue()) + 8 * n, chunk=bytes(1 << 20),
                              prefix=header.getvalue())
    assert p.stat().st_size < 4 * 1024**2
    line, _ = _refused(p, data_csv)
    size = len(header.getvalue()) + 8 * n
    assert line == (f"trustaudit: error: model file {p} has a member {victim!r} of {size} bytes uncompressed; "
                    "the limit is 2147483648 (raise it with TRUSTAUDIT_LIMIT_ZIP_MEMBER_BYTES)")


def test_zip_bomb_1gib_as_model_and_as_data(tmp_path, data_csv):
    p = tmp_path / "bomb.zip"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        deflate_member_stream(z, "payload.bin", GiB, chunk=bytes(1 << 20))
    assert p.stat().st_size < 2 * 1024**2
    line, _ = _refused(p, data_csv)
    assert line.startswith(f"trustaudit: error: model file {p} has a member 'payload.bin' compressed ")
    assert line.endswith(":1 (a decompression bomb?); the limit is 200:1 (raise it with TRUSTAUDIT_LIMIT_ZIP_RATIO)")
    # as the data file: a zip is not decompressed, whatever its name
    csv_named = tmp_path / "bomb.csv"
    csv_named.write_bytes(p.read_bytes())
    model = tmp_path / "m.skops"
    model.write_bytes(_lr_skops())
    line, _ = _refused(model, csv_named)
    assert line == f"trustaudit: error: data file {csv_named} is zip-compressed; decompress it first (CSV or Parquet)"


def test_torchscript_members_bounded(tmp_path):
    torch = pytest.importorskip("torch")
    from audit.io import save_torchscript

    p = tmp_path / "m.pt"
    save_torchscript(torch.nn.Linear(3, 1), p, {"classes": [0, 1], "output": "logits", "feature_names": FEATURES3})
    assert load_model(p).format == "torchscript"
    src = zipfile.ZipFile(p)
    q = tmp_path / "bomb.pt"
    with zipfile.ZipFile(q, "w") as z:
        for info in src.infolist():
            z.writestr(info, src.read(info.filename))
        z.compression = zipfile.ZIP_DEFLATED
        deflate_member_stream(z, f"{src.namelist()[0].split('/')[0]}/extra.bin", 64 * 1024**2, chunk=bytes(1 << 20))
    with pytest.raises(ModelLoadError, match=r"has a member '.*/extra.bin' compressed \d+:1 \(a decompression bomb\?\)"):
        load_model(q)


def test_zip_with_too_many_entries(tmp_path):
    set_limits({"zip_members": 50})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(60):
            z.writestr(f"m{i}.npy", b"x")
        z.writestr("schema.json", b"{}")
    with pytest.raises(ModelLoadError) as exc:
        load_model_bytes(buf.getvalue(), name="many.skops")
    assert str(exc.value) == ("model file many.skops is a zip archive of 61 entries; the limit is 50 "
                              "(raise it with TRUSTAUDIT_LIMIT_ZIP_MEMBERS)")


def _zeros_parquet(path: Path, rows_per_group: int, groups: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    zeros = pa.array(np.zeros(rows_per_group, dtype=np.int64))  # calloc'd: never touched in RAM
    table = pa.table({"f0": zeros, "f1": zeros, "f2": zeros})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as w:
        for _ in range(groups):
            w.write_table(table, row_group_size=rows_per_group)


def test_parquet_bomb_refused_from_footer(tmp_path, data_csv):
    """A Parquet file of a few hundred KB declaring 200 M rows x 3 columns (4.8 GB as int64)."""
    p = tmp_path / "bomb.parquet"
    _zeros_parquet(p, 20_000_000, 10)
    assert p.stat().st_size < 4 * 1024**2
    model = tmp_path / "m.skops"
    model.write_bytes(_lr_skops())
    line, _ = _refused(model, p)
    assert line == ("trustaudit: error: data file " f"{p} has more than 20000000 rows "
                    "(raise it with TRUSTAUDIT_LIMIT_TABLE_ROWS)")


def test_parquet_dictionary_expansion_counted_while_reading(tmp_path):
    """A footer that looks small (dictionary pages) but decodes large: caught batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "dict.parquet"
    n = 20_000
    long = "x" * 10_000
    pq.write_table(pa.table({"s": pa.array([long] * n), "y": np.zeros(n, dtype=np.int64)}), p,
                   use_dictionary=True, compression="zstd")
    assert p.stat().st_size < 1024**2
    assert len(load_table(p)) == n
    set_limits({"table_decoded_bytes": "50M"})
    with pytest.raises(DataFileError) as exc:
        load_table(p)
    assert str(exc.value) == (f"data file {p} expands to more than 52428800 bytes when decoded; the limit is "
                              "52428800 (raise it with TRUSTAUDIT_LIMIT_TABLE_DECODED_BYTES)")


def test_parquet_declared_size_and_cells(tmp_path):
    p = tmp_path / "t.parquet"
    pd.DataFrame({"a": np.arange(1000), "b": np.arange(1000.0)}).to_parquet(p)
    set_limits({"table_cells": 1500})
    with pytest.raises(DataFileError, match=r"has 2000 cells \(rows x columns\); the limit is 1500"):
        load_table(p)
    reset_limits()
    set_limits({"table_decoded_bytes": 100})
    with pytest.raises(DataFileError, match=r"expands to \d+ bytes when decoded; the limit is 100 "):
        load_table(p)


def test_onnx_external_data_refused(tmp_path, monkeypatch, data_csv):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    w = numpy_helper.from_array(np.zeros((3, 2), dtype=np.float32), name="W")
    set_external_data(w, location="base_report.json", offset=0, length=24)
    w.ClearField("raw_data")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="feature_names", value='["f0", "f1", "f2"]')
    data = model.SerializeToString()
    # the hazard (as reported): onnxruntime resolves the location against the working directory
    (tmp_path / "base_report.json").write_bytes(b'{"token": "s3cr3t-abc"}\n')
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "ext.onnx"
    p.write_bytes(data)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(p)
    assert str(exc.value) == (
        f"model file {p} refers to external data ('base_report.json' for tensor 'W'); refused: "
        "a model must hold all its weights (save it without external data)")
    # in a subgraph too (an If node's branch holding a Constant with external data)
    c = numpy_helper.from_array(np.zeros(1, dtype=np.float32), name="C")
    set_external_data(c, location="../../etc/passwd")
    c.ClearField("raw_data")
    branch = helper.make_graph([helper.make_node("Constant", [], ["k"], value=c)], "b", [],
                               [helper.make_tensor_value_info("k", TensorProto.FLOAT, [1])])
    cond = helper.make_graph(
        [helper.make_node("If", ["flag"], ["k"], then_branch=branch, else_branch=branch)], "g2",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("k", TensorProto.FLOAT, [1])])
    m2 = helper.make_model(cond, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsafeModelError, match=r"external data \('../../etc/passwd' for tensor 'C'\)"):
        load_model_bytes(m2.SerializeToString(), name="sub.onnx")
    assert onnx.TensorProto.EXTERNAL == 1
    rc, _out, err, _ = run_cli(audit_cli_args(p, data_csv))
    assert rc == 2 and err.strip() == f"trustaudit: error: {exc.value}"


def test_duplicate_csv_columns_found_before_pandas_renames_them(tmp_path, data_csv):
    df = small_frame()
    text = df.to_csv(index=False).replace("sex,y", "sex,sex", 1)
    p = tmp_path / "dup.csv"
    p.write_text(text)
    model = tmp_path / "m.skops"
    model.write_bytes(_lr_skops())
    rc, _out, err, _ = run_cli(audit_cli_args(model, p))
    assert rc == 2
    assert err.strip() == f"trustaudit: error: data file {p} has duplicate column names: sex"
    q = tmp_path / "dup-space.csv"
    q.write_text("a, b,b ,c\n1,2,3,4\n")
    with pytest.raises(DataFileError, match=r"has duplicate column names: b$"):
        load_table(q)


def test_wide_csv_refused_quickly_and_10k_columns_fast(tmp_path):
    wide = tmp_path / "wide.csv"
    n = 1_000_000
    with open(wide, "w") as f:
        f.write(",".join(f"c{i}" for i in range(n)) + "\n")
        f.write(",".join("1" for _ in range(n)) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(DataFileError) as exc:
        load_table(wide)
    assert time.perf_counter() - t0 < 5
    assert str(exc.value) == (f"data file {wide} has 1000000 columns; the limit is 10000 "
                              "(raise it with TRUSTAUDIT_LIMIT_TABLE_COLUMNS)")
    ok = tmp_path / "ten-k.csv"
    pd.DataFrame(np.ones((5, 10_000)), columns=[f"c{i}" for i in range(10_000)]).to_csv(ok, index=False)
    t0 = time.perf_counter()
    assert load_table(ok).shape == (5, 10_000)
    assert time.perf_counter() - t0 < 5
    dup = tmp_path / "ten-k-dup.csv"
    dup.write_text(",".join([f"c{i}" for i in range(9_999)] + ["c5"]) + "\n" + ",".join(["1"] * 10_000) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(DataFileError, match=r"has duplicate column names: c5$"):
        load_table(dup)
    assert time.perf_counter() - t0 < 2


def test_csv_rows_bounded(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("a,b\n" + "1,2\n" * 101)
    set_limits({"table_rows": 100})
    with pytest.raises(DataFileError) as exc:
        load_table(p)
    assert str(exc.value) == f"data file {p} has more than 100 rows (raise it with TRUSTAUDIT_LIMIT_TABLE_ROWS)"
    set_limits({"table_rows": 1000, "table_cells": 150})
    with pytest.raises(DataFileError, match=r"has more than 150 cells"):
        load_table(p)


def test_limits_from_environment_and_flag_syntax(monkeypatch):
    from audit._limits import current_limits, parse_limit_assignment
    from audit.exceptions import UsageError

    monkeypatch.setenv("TRUSTAUDIT_LIMIT_TABLE_COLUMNS", "2M")
    assert current_limits().table_columns == 2_000_000
    assert parse_limit_assignment("zip_total_bytes=3G") == ("zip_total_bytes", 3 * 1024**3)
    with pytest.raises(UsageError, match=r"^unknown limit 'columns'; allowed: model_bytes, "):
        parse_limit_assignment("columns=5")
    with pytest.raises(UsageError, match=r"^limit table_rows must be a positive integer, got '-1'$"):
        parse_limit_assignment("table_rows=-1")


def test_byte_limits_from_the_environment_use_binary_units(monkeypatch):
    from audit._limits import current_limits

    monkeypatch.setenv("TRUSTAUDIT_LIMIT_TABLE_DECODED_BYTES", "100M")
    assert current_limits().table_decoded_bytes == 100 * 1024**2
