"""The HTML report rendered from its jinja2 templates: every value escaped (autoescape), tables
cut where they were, numbers formatted as before, plots inline, the environment built once."""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser

import pytest

from audit.report import _html, render_html
from audit.results import AuditReport, CheckResult, ErrorInfo, EvidenceTable, PlotSpec, Provenance, Verdict

EVIL = '<script>alert("x")</script>'


class _Page(HTMLParser):
    """Tags and text of a page (character references decoded), to read it as a browser would."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(html: str) -> _Page:
    p = _Page()
    p.feed(html)
    p.close()
    return p


def _report(results: tuple[CheckResult, ...], **kw) -> AuditReport:
    return AuditReport(audit_id="a" * 32, created_at="2026-01-01T00:00:00Z", results=results, seconds=1.25, **kw)


@pytest.fixture(scope="module")
def evil_report() -> AuditReport:
    """A report in which every field that reaches the page carries markup."""
    table = EvidenceTable(
        name=f"table {EVIL}",
        records=({EVIL: 0.123456, "group": EVIL, "dot": f'digraph "{EVIL}" {{}}'},),
        plot=PlotSpec(kind="bar", x="group", y=EVIL, title=f'title "quoted" {EVIL}'),
        description=f"description {EVIL}",
    )
    result = CheckResult(
        check_id=f'fairness.x"{EVIL}', verdict=Verdict.ERROR, summary=f"summary {EVIL}",
        metrics={f"metric {EVIL}": 1.0}, policy={f"limit {EVIL}": EVIL}, evidence=(table,),
        provenance=Provenance(params={EVIL: EVIL}, seed=3, seconds=0.5), family=f"family {EVIL}",
        error=ErrorInfo(type=f"Err{EVIL}", message="m", traceback=f"Traceback {EVIL}"),
    )
    return _report((result,), spec={"model": {"path": EVIL}}, model={"path": EVIL, "type": EVIL},
                   inputs={"data": {EVIL: {"path": EVIL, "rows": 3, "sha256": EVIL}}},
                   environment={"versions": {EVIL: EVIL}})


def test_every_value_from_the_report_is_escaped(evil_report):
    html = render_html(evil_report)
    assert "<script" not in html.lower()
    # a browser reads the values back verbatim: escaped, not dropped
    page = _page(html)
    text = "".join(page.text)
    for shown in (f"summary {EVIL}", f"description {EVIL}", f"table {EVIL}", f"metric {EVIL}",
                  f"limit {EVIL}", f"family {EVIL}", f"Traceback {EVIL}", f"Err{EVIL}"):
        assert shown in text, shown
    assert text.count(EVIL) >= 15
    # attribute values are escaped too (the quote cannot end the attribute)
    ids = [a["id"] for t, a in page.tags if t == "section"]
    assert ids == [f'fairness.x"{EVIL}']
    assert [a["href"] for t, a in page.tags if t == "a"] == [f'#fairness.x"{EVIL}']
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["alt"] == f'title "quoted" {EVIL}'


def test_page_is_self_contained(evil_report):
    html = render_html(evil_report)
    page = _page(html)
    assert html.startswith("<!doctype html>")
    assert [t for t, _ in page.tags].count("style") == 1 and "<link" not in html
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            if attrs.get(name):
                assert attrs[name].startswith(("data:image/png;base64,", "#")), (tag, attrs[name])
    # the CSS partial is inlined, verbatim
    css = (_html._environment().loader.get_source(_html._environment(), "report.css")[0]).strip()
    assert css in html


def test_dot_cell_is_preformatted_and_verbatim(evil_report):
    html = render_html(evil_report)
    pres = re.findall(r"<pre>(.*?)</pre>", html, re.S)
    assert "digraph &#34;&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&#34; {}" in pres


def test_numbers_read_as_before():
    recs = tuple({"value": v, "n": i, "flag": i % 2 == 0, "none": None} for i, v in
                 enumerate([0.123456789, math.nan, 12345.678, 1e-9]))
    r = CheckResult(check_id="x.numbers", verdict=Verdict.PASS, summary="s", metrics={"m": math.nan, "k": 2 / 3},
                    evidence=(EvidenceTable("t", recs),), family="x")
    html = render_html(_report((r,)))
    cells = re.findall(r"<td>([^<]*)</td>", html)
    for expected in ("0.1235", "n/a", "1.235e+04", "1e-09", "True", "False", "None", "0.6667"):
        assert expected in cells, expected
    assert "1.2 s" in html  # the header's seconds, one decimal
    assert "0.123456789" not in html


def test_long_tables_are_cut_with_a_note():
    recs = tuple({"i": f"row{i}"} for i in range(_html._MAX_TABLE_ROWS + 5))
    metrics = {f"m{i}": float(i) for i in range(_html._MAX_KV_ROWS + 3)}
    r = CheckResult(check_id="x.long", verdict=Verdict.WARN, summary="s", metrics=metrics,
                    evidence=(EvidenceTable("t", recs),), family="x")
    html = render_html(_report((r,)))
    assert f"<summary>table ({_html._MAX_TABLE_ROWS + 5} rows)</summary>" in html
    assert "<td>row59</td>" in html and "<td>row60</td>" not in html
    assert "<p><em>5 more rows in the JSON report</em></p>" in html
    assert f"<td>m{_html._MAX_KV_ROWS - 1}</td>" in html and f"<td>m{_html._MAX_KV_ROWS}</td>" not in html
    assert "<p><em>3 more in the JSON report</em></p>" in html


def test_empty_parts_and_family_order():
    results = (
        CheckResult(check_id="b.one", verdict=Verdict.PASS, summary="s", family="b",
                    evidence=(EvidenceTable("empty table", ()),)),
        CheckResult(check_id="a.one", verdict=Verdict.SKIPPED, summary="s", family="a"),
        CheckResult(check_id="b.two", verdict=Verdict.FAIL, summary="s", family="b"),
        CheckResult(check_id="c.one", verdict=Verdict.PASS, summary="s"),
    )
    html = render_html(_report(results))
    assert re.findall(r'<h2 class="family">([^<]*)</h2>', html) == ["b", "a", "other"]
    # sections follow their family; the findings table keeps the report's order
    assert re.findall(r'<section class="check" id="([^"]*)"', html) == ["b.one", "b.two", "a.one", "c.one"]
    assert re.findall(r'<a href="#([^"]*)"', html) == ["b.one", "a.one", "b.two", "c.one"]
    assert "<p><em>empty</em></p>" in html  # the empty evidence table
    assert "<summary>policy</summary>" not in html  # no policy, no policy block
    counts = dict((label, int(n)) for n, label in re.findall(r'<span class="badge \w+">(\d+)</span> (\w+)', html))
    assert counts == {"passed": 2, "failed": 1, "warnings": 0, "errors": 0, "skipped": 1}


def test_plot_failure_is_reported_in_the_page(monkeypatch):
    def broken(table):
        raise RuntimeError("<b>no</b>")

    monkeypatch.setattr(_html, "plot_png", broken)
    r = CheckResult(check_id="x.p", verdict=Verdict.PASS, summary="s", family="x",
                    evidence=(EvidenceTable("t", ({"a": 1.0},), plot=PlotSpec(kind="bar", x="a", y="a")),))
    html = render_html(_report((r,)))
    assert "<p><em>plot unavailable: RuntimeError: &lt;b&gt;no&lt;/b&gt;</em></p>" in html
    assert "<img" not in html


def test_environment_is_built_once_with_autoescape():
    env = _html._environment()
    assert env is _html._environment()
    assert env.autoescape("report.html.j2") and env.autoescape("_check.html.j2")
    # an expression rendered from a string template escapes too
    assert env.from_string("{{ x }}").render(x="<i>") == "&lt;i&gt;"
