"""The HTTP API over real HTTP: ``trustaudit serve`` on a free loopback port (its own process),
httpx as the client, the store read directly for ground truth.

* a server without workers: what a submission records and shows, cancel of a queued job, a
  federated job, tokens (CLI create / revoke), project isolation, the OpenAPI document;
* a server with its 2 local workers (``serve --workers 2``): audits run and their reports are the
  ones a local ``run_audit`` of the same files and spec gives, in each format; compare; cancel of
  a running job;
* 4 clients submitting at once to a server with 2 workers, on SQLite and on PostgreSQL: every job
  accounted for, none lost, none run twice (4 x 5 by default, 4 x 25 under ``-m slow``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service._server import ROOT, Server, assert_error, make_token, multipart, start_server

SPEC = """
seed = 3
checks = ["fairness.group_metrics", "fairness.demographic_parity"]
[data]
target = "approved"
positive_label = 1
sensitive = ["sex"]
[policy.fairness]
n_bootstrap = 200
"""
#: a job that runs for a minute (LIME explanations of 3,000 rows), for cancel while running
SLOW_SPEC = """
checks = ["explain.lime"]
[data]
target = "approved"
positive_label = 1
sensitive = ["sex"]
[policy.explain]
lime_sample_size = 3000
"""


@dataclass
class Served:
    server: Server
    http: httpx.Client
    alpha: str
    beta: str
    model: bytes
    data: bytes
    slow_data: bytes
    tmp: Path

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.alpha}"}

    def submit(self, spec: str = SPEC, *, token: str | None = None, slow: bool = False,
               data_name: str = "applicants.csv") -> httpx.Response:
        files = {"model": ("credit model.skops", self.model), "data": (data_name, self.slow_data if slow else self.data)}
        return self.http.post("/v1/audits", files=multipart(files, spec), headers=self.auth(token))

    def job(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}", headers=self.auth(token))
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, timeout: float = 300.0, states: tuple[str, ...] = ("succeeded", "failed",
                                                                                      "cancelled")) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            assert time.monotonic() < end, f"job {job_id} still {job['state']} after {timeout:g} s"
            time.sleep(0.2)


def _served(tmp: Path, audit_files: Any, *flags: str) -> Iterator[Served]:
    store = str(tmp / "store.sqlite")
    alpha, beta = make_token(store, "alpha"), make_token(store, "beta")
    server = start_server(store, tmp / "jobs", tmp / "serve.log", *flags)
    try:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            yield Served(server, http, alpha, beta, audit_files.model.read_bytes(), audit_files.data.read_bytes(),
                         audit_files.slow_data.read_bytes(), tmp)
        assert server.problems() == [], server.problems()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def queued(tmp_path_factory: pytest.TempPathFactory, audit_files: Any) -> Iterator[Served]:
    """A server with no worker: submissions stay queued."""
    yield from _served(tmp_path_factory.mktemp("queued"), audit_files, "--no-worker")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, audit_files: Any) -> Iterator[Served]:
    """A server with its own 2 local workers."""
    yield from _served(tmp_path_factory.mktemp("running"), audit_files, "--workers", "2")


# --- without workers ----------------------------------------------------------------------------


def test_health_needs_no_token_and_the_openapi_document_is_versioned(queued: Served) -> None:
    r = queued.http.get("/v1/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["api"] == "v1"
    doc = queued.http.get("/v1/openapi.json").json()
    assert doc["info"]["version"] == "1.0.0" and doc["openapi"].startswith("3.")
    assert all(p.startswith("/v1/") for p in doc["paths"])
    assert set(doc["paths"]) == {
        "/v1/health", "/v1/audits", "/v1/audits/compare", "/v1/audits/{audit_id}",
        "/v1/audits/{audit_id}/report.{fmt}", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel",
        "/v1/federated"}
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    upload = doc["paths"]["/v1/audits"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["model", "data", "spec"]
    assert doc["paths"]["/v1/jobs"]["get"]["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    assert "security" not in doc["paths"]["/v1/health"]["get"]
    assert doc["paths"]["/v1/jobs"]["get"]["security"] == [{"HTTPBearer": []}]


def test_a_submission_is_queued_with_what_was_uploaded(queued: Served) -> None:
    from audit.store import open_store

    r = queued.submit(data_name="my applicants.csv")
    assert r.status_code == 202, r.text
    body = r.json()
    job_id = body["job_id"]
    assert body["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{job_id}"
    assert body["links"] == {"self": f"/v1/jobs/{job_id}", "cancel": f"/v1/jobs/{job_id}/cancel"}
    view = queued.job(job_id)
    assert (view["kind"], view["state"], view["project"], view["attempts"]) == ("audit", "queued", "alpha", 0)
    assert view["spec"]["checks"] == ["fairness.group_metrics", "fairness.demographic_parity"]
    assert view["spec"]["data"]["target"] == "approved" and view["spec"]["seed"] == 3
    assert view["spec"]["policy"]["fairness"]["n_bootstrap"] == 200
    assert view["inputs"]["model"]["name"] == "credit model.skops"
    assert view["inputs"]["model"]["sha256"] == hashlib.sha256(queued.model).hexdigest()
    assert view["inputs"]["model"]["size"] == len(queued.model)
    assert view["inputs"]["data"]["name"] == "my applicants.csv"
    assert (view["inputs"]["data"]["rows"], view["inputs"]["data"]["columns"]) == (300, 9)
    assert view["inputs"]["data"]["sha256"] == hashlib.sha256(queued.data).hexdigest()
    assert "stored" not in json.dumps(view)
    # the store holds the same job, submitted by the token's id, its files in the job folder
    store = open_store(queued.server.store)
    job = store.get_job(job_id)
    token_ids = {t.token_id for t in store.list_tokens(project="alpha")}
    assert job.submitted_by in token_ids
    folder = queued.server.jobs_dir / job.inputs["folder"]
    assert (folder / job.inputs["data"]["stored"]).read_bytes() == queued.data
    assert (folder / job.inputs["model"]["stored"]).read_bytes() == queued.model
    listed = queued.http.get("/v1/jobs", params={"state": "queued"}, headers=queued.auth()).json()["jobs"]
    assert job_id in [j["job_id"] for j in listed]
    # cancelled while queued: at once, and its uploads are removed
    r = queued.http.post(f"/v1/jobs/{job_id}/cancel", headers=queued.auth())
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert r.json()["error"] == "cancelled before it started"
    assert not folder.exists()
    again = queued.http.post(f"/v1/jobs/{job_id}/cancel", headers=queued.auth())
    assert again.status_code == 200 and again.json()["state"] == "cancelled"  # idempotent
    assert job_id not in [j["job_id"] for j in queued.http.get(
        "/v1/jobs", params={"state": "queued"}, headers=queued.auth()).json()["jobs"]]


def test_a_token_sees_only_its_project(queued: Served) -> None:
    a = queued.submit().json()["job_id"]
    b = queued.submit(token=queued.beta).json()["job_id"]
    mine = [j["job_id"] for j in queued.http.get("/v1/jobs", headers=queued.auth()).json()["jobs"]]
    theirs = [j["job_id"] for j in queued.http.get("/v1/jobs", headers=queued.auth(queued.beta)).json()["jobs"]]
    assert a in mine and b not in mine and b in theirs and a not in theirs
    assert_error(queued.http.get(f"/v1/jobs/{b}", headers=queued.auth()), 404, f"no job '{b}'")
    assert queued.job(b, queued.beta)["project"] == "beta"
    # the same answer as for a job that does not exist: nothing about another project leaks
    unknown = "0" * 32
    assert_error(queued.http.get(f"/v1/jobs/{unknown}", headers=queued.auth()), 404, f"no job '{unknown}'")
    assert len(queued.http.get("/v1/jobs", params={"limit": 1}, headers=queued.auth()).json()["jobs"]) == 1
    for job_id, token in ((a, queued.alpha), (b, queued.beta)):
        assert queued.http.post(f"/v1/jobs/{job_id}/cancel", headers=queued.auth(token)).status_code == 200


def test_a_federated_simulation_is_a_job(queued: Served) -> None:
    r = queued.http.post("/v1/federated", json={"num-clients": 3, "num_rounds": 2, "strategy": "fedprox",
                                               "audit": True, "checks": "fairness"}, headers=queued.auth())
    assert r.status_code == 202, r.text
    job = queued.job(r.json()["job_id"])
    assert (job["kind"], job["state"], job["inputs"]) == ("federated", "queued", {})
    spec = job["spec"]
    assert (spec["num-clients"], spec["num-rounds"], spec["strategy"], spec["audit"]) == (3, 2, "fedprox", True)
    assert spec["data"] == "" and spec["output-dir"] == ""  # the generator; nothing written by a client's path
    assert queued.http.post(f"/v1/jobs/{job['job_id']}/cancel", headers=queued.auth()).json()["state"] == "cancelled"


def test_token_commands(queued: Served) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "audit.service", "token", *args, "--store", queued.server.store],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    out = cli("create", "--project", "gamma", "--name", "ci")
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("ta_") and len(secret) > 40
    token_id = out.stdout.split()[1]
    assert queued.http.get("/v1/jobs", headers=queued.auth(secret)).json() == {"jobs": []}
    listed = cli("list", "--project", "gamma", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["token_id"], r["project"], r["name"], r["revoked_at"]) for r in rows] == [(token_id, "gamma", "ci", None)]
    assert secret not in listed.stdout and hashlib.sha256(secret.encode()).hexdigest() not in listed.stdout
    assert cli("revoke", token_id).returncode == 0
    assert_error(queued.http.get("/v1/jobs", headers=queued.auth(secret)), 401, "revoked")
    bad = cli("create", "--project", "../etc")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "project name '../etc'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = cli("revoke", "nope")
    assert missing.returncode == 2 and "no token 'nope'" in missing.stderr


# --- with workers -------------------------------------------------------------------------------


def _local_report(model: bytes, data: bytes, spec_toml: str, tmp: Path) -> Any:
    """Ground truth: the same audit run here, by the library, on the same bytes."""
    import tomllib

    from audit import run_audit
    from audit.io import load_model

    (tmp / "m.skops").write_bytes(model)
    (tmp / "d.csv").write_bytes(data)
    return run_audit(load_model(tmp / "m.skops"), tmp / "d.csv", spec=tomllib.loads(spec_toml))


def test_an_audit_runs_and_its_reports_are_served(running: Served, tmp_path: Path) -> None:
    r = running.submit()
    assert r.status_code == 202, r.text
    job = running.wait(r.json()["job_id"])
    assert job["state"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] == 2
    assert job["progress"]["checks"] == {"fairness.group_metrics": "done", "fairness.demographic_parity": "done"}
    assert job["attempts"] == 1 and job["error"] is None and job["finished_at"] >= job["started_at"]
    audit_id = job["audit_id"]
    assert job["links"]["audit"] == f"/v1/audits/{audit_id}"
    report = running.http.get(f"/v1/audits/{audit_id}", headers=running.auth()).json()
    truth = _local_report(running.model, running.data, SPEC, tmp_path)
    assert [(x["check_id"], x["verdict"]) for x in report["results"]] == [
        (x.check_id, x.verdict.value) for x in truth.results]
    for served, local in zip(report["results"], truth.results, strict=True):
        assert served["metrics"].keys() == local.metrics.keys()
        for k, v in local.metrics.items():
            assert served["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), k
    # the report names the client's files and their hashes, never a server path
    assert report["model"]["path"] == "credit model.skops"
    assert report["model"]["sha256"] == hashlib.sha256(running.model).hexdigest()
    assert report["inputs"]["data"]["test"]["path"] == "applicants.csv"
    assert report["inputs"]["data"]["test"]["sha256"] == hashlib.sha256(running.data).hexdigest()
    assert str(running.server.jobs_dir) not in json.dumps(report)
    # every format, from the store's one report
    formats = {}
    for fmt, media in (("json", "application/json"), ("html", "text/html"), ("md", "text/markdown"),
                       ("xml", "application/xml"), ("sarif", "application/sarif+json")):
        resp = running.http.get(f"/v1/audits/{audit_id[:12]}/report.{fmt}", headers=running.auth())
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(media), (fmt, resp.text[:200])
        formats[fmt] = resp.text
    assert json.loads(formats["json"]) == report
    assert "<html" in formats["html"].lower() and audit_id[:12] in formats["html"]
    assert "fairness.demographic_parity" in formats["md"]
    assert len(list(ET.fromstring(formats["xml"]).iter("testcase"))) == 2
    assert json.loads(formats["sarif"])["version"] == "2.1.0"
    # listed for its project only
    listed = running.http.get("/v1/audits", headers=running.auth()).json()["audits"]
    assert audit_id in [a["audit_id"] for a in listed]
    assert [a["project"] for a in listed] == ["alpha"] * len(listed)
    assert audit_id not in [a["audit_id"] for a in running.http.get(
        "/v1/audits", headers=running.auth(running.beta)).json()["audits"]]
    assert_error(running.http.get(f"/v1/audits/{audit_id}", headers=running.auth(running.beta)), 404, "no audit")
    end = time.monotonic() + 60
    while list(running.server.jobs_dir.iterdir()):  # the worker removes the job's uploads once it is recorded
        assert time.monotonic() < end, list(running.server.jobs_dir.iterdir())
        time.sleep(0.1)


def test_compare_two_audits(running: Served) -> None:
    ids = [running.submit(spec).json()["job_id"] for spec in (SPEC, SPEC.replace("seed = 3", "seed = 4")
                                                             .replace('sensitive = ["sex"]', 'sensitive = ["age_group"]'))]
    a, b = (running.wait(i)["audit_id"] for i in ids)
    r = running.http.get("/v1/audits/compare", params={"a": a, "b": b}, headers=running.auth())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["a"]["audit_id"] == a and body["b"]["audit_id"] == b
    from audit.store import compare_reports, open_store

    store = open_store(running.server.store)
    assert body["changes"] == json.loads(json.dumps(compare_reports(store.get(a), store.get(b))))
    assert [c["check_id"] for c in body["changes"]] == ["fairness.group_metrics", "fairness.demographic_parity"]


def test_cancel_a_running_job(running: Served) -> None:
    job_id = running.submit(SLOW_SPEC, slow=True).json()["job_id"]
    running.wait(job_id, timeout=300, states=("running", "succeeded", "failed"))
    r = running.http.post(f"/v1/jobs/{job_id}/cancel", headers=running.auth())
    assert r.status_code == 200, r.text
    assert r.json()["cancel_requested"] is True
    end = running.wait(job_id, timeout=120)
    assert end["state"] == "cancelled" and end["audit_id"] is None, end


# --- 4 clients at once, 2 workers ----------------------------------------------------------------


def _concurrent(store: str, tmp: Path, audit_files: Any, clients: int, per_client: int) -> dict[str, int]:
    from audit.service.client import Client
    from audit.store import open_store
    from tests.service.conftest import assert_store_consistent

    token = make_token(store, "load")
    server = start_server(store, tmp / "jobs", tmp / "serve.log", "--workers", "2", "--max-queued", "10000")
    spec = {"checks": ["fairness.group_metrics"], "data": {"target": "approved", "positive_label": 1,
                                                           "sensitive": ["sex"]}}
    submitted: list[list[str]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        try:
            with Client(server.url, token) as c:
                barrier.wait()
                for _ in range(per_client):
                    submitted[k].append(c.submit_audit(audit_files.model, audit_files.data, spec))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        ids = [j for s in submitted for j in s]
        total = clients * per_client
        assert len(ids) == total and len(set(ids)) == total  # every submission answered with its own job
        db = open_store(store)
        deadline = time.monotonic() + 60 + 10 * total
        while db.count_jobs(project="load", state="succeeded") + db.count_jobs(project="load", state="failed") < total:
            assert time.monotonic() < deadline, f"jobs left: {[(j.job_id, j.state) for j in db.list_jobs(limit=500) if not j.finished]}"
            time.sleep(0.5)
        jobs = db.list_jobs(project="load", limit=10 * total)
        assert sorted(j.job_id for j in jobs) == sorted(ids)  # none lost, none invented
        assert [j.state for j in jobs] == ["succeeded"] * total, [(j.state, j.error) for j in jobs if j.error]
        assert all(j.attempts == 1 for j in jobs)  # none run twice
        audit_ids = [j.audit_id for j in jobs]
        assert len(set(audit_ids)) == total
        assert {r["audit_id"] for r in db.list(project="load", limit=10 * total)} == set(audit_ids)
        if total >= 100:
            assert len({j.worker_id for j in jobs}) == 2  # both workers took part
        counts = assert_store_consistent(db)
        assert counts["audits"] == total and counts["jobs"] == total
        assert server.problems() == []
        return counts
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_4_clients_submit_at_once_and_every_job_is_accounted_for(backend: str, request: pytest.FixtureRequest,
                                                                  tmp_path: Path, audit_files: Any) -> None:
    store = str(tmp_path / "store.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_url")
    counts = _concurrent(store, tmp_path, audit_files, clients=4, per_client=5)
    assert counts["audits"] == counts["jobs"] == 20


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_4_clients_x_25_submissions_with_2_workers(backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                   audit_files: Any) -> None:
    store = str(tmp_path / "store.sqlite") if backend == "sqlite" else request.getfixturevalue("pg_url")
    counts = _concurrent(store, tmp_path, audit_files, clients=4, per_client=25)
    assert counts["audits"] == counts["jobs"] == 100


# --- an unexpected error ------------------------------------------------------------------------


def test_an_unexpected_error_is_a_one_line_500_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The catch-all: a bug (here a store method that raises) answers 500 with one line naming only
    the exception's type, logs the traceback, and the server keeps serving. In-process uvicorn on a
    loopback port, so the store can be broken from the test."""
    import socket

    import uvicorn

    from audit.service.api import create_app

    store = str(tmp_path / "store.sqlite")
    token = make_token(store, "alpha")
    app = create_app(store, jobs_dir=tmp_path / "jobs", warm=False)

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret detail /srv/data")

    app.state.store.list_jobs = boom
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        end = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < end
            time.sleep(0.05)
        with caplog.at_level("ERROR", logger="trustaudit.api"):
            r = httpx.get(f"{url}/v1/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        msg = assert_error(r, 500, "internal error (RuntimeError)", "server log")
        assert "secret detail" not in msg
        logged = [rec for rec in caplog.records if rec.name == "trustaudit.api"]
        assert logged and logged[0].exc_info is not None and "GET /v1/jobs" in logged[0].getMessage()
        assert httpx.get(f"{url}/v1/audits", headers={"Authorization": f"Bearer {token}"}, timeout=30).json() == {
            "audits": []}
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
