"""Self-contained HTML report: inline CSS, plots as inline PNG, readable offline.
Everything from the report is escaped; nothing is fetched."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping
from typing import Any

from audit.report.plots import png_data_uri
from audit.results import AuditReport, CheckResult, EvidenceTable

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c8cdd8;font-size:13px}
main{padding:18px 28px;max-width:1200px}
.badge{display:inline-block;padding:2px 9px;border-radius:10px;font-weight:600;font-size:12px;color:#fff}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.WARN{background:#ef8f00}.ERROR{background:#6a1b9a}.SKIPPED{background:#78909c}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0 12px}
td,th{border:1px solid #d9dde5;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef0f4}
section.check{background:#fff;border:1px solid #dde1e8;border-radius:8px;padding:12px 16px;margin:12px 0}
section.check h3{margin:0 0 6px;font-size:16px}
.summary{font-size:14px;margin:4px 0 8px}
details{margin:6px 0} summary{cursor:pointer;color:#34495e}
img{max-width:100%;border:1px solid #eee;margin:4px 0}
pre{background:#f3f3f3;padding:8px;overflow:auto;font-size:11.5px}
.family{margin-top:26px;border-bottom:2px solid #1d2330;font-size:18px}
.counts span{margin-right:10px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _e(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}"
    return _e(v)


def _table(records: Any, max_rows: int = 60) -> str:
    recs = list(records)
    if not recs:
        return "<p><em>empty</em></p>"
    cols: list[str] = []
    for r in recs:
        for k in r:
            if k not in cols:
                cols.append(k)
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for r in recs[:max_rows]:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == "dot":
                cells.append(f"<td><pre>{_e(v)}</pre></td>")
            else:
                cells.append(f"<td>{_fmt(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p><em>{len(recs) - max_rows} more rows in the JSON report</em></p>" if len(recs) > max_rows else ""
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}"


def _kv(m: Mapping[str, Any], max_rows: int = 80) -> str:
    items = list(m.items())
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in items[:max_rows])
    more = f"<p><em>{len(items) - max_rows} more in the JSON report</em></p>" if len(items) > max_rows else ""
    return f"<table>{rows}</table>{more}" if items else "<p><em>none</em></p>"


def _evidence(t: EvidenceTable) -> str:
    parts = [f"<h4>{_e(t.name)}</h4>"]
    if t.description:
        parts.append(f"<p>{_e(t.description)}</p>")
    try:
        uri = png_data_uri(t)
    except Exception as exc:  # noqa: BLE001 - a plot must never sink the report
        uri = None
        parts.append(f"<p><em>plot unavailable: {_e(type(exc).__name__)}: {_e(exc)}</em></p>")
    if uri:
        parts.append(f'<img alt="{_e(t.plot.title if t.plot else t.name)}" src="{uri}">')
    parts.append(f"<details><summary>table ({len(t.records)} rows)</summary>{_table(t.records)}</details>")
    return "".join(parts)


def _check(r: CheckResult) -> str:
    parts = [
        f'<section class="check" id="{_e(r.check_id)}">',
        f'<h3><span class="badge {r.verdict.value}">{r.verdict.value}</span> {_e(r.check_id)}</h3>',
        f'<p class="summary">{_e(r.summary)}</p>',
    ]
    for t in r.evidence:
        parts.append(_evidence(t))
    parts.append(f"<details><summary>metrics ({len(r.metrics)})</summary>{_kv(r.metrics)}</details>")
    if r.policy:
        parts.append(f"<details><summary>policy</summary>{_kv(r.policy)}</details>")
    prov = r.provenance
    parts.append(
        "<details><summary>provenance</summary>"
        + _kv({**dict(prov.params), "seed": prov.seed, "seconds": round(prov.seconds, 3)})
        + "</details>"
    )
    if r.error:
        parts.append(f"<details><summary>error: {_e(r.error.type)}</summary><pre>{_e(r.error.traceback or r.error.message)}</pre></details>")
    parts.append("</section>")
    return "".join(parts)


def render_html(report: AuditReport) -> str:
    c = report.counts()
    model = report.model
    fam_order: list[str] = []
    for r in report.results:
        if r.family not in fam_order:
            fam_order.append(r.family)
    overview = "".join(
        f'<tr><td><a href="#{_e(r.check_id)}">{_e(r.check_id)}</a></td>'
        f'<td><span class="badge {r.verdict.value}">{r.verdict.value}</span></td><td>{_e(r.summary)}</td></tr>'
        for r in report.results
    )
    body = []
    for fam in fam_order:
        body.append(f'<h2 class="family">{_e(fam or "other")}</h2>')
        body.extend(_check(r) for r in report.results if r.family == fam)
    inputs = {
        "model": model.get("path"),
        "model format": model.get("format"),
        "model type": model.get("type"),
        "model sha256": model.get("sha256"),
    }
    for role, info in dict(report.inputs.get("data", {})).items():
        inputs[f"{role} data"] = f"{info.get('path')} ({info.get('rows')} rows, sha256 {str(info.get('sha256') or '')[:16]})"
    spec_json = json.dumps(dict(report.spec), indent=2, default=str)
    versions = dict(report.environment.get("versions", {}))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>trustaudit report {_e(report.audit_id[:12])}</title><style>{_CSS}</style></head>
<body><header><h1>trustaudit report <span class="badge {report.verdict.value}">{report.verdict.value}</span></h1>
<p>audit {_e(report.audit_id)} · {_e(report.created_at)} · {report.seconds:.1f} s · schema {_e(report.schema_version)}</p></header>
<main>
<p class="counts">{''.join(f'<span><span class="badge {v}">{c[v]}</span> {label}</span>' for v, label in (("PASS", "passed"), ("FAIL", "failed"), ("WARN", "warnings"), ("ERROR", "errors"), ("SKIPPED", "skipped")))}</p>
<h2>Inputs</h2>{_kv(inputs)}
<h2>Findings</h2><table><tr><th>check</th><th>verdict</th><th>summary</th></tr>{overview}</table>
{''.join(body)}
<h2>Reproduce</h2><details><summary>spec</summary><pre>{_e(spec_json)}</pre></details>
<details><summary>library versions</summary>{_kv(versions)}</details>
</main></body></html>
"""
