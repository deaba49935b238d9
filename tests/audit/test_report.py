"""Reports: JSON follows the versioned schema and round-trips; HTML is self-contained; JUnit/SARIF/Markdown."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from audit.report import (
    load_report,
    render_html,
    render_json,
    render_junit,
    render_markdown,
    render_sarif,
    validate_report_dict,
    write_reports,
)
from audit.results import AuditReport
from audit.runner import run_audit
from tests.audit.helpers import lr_pipeline


@pytest.fixture(scope="module")
def report(lending) -> AuditReport:
    spec = {"data": {"target": "approved", "positive_label": 1, "sensitive": ["sex", "age_group"]},
            "checks": ["fairness"], "seed": 3, "policy": {"fairness": {"n_bootstrap": 200}}}
    return run_audit(lr_pipeline(lending), lending.test, train=lending.train, holdout=lending.holdout, spec=spec)


def test_json_matches_schema_and_round_trips(report, tmp_path):
    d = json.loads(render_json(report))
    validate_report_dict(d)
    assert d["schema_version"] == "2.0"
    assert AuditReport.from_dict(d).to_dict() == d
    p = write_reports(report, {"json": tmp_path / "r.json"})["json"]
    assert load_report(p).to_dict() == d
    assert {r["check_id"] for r in d["results"]} >= {"fairness.demographic_parity", "fairness.group_metrics"}
    for r in d["results"]:
        assert r["provenance"]["versions"]["fairlearn"]
        assert r["provenance"]["seconds"] >= 0


def test_schema_rejects_a_broken_report(report):
    import jsonschema

    d = json.loads(render_json(report))
    d["results"][0]["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        validate_report_dict(d)


def test_html_is_self_contained_with_inline_plots(report):
    html = render_html(report)
    assert html.startswith("<!doctype html>")
    assert "data:image/png;base64," in html
    srcs = re.findall(r'(?:src|href)="([^"#][^"]*)"', html)
    assert all(s.startswith("data:") for s in srcs), srcs
    assert "<script" not in html
    assert "fairness.demographic_parity" in html


def test_html_escapes_report_text(report):
    from dataclasses import replace

    evil = replace(report.results[0], summary="<script>alert(1)</script>")
    html = render_html(replace(report, results=(evil, *report.results[1:])))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_junit_has_one_case_per_check(report):
    root = ET.fromstring(render_junit(report))
    cases = root.findall(".//testcase")
    assert len(cases) == len(report.results)
    failures = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failures == [r.check_id for r in report.results if r.verdict.value == "FAIL"]
    assert root.get("failures") == str(len(failures))


def test_markdown_and_sarif(report):
    md = render_markdown(report)
    assert md.startswith("## trustaudit:")
    assert "| `fairness.demographic_parity` |" in md
    sarif = json.loads(render_sarif(report))
    assert sarif["version"] == "2.1.0"
    levels = {r["ruleId"]: r["level"] for r in sarif["runs"][0]["results"]}
    for r in report.results:
        if r.verdict.value == "FAIL":
            assert levels[r.check_id] == "error"


def test_write_reports_refuses_a_folder(report, tmp_path):
    from audit.exceptions import UsageError

    with pytest.raises(UsageError, match="must be a file path"):
        write_reports(report, {"html": tmp_path})


def test_exit_code_of_a_report_that_audited_nothing_is_2():
    from audit.results import AuditReport, CheckResult, Verdict

    def res(cid, v):
        return CheckResult(check_id=cid, verdict=v, summary="s")

    assert AuditReport("a", "t", (res("x.a", Verdict.SKIPPED), res("x.b", Verdict.SKIPPED))).exit_code() == 2
    assert AuditReport("a", "t", ()).exit_code() == 2
    assert AuditReport("a", "t", (res("x.a", Verdict.SKIPPED), res("x.b", Verdict.PASS))).exit_code() == 0
    assert AuditReport("a", "t", (res("x.a", Verdict.WARN),)).exit_code(strict=True) == 1
    assert AuditReport("a", "t", (res("x.a", Verdict.ERROR),)).exit_code() == 1
