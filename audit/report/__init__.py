"""Renderers of an AuditReport: JSON (source of truth), HTML, Markdown, JUnit XML, SARIF.

Renderers read reports and never compute statistics; ``write_reports`` writes each atomically.
"""

from __future__ import annotations

from audit.report._html import render_html
from audit.report._text import render_json, render_junit, render_markdown, render_sarif
from audit.report._write import RENDERERS, load_report, schema, validate_report_dict, write_reports

__all__ = [
    "RENDERERS",
    "load_report",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "render_sarif",
    "schema",
    "validate_report_dict",
    "write_reports",
]
