"""``trustaudit audit --server URL`` against a real server with its 2 local workers, side by side
with the local command on the same files: the same exit codes (0, 1, 2), the same report files
with the same findings, the same progress lines; refusals one line, exit 2. And ``Client``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service._server import ROOT, Server, make_token, start_server

SPEC = """
seed = 3
checks = ["fairness.group_metrics", "fairness.demographic_parity"]
[data]
target = "approved"
positive_label = 1
sensitive = ["sex"]
[policy.fairness]
n_bootstrap = 300
demographic_parity_difference_max = {limit}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("client")
    store = str(tmp / "store.sqlite")
    token = make_token(store, "ci")
    server = start_server(store, tmp / "jobs", tmp / "serve.log", "--workers", "2")
    try:
        yield server, token
        assert server.problems() == []
    finally:
        server.stop()


def trustaudit(*args: str, token: str | None = None, cwd: Path | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRUSTAUDIT_TOKEN"}
    env.update(PYTHONPATH=str(ROOT), TRUSTAUDIT_PROGRESS="0")
    if token is not None:
        env["TRUSTAUDIT_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=timeout)


def _one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout[-500:], out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustaudit: error: "), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _findings(report: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    return [(r["check_id"], r["verdict"], r["metrics"]) for r in report["results"]]


@pytest.mark.parametrize(("limit", "exit_code"), [(0.5, 0), (0.1, 1)])
def test_server_audit_matches_the_local_one(served: tuple[Server, str], audit_files: Any, tmp_path: Path,
                                            limit: float, exit_code: int) -> None:
    server, token = served
    spec = tmp_path / "audit.toml"
    spec.write_text(SPEC.format(limit=limit))
    common = ["audit", "--spec", str(spec), "--model", str(audit_files.model), "--data", str(audit_files.data)]
    local = trustaudit(*common, "--out", str(tmp_path / "local"), "--no-store")
    remote = trustaudit(*common, "--out", str(tmp_path / "remote"), "--server", server.url, token=token)
    assert local.returncode == remote.returncode == exit_code, (local.stderr[-1500:], remote.stderr[-1500:])
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "remote").iterdir()) == [
        "report.html", "report.json", "report.md", "report.sarif", "report.xml"]
    here = json.loads((tmp_path / "local" / "report.json").read_text())
    there = json.loads((tmp_path / "remote" / "report.json").read_text())
    assert _findings(here) == _findings(there)
    assert here["verdict"] == there["verdict"] and here["spec"] == there["spec"]
    assert there["model"]["path"] == "model.skops" and there["model"]["sha256"] == here["model"]["sha256"]
    # the same progress lines (plain, not a terminal) and the same summary table
    progress = [ln for ln in local.stderr.splitlines() if ln.startswith("[")]
    assert progress == ["[1/2] fairness.group_metrics ...", "[2/2] fairness.demographic_parity ..."]
    assert [ln for ln in remote.stderr.splitlines() if ln.startswith("[")] == progress
    assert remote.stderr.splitlines()[0].startswith("submitted job ")
    table = [ln for ln in local.stdout.splitlines() if "fairness." in ln]
    assert [ln for ln in remote.stdout.splitlines() if "fairness." in ln] == table
    # the other formats are the server's renderings of the same report
    md = (tmp_path / "remote" / "report.md").read_text()
    assert there["audit_id"][:12] in md and "fairness.demographic_parity" in md


def test_a_job_the_server_fails_is_exit_2_with_its_reason(served: tuple[Server, str], audit_files: Any) -> None:
    """Every check skipped (privacy without a DP claim or train/holdout): the local command says
    "nothing audited", exit 2; the server's worker fails the job with the same line."""
    server, token = served
    args = ["audit", "--model", str(audit_files.model), "--data", str(audit_files.data), "--target", "approved",
            "--positive-label", "1", "--sensitive", "sex", "--checks", "privacy", "--quiet"]
    local = _one_line_error(trustaudit(*args, "--no-store"), "nothing audited")
    remote = _one_line_error(trustaudit(*args, "--server", server.url, token=token), "failed: nothing audited")
    assert local.split("nothing audited", 1)[1] == remote.split("nothing audited", 1)[1]


def test_refusals_are_one_line_exit_2(served: tuple[Server, str], audit_files: Any, tmp_path: Path) -> None:
    server, token = served
    base = ["audit", "--model", str(audit_files.model), "--data", str(audit_files.data), "--target", "approved",
            "--positive-label", "1", "--sensitive", "sex", "--checks", "fairness.group_metrics", "--quiet"]
    _one_line_error(trustaudit(*base, "--server", server.url), "TRUSTAUDIT_TOKEN")
    _one_line_error(trustaudit(*base, "--server", server.url, token="ta_" + "x" * 43), "not valid", "HTTP 401")
    _one_line_error(trustaudit(*base, "--server", server.url, "--store", str(tmp_path / "s.sqlite"), token=token),
                    "--store")
    _one_line_error(trustaudit(*base, "--server", server.url, "--unsafe-pickle", token=token), "--unsafe-pickle")
    _one_line_error(trustaudit(*base, "--server", "ftp://example.org", token=token), "http://")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    _one_line_error(trustaudit(*base, "--server", f"http://127.0.0.1:{closed}", token=token), "cannot be reached")
    # bad input refused at submission, before any job exists
    bad = [*base[:6], "nope", *base[7:]]
    _one_line_error(trustaudit(*bad, "--server", server.url, token=token), "no column 'nope'", "HTTP 422")
    missing = _one_line_error(trustaudit(*base[:2], str(tmp_path / "absent.skops"), *base[3:], "--server", server.url,
                                         token=token))
    assert "absent.skops" in missing
    # an output location is checked before anything is uploaded
    (tmp_path / "file").write_text("x")
    _one_line_error(trustaudit(*base, "--out", str(tmp_path / "file"), "--server", server.url, token=token), "--out")


def test_timeout_cancels_the_job(served: tuple[Server, str], audit_files: Any, tmp_path: Path) -> None:
    from audit.store import open_store

    server, token = served
    before = {j.job_id for j in open_store(server.store).list_jobs(limit=500)}
    spec = tmp_path / "slow.toml"  # LIME explanations of 3,000 rows: a minute
    spec.write_text('checks = ["explain.lime"]\n[policy.explain]\nlime_sample_size = 3000\n')
    out = trustaudit("audit", "--spec", str(spec), "--model", str(audit_files.model), "--data",
                     str(audit_files.slow_data), "--target", "approved", "--positive-label", "1", "--sensitive", "sex",
                     "--server", server.url, "--timeout", "3", "--quiet", token=token)
    _one_line_error(out, "did not finish within 3 s", "was cancelled")
    store = open_store(server.store)
    (job,) = [j for j in store.list_jobs(limit=500) if j.job_id not in before]
    end = time.monotonic() + 120
    while not store.get_job(job.job_id).finished:
        assert time.monotonic() < end
        time.sleep(0.2)
    assert store.get_job(job.job_id).state == "cancelled"


def test_client_api(served: tuple[Server, str], audit_files: Any) -> None:
    from audit.results import AuditReport
    from audit.service.client import Client, ServiceError

    server, token = served
    spec = {"checks": ["fairness.group_metrics"], "data": {"target": "approved", "positive_label": 1,
                                                           "sensitive": ["sex"]}}
    with Client(server.url + "/v1/", token) as c:
        assert c.health()["status"] == "ok"
        job_id = c.submit_audit(audit_files.model, audit_files.data, spec, train=audit_files.train)
        seen: list[str] = []
        job = c.wait(job_id, poll=0.2, on_update=lambda j: seen.append(j["state"]))
        assert job["state"] == "succeeded" and seen[-1] == "succeeded"
        assert job["inputs"]["train"]["name"] == "train.csv"
        report = c.report(job["audit_id"])
        assert isinstance(report, AuditReport) and report.audit_id == job["audit_id"]
        assert [r.check_id for r in report.results] == ["fairness.group_metrics"]
        assert "fairness.group_metrics" in c.report_text(job["audit_id"], "md")
        assert job["audit_id"] in [a["audit_id"] for a in c.audits(limit=500)]
        assert job_id in [j["job_id"] for j in c.jobs(state="succeeded", limit=500)]
        same = c.compare(job["audit_id"], job["audit_id"])
        assert [ch["change"] for ch in same["changes"]] == ["same"]
        with pytest.raises(ServiceError, match="no job") as err:
            c.job("0" * 32)
        assert err.value.status == 404
        with pytest.raises(ServiceError, match="has already succeeded") as err:
            c.cancel(job_id)
        assert err.value.status == 409
    with Client(server.url, "ta_" + "y" * 43) as bad, pytest.raises(ServiceError, match="not valid") as err:
        bad.jobs()
    assert err.value.status == 401
