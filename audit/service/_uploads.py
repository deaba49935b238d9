"""Upload intake of the HTTP API: a multipart body streamed to disk under limits, a spec without
paths, and the model and data files tried with the CLI's safe loaders in a child process.

* **Streaming limits.** The body is parsed as it arrives (``python_multipart``'s streaming parser
  over the request stream), each file part written straight into the job folder under a generated
  name (``<role>-<uuid>.upload``) and hashed on the way. A part over the per-file limit, more file
  parts than the per-job limit, an unknown or repeated field stop the intake at once: nothing more
  is written, the rest of the body is read and dropped (up to a bound, so the client reads the
  answer instead of a reset connection) and the answer is 413 or 422 with one sentence.
* **Names.** A client's file name is shown in messages and recorded as the input's name; it is
  never part of a path. A name that is not a plain base name (``../x``, ``a/b``, control
  characters) is refused, so a client learns that the server does not honour it.
* **Spec.** What to audit only (TOML or JSON text). ``model.path``, the data file paths and a
  causal graph given as a file path are refused: the files come from the upload parts.
* **Content.** The model and the data go through ``audit.io.load_model`` and
  ``audit.io.load_table`` — the CLI's intake, recognising formats by content and refusing pickle
  unless the server allows it — once, in a child process with a memory and a time limit
  (``audit._isolate``): a hostile file that crashes a native loader or inflates without bound ends
  the child with one line, not the server. The stored path in a loader's message is replaced by
  the client's file name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.exceptions import SpecError, TrustAuditError

__all__ = [
    "FILE_ROLES",
    "FORM_FIELDS",
    "ApiError",
    "JobSpec",
    "ReceivedPart",
    "UploadLimits",
    "display_name",
    "parse_job_spec",
    "plain_file_name",
    "probe_inputs",
    "receive_form",
    "spec_from_part",
    "warm_intake",
]

#: the file parts of an audit submission, in the order the worker reads them
FILE_ROLES = ("model", "data", "train", "holdout")
#: every field an audit submission may carry
FORM_FIELDS = (*FILE_ROLES, "spec")
_WHAT = {"model": "model file", "data": "data file", "train": "train file", "holdout": "holdout file",
         "spec": "spec"}
MiB = 1024**2


class ApiError(Exception):
    """An answer other than success: HTTP ``status`` and one sentence for ``{"error": ...}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        message = " ".join(str(message).split())
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class UploadLimits:
    """Bounds of one submission.

    ``file_bytes``: each model or data file; ``files``: file parts per job; ``spec_bytes``: the spec
    part; ``drain_bytes``: how much of a refused body is still read (and dropped) so that the
    client gets the answer; a larger body is cut off and its connection closed.
    """

    file_bytes: int = 200 * MiB
    files: int = 4
    spec_bytes: int = 1 * MiB
    drain_bytes: int = 64 * MiB

    @property
    def body_bytes(self) -> int:
        """The most a well-formed submission can be (every file at its limit, the spec, headers)."""
        return self.files * self.file_bytes + self.spec_bytes + 64 * 1024


def display_name(name: str | None) -> str:
    """A client's file name as shown in messages: printable, at most 120 characters."""
    cleaned = "".join(ch for ch in str(name or "") if ch.isprintable())[:120].strip()
    return cleaned or "upload"


def plain_file_name(name: str | None, role: str) -> str:
    """The client's file name if it is a plain base name; ``ApiError(422)`` otherwise.

    The name is only recorded and shown; refusing ``../x`` or ``C:\\x`` tells a client that the
    server never uses it as a path."""
    if name is None or name == "":
        return role
    bad = (len(name) > 255 or name in (".", "..") or any(c in name for c in "/\\")
           or any(not c.isprintable() for c in name))
    if bad:
        shown = json.dumps(name[:80])
        raise ApiError(422, f"the file name {shown} of the '{role}' part is not a plain file name; send the "
                            "base name only (names are recorded, never used as paths)")
    return name


@dataclass
class ReceivedPart:
    """One part of the form: a file written to the job folder (``stored``), or the spec in memory."""

    role: str
    name: str
    size: int = 0
    sha256: str = ""
    stored: str | None = None
    content: bytes | None = None
    filename_given: bool = False

    def input_entry(self) -> dict[str, Any]:
        """The part as the job's ``inputs`` entry (the contract with the worker)."""
        return {"name": self.name, "stored": self.stored, "size": self.size, "sha256": self.sha256}


@dataclass
class _FormState:
    """The streaming parser's callbacks: one part at a time, written as it arrives."""

    folder: Path
    limits: UploadLimits
    parts: dict[str, ReceivedPart] = field(default_factory=dict)
    ended: bool = False
    _headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    _field: bytearray = field(default_factory=bytearray)
    _value: bytearray = field(default_factory=bytearray)
    _part: ReceivedPart | None = None
    _file: Any = None
    _hash: Any = None
    _buffer: bytearray | None = None
    _n_files: int = 0
    _written: list[Path] = field(default_factory=list)

    def callbacks(self) -> Any:  # python_multipart.MultipartCallbacks (a TypedDict)
        return {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data,
            "on_part_end": self._end, "on_end": self._all_end,
        }

    def _begin(self) -> None:
        self._headers = []
        self._field.clear()
        self._value.clear()
        self._part = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((bytes(self._field).strip().lower(), bytes(self._value).strip()))
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition = next((v for k, v in self._headers if k == b"content-disposition"), None)
        if disposition is None:
            raise ApiError(400, "a part of the multipart body has no Content-Disposition header")
        kind, params = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in params:
            raise ApiError(400, "a part of the multipart body is not a named form-data field")
        try:
            role = params[b"name"].decode("utf-8")
            filename = params[b"filename"].decode("utf-8") if b"filename" in params else None
        except UnicodeDecodeError:
            raise ApiError(400, "a part's field or file name is not UTF-8") from None
        if role not in FORM_FIELDS:
            raise ApiError(422, f"unknown form field {display_name(role)!r}; allowed: {', '.join(FORM_FIELDS)}")
        if role in self.parts:
            raise ApiError(422, f"form field '{role}' is given twice")
        part = ReceivedPart(role=role, name=plain_file_name(filename, role), filename_given=filename is not None)
        if role in FILE_ROLES:
            self._n_files += 1
            if self._n_files > self.limits.files:
                raise ApiError(413, f"too many files: a job takes at most {self.limits.files} "
                                    f"(the '{role}' part is file {self._n_files})")
            part.stored = f"{role}-{uuid.uuid4().hex}.upload"
            path = self.folder / part.stored
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            self._written.append(path)
            self._file = os.fdopen(fd, "wb")
            self._hash = hashlib.sha256()
        else:
            self._buffer = bytearray()
        self._part = part

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part is None:  # pragma: no cover - the parser calls headers_finished first
            raise ApiError(400, "the multipart body is malformed")
        chunk = data[start:end]
        part.size += len(chunk)
        if self._file is not None:
            if part.size > self.limits.file_bytes:
                raise ApiError(413, f"{_WHAT[part.role]} '{display_name(part.name)}' is larger than the upload "
                                    f"limit of {_mb(self.limits.file_bytes)} per file")
            self._file.write(chunk)
            self._hash.update(chunk)
        else:
            assert self._buffer is not None
            if part.size > self.limits.spec_bytes:
                raise ApiError(413, f"the spec is larger than {_mb(self.limits.spec_bytes)}; a spec is a short "
                                    "TOML or JSON text")
            self._buffer += chunk

    def _end(self) -> None:
        part = self._part
        if part is None:  # pragma: no cover
            return
        if self._file is not None:
            self._file.close()
            self._file = None
            part.sha256 = self._hash.hexdigest()
        else:
            part.content = bytes(self._buffer or b"")
            part.sha256 = hashlib.sha256(part.content).hexdigest()
            self._buffer = None
        self.parts[part.role] = part
        self._part = None

    def _all_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _mb(n: int) -> str:
    return f"{n / MiB:g} MB" if n >= MiB else f"{n} bytes"


async def receive_form(
    headers: Mapping[str, str], stream: AsyncIterator[bytes], folder: Path, limits: UploadLimits,
) -> dict[str, ReceivedPart]:
    """Parse a ``multipart/form-data`` body from ``stream`` into ``folder`` under ``limits``.

    Raises ``ApiError``: 415 for another content type, 413 past a limit, 422 for an unknown or
    repeated field or a bad file name, 400 for a malformed body. On an error the files written so
    far stay in ``folder`` (the caller removes the folder)."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, params = parse_options_header(headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1")[:80] or "none"
        raise ApiError(415, f"an audit is submitted as multipart/form-data (model, data and spec parts); "
                            f"got Content-Type {shown!r}")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise ApiError(400, "the multipart/form-data Content-Type has no usable boundary")
    declared = _content_length(headers)
    if declared is not None and declared > limits.body_bytes:
        raise ApiError(413, f"the request body is {_mb(declared)}; a submission may be at most "
                            f"{_mb(limits.body_bytes)} ({limits.files} files of at most "
                            f"{_mb(limits.file_bytes)} each)", {"Connection": "close"})
    state = _FormState(folder, limits)
    try:
        parser = MultipartParser(boundary, callbacks=state.callbacks())
    except (FormParserError, ValueError):
        raise ApiError(400, "the multipart/form-data Content-Type has no usable boundary") from None
    error: ApiError | None = None
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if error is None:
                try:
                    parser.write(chunk)
                except ApiError as exc:
                    error = exc
                except (FormParserError, ValueError) as exc:
                    error = ApiError(400, f"the multipart body is malformed: {_first_line(exc)}")
                except OSError as exc:
                    error = ApiError(507, f"the server could not store the upload: {exc.strerror or exc}")
            if error is not None and received > limits.drain_bytes:
                error.headers["Connection"] = "close"
                break
        if error is None:
            try:
                parser.finalize()
            except (FormParserError, ValueError) as exc:
                error = ApiError(400, f"the multipart body is malformed: {_first_line(exc)}")
    finally:
        state.close()
    if error is not None:
        raise error
    if not state.ended:
        raise ApiError(400, "the multipart body ends before its closing boundary")
    return state.parts


def _content_length(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise ApiError(400, "the Content-Length header is not a number")
    return int(raw)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


# --- the spec ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobSpec:
    """A submitted spec: what to audit (``AuditSpec.to_dict()``) and how to read the uploads."""

    spec: dict[str, Any]
    model_format: str = "auto"
    trusted_types: tuple[str, ...] = ()
    na_values: tuple[str, ...] = ("?",)


#: keys of a spec's [data] table that name files; the API takes files as upload parts only
_DATA_PATH_KEYS = ("test", "data", "train", "holdout")


def spec_from_part(content: bytes) -> dict[str, Any]:
    """The spec part's text as a mapping: JSON when it starts with ``{``, else TOML."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError("the spec is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        def refuse(constant: str) -> Any:
            raise ValueError(f"{constant} is not a number a spec may hold")

        try:
            raw = json.loads(text, parse_constant=refuse)
        except (ValueError, RecursionError) as exc:
            raise SpecError(f"the spec is not valid JSON: {_first_line(exc)}") from None
        if not isinstance(raw, dict):
            raise SpecError("the spec must be a JSON object")
        return raw
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise SpecError(f"the spec is not valid TOML: {_first_line(exc)}") from None


def parse_job_spec(raw: Mapping[str, Any]) -> JobSpec:
    """Validate a submitted spec (the TOML document's shape) into a :class:`JobSpec`.

    Files are upload parts, never paths: ``model.path``, ``data.test`` / ``data`` / ``train`` /
    ``holdout`` and a family section's file path (a causal graph file) are refused with a line
    saying what to send instead."""
    from audit.spec import parse_spec_file

    raw = dict(raw)
    model = raw.get("model")
    if model is not None:
        if not isinstance(model, Mapping):
            raise SpecError("spec: [model] must be a table (format, trusted_types)")
        if "path" in model:
            raise SpecError("spec: model.path names a file; the API reads the model from the 'model' upload "
                            "part, not from a path (remove model.path)")
        raw["model"] = {"path": "upload", **model}  # a placeholder: Sources needs one to validate the rest
    data = raw.get("data")
    if isinstance(data, Mapping):
        named = [k for k in _DATA_PATH_KEYS if k in data]
        if named:
            raise SpecError(f"spec: data.{named[0]} names a file; the API reads data from the upload parts "
                            "(data, train, holdout), not from paths (remove it)")
    sf = parse_spec_file(raw, source="spec")
    _refuse_section_paths(sf.spec)
    src = sf.sources
    return JobSpec(
        spec=sf.spec.to_dict(),
        model_format=src.model.format if src.model is not None else "auto",
        trusted_types=tuple(src.model.trusted_types) if src.model is not None else (),
        na_values=tuple(src.data.na_values),
    )


def _refuse_section_paths(spec: Any) -> None:
    """A family section that can name files (it has ``resolve_paths``) must not name one here.

    Detected the way the section itself decides: resolving against two different folders gives two
    different sections only when a value is a relative path; an absolute path is caught by giving
    the section a folder and seeing the value not move while still reading as a path."""
    for name in type(spec).model_fields:
        value = getattr(spec, name)
        resolve = getattr(value, "resolve_paths", None)
        if not callable(resolve):
            continue
        a, b = resolve(Path("/a")), resolve(Path("/b"))
        suspects = [k for k, v in value.model_dump().items() if isinstance(v, str) and _path_like(v)]
        if a != b or suspects:
            fields_ = [k for k in type(value).model_fields if getattr(a, k) != getattr(b, k)] or suspects
            what = f"{name}.{fields_[0]}" if fields_ else name
            raise SpecError(f"spec: {what} names a file; the API does not read files named in a spec: give "
                            "its content inline (a causal graph as DOT or GML text, or as edges)")


def _path_like(text: str) -> bool:
    """A one-line value that reads as a file path (an absolute one, or one with a file suffix)."""
    if "\n" in text or "{" in text or "[" in text or len(text) > 4096:
        return False
    p = Path(text)
    return p.is_absolute() or text.startswith("~") or p.suffix.lower() in {".dot", ".gv", ".gml", ".txt"}


# --- trying the inputs with the CLI's intake ------------------------------------------------------


def warm_intake() -> None:
    """Import the loaders' libraries (skops, which loads scikit-learn and torch; onnx) in this
    process, before it serves: each submission's check runs in a child forked from it, which
    would otherwise import them again, seconds per submission. Call it before threads start
    serving (a fork during another thread's import would copy a held import lock)."""
    import onnx  # noqa: F401 - the model format detector reads non-zip files with it
    import skops.io  # noqa: F401

    import audit.io  # noqa: F401


def probe_inputs(
    folder: Path, parts: Mapping[str, ReceivedPart], job: JobSpec, *, allow_unsafe_pickle: bool,
    timeout: float, memory_bytes: int | None,
) -> dict[str, Any]:
    """Load the model and every data file once, in a child process with limits, and check that the
    spec's columns are there; returns what was found (model format and type, table shapes).

    Raises ``ApiError(422)`` with the loader's one line (naming the client's file, not the stored
    one) for any input the audit would refuse, a crash or a timeout of the loaders included."""
    from audit._isolate import IsolatedError, fork_safe_native_threads, run_isolated

    files = {role: str(folder / p.stored) for role, p in parts.items() if p.stored}
    names = {role: display_name(p.name) for role, p in parts.items()}
    try:
        return run_isolated(
            _probe_child, files, names, job.spec, job.model_format, list(job.trusted_types), list(job.na_values),
            allow_unsafe_pickle, what="upload check", timeout=timeout, memory_bytes=memory_bytes,
            native_threads=fork_safe_native_threads(),
        )
    except TrustAuditError as exc:
        raise ApiError(422, _renamed(exc.message, files, names)) from None
    except IsolatedError as exc:
        raise ApiError(422, f"the uploads could not be read: {_renamed(str(exc), files, names)}") from None


def _renamed(message: str, files: Mapping[str, str], names: Mapping[str, str]) -> str:
    for role, path in files.items():
        message = message.replace(path, f"'{names[role]}'")
    return message


def _probe_child(
    files: dict[str, str], names: dict[str, str], spec: dict[str, Any], model_format: str,
    trusted_types: list[str], na_values: list[str], allow_unsafe_pickle: bool,
) -> dict[str, Any]:
    """In the child: the CLI's loaders on the stored files; column checks; a summary back."""
    import warnings

    from audit.exceptions import DataError
    from audit.io import load_model, load_table

    data = spec.get("data", {})
    features = tuple(data.get("features") or ()) or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unsafe-pickle warning: the server chose it
        loaded = load_model(files["model"], format=model_format, trusted_types=trusted_types,
                            allow_unsafe_pickle=allow_unsafe_pickle, feature_names=features)
    info = loaded.info()
    tables: dict[str, Any] = {}
    for role in ("data", "train", "holdout"):
        if role not in files:
            continue
        frame = load_table(files[role], na_values=tuple(na_values))
        columns = [str(c) for c in frame.columns]
        have = set(columns)
        wanted = [("data.target", data.get("target"))]
        wanted += [("data.sensitive", c) for c in data.get("sensitive") or ()]
        wanted += [("data.features", c) for c in data.get("features") or ()]
        if role == "data":
            wanted += [("the model's input", c) for c in info.get("feature_names") or ()]
        for what, col in wanted:
            if col is not None and str(col) not in have:
                shown = ", ".join(columns[:20]) + (", ..." if len(columns) > 20 else "")
                raise DataError(f"{role} file '{names[role]}' has no column {str(col)!r} ({what}); its columns: "
                                f"{shown}")
        tables[role] = {"rows": int(frame.shape[0]), "columns": int(frame.shape[1])}
    classes = [c if isinstance(c, str | int | float | bool) else str(c) for c in info.get("classes") or []]
    return {"model": {"format": info["format"], "type": info["type"], "kind": info["kind"],
                      "classes": [c for c in classes if not (isinstance(c, float) and math.isnan(c))]},
            "tables": tables}
