"""Self-contained HTML report: inline CSS, plots as inline PNG, readable offline.

The page's markup lives in jinja2 templates (``templates/report.html.j2`` and its partials),
rendered with autoescape on, so everything from the report is escaped; nothing is fetched and
the page has no script. This module prepares the values: which tables, how numbers read, the
PNG data URIs of the plots.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2
import markupsafe

from audit.report.plots import plot_png
from audit.results import AuditReport, CheckResult, EvidenceTable

__all__ = ["render_html"]

_MAX_TABLE_ROWS = 60
_MAX_KV_ROWS = 80
_COUNT_LABELS = (("PASS", "passed"), ("FAIL", "failed"), ("WARN", "warnings"), ("ERROR", "errors"),
                 ("SKIPPED", "skipped"))


def _environment() -> jinja2.Environment:
    return template_environment("audit.report")


@functools.cache
def template_environment(package: str) -> jinja2.Environment:
    """The jinja2 environment of a package's ``templates`` folder (the audit report's, the federated
    run report's): autoescape on, undefined names an error; built once per package, so templates
    are compiled once too."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2", "css"), default=True,
                                            default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
        keep_trailing_newline=True,
    )


def _fmt(v: Any) -> str:
    """How one value reads in a table cell: floats to 4 significant digits, NaN as n/a."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(records: Iterable[Mapping[str, Any]], max_rows: int = _MAX_TABLE_ROWS) -> dict[str, Any]:
    """Columns (in order of first appearance), the first ``max_rows`` rows of cells (text,
    preformatted?), and how many rows were left out. A ``dot`` column (a graph in DOT) is shown
    preformatted and verbatim."""
    recs = list(records)
    cols: list[str] = []
    for r in recs:
        for k in r:
            if k not in cols:
                cols.append(k)
    rows = [[(str(r.get(c, "")), True) if c == "dot" else (_fmt(r.get(c, "")), False) for c in cols]
            for r in recs[:max_rows]]
    return {"empty": not recs, "columns": [str(c) for c in cols], "rows": rows,
            "more": max(0, len(recs) - max_rows)}


def _kv(m: Mapping[str, Any], max_rows: int = _MAX_KV_ROWS) -> dict[str, Any]:
    """Key/value rows (the first ``max_rows``) and how many were left out."""
    items = list(m.items())
    return {"rows": [(str(k), _fmt(v)) for k, v in items[:max_rows]], "more": max(0, len(items) - max_rows)}


def _png_uri(t: EvidenceTable) -> markupsafe.Markup | None:
    """The table's plot as a PNG data URI, or None without a plot. Marked safe for the template
    by construction: base64 text (``A-Za-z0-9+/=``) holds no character HTML escapes, and
    escaping it would only copy a megabyte of text per report."""
    png = plot_png(t)
    if png is None:
        return None
    return markupsafe.Markup("data:image/png;base64," + base64.b64encode(png).decode("ascii"))


def _evidence(t: EvidenceTable) -> dict[str, Any]:
    plot_error = None
    try:
        uri = _png_uri(t)
    except Exception as exc:  # noqa: BLE001 - a plot must never sink the report
        uri = None
        plot_error = f"{type(exc).__name__}: {exc}"
    return {
        "name": t.name,
        "description": t.description,
        "image": uri,
        "alt": t.plot.title if t.plot else t.name,
        "plot_error": plot_error,
        "n_rows": len(t.records),
        "table": _table(t.records),
    }


def _check(r: CheckResult) -> dict[str, Any]:
    prov = r.provenance
    return {
        "id": r.check_id,
        "verdict": r.verdict.value,
        "summary": r.summary,
        "evidence": [_evidence(t) for t in r.evidence],
        "n_metrics": len(r.metrics),
        "metrics": _kv(r.metrics),
        "policy": _kv(r.policy) if r.policy else None,
        "provenance": _kv({**dict(prov.params), "seed": prov.seed, "seconds": round(prov.seconds, 3)}),
        "error": {"type": r.error.type, "text": r.error.traceback or r.error.message} if r.error else None,
    }


def _context(report: AuditReport) -> dict[str, Any]:
    counts = report.counts()
    model = report.model
    checks = [_check(r) for r in report.results]
    families: dict[str, list[dict[str, Any]]] = {}
    for r, prepared in zip(report.results, checks, strict=True):
        families.setdefault(r.family, []).append(prepared)
    inputs: dict[str, Any] = {
        "model": model.get("path") or model.get("source"),
        "model format": model.get("format"),
        "model type": model.get("type"),
        "model sha256": model.get("sha256"),
    }
    for role, info in dict(report.inputs.get("data", {})).items():
        inputs[f"{role} data"] = (f"{info.get('path') or info.get('source')} ({info.get('rows')} rows, "
                                  f"sha256 {str(info.get('sha256') or '')[:16]})")
    return {
        "audit_id": report.audit_id,
        "created_at": report.created_at,
        "seconds": f"{report.seconds:.1f}",
        "schema_version": report.schema_version,
        "verdict": report.verdict.value,
        "counts": [(v, counts[v], label) for v, label in _COUNT_LABELS],
        "inputs": _kv(inputs),
        "checks": checks,
        "families": [(fam or "other", fam_checks) for fam, fam_checks in families.items()],
        "spec_json": json.dumps(dict(report.spec), indent=2, default=str),
        "versions": _kv(dict(report.environment.get("versions", {}))),
    }


def render_html(report: AuditReport) -> str:
    """The report as one self-contained HTML page."""
    return _environment().get_template("report.html.j2").render(_context(report))
