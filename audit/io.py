"""The only module that opens files: safe model loading, dataset loading, atomic writes.

Model formats are recognised by content, never by name:

* **skops** (a zip with ``schema.json``): loaded with only trusted types. skops' defaults plus
  :data:`DEFAULT_TRUSTED_TYPES` (scikit-learn's own fitted-state containers, reviewed below);
  anything else is refused with the types named and how to trust them explicitly.
* **ONNX** (protobuf): run by onnxruntime.
* **TorchScript** (a zip with ``code/`` and ``constants.pkl``), with the trustaudit metadata block.
* **pickle / joblib**: refused unless the caller passes ``allow_unsafe_pickle=True`` (CLI
  ``--unsafe-pickle``); loading one then warns, because unpickling runs arbitrary code.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from audit.exceptions import DataFileError, ModelLoadError, UnsafeModelError
from audit.model import ModelAdapter, OnnxAdapter, SklearnAdapter, TorchAdapter

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "LoadedModel",
    "detect_model_format",
    "load_model",
    "load_model_bytes",
    "load_table",
    "read_json",
    "read_text",
    "save_skops",
    "save_torchscript",
    "sha256_bytes",
    "sha256_file",
    "write_bytes_atomic",
    "write_text_atomic",
]

#: Types trusted beyond skops' defaults, deliberately. Each is a container of fitted numeric
#: state that scikit-learn itself defines and that skops reconstructs from arrays, without
#: calling user code: numpy dtypes, decision trees' node arrays, HistGradientBoosting's
#: per-tree predictors, and the loss/link objects HistGradientBoosting and linear models keep.
DEFAULT_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn.utils._bunch.Bunch",
)

MAX_MODEL_BYTES = 2 * 1024**3
MAX_DATA_BYTES = 4 * 1024**3
TORCH_METADATA_NAME = "trustaudit.json"


# --- hashing and atomic writes --------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"file not found: {p}")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFileError(f"{p} is not valid JSON: {exc}") from None


def read_text(path: str | Path, *, max_bytes: int = 16 * 1024**2) -> str:
    """Read a small UTF-8 text file (a causal graph, a config). Errors are one line, naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"file not found: {p}")
    size = p.stat().st_size
    if size > max_bytes:
        raise DataFileError(f"{p} is {size} bytes; the limit is {max_bytes}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataFileError(f"{p} is not UTF-8 text") from None


# --- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    adapter: ModelAdapter
    format: str
    sha256: str
    size_bytes: int
    path: str
    trusted_types: tuple[str, ...] = ()

    def info(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "kind": self.adapter.kind,
            "classes": [c.item() if hasattr(c, "item") else c for c in self.adapter.classes_],
            "feature_names": list(self.adapter.feature_names or []),
            "type": _model_type_name(self.adapter),
            "extra_trusted_types": list(self.trusted_types),
        }


def _model_type_name(adapter: ModelAdapter) -> str:
    est = getattr(adapter, "estimator", None)
    if est is not None:
        steps = getattr(est, "steps", None)
        if steps:
            return "Pipeline(" + ", ".join(type(s).__name__ for _, s in steps) + ")"
        return type(est).__name__
    return adapter.kind


def detect_model_format(data: bytes) -> str:
    """Recognise a model file by its content: skops, torchscript, onnx, pickle or unknown."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(_io.BytesIO(data)) as z:
                names = z.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if "schema.json" in names:
            return "skops"
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "unknown"
    if data[:1] == b"\x80" and len(data) > 1 and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if _compressed_pickle(data):
        return "pickle"  # joblib-compressed pickle (zlib, gzip, bz2, lzma, xz)
    if _looks_like_onnx(data):
        return "onnx"
    return "unknown"


def _compressed_pickle(data: bytes) -> bool:
    """Does ``data`` decompress (zlib/gzip/bz2/lzma/xz, as joblib writes) into a pickle?"""
    import bz2
    import lzma
    import zlib

    head = data[: 1 << 16]
    candidates = []
    if len(head) > 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        candidates.append(lambda: zlib.decompressobj().decompress(head, 64))
    if head[:2] == b"\x1f\x8b":
        candidates.append(lambda: zlib.decompressobj(31).decompress(head, 64))
    if head[:3] == b"BZh":
        candidates.append(lambda: bz2.BZ2Decompressor().decompress(head, 64))
    if head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"]\x00\x00":
        candidates.append(lambda: lzma.LZMADecompressor().decompress(head, 64))
    for fn in candidates:
        try:
            out = fn()
        except (zlib.error, OSError, lzma.LZMAError, EOFError, ValueError):
            continue
        if out[:1] == b"\x80":
            return True
    return False


def _looks_like_onnx(data: bytes) -> bool:
    try:
        import onnx
    except ImportError:  # pragma: no cover
        return False
    try:
        m = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf raises several types
        return False
    return len(m.graph.node) > 0


def load_model(
    path: str | Path,
    *,
    format: str = "auto",
    trusted_types: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
    feature_names: Sequence[str] | None = None,
) -> LoadedModel:
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"model file not found: {p}")
    size = p.stat().st_size
    if size == 0:
        raise ModelLoadError(f"model file {p} is empty")
    if size > MAX_MODEL_BYTES:
        raise ModelLoadError(f"model file {p} is {size} bytes; the limit is {MAX_MODEL_BYTES}")
    data = p.read_bytes()
    return load_model_bytes(
        data,
        name=str(p),
        format=format,
        trusted_types=trusted_types,
        allow_unsafe_pickle=allow_unsafe_pickle,
        feature_names=feature_names,
    )


def load_model_bytes(
    data: bytes,
    *,
    name: str = "<upload>",
    format: str = "auto",
    trusted_types: Sequence[str] = (),
    allow_unsafe_pickle: bool = False,
    feature_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Load a model from bytes (uploads use this: the name is only shown, never opened)."""
    detected = detect_model_format(data)
    fmt = detected if format == "auto" else format
    if format != "auto" and detected not in (format, "unknown"):
        raise ModelLoadError(
            f"model file {name} was declared as {format} but its content is {detected}"
        )
    if fmt == "pickle":
        if not allow_unsafe_pickle:
            raise UnsafeModelError(
                f"model file {name} is a pickle/joblib file: loading it can run arbitrary code; "
                "refused. Save the model with skops (or ONNX/TorchScript), or pass --unsafe-pickle "
                "only if you trust its source"
            )
        warnings.warn(
            f"loading pickle model {name} because the unsafe flag was given: this runs any "
            "code the file contains",
            UserWarning,
            stacklevel=2,
        )
        import joblib

        try:
            est = joblib.load(_io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - anything may come out of a pickle
            raise ModelLoadError(f"model file {name} could not be unpickled: {exc}") from None
        adapter: ModelAdapter = SklearnAdapter(est, feature_names)
    elif fmt == "skops":
        adapter = SklearnAdapter(_load_skops(data, name, trusted_types), feature_names)
    elif fmt == "onnx":
        adapter = OnnxAdapter.from_bytes(data, feature_names)
    elif fmt == "torchscript":
        adapter = _load_torchscript(data, name)
    else:
        raise ModelLoadError(
            f"model file {name} is not a recognised format; allowed: skops, ONNX, TorchScript "
            "(pickle/joblib only with --unsafe-pickle)"
        )
    return LoadedModel(
        adapter=adapter,
        format=fmt,
        sha256=sha256_bytes(data),
        size_bytes=len(data),
        path=name,
        trusted_types=tuple(trusted_types),
    )


def _load_skops(data: bytes, name: str, trusted_types: Sequence[str]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"model file {name} is not a valid skops file: {exc}") from None
    allowed = set(DEFAULT_TRUSTED_TYPES) | set(trusted_types)
    refused = sorted(t for t in untrusted if t not in allowed)
    if refused:
        raise UnsafeModelError(
            f"model file {name} contains types that are not trusted: {', '.join(refused)}; "
            "review them and trust each explicitly with --trust TYPE (or model.trusted_types)"
        )
    try:
        return sio.loads(data, trusted=sorted(set(untrusted)))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"model file {name} could not be loaded by skops: {exc}") from None


def _load_torchscript(data: bytes, name: str) -> TorchAdapter:
    try:
        import torch
    except ImportError:  # pragma: no cover
        from audit.exceptions import MissingExtraError

        raise MissingExtraError("TorchScript models need torch: pip install torch==2.13.0") from None
    extra = {TORCH_METADATA_NAME: ""}
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.export, but it is the safe, widely
            # produced archive format we accept; the warning is not the user's concern here.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(_io.BytesIO(data), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"model file {name} is not a loadable TorchScript archive: {exc}") from None
    module.eval()
    raw = extra.get(TORCH_METADATA_NAME) or ""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw:
        raise ModelLoadError(
            f"TorchScript model {name} has no {TORCH_METADATA_NAME} metadata (feature names, "
            "classes, encoder); save it with audit.io.save_torchscript"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"TorchScript model {name} has invalid metadata JSON: {exc}") from None
    return TorchAdapter(module, meta)


def save_torchscript(module: Any, path: str | Path, metadata: Mapping[str, Any]) -> Path:
    """Script/trace ``module`` if needed and save it with the metadata block, atomically."""
    import torch

    buf = _io.BytesIO()
    meta = {"format": "trustaudit-torch/1", **dict(metadata)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if not isinstance(module, torch.jit.ScriptModule):
            module = torch.jit.script(module)
        torch.jit.save(module, buf, _extra_files={TORCH_METADATA_NAME: json.dumps(meta)})
    return write_bytes_atomic(path, buf.getvalue())


def save_skops(estimator: Any, path: str | Path) -> Path:
    import skops.io as sio

    return write_bytes_atomic(path, sio.dumps(estimator))


# --- data -----------------------------------------------------------------------------------


def load_table(
    path: str | Path, *, na_values: Sequence[str] = ("?",), max_bytes: int = MAX_DATA_BYTES
) -> pd.DataFrame:
    """Read a CSV or Parquet file (recognised by content). Errors are one line, naming the file."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"data file not found: {p}")
    size = p.stat().st_size
    if size == 0:
        raise DataFileError(f"data file {p} is empty")
    if size > max_bytes:
        raise DataFileError(f"data file {p} is {size} bytes; the limit is {max_bytes}")
    with open(p, "rb") as f:
        head = f.read(4096)
    return read_table_bytes_head(p, head, na_values)


def read_table_bytes_head(p: Path, head: bytes, na_values: Sequence[str]) -> pd.DataFrame:
    if head[:4] == b"PAR1":
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # noqa: BLE001
            raise DataFileError(f"data file {p} could not be read as Parquet: {exc}") from None
    else:
        df = _read_csv(p, head, na_values)
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataFileError(f"data file {p} has no rows")
    df.columns = [str(c).strip() for c in df.columns]
    dup = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dup:
        raise DataFileError(f"data file {p} has duplicate column names: {', '.join(dup)}")
    return df


def _read_csv(p: Path, head: bytes, na_values: Sequence[str]) -> pd.DataFrame:
    if b"\x00" in head:
        raise DataFileError(f"data file {p} is not a CSV or Parquet file (binary content)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a cut multi-byte character at the end of the head is fine
        if exc.start < len(head) - 4:
            raise DataFileError(f"data file {p} is not UTF-8 text (CSV) or Parquet") from None
    try:
        df = pd.read_csv(p, na_values=list(na_values), skipinitialspace=True, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {p} is empty") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise DataFileError(f"data file {p} could not be parsed as CSV: {reason}") from None
    except UnicodeDecodeError:
        raise DataFileError(f"data file {p} is not UTF-8 text (CSV) or Parquet") from None
    if df.shape[1] == 1 and df.shape[0] > 0 and not _plausible_single_column(df):
        raise DataFileError(f"data file {p} could not be parsed as CSV: found a single column")
    return df


def _plausible_single_column(df: pd.DataFrame) -> bool:
    name = str(df.columns[0])
    return len(name) < 200 and not any(ch in name for ch in "\t;|")
