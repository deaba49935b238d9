"""The federated run report rendered from its jinja2 template, on a small hand-made run (no
simulation): self-contained, every value from the run escaped, numbers formatted, tables cut."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from federated import FederatedConfig
from federated._report import _environment, render_run_report
from federated._run import FederatedRun

EVIL = '<script>alert("x")</script>'


def _round(r: int, *, accuracy: float, epsilon: float | None, groups: list[dict]) -> dict:
    clients = [] if r == 0 else [{"partition_id": 0, "accuracy": 0.6}, {"partition_id": 1, "accuracy": 0.8}]
    return {
        "round": r, "sampled": [] if r == 0 else [0, 1], "answered": [] if r == 0 else [0, 1], "dropped": [],
        "failed": [], "timed_out": [], "aggregated": True, "quorum": True, "clients": clients,
        "global": {"loss": 0.5 + r / 10, "accuracy": accuracy},
        "client_fairness": {} if r == 0 else {"clients": 2.0, "mean": 0.7, "min": 0.6, "max": 0.8},
        "groups": groups, "fairness": {}, "epsilon": epsilon, "seconds": 0.25, "latency": 0.0,
    }


@pytest.fixture(scope="module")
def run() -> FederatedRun:
    groups = [{"attribute": f"attr {EVIL}", "group": f"group {EVIL}", "accuracy": 0.7, "selection_rate": math.nan}]
    conditions = {"noise_source": f"noise {EVIL}", "sampling_source": f"sampling {EVIL}",
                  "not_covered": [f"not covered {EVIL}"]}
    return FederatedRun(
        config=FederatedConfig(num_clients=2, num_rounds=2, central_dp=True),
        data={"source": f"source {EVIL}"},
        partitions=({"partition_id": 0, "rows": 10, "positives": 4}, {"partition_id": 1, "rows": 12, "positives": 7}),
        rounds=(_round(0, accuracy=0.5, epsilon=None, groups=groups),
                _round(1, accuracy=0.61234, epsilon=1.5, groups=groups),
                _round(2, accuracy=0.712345, epsilon=2.25, groups=groups)),
        encoder={}, final_arrays=(),
        privacy={"central": {"noise_multiplier": 1.0, "note": f"note {EVIL}", "conditions": conditions}},
    )


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_run_report_is_self_contained_and_escaped(run: FederatedRun) -> None:
    html = render_run_report(run)
    assert html.startswith("<!doctype html>") and "<script" not in html.lower()
    page = _Page()
    page.feed(html)
    text = "".join(page.text)
    for shown in (f"source {EVIL}", f"group {EVIL}", f"note {EVIL}", f"noise {EVIL}", f"sampling {EVIL}",
                  f"not covered {EVIL}"):
        assert shown in text, shown
    srcs = [a.get("src") or a.get("href") for _, a in page.tags if a.get("src") or a.get("href")]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    headings = re.findall(r"<h2>([^<]*)</h2>", html)
    assert headings == ["Global model per round", "Per-client accuracy of the global model",
                        "Fairness across groups (global model, test rows)", "Who answered", "Privacy loss per round",
                        "Partitions", "Rounds", "Final model by group", "Partitions", "Privacy", "Settings"]


def test_run_report_numbers(run: FederatedRun) -> None:
    html = render_run_report(run)
    assert ("2 clients (2 per round), 2 rounds, model <b>logreg</b>, strategy <b>fedavg</b>, central DP; "
            "partition <b>iid</b>;") in html
    assert "Final test accuracy <b>0.7123</b>." in html
    # the final round's group row: 4 significant digits, NaN blank
    final_groups = html.split("<h2>Final model by group</h2>")[1].split("</table>")[0]
    assert "<td>0.7</td><td></td>" in final_groups
    assert "<td>0.6123</td>" in html.split("<h2>Rounds</h2>")[1]
    assert "<td>num-clients</td><td>2</td>" in html  # the settings table


def test_run_report_cuts_long_tables(run: FederatedRun) -> None:
    parts = tuple({"partition_id": i, "rows": 10, "positives": 5} for i in range(75))
    html = render_run_report(replace(run, partitions=parts))
    assert "<p><em>first 60 of 75 rows</em></p>" in html
    assert "<h2>Privacy</h2>" in html and "Not covered by the ε" in html
    plain = render_run_report(replace(run, privacy={}, config=FederatedConfig(num_clients=2, num_rounds=2)))
    assert "<h2>Privacy</h2>" not in plain and "Not covered" not in plain


def test_run_report_environment_is_cached_and_escapes() -> None:
    env = _environment()
    assert env is _environment() and env.autoescape("run_report.html.j2")
