"""Upload intake: size limits, content checks, generated file names, the spec the form builds.

Nothing here computes a finding. It reads what a visitor uploaded with the audit's own safe
loaders (``audit.io.load_model_bytes`` recognises a model by its content and refuses pickle
unless the server allows it; ``audit.io.load_table`` recognises CSV / Parquet by content), so the
form can offer the data's columns and refuse a bad file at once, and turns the form's choices
into the spec mapping a submitted audit job carries (the worker runs ``audit.run_audit`` on it).

Uploaded names are shown in messages only: the bytes are written under the server's data folder
with a generated name (``<kind>-<uuid>.upload``), and any path an uploaded spec names (model,
data files, a graph file) is refused or ignored, so an upload can never make the server open a
file of its choosing.
"""

from __future__ import annotations

import hashlib
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from audit.exceptions import DataFileError, ModelLoadError, SpecError
from audit.io import LoadedModel, load_model_bytes, load_table, write_bytes_atomic

__all__ = [
    "MAX_TEXT_UPLOAD_BYTES",
    "build_spec_mapping",
    "check_upload_size",
    "display_name",
    "is_graph_text",
    "load_model_upload",
    "missing_model_columns",
    "parse_spec_upload",
    "read_table_upload",
    "sha256_hex",
    "store_upload",
]

#: Specs and graphs are small text files.
MAX_TEXT_UPLOAD_BYTES = 1024 * 1024

MSG_TOO_LARGE = "{what} '{name}' is {size_mb:.1f} MB; the upload limit is {limit_mb} MB"
MSG_EMPTY = "{what} '{name}' is empty"
MSG_MISSING_COLUMNS = "the model expects columns the data '{name}' lacks: {columns}"
MSG_GRAPH_PATH = (
    "causal graph: give DOT text ('digraph {{ a -> b }}'), GML text or an edge list; "
    "file paths are not accepted by the dashboard (got {got!r})"
)
MSG_SPEC_NOT_TEXT = "uploaded spec '{name}' is not UTF-8 text"
MSG_SPEC_NOT_TOML = "uploaded spec '{name}' is not valid TOML: {reason}"

#: Keys of an uploaded spec's [data] table that the dashboard uses; the file paths are ignored.
_DATA_KEYS = ("target", "positive_label", "sensitive", "features", "na_values")
def _top_keys() -> tuple[str, ...]:
    """Top-level spec keys the dashboard takes from an uploaded spec: the spine's and every
    registered family's own section (``causal``, a plugin's)."""
    from audit.registry import families

    return ("checks", "seed", "policy", "privacy", *(f.name for f in families() if f.section is not None))


def display_name(name: str | None) -> str:
    """The uploaded file's base name, printable and short: for messages only, never a path."""
    base = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable() and ch not in "`*_[]<>")[:120].strip()
    return cleaned or "upload"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_upload_size(what: str, name: str, size: int, limit_mb: int) -> None:
    """Refuse an empty upload or one above the server's limit (the message names both)."""
    err = ModelLoadError if what == "model file" else DataFileError
    if size <= 0:
        raise err(MSG_EMPTY.format(what=what, name=display_name(name)))
    if size > limit_mb * 1024 * 1024:
        raise err(MSG_TOO_LARGE.format(what=what, name=display_name(name), size_mb=size / 1024 / 1024,
                                       limit_mb=limit_mb))


def store_upload(data: bytes, directory: Path, kind: str) -> Path:
    """Write an upload atomically under ``directory`` with a generated name; returns the path."""
    safe_kind = "".join(ch for ch in kind if ch.isalnum()) or "file"
    return write_bytes_atomic(Path(directory) / f"{safe_kind}-{uuid.uuid4().hex}.upload", data)


def read_table_upload(
    data: bytes, name: str, directory: Path, *, na_values: Sequence[str] = ("?",), kind: str = "data"
) -> tuple[pd.DataFrame, Path]:
    """Store the bytes under a generated name and read them as CSV or Parquet (by content).

    Errors are ``DataFileError`` one-liners naming the uploaded file, not the stored path.
    """
    path = store_upload(data, directory, kind)
    try:
        frame = load_table(path, na_values=tuple(na_values), max_bytes=max(len(data), 1))
    except DataFileError as exc:
        raise DataFileError(exc.message.replace(str(path), f"'{display_name(name)}'")) from None
    return frame, path


#: what a trial load of an uploaded model may add in memory, and how long it may take
PROBE_MEMORY_BYTES = 2 * 1024**3
PROBE_SECONDS = 120.0


def load_model_upload(data: bytes, name: str, *, allow_unsafe_pickle: bool) -> LoadedModel:
    """The audit's safe intake on uploaded bytes: format by content, pickle only when allowed.

    The bytes are first loaded once in a child process with a memory and time limit
    (``audit._isolate``): a damaged file that crashes a native loader or inflates without bound
    (a TorchScript archive can ask for tens of GB) ends the child with one line, not the server."""
    import warnings

    from audit._isolate import fork_safe_native_threads, run_isolated

    shown = display_name(name)
    run_isolated(_trial_load, data, shown, allow_unsafe_pickle, what="model loading", timeout=PROBE_SECONDS,
                 memory_bytes=PROBE_MEMORY_BYTES, native_threads=fork_safe_native_threads())
    with warnings.catch_warnings():
        # the page says so when a pickle was loaded under the unsafe option
        warnings.simplefilter("ignore", UserWarning)
        return load_model_bytes(data, name=shown, allow_unsafe_pickle=allow_unsafe_pickle)


def _trial_load(data: bytes, name: str, allow_unsafe_pickle: bool) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_model_bytes(data, name=name, allow_unsafe_pickle=allow_unsafe_pickle).format


def missing_model_columns(model: LoadedModel, columns: Sequence[str]) -> list[str]:
    """The model's input columns that the data does not have (empty when the model names none)."""
    names = model.adapter.feature_names or ()
    have = set(map(str, columns))
    return [str(c) for c in names if str(c) not in have]


def is_graph_text(text: str) -> bool:
    """DOT or GML text (what the causal package parses as text rather than as a file path)."""
    return "{" in text or "[" in text or "\n" in text.strip()


def parse_spec_upload(data: bytes, name: str) -> tuple[dict[str, Any], list[str]]:
    """The parts of an uploaded TOML spec the dashboard uses, and the keys it ignored.

    The model and data files come from the uploads, so ``[model]`` and the paths in ``[data]``
    are ignored; a ``causal.graph`` that is a file path is refused.
    """
    shown = display_name(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(MSG_SPEC_NOT_TEXT.format(name=shown)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(MSG_SPEC_NOT_TOML.format(name=shown, reason=exc)) from None
    used: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in raw.items():
        if key == "data" and isinstance(value, Mapping):
            kept = {k: v for k, v in value.items() if k in _DATA_KEYS}
            ignored += [f"data.{k}" for k in value if k not in _DATA_KEYS]
            if kept:
                used["data"] = kept
        elif key in _top_keys():
            used[key] = value
        else:
            ignored.append(key)
    graph = used.get("causal", {}).get("graph") if isinstance(used.get("causal"), Mapping) else None
    if isinstance(graph, str) and not is_graph_text(graph):
        raise SpecError(MSG_GRAPH_PATH.format(got=graph))
    # validate now, so a bad spec is reported when it is uploaded, not when the audit starts
    from audit.spec import spec_from_mapping

    probe = _merge(used, {})
    probe["data"] = {"target": "target", "positive_label": 1, **probe.get("data", {})}  # the form fills these
    spec_from_mapping(probe, source=f"uploaded spec '{shown}'")
    return used, ignored


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in a.items()}
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def build_spec_mapping(
    *,
    base: Mapping[str, Any] | None,
    target: str,
    positive_label: Any,
    sensitive: Sequence[str],
    checks: Sequence[str],
    seed: int,
    causal: Mapping[str, Any] | None = None,
    dp_claim: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What to audit (``run_audit``'s ``spec``): the uploaded spec (if any) overridden by the form.
    The model and the data go to the runner as objects, so no path is named here."""
    form: dict[str, Any] = {
        "data": {"target": target, "positive_label": positive_label, "sensitive": list(sensitive)},
        "checks": list(checks),
        "seed": int(seed),
    }
    if causal:
        graph = causal.get("graph")
        if isinstance(graph, str) and graph.strip() and not is_graph_text(graph):
            raise SpecError(MSG_GRAPH_PATH.format(got=graph))
        form["causal"] = {k: v for k, v in causal.items() if v not in (None, "", (), [])}
    if dp_claim:
        form["privacy"] = {"dp_claim": dict(dp_claim)}
    merged = _merge(dict(base or {}), form)
    if causal and "graph" in form.get("causal", {}) and "edges" in merged.get("causal", {}):
        merged["causal"].pop("edges")  # the form's graph replaces the spec's edge list
    return merged
