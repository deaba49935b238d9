"""Text renderers: JSON (the source of truth), Markdown (pull-request comment), JUnit XML, SARIF.
Renderers read an AuditReport and never compute statistics."""

from __future__ import annotations

import json
import math
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from audit.results import AuditReport, CheckResult, Verdict

__all__ = ["render_json", "render_junit", "render_markdown", "render_sarif"]

_ICON = {"PASS": "✅", "FAIL": "❌", "WARN": "⚠️", "ERROR": "💥", "SKIPPED": "⏭️"}


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if abs(v) >= 1000 or v == int(v):
        return f"{v:.0f}"
    return f"{v:.4g}"


def _key_metrics(r: CheckResult, n: int = 6) -> str:
    items = [(k, v) for k, v in r.metrics.items() if not k.endswith((".ci_low", ".ci_high"))][:n]
    return ", ".join(f"`{k}`={_fmt(v)}" for k, v in items)


def render_markdown(report: AuditReport) -> str:
    c = report.counts()
    model = report.model
    lines = [
        f"## trustaudit: {_ICON[report.verdict.value]} {report.verdict.value}",
        "",
        f"Model `{model.get('path', '?')}` ({model.get('type', model.get('kind', '?'))}, "
        f"sha256 `{str(model.get('sha256') or '')[:12]}`) · audit `{report.audit_id[:12]}` · "
        f"{report.created_at} · {report.seconds:.1f} s",
        "",
        f"**{c['PASS']} passed, {c['FAIL']} failed, {c['WARN']} warnings, {c['ERROR']} errors, "
        f"{c['SKIPPED']} skipped**",
        "",
        "| check | verdict | finding |",
        "|---|---|---|",
    ]
    for r in report.results:
        summary = r.summary.replace("|", "\\|")
        lines.append(f"| `{r.check_id}` | {_ICON[r.verdict.value]} {r.verdict.value} | {summary} |")
    failing = [r for r in report.results if r.verdict in (Verdict.FAIL, Verdict.ERROR)]
    if failing:
        lines += ["", "<details><summary>Details of failures</summary>", ""]
        for r in failing:
            lines.append(f"- **{r.check_id}**: {r.summary}")
            km = _key_metrics(r)
            if km:
                lines.append(f"  - metrics: {km}")
            if r.policy:
                lines.append("  - policy: " + ", ".join(f"`{k}`={v}" for k, v in r.policy.items()))
            if r.error:
                lines.append(f"  - error: `{r.error.type}: {r.error.message[:200]}`")
        lines += ["", "</details>"]
    lines += ["", f"<sub>report schema {report.schema_version}; seed {report.spec.get('seed')}</sub>", ""]
    return "\n".join(lines)


def render_junit(report: AuditReport) -> str:
    """One <testcase> per check: FAIL -> <failure>, ERROR -> <error>, SKIPPED -> <skipped>.
    WARN passes (it is written to system-out) — use --strict to make the exit code count it."""
    c = report.counts()
    cases = []
    for r in report.results:
        attrs = (
            f"classname={quoteattr('trustaudit.' + (r.family or r.check_id.split('.')[0]))} "
            f"name={quoteattr(r.check_id)} time={quoteattr(f'{r.provenance.seconds:.3f}')}"
        )
        body = ""
        if r.verdict is Verdict.FAIL:
            body = f"<failure message={quoteattr(r.summary)} type=\"policy\">{escape(_detail(r))}</failure>"
        elif r.verdict is Verdict.ERROR:
            etype = r.error.type if r.error else "error"
            tb = r.error.traceback if r.error else ""
            body = f"<error message={quoteattr(r.summary)} type={quoteattr(etype)}>{escape(tb)}</error>"
        elif r.verdict is Verdict.SKIPPED:
            body = f"<skipped message={quoteattr(r.summary)}/>"
        out = f"<system-out>{escape(r.verdict.value + ': ' + r.summary)}</system-out>"
        cases.append(f"    <testcase {attrs}>{body}{out}</testcase>")
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<testsuites name="trustaudit" tests="{len(report.results)}" failures="{c["FAIL"]}" '
        f'errors="{c["ERROR"]}" skipped="{c["SKIPPED"]}" time="{report.seconds:.3f}">\n'
        f'  <testsuite name={quoteattr("trustaudit " + report.audit_id[:12])} tests="{len(report.results)}" '
        f'failures="{c["FAIL"]}" errors="{c["ERROR"]}" skipped="{c["SKIPPED"]}" '
        f'time="{report.seconds:.3f}" timestamp={quoteattr(report.created_at)}>\n'
    )
    return head + "\n".join(cases) + "\n  </testsuite>\n</testsuites>\n"


def _detail(r: CheckResult) -> str:
    lines = [r.summary]
    for k, v in list(r.metrics.items())[:30]:
        lines.append(f"{k} = {_fmt(v)}")
    for k, v in r.policy.items():
        lines.append(f"policy {k} = {v}")
    return "\n".join(lines)


def render_sarif(report: AuditReport) -> str:
    """SARIF 2.1.0: one rule per check, one result per FAIL / WARN / ERROR (location: the model)."""
    level = {Verdict.FAIL: "error", Verdict.ERROR: "error", Verdict.WARN: "warning"}
    rules: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    uri = str(report.model.get("path", "model"))
    for r in report.results:
        rules.append({"id": r.check_id, "shortDescription": {"text": r.check_id}})
        if r.verdict in level:
            results.append({
                "ruleId": r.check_id,
                "level": level[r.verdict],
                "message": {"text": r.summary},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}}}],
                "properties": {"verdict": r.verdict.value,
                               "metrics": {k: (None if math.isnan(v) else v) for k, v in list(r.metrics.items())[:50]}},
            })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "trustaudit", "rules": rules}},
            "results": results,
            "properties": {"audit_id": report.audit_id, "verdict": report.verdict.value},
        }],
    }
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"
