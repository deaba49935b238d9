"""Writing and reading reports: the renderer table, atomic writes, the JSON Schema, loading."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from audit.exceptions import DataFileError, UsageError
from audit.io import read_json, write_text_atomic
from audit.report._html import render_html
from audit.report._text import render_json, render_junit, render_markdown, render_sarif
from audit.results import AuditReport

__all__ = ["RENDERERS", "load_report", "schema", "validate_report_dict", "write_reports"]

RENDERERS = {
    "json": render_json,
    "html": render_html,
    "markdown": render_markdown,
    "junit": render_junit,
    "sarif": render_sarif,
}

_SCHEMA_PATH = Path(__file__).with_name("schema.json")


def write_reports(report: AuditReport, targets: Mapping[str, str | Path]) -> dict[str, Path]:
    """Render and write each requested kind (json, html, markdown, junit, sarif) atomically."""
    written: dict[str, Path] = {}
    for kind, path in targets.items():
        if kind not in RENDERERS:
            raise UsageError(f"unknown report kind {kind!r}; allowed: {', '.join(RENDERERS)}")
        p = Path(path)
        if p.exists() and p.is_dir():
            raise UsageError(f"--{kind} must be a file path, got the folder {p}")
        try:
            written[kind] = write_text_atomic(p, RENDERERS[kind](report))
        except OSError as exc:
            reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc)).lower()
            raise UsageError(f"--{kind} {p} cannot be written: {reason}") from None
    return written


def schema() -> dict:
    """The JSON Schema of the report (documented in docs/report-schema.md)."""
    return json.loads(_SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_report_dict(d: Mapping) -> None:
    """Raise jsonschema.ValidationError when ``d`` does not follow the report schema."""
    import jsonschema

    jsonschema.validate(dict(d), schema())


def load_report(path: str | Path) -> AuditReport:
    """The AuditReport a trustaudit JSON report file holds (DataFileError for any other JSON)."""
    d = read_json(path)
    if not isinstance(d, dict) or "schema_version" not in d:
        raise DataFileError(f"{path} is not a trustaudit JSON report")
    return AuditReport.from_dict(d)
