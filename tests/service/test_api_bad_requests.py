"""Bad requests against the real server (uvicorn on a loopback port, in its own process).

Each request below is refused with a 4xx status and ``{"error": "<one sentence>"}`` naming the
problem; afterwards the server's log holds no traceback and no 5xx, no refused upload left a file
behind, and nothing was written outside the jobs folder. The server runs with small limits
(1 MB per file, 3 files per job, 3 queued jobs) and no worker, so submissions stay queued.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service._server import Server, assert_error, make_token, multipart, start_server

SPEC = """
checks = ["fairness.group_metrics"]
[data]
target = "approved"
positive_label = 1
sensitive = ["sex"]
"""


@dataclass
class Api:
    server: Server
    http: httpx.Client
    alpha: str
    beta: str
    revoked: str
    model: bytes
    data: bytes
    beta_job: str
    beta_audit: str
    finished_job: str
    tmp: Path

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.alpha}"}

    def submit(self, files: dict[str, tuple[str, bytes]] | None = None, spec: str | None = SPEC,
               **kw: Any) -> httpx.Response:
        files = {"model": ("model.skops", self.model), "data": ("applicants.csv", self.data)} if files is None else files
        return self.http.post("/v1/audits", files=multipart(files, spec), headers=self.auth(), **kw)

    def with_data(self, content: bytes, name: str = "applicants.csv") -> httpx.Response:
        return self.submit({"model": ("model.skops", self.model), "data": (name, content)})

    def with_model(self, content: bytes, name: str = "model.skops") -> httpx.Response:
        return self.submit({"model": (name, content), "data": ("applicants.csv", self.data)})

    def with_spec(self, spec: str) -> httpx.Response:
        return self.submit(spec=spec)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, audit_files: Any) -> Iterator[Api]:
    from audit.store import open_store
    from tests.audit.test_store import make_report

    tmp = tmp_path_factory.mktemp("bad_requests")
    store_path = str(tmp / "store.sqlite")
    store = open_store(store_path)
    alpha, beta = make_token(store_path, "alpha"), make_token(store_path, "beta")
    revoked_id, revoked = store.create_token("alpha", "revoked")
    store.revoke_token(revoked_id)
    # another project's job and audit, and a job that already ended
    beta_job = store.submit_job("audit", {"checks": ["fairness"]}, {}, project="beta", submitted_by="local")
    beta_audit = store.record(make_report(7), project="beta")
    finished = store.submit_job("audit", {"checks": ["fairness"]}, {}, project="alpha", submitted_by="local")
    assert store.claim_job("w").job_id == beta_job
    assert store.claim_job("w").job_id == finished
    store.fail_job(finished, "w", "a reason")
    server = start_server(store_path, tmp / "jobs", tmp / "serve.log", "--no-worker", "--max-upload-mb", "1",
                          "--max-files", "3", "--max-queued", "3")
    try:
        with httpx.Client(base_url=server.url, timeout=120.0) as http:
            yield Api(server, http, alpha, beta, revoked, audit_files.model.read_bytes(),
                      audit_files.data.read_bytes(), beta_job, beta_audit, finished, tmp)
    finally:
        server.stop()


def _pickle_model() -> bytes:
    import joblib
    from sklearn.linear_model import LogisticRegression

    buf = io.BytesIO()
    joblib.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), buf)
    return buf.getvalue()


def _zip_bomb(member: str = "data.bin") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("schema.json", b"{}")
        z.writestr(member, b"\0" * (60 * 1024**2))
    return buf.getvalue()


def _zip_of(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("applicants.csv", data)
    return buf.getvalue()


def _raw(server: Server, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes on a socket; the answer's status and JSON body."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [int(v) for k, v in (ln.split(b":", 1) for ln in head.split(b"\r\n")[1:])
                          if k.strip().lower() == b"content-length"]
                if length and len(body) >= length[0]:
                    break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _declared_oversize(a: Api) -> httpx.Response:
    boundary = "b" * 16
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nxyz".encode()
    request = (f"POST /v1/audits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a.alpha}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {50 * 1024**3}\r\n\r\n"
               ).encode() + body
    status, payload = _raw(a.server, request)
    return httpx.Response(status, json=payload)


def _truncated(a: Api) -> httpx.Response:
    boundary = "c" * 16
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.skops\"\r\n\r\n"
            ).encode() + a.model[:5000]
    return a.http.post("/v1/audits", content=body, headers={
        **a.auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"})


def _raw_multipart(a: Api, disposition: str, content: bytes = b"x") -> httpx.Response:
    boundary = "d" * 16
    body = (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()
    return a.http.post("/v1/audits", content=body, headers={
        **a.auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"})


def _fed(a: Api, body: Any = None, *, content: bytes | None = None, ctype: str = "application/json") -> httpx.Response:
    raw = json.dumps(body).encode() if content is None else content
    return a.http.post("/v1/federated", content=raw, headers={**a.auth(), "Content-Type": ctype})


NOT_UTF8_CSV = "approved,sex,region\n1,m\xe4nnlich,s\xfcd\n".encode("latin-1") * 20
UTF16_CSV = "approved,sex\n1,f\n0,m\n".encode("utf-16")

#: (id, request, expected status, words the error must contain)
CASES: list[tuple[str, Callable[[Api], httpx.Response], int | tuple[int, ...], tuple[str, ...]]] = [
    # who may ask
    ("no-token", lambda a: a.http.get("/v1/jobs"), 401, ("API token",)),
    ("basic-auth", lambda a: a.http.get("/v1/jobs", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, ("Bearer",)),
    ("unknown-token", lambda a: a.http.get("/v1/jobs", headers=a.auth("ta_" + "x" * 43)), 401, ("not valid",)),
    ("revoked-token", lambda a: a.http.get("/v1/audits", headers=a.auth(a.revoked)), 401, ("revoked",)),
    ("no-token-on-upload", lambda a: a.http.post("/v1/audits", files=multipart(
        {"model": ("m", a.model), "data": ("d.csv", a.data)}, SPEC)), 401, ("API token",)),
    ("other-project-job", lambda a: a.http.get(f"/v1/jobs/{a.beta_job}", headers=a.auth()), 404, ("no job",)),
    ("other-project-audit", lambda a: a.http.get(f"/v1/audits/{a.beta_audit}", headers=a.auth()), 404, ("no audit",)),
    ("other-project-report", lambda a: a.http.get(f"/v1/audits/{a.beta_audit}/report.html", headers=a.auth()), 404,
     ("no audit",)),
    ("other-project-cancel", lambda a: a.http.post(f"/v1/jobs/{a.beta_job}/cancel", headers=a.auth()), 404,
     ("no job",)),
    # what is asked for
    ("unknown-job", lambda a: a.http.get(f"/v1/jobs/{uuid.uuid4().hex}", headers=a.auth()), 404, ("no job",)),
    ("malformed-job-id", lambda a: a.http.get("/v1/jobs/not-a-job-id", headers=a.auth()), 404, ("no job",)),
    ("unknown-audit", lambda a: a.http.get(f"/v1/audits/{uuid.uuid4().hex}", headers=a.auth()), 404, ("no audit",)),
    ("report-format", lambda a: a.http.get(f"/v1/audits/{a.beta_audit}/report.pdf", headers=a.auth()), 422, ("fmt",)),
    ("negative-limit", lambda a: a.http.get("/v1/jobs?limit=-1", headers=a.auth()), 422, ("limit", "-1")),
    ("huge-limit", lambda a: a.http.get("/v1/audits?limit=100000000", headers=a.auth()), 422, ("limit",)),
    ("limit-not-a-number", lambda a: a.http.get("/v1/audits?limit=ten", headers=a.auth()), 422, ("limit",)),
    ("unknown-state", lambda a: a.http.get("/v1/jobs?state=done", headers=a.auth()), 422, ("state",)),
    ("unknown-verdict", lambda a: a.http.get("/v1/audits?verdict=GREAT", headers=a.auth()), 422, ("verdict",)),
    ("compare-without-b", lambda a: a.http.get(f"/v1/audits/compare?a={a.beta_audit}", headers=a.auth()), 422,
     ("'b'", "required")),
    ("cancel-finished-job", lambda a: a.http.post(f"/v1/jobs/{a.finished_job}/cancel", headers=a.auth()), 409,
     ("already failed",)),
    ("unknown-endpoint", lambda a: a.http.get("/v1/nope", headers=a.auth()), 404, ("no such endpoint",)),
    ("wrong-method", lambda a: a.http.delete("/v1/jobs", headers=a.auth()), 405, ("DELETE",)),
    ("huge-header", lambda a: a.http.get("/v1/health", headers={"X-Pad": "p" * 40_000}), 431, ("headers",)),
    # how it is sent
    ("json-instead-of-multipart", lambda a: a.http.post("/v1/audits", json={"model": "x"}, headers=a.auth()), 415,
     ("multipart/form-data", "application/json")),
    ("no-content-type", lambda a: a.http.post("/v1/audits", content=b"abc", headers=a.auth()), 415,
     ("multipart/form-data",)),
    ("no-boundary", lambda a: a.http.post("/v1/audits", content=b"abc", headers={
        **a.auth(), "Content-Type": "multipart/form-data"}), 400, ("boundary",)),
    ("truncated-multipart", _truncated, 400, ("closing boundary",)),
    ("declared-oversize-body", _declared_oversize, 413, ("request body",)),
    ("oversize-upload", lambda a: a.with_model(b"PK\x03\x04" + b"\0" * (2 * 1024**2)), 413, ("model file", "1 MB")),
    ("oversize-spec", lambda a: a.with_spec("# " + "x" * (1024**2 + 10)), 413, ("spec",)),
    ("too-many-files", lambda a: a.submit({"model": ("m.skops", a.model), "data": ("d.csv", a.data),
                                           "train": ("t.csv", a.data), "holdout": ("h.csv", a.data)}), 413,
     ("too many files", "at most 3")),
    ("unknown-field", lambda a: _raw_multipart(a, 'form-data; name="script"; filename="x.sh"'), 422,
     ("unknown form field", "script")),
    ("repeated-field", lambda a: a.http.post("/v1/audits", headers=a.auth(), files=[
        ("model", ("m.skops", a.model)), ("data", ("a.csv", a.data)), ("data", ("b.csv", a.data))]), 422,
     ("twice",)),
    ("not-form-data", lambda a: _raw_multipart(a, 'attachment; name="model"'), 400, ("form-data",)),
    ("path-traversal-name", lambda a: a.with_data(a.data, name="../../../evil.csv"), 422,
     ("not a plain file name", "never used as paths")),
    ("backslash-name", lambda a: a.with_model(a.model, name="..\\..\\evil.skops"), 422, ("not a plain file name",)),
    ("control-char-name", lambda a: _raw_multipart(a, 'form-data; name="data"; filename="a\x07b.csv"'), 422,
     ("not a plain file name",)),
    ("no-model", lambda a: a.submit({"data": ("d.csv", a.data)}), 422, ("no 'model'",)),
    ("no-data", lambda a: a.submit({"model": ("m.skops", a.model)}), 422, ("no 'data'",)),
    ("no-spec", lambda a: a.submit(spec=None), 422, ("no 'spec'",)),
    ("empty-model", lambda a: a.with_model(b""), 422, ("model file", "empty")),
    ("empty-data", lambda a: a.with_data(b""), 422, ("data file", "empty")),
    # what is inside
    ("pickle-model", lambda a: a.with_model(_pickle_model(), "model.joblib"), 422, ("pickle", "model.joblib")),
    ("zip-bomb-model", lambda a: a.with_model(_zip_bomb()), 422, ("decompression bomb",)),
    ("garbage-model", lambda a: a.with_model(b"\x13\x37" * 5000), 422, ("not a recognised format",)),
    ("gzip-bomb-data", lambda a: a.with_data(gzip.compress(b"\0" * (60 * 1024**2)), "applicants.csv.gz"), 422,
     ("gzip-compressed",)),
    ("zip-data", lambda a: a.with_data(_zip_of(a.data)), 422, ("zip-compressed",)),
    ("non-utf8-csv", lambda a: a.with_data(NOT_UTF8_CSV), 422, ("not UTF-8",)),
    ("utf16-csv", lambda a: a.with_data(UTF16_CSV), 422, ("UTF-16",)),
    ("binary-data", lambda a: a.with_data(bytes(range(256)) * 40), 422, ("applicants.csv",)),
    ("missing-target-column", lambda a: a.with_data(b"a,b\n1,2\n3,4\n"), 422, ("no column 'approved'",)),
    ("malformed-toml", lambda a: a.with_spec("checks = [fairness\n[data"), 422, ("not valid TOML",)),
    ("spec-not-utf8", lambda a: a.submit(spec=None, files={
        "model": ("m.skops", a.model), "data": ("d.csv", a.data), "spec": ("s.toml", b"\xff\xfe\x00x")}), 422,
     ("not UTF-8",)),
    ("spec-json-array", lambda a: a.with_spec('[{"checks": ["fairness"]}]'), 422, ("not valid TOML",)),
    ("spec-json-nan", lambda a: a.with_spec('{"seed": NaN}'), 422, ("NaN",)),
    ("spec-model-path", lambda a: a.with_spec(SPEC + '\n[model]\npath = "/etc/passwd"\n'), 422,
     ("model.path", "names a file")),
    ("spec-data-path", lambda a: a.with_spec(SPEC.replace('target = "approved"',
                                                          'target = "approved"\ntest = "../secret.csv"')), 422,
     ("data.test", "names a file")),
    ("spec-graph-file", lambda a: a.with_spec(SPEC + '\n[causal]\ngraph = "/etc/graph.dot"\n'), 422,
     ("causal.graph", "names a file")),
    ("spec-unknown-key", lambda a: a.with_spec("shell = 'rm -rf /'\n" + SPEC), 422, ("unknown key 'shell'",)),
    ("spec-without-target", lambda a: a.with_spec('checks = ["fairness"]\n[data]\npositive_label = 1\n'), 422,
     ("data.target",)),
    ("spec-unknown-check", lambda a: a.with_spec(SPEC.replace("fairness.group_metrics", "astrology")), 422,
     ("astrology",)),
    # federated jobs
    ("federated-text-plain", lambda a: _fed(a, content=b"num-clients=3", ctype="text/plain"), 415,
     ("application/json",)),
    ("federated-bad-json", lambda a: _fed(a, content=b"{num-clients: 3"), 400, ("not valid JSON",)),
    ("federated-array", lambda a: _fed(a, [1, 2]), 422, ("JSON object",)),
    ("federated-unknown-setting", lambda a: _fed(a, {"num-clients": 3, "rm": "-rf"}), 422,
     ("unknown federated setting 'rm'",)),
    ("federated-data-path", lambda a: _fed(a, {"data": "/etc/passwd"}), 422, ("'data'", "names a file")),
    ("federated-output-dir", lambda a: _fed(a, {"output_dir": "/tmp/x"}), 422, ("output_dir",)),
    ("federated-range", lambda a: _fed(a, {"num-clients": 0}), 422, ("num-clients",)),
    ("federated-too-large", lambda a: _fed(a, content=b'{"x": "' + b"y" * 100_000 + b'"}'), 413, ("JSON body",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_a_4xx_with_one_sentence(api: Api, case: Any) -> None:
    _name, request, status, needles = case
    assert_error(request(api), status, *needles)


def test_queue_full_is_429(api: Api) -> None:
    """With 3 queued jobs (the server's --max-queued), a fourth valid submission is 429, not a crash;
    cancelling one makes room again."""
    ids = []
    for _ in range(3):
        r = api.submit()
        assert r.status_code == 202, r.text
        ids.append(r.json()["job_id"])
    msg = assert_error(api.submit(), 429, "queue is full")
    assert "3 jobs queued" in msg
    assert api.submit().headers.get("retry-after") == "5"
    assert api.http.post(f"/v1/jobs/{ids[0]}/cancel", headers=api.auth()).json()["state"] == "cancelled"
    r = api.submit()
    assert r.status_code == 202, r.text
    for job_id in [*ids[1:], r.json()["job_id"]]:
        assert api.http.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth()).json()["state"] == "cancelled"


def test_the_job_folder_holds_only_generated_names(api: Api) -> None:
    """An accepted upload is stored under a generated name; the client's name is only recorded."""
    from audit.store import open_store

    r = api.with_data(api.data, name="my applicants (final).csv")
    assert r.status_code == 202, r.text
    job = open_store(api.server.store).get_job(r.json()["job_id"])
    folder = api.tmp / "jobs" / job.inputs["folder"]
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([job.inputs["model"]["stored"], job.inputs["data"]["stored"]])
    assert all(n.endswith(".upload") and n.split("-")[0] in ("model", "data") for n in names)
    assert job.inputs["data"]["name"] == "my applicants (final).csv"
    assert job.inputs["data"]["sha256"] == hashlib.sha256(api.data).hexdigest()
    assert job.inputs["model"]["sha256"] == hashlib.sha256(api.model).hexdigest()
    view = api.http.get(f"/v1/jobs/{job.job_id}", headers=api.auth()).json()
    assert "stored" not in json.dumps(view["inputs"])  # the server's file names are not shown
    assert api.http.post(f"/v1/jobs/{job.job_id}/cancel", headers=api.auth()).json()["state"] == "cancelled"
    assert not folder.exists()


def test_no_server_error_and_nothing_left_behind(api: Api) -> None:
    """Run after the cases (file order): the log shows no traceback and no 5xx; the refused uploads
    left no file (only the folders of accepted jobs, removed when those were cancelled), and the
    traversal names wrote nothing outside the jobs folder."""
    assert len(CASES) >= 30
    assert api.server.problems() == []
    assert api.server.proc.poll() is None  # still serving
    assert api.http.get("/v1/health").status_code == 200
    leftovers = sorted(p.name for p in (api.tmp / "jobs").iterdir())
    assert leftovers == [], leftovers
    assert not list(api.tmp.parent.rglob("evil*"))
    log = api.server.log_text()
    assert log.count('" 4') >= len(CASES), "every bad request is answered with a 4xx in the access log"
