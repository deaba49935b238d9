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

import codecs
import csv
import errno
import hashlib
import io as _io
import json
import os
import stat
import struct
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from audit._limits import DEFAULT_LIMITS, Limits, current_limits, limit_hint
from audit.exceptions import DataFileError, ModelLoadError, TrustAuditError, UnsafeModelError
from audit.model import ModelAdapter, OnnxAdapter, SklearnAdapter, TorchAdapter

__all__ = [
    "DEFAULT_TRUSTED_TYPES",
    "LoadedModel",
    "check_zip_bounds",
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
#: The compiled tree code trusts its node arrays, so every tree is validated after loading and
#: before any prediction (:func:`audit._treecheck.validate_trees`): indices out of range, cycles
#: and inconsistent shapes are refused.
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

MAX_MODEL_BYTES = DEFAULT_LIMITS.model_bytes
MAX_DATA_BYTES = DEFAULT_LIMITS.data_bytes
TORCH_METADATA_NAME = "trustaudit.json"

# one-line messages (tests compare them verbatim); {what} is "model file", "data file", "file"
MSG_NOT_FOUND = "{what} not found: {path}"
MSG_IS_DIRECTORY = "{what} {path} is a directory"
MSG_NOT_REGULAR = "{what} {path} is not a regular file (it is a {kind})"
MSG_SYMLINK_LOOP = "{what} {path} is a symbolic link loop"
MSG_PERMISSION = "{what} {path} cannot be read: permission denied"
MSG_OS_ERROR = "{what} {path} cannot be read: {reason}"
MSG_UTF16 = "{what} {path} is {encoding} encoded; save it as UTF-8"
MSG_NUL = "data file {path} contains NUL bytes (the first at byte {offset}); a CSV file is text"
MSG_COMPRESSED = "data file {path} is {kind}-compressed; decompress it first (CSV or Parquet)"
MSG_TOO_MANY_COLUMNS = "data file {path} has {n} columns; the limit is {limit} ({hint})"
MSG_TOO_MANY_ROWS = "data file {path} has more than {limit} rows ({hint})"
MSG_TOO_MANY_CELLS = "data file {path} has {n} cells (rows x columns); the limit is {limit} ({hint})"
MSG_DUPLICATE_COLUMNS = "data file {path} has duplicate column names: {names}"
MSG_HEADER_TOO_LONG = "data file {path} has a header line longer than {limit} bytes"
MSG_PARQUET_TOO_LARGE = "data file {path} expands to {n} bytes when decoded; the limit is {limit} ({hint})"
MSG_ZIP_TOO_MANY = "{what} {name} is a zip archive of {n} entries; the limit is {limit} ({hint})"
MSG_ZIP_MEMBER = "{what} {name} has a member {member!r} of {n} bytes uncompressed; the limit is {limit} ({hint})"
MSG_ZIP_TOTAL = "{what} {name} expands to {n} bytes uncompressed; the limit is {limit} ({hint})"
MSG_ZIP_RATIO = ("{what} {name} has a member {member!r} compressed {ratio:.0f}:1 (a decompression bomb?); "
                 "the limit is {limit}:1 ({hint})")
MSG_ZIP_BROKEN = "{what} {name} is a damaged zip archive: {reason}"
MSG_ONNX_EXTERNAL = ("model file {name} refers to external data ({location!r} for tensor {tensor!r}); refused: "
                     "a model must hold all its weights (save it without external data)")

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)
_HEADER_MAX_BYTES = 64 * 1024**2


# --- hashing and atomic writes --------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    """The process umask, read without changing it (thread-safe on Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    old = os.umask(0o022)  # pragma: no cover
    os.umask(old)  # pragma: no cover
    return old  # pragma: no cover


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then rename over the target.

    The file gets the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), not
    the 0o600 of the temporary file: a report is as readable as the user's umask says.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
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


def _reason(exc: OSError) -> str:
    from audit._preflight import os_reason

    return os_reason(exc)


def _os_error(exc: OSError, what: str, path: Path, cls: type[TrustAuditError]) -> TrustAuditError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return cls(MSG_NOT_FOUND.format(what=what, path=path))
    if isinstance(exc, IsADirectoryError):
        return cls(MSG_IS_DIRECTORY.format(what=what, path=path))
    if isinstance(exc, PermissionError):
        return cls(MSG_PERMISSION.format(what=what, path=path))
    if exc.errno == errno.ELOOP:
        return cls(MSG_SYMLINK_LOOP.format(what=what, path=path))
    return cls(MSG_OS_ERROR.format(what=what, path=path, reason=_reason(exc)))


def _stat_input(path: Path, what: str, cls: type[TrustAuditError]) -> os.stat_result:
    """stat a file to read: a directory, a FIFO, a device or a link loop is named as such."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _os_error(exc, what, path, cls) from None
    if stat.S_ISDIR(st.st_mode):
        raise cls(MSG_IS_DIRECTORY.format(what=what, path=path))
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _SPECIAL_KINDS if test(st.st_mode)), "special file")
        raise cls(MSG_NOT_REGULAR.format(what=what, path=path, kind=kind))
    return st


def _read_file(path: Path, what: str, cls: type[TrustAuditError], limit: int, hint: str = "") -> bytes:
    """Read a whole regular file of at most ``limit`` bytes (checked again on the open file)."""
    st = _stat_input(path, what, cls)
    if st.st_size > limit:
        raise cls(f"{what} {path} is {st.st_size} bytes; the limit is {limit}" + (f" ({hint})" if hint else ""))
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise cls(MSG_NOT_REGULAR.format(what=what, path=path, kind="special file"))
            data = f.read(limit + 1)
    except OSError as exc:
        raise _os_error(exc, what, path, cls) from None
    if len(data) > limit:
        raise cls(f"{what} {path} is more than {limit} bytes; the limit is {limit}" + (f" ({hint})" if hint else ""))
    return data


def _text_encoding_problem(head: bytes) -> str | None:
    """'UTF-16' / 'UTF-32' when the bytes are that encoding (BOM, or ASCII text with NUL halves)."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "UTF-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16"
    sample = head[:4096]
    if len(sample) >= 8:
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) >= 0.9 * len(odd) and even.count(0) == 0:
            return "UTF-16"
        if even.count(0) >= 0.9 * len(even) and odd.count(0) == 0:
            return "UTF-16"
    return None


def _decode_text(data: bytes, what: str, path: Path) -> str:
    enc = _text_encoding_problem(data)
    if enc:
        raise DataFileError(MSG_UTF16.format(what=what, path=path, encoding=enc))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataFileError(f"{path} is not UTF-8 text") from None


def read_json(path: str | Path, *, max_bytes: int = 256 * 1024**2) -> Any:
    p = Path(path)
    text = _decode_text(_read_file(p, "file", DataFileError, max_bytes), "file", p)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataFileError(f"{p} is not valid JSON: {' '.join(str(exc).split())}") from None


def read_text(path: str | Path, *, max_bytes: int = 16 * 1024**2) -> str:
    """Read a small UTF-8 text file (a causal graph, a config). Errors are one line, naming the file."""
    p = Path(path)
    data = _read_file(p, "file", DataFileError, max_bytes)
    if b"\x00" in data and not _text_encoding_problem(data):
        raise DataFileError(f"{p} is not UTF-8 text (it contains NUL bytes)")
    return _decode_text(data, "file", p)


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


def _zip_directory(data: bytes) -> tuple[int, int]:
    """(entries, central directory bytes) from a zip's end record (zip64 too), before parsing it."""
    tail_start = max(0, len(data) - (65535 + 22))
    pos = data.rfind(b"PK\x05\x06", tail_start)
    if pos < 0 or pos + 22 > len(data):
        raise zipfile.BadZipFile("no end-of-directory record")
    (entries,) = struct.unpack("<H", data[pos + 10: pos + 12])
    (cd_size,) = struct.unpack("<I", data[pos + 12: pos + 16])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        loc = pos - 20
        if loc < 0 or data[loc: loc + 4] != b"PK\x06\x07":
            raise zipfile.BadZipFile("a zip64 archive without its locator")
        (rec,) = struct.unpack("<Q", data[loc + 8: loc + 16])
        if rec + 56 > len(data) or data[rec: rec + 4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("a zip64 archive without its end record")
        entries, cd_size = struct.unpack("<QQ", data[rec + 32: rec + 48])
    return int(entries), int(cd_size)


def check_zip_bounds(data: bytes, name: str, *, what: str = "model file", limits: Limits | None = None,
                     member_limits: Mapping[str, int] | None = None) -> zipfile.ZipFile:
    """Open a zip only after bounding it: entries, each member's and the total uncompressed size
    (as the central directory declares them; Python's zipfile never inflates past a declared size)
    and each large member's compression ratio. Returns the open archive."""
    lim = limits or current_limits()
    try:
        entries, cd_size = _zip_directory(data)
    except (zipfile.BadZipFile, struct.error) as exc:
        raise ModelLoadError(MSG_ZIP_BROKEN.format(what=what, name=name, reason=exc)) from None
    # a central directory entry takes at least 46 bytes: a huge directory is many entries
    n = max(entries, cd_size // 512)
    if n > lim.zip_members:
        raise ModelLoadError(MSG_ZIP_TOO_MANY.format(what=what, name=name, n=n, limit=lim.zip_members,
                                                     hint=limit_hint("zip_members")))
    try:
        z = zipfile.ZipFile(_io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, struct.error, NotImplementedError) as exc:
        raise ModelLoadError(MSG_ZIP_BROKEN.format(what=what, name=name, reason=exc)) from None
    infos = z.infolist()
    if len(infos) > lim.zip_members:
        raise ModelLoadError(MSG_ZIP_TOO_MANY.format(what=what, name=name, n=len(infos), limit=lim.zip_members,
                                                     hint=limit_hint("zip_members")))
    total = 0
    for info in infos:
        size = info.file_size
        cap = lim.zip_member_bytes
        special = (member_limits or {}).get(info.filename)
        if special is not None and special < cap:
            cap = special
        if size > cap:
            hint = limit_hint("skops_schema_bytes" if special is not None and special == cap
                              else "zip_member_bytes")
            raise ModelLoadError(MSG_ZIP_MEMBER.format(what=what, name=name, member=info.filename, n=size,
                                                       limit=cap, hint=hint))
        total += size
        if total > lim.zip_total_bytes:
            raise ModelLoadError(MSG_ZIP_TOTAL.format(what=what, name=name, n=f"more than {lim.zip_total_bytes}",
                                                      limit=lim.zip_total_bytes, hint=limit_hint("zip_total_bytes")))
        if size > 1024**2 and info.compress_type != zipfile.ZIP_STORED:
            ratio = size / max(info.compress_size, 1)
            if ratio > lim.zip_ratio:
                raise ModelLoadError(MSG_ZIP_RATIO.format(what=what, name=name, member=info.filename, ratio=ratio,
                                                          limit=lim.zip_ratio, hint=limit_hint("zip_ratio")))
    return z


def detect_model_format(data: bytes) -> str:
    """Recognise a model file by its content: skops, torchscript, onnx, pickle or unknown.

    A zip archive is bounded (:func:`check_zip_bounds`) before its directory is parsed; one
    over the bounds is "unknown" here (:func:`load_model_bytes` says why it is refused).
    """
    try:
        return _detect(data, "<model>")
    except ModelLoadError:
        return "unknown"


def _detect(data: bytes, name: str) -> str:
    if data[:4] == b"PK\x03\x04":
        with check_zip_bounds(data, name, member_limits={"schema.json": current_limits().skops_schema_bytes}) as z:
            names = z.namelist()
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
    limit = current_limits().model_bytes
    data = _read_file(p, "model file", ModelLoadError, limit, limit_hint("model_bytes"))
    if not data:
        raise ModelLoadError(f"model file {p} is empty")
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
    if len(data) > current_limits().model_bytes:
        raise ModelLoadError(f"model file {name} is {len(data)} bytes; the limit is {current_limits().model_bytes} "
                             f"({limit_hint('model_bytes')})")
    detected = _detect(data, name)
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
        _validate_estimator_trees(est, name)
        adapter: ModelAdapter = SklearnAdapter(est, feature_names)
    elif fmt == "skops":
        est = _load_skops(data, name, trusted_types)
        _validate_estimator_trees(est, name)
        adapter = SklearnAdapter(est, feature_names)
    elif fmt == "onnx":
        _refuse_onnx_external_data(data, name)
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


def _validate_estimator_trees(est: Any, name: str) -> None:
    from audit._treecheck import validate_trees

    validate_trees(est, name)


def _onnx_tensors(model: Any) -> Any:
    """Every TensorProto of an ONNX model: initializers, Constant/attribute tensors, subgraphs, functions."""
    graphs = [model.graph]
    nodes_lists = [list(f.node) for f in model.functions]
    while graphs or nodes_lists:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for sp in g.sparse_initializer:
                yield sp.values
                yield sp.indices
            nodes_lists.append(list(g.node))
            continue
        for node in nodes_lists.pop():
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("sparse_tensor"):
                    yield attr.sparse_tensor.values
                    yield attr.sparse_tensor.indices
                for sp in attr.sparse_tensors:
                    yield sp.values
                    yield sp.indices
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)


def _refuse_onnx_external_data(data: bytes, name: str) -> None:
    """onnxruntime resolves external data against the working directory: refuse any reference."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelLoadError(f"model file {name} is not a valid ONNX model: {' '.join(str(exc).split())[:200]}") from None
    for t in _onnx_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            raise UnsafeModelError(MSG_ONNX_EXTERNAL.format(name=name, location=location, tensor=t.name))


def _load_skops(data: bytes, name: str, trusted_types: Sequence[str]) -> Any:
    from audit._compat.skops import import_skops_io

    sio = import_skops_io()

    check_zip_bounds(data, name, member_limits={"schema.json": current_limits().skops_schema_bytes}).close()

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
    check_zip_bounds(data, name).close()
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
    from audit._compat.skops import import_skops_io

    sio = import_skops_io()

    return write_bytes_atomic(path, sio.dumps(estimator))


# --- data -----------------------------------------------------------------------------------

_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


def load_table(
    path: str | Path, *, na_values: Sequence[str] = ("?",), max_bytes: int | None = None
) -> pd.DataFrame:
    """Read a CSV or Parquet file (recognised by content). Errors are one line, naming the file.

    Bounded before reading (:mod:`audit._limits`): bytes on disk; a CSV's columns from its header
    line and its rows while parsing; a Parquet file's rows, columns, cells and uncompressed size
    from its footer, then the decoded size batch by batch.
    """
    p = Path(path)
    lim = current_limits()
    limit = lim.data_bytes if max_bytes is None else max_bytes
    st = _stat_input(p, "data file", DataFileError)
    if st.st_size == 0:
        raise DataFileError(f"data file {p} is empty")
    if st.st_size > limit:
        raise DataFileError(f"data file {p} is {st.st_size} bytes; the limit is {limit}")
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise _os_error(exc, "data file", p, DataFileError) from None
    return read_table_bytes_head(p, head, na_values)


def read_table_bytes_head(p: Path, head: bytes, na_values: Sequence[str]) -> pd.DataFrame:
    lim = current_limits()
    if head[:4] == b"PAR1":
        df = _read_parquet(p, lim)
    else:
        df = _read_csv(p, head, na_values, lim)
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise DataFileError(f"data file {p} has no rows")
    df.columns = [str(c).strip() for c in df.columns]
    _refuse_duplicates(p, list(df.columns))
    return df


def _refuse_duplicates(p: Path, names: Sequence[str]) -> None:
    counts = Counter(names)
    dup = sorted(n for n, k in counts.items() if k > 1)
    if dup:
        raise DataFileError(MSG_DUPLICATE_COLUMNS.format(path=p, names=", ".join(dup)))


def _read_parquet(p: Path, lim: Limits) -> pd.DataFrame:
    """Read a Parquet file in an isolated child process; the table comes back as Arrow IPC bytes.

    pyarrow aborts the whole process on some damaged footers (a C++ exception thrown where
    it cannot be caught, found by the fuzz suite), so footer checks and decoding run in a child
    (audit._isolate); a crash there is a one-line DataFileError here.
    """
    import pyarrow as pa

    from audit._isolate import IsolatedError, run_isolated
    from audit.exceptions import ModelError

    try:
        out = run_isolated(_parquet_child, str(p), lim.as_dict(), what="Parquet reader")
    except IsolatedError as exc:
        raise DataFileError(f"data file {p} could not be read as Parquet: {_one_line(exc)}") from None
    except ModelError as exc:
        reason = str(exc).replace("the model crashed the Parquet reader process", "the Parquet reader crashed")
        raise DataFileError(f"data file {p} could not be read as Parquet: {reason}") from None
    if isinstance(out, dict) and "refused" in out:
        raise DataFileError(out["refused"])
    try:
        table = pa.ipc.open_stream(pa.py_buffer(out)).read_all()
        return table.to_pandas()
    except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as exc:
        # KeyError: pyarrow's to_pandas on damaged 'pandas' schema metadata (a fuzz finding)
        raise DataFileError(f"data file {p} could not be read as Parquet: {_one_line(exc)}") from None


def _parquet_child(path: str, limits: dict[str, int]) -> Any:
    """In the child: check the footer, decode batch by batch, return IPC bytes (or a refusal)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    lim = Limits(**limits)
    try:
        pf = pq.ParquetFile(p)
        meta = pf.metadata
        n_rows, n_cols = int(meta.num_rows), int(meta.num_columns)
        declared = 0
        for rg in range(meta.num_row_groups):
            group = meta.row_group(rg)
            for c in range(group.num_columns):
                declared += max(int(group.column(c).total_uncompressed_size), 0)
    except (OSError, ValueError, pa.ArrowException) as exc:
        return {"refused": f"data file {p} could not be read as Parquet: {_one_line(exc)}"}
    try:
        _check_shape(p, n_rows, n_cols, lim)
        if declared > lim.table_decoded_bytes:
            raise DataFileError(MSG_PARQUET_TOO_LARGE.format(path=p, n=declared, limit=lim.table_decoded_bytes,
                                                             hint=limit_hint("table_decoded_bytes")))
        # the footer may lie, and dictionary pages expand: count the decoded bytes while reading
        batch_rows = max(256, min(65536, (1 << 20) // max(n_cols, 1)))
        batches = []
        decoded = 0
        for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False):
            decoded += batch.nbytes
            if decoded > lim.table_decoded_bytes:
                raise DataFileError(MSG_PARQUET_TOO_LARGE.format(
                    path=p, n=f"more than {lim.table_decoded_bytes}", limit=lim.table_decoded_bytes,
                    hint=limit_hint("table_decoded_bytes")))
            batches.append(batch)
        if sum(b.num_rows for b in batches) > lim.table_rows:
            raise DataFileError(MSG_TOO_MANY_ROWS.format(path=p, limit=lim.table_rows, hint=limit_hint("table_rows")))
        table = pa.Table.from_batches(batches, schema=pf.schema_arrow)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return np.frombuffer(sink.getvalue(), dtype=np.uint8)
    except DataFileError as exc:
        return {"refused": str(exc)}
    except (OSError, ValueError, TypeError, IndexError, pa.ArrowException) as exc:
        return {"refused": f"data file {p} could not be read as Parquet: {_one_line(exc)}"}


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _check_shape(p: Path, n_rows: int, n_cols: int, lim: Limits) -> None:
    if n_cols > lim.table_columns:
        raise DataFileError(MSG_TOO_MANY_COLUMNS.format(path=p, n=n_cols, limit=lim.table_columns,
                                                        hint=limit_hint("table_columns")))
    if n_rows > lim.table_rows:
        raise DataFileError(MSG_TOO_MANY_ROWS.format(path=p, limit=lim.table_rows, hint=limit_hint("table_rows")))
    if n_rows * n_cols > lim.table_cells:
        raise DataFileError(MSG_TOO_MANY_CELLS.format(path=p, n=n_rows * n_cols, limit=lim.table_cells,
                                                      hint=limit_hint("table_cells")))


def _csv_header(p: Path) -> list[str]:
    """The header row, parsed by the csv module before pandas renames duplicates (``sex.1``)."""
    try:
        with open(p, "rb") as f:
            raw = f.readline(_HEADER_MAX_BYTES + 1)
    except OSError as exc:
        raise _os_error(exc, "data file", p, DataFileError) from None
    if len(raw) > _HEADER_MAX_BYTES:
        raise DataFileError(MSG_HEADER_TOO_LONG.format(path=p, limit=_HEADER_MAX_BYTES))
    text = raw.decode("utf-8-sig", errors="replace")
    old = csv.field_size_limit()
    try:
        csv.field_size_limit(_HEADER_MAX_BYTES)
        row = next(csv.reader([text], skipinitialspace=True), [])
    except csv.Error as exc:
        raise DataFileError(f"data file {p} could not be parsed as CSV: header line: {exc}") from None
    finally:
        csv.field_size_limit(old)
    return [c.strip() for c in row]


def _scan_for_nul(p: Path) -> None:
    try:
        with open(p, "rb") as f:
            offset = 0
            for chunk in iter(lambda: f.read(1 << 20), b""):
                i = chunk.find(b"\x00")
                if i >= 0:
                    raise DataFileError(MSG_NUL.format(path=p, offset=offset + i))
                offset += len(chunk)
    except OSError as exc:
        raise _os_error(exc, "data file", p, DataFileError) from None


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_csv(p: Path, head: bytes, na_values: Sequence[str], lim: Limits) -> pd.DataFrame:
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise DataFileError(MSG_COMPRESSED.format(path=p, kind=kind))
    enc = _text_encoding_problem(head)
    if enc:
        raise DataFileError(MSG_UTF16.format(what="data file", path=p, encoding=enc))
    nul = head.find(b"\x00")
    if nul >= 0:
        # a NUL inside the first bytes is a binary file; later, it is padding or damage
        if b"\n" not in head[:nul] or not _is_utf8(head[:nul]):
            raise DataFileError(f"data file {p} is not a CSV or Parquet file (binary content)")
        raise DataFileError(MSG_NUL.format(path=p, offset=nul))
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a cut multi-byte character at the end of the head is fine
        if exc.start < len(head) - 4:
            raise DataFileError(f"data file {p} is not UTF-8 text (CSV) or Parquet") from None
    header = _csv_header(p)
    if len(header) > lim.table_columns:
        raise DataFileError(MSG_TOO_MANY_COLUMNS.format(path=p, n=len(header), limit=lim.table_columns,
                                                        hint=limit_hint("table_columns")))
    _refuse_duplicates(p, [h for h in header if h])
    _scan_for_nul(p)
    max_rows = min(lim.table_rows, lim.table_cells // max(len(header), 1))
    try:
        df = pd.read_csv(p, na_values=list(na_values), skipinitialspace=True, encoding="utf-8-sig",
                         compression=None, nrows=max_rows + 1)
    except pd.errors.EmptyDataError:
        raise DataFileError(f"data file {p} is empty") from None
    except pd.errors.ParserError as exc:
        reason = str(exc).strip().splitlines()[-1]
        raise DataFileError(f"data file {p} could not be parsed as CSV: {reason}") from None
    except UnicodeDecodeError:
        raise DataFileError(f"data file {p} is not UTF-8 text (CSV) or Parquet") from None
    except OSError as exc:
        raise _os_error(exc, "data file", p, DataFileError) from None
    if len(df) > max_rows:
        if max_rows == lim.table_rows:
            raise DataFileError(MSG_TOO_MANY_ROWS.format(path=p, limit=lim.table_rows, hint=limit_hint("table_rows")))
        raise DataFileError(MSG_TOO_MANY_CELLS.format(path=p, n=f"more than {lim.table_cells}",
                                                      limit=lim.table_cells, hint=limit_hint("table_cells")))
    if df.shape[1] == 1 and df.shape[0] > 0 and not _plausible_single_column(df):
        raise DataFileError(f"data file {p} could not be parsed as CSV: found a single column")
    return df


def _plausible_single_column(df: pd.DataFrame) -> bool:
    name = str(df.columns[0])
    return len(name) < 200 and not any(ch in name for ch in "\t;|")
