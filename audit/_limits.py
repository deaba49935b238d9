"""Bounds on what an input may expand to, checked before the input is read.

Every file trustaudit reads comes from a user or an upload, so each is bounded twice: by its size
on disk and by what it may become once decompressed or parsed (zip members, Parquet pages, CSV
rows and columns). The bounds are checked from metadata (a zip's central directory, a Parquet
footer, a CSV header line) before the data itself is read, and again while reading where the
metadata could lie.

Each limit is a module constant (the default) and can be raised, for one process, by an
environment variable ``TRUSTAUDIT_LIMIT_<NAME>`` (e.g. ``TRUSTAUDIT_LIMIT_TABLE_COLUMNS=2000000``)
or from Python with :func:`set_limits` (the CLI's ``--limit NAME=VALUE`` uses it). Values accept
``_`` separators and the suffixes K, M, G (powers of 1024 for byte limits, of 1000 otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from audit.exceptions import UsageError

__all__ = [
    "DEFAULT_LIMITS",
    "LIMIT_ENV_PREFIX",
    "Limits",
    "current_limits",
    "limit_hint",
    "parse_limit_assignment",
    "reset_limits",
    "set_limits",
]

LIMIT_ENV_PREFIX = "TRUSTAUDIT_LIMIT_"

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class Limits:
    """Upper bounds on inputs (bytes unless the name says otherwise)."""

    #: a model file on disk (skops, ONNX, TorchScript, pickle)
    model_bytes: int = 2 * GiB
    #: entries in a zip archive (skops, TorchScript), read from the end-of-directory record
    zip_members: int = 100_000
    #: uncompressed size of one zip member, as the central directory declares it
    zip_member_bytes: int = 2 * GiB
    #: uncompressed size of all members together
    zip_total_bytes: int = 2 * GiB
    #: compression ratio (uncompressed / compressed) of a member larger than 1 MiB uncompressed
    zip_ratio: int = 200
    #: a skops file's schema.json (the object graph; real models: KB to a few MB)
    skops_schema_bytes: int = 64 * MiB
    #: a data file on disk (CSV, Parquet)
    data_bytes: int = 4 * GiB
    #: columns of a data table (checked on a CSV's header line, a Parquet footer)
    table_columns: int = 10_000
    #: rows of a data table
    table_rows: int = 20_000_000
    #: rows x columns of a data table
    table_cells: int = 200_000_000
    #: a Parquet file's uncompressed pages, as its footer declares them, and the Arrow memory
    #: of the decoded table, counted while it is read batch by batch
    table_decoded_bytes: int = 4 * GiB

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


DEFAULT_LIMITS = Limits()
_BYTE_LIMITS = {f.name for f in fields(Limits) if f.name.endswith("_bytes")}
_override: dict[str, int] = {}


def _parse_value(name: str, raw: Any, shown: str | None = None) -> int:
    """``raw`` as a positive integer; K/M/G suffixes are powers of 1024 for byte limits (by the
    limit's ``name``) and of 1000 otherwise; messages call the limit ``shown`` (default ``name``)."""
    shown_name = shown or name
    if isinstance(raw, bool):
        raise UsageError(f"limit {shown_name} must be a positive integer, got {raw!r}")
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw).strip().replace("_", "")
        mult = 1
        if text and text[-1].upper() in "KMG":
            base = 1024 if name in _BYTE_LIMITS else 1000
            mult = base ** ("KMG".index(text[-1].upper()) + 1)
            text = text[:-1]
        try:
            value = int(float(text) * mult) if ("." in text or "e" in text.lower()) else int(text) * mult
        except ValueError:
            raise UsageError(f"limit {shown_name} must be a positive integer, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"limit {shown_name} must be a positive integer, got {raw!r}")
    return value


def _check_name(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    if key not in DEFAULT_LIMITS.as_dict():
        raise UsageError(f"unknown limit {name!r}; allowed: {', '.join(DEFAULT_LIMITS.as_dict())}")
    return key


def current_limits() -> Limits:
    """The defaults, raised or lowered by the environment, then by :func:`set_limits`."""
    values: dict[str, int] = {}
    for name in DEFAULT_LIMITS.as_dict():
        env = os.environ.get(LIMIT_ENV_PREFIX + name.upper())
        if env:
            values[name] = _parse_value(name, env, shown=LIMIT_ENV_PREFIX + name.upper())
    values.update(_override)
    return replace(DEFAULT_LIMITS, **values)


def set_limits(values: Mapping[str, Any]) -> Limits:
    """Set limits for this process (the CLI's ``--limit NAME=VALUE``); returns the result."""
    parsed = {}
    for name, raw in values.items():
        key = _check_name(name)
        parsed[key] = _parse_value(key, raw)
    _override.update(parsed)
    return current_limits()


def reset_limits() -> None:
    """Forget :func:`set_limits` (tests use this)."""
    _override.clear()


def parse_limit_assignment(text: str) -> tuple[str, int]:
    """``"table_columns=2M"`` -> ``("table_columns", 2000000)``; a bad one is a UsageError."""
    if "=" not in text:
        raise UsageError(f"--limit takes NAME=VALUE, got {text!r}")
    name, _, raw = text.partition("=")
    key = _check_name(name)
    return key, _parse_value(key, raw)


def limit_hint(name: str) -> str:
    """How to raise a limit, for the end of an error message."""
    return f"raise it with {LIMIT_ENV_PREFIX}{name.upper()}"
