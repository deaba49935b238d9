"""Schemathesis fuzzes the API from its own OpenAPI document (``/v1/openapi.json``), with a valid
token, against the real server (uvicorn in its own process, no worker).

Every generated request — valid and invalid ones, multipart uploads of random bytes, random
federated settings, ids, query values — must be answered without a server error (schemathesis'
``not_a_server_error``) and, when refused, with ``{"error": "<one line>"}``. A few dozen examples
per operation by default; a larger run under ``-m slow``. Afterwards the server's log shows no
traceback and no 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.service._server import Server, make_token, start_server  # noqa: E402


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    store = str(tmp / "store.sqlite")
    token = make_token(store, "fuzz")
    server = start_server(store, tmp / "jobs", tmp / "serve.log", "--no-worker", "--max-queued", "100000",
                          "--max-upload-mb", "2")
    try:
        yield server, token
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Server, str]) -> Any:
    """The document the running server serves (not one built here)."""
    server, _token = fuzzed
    return schemathesis.openapi.from_url(f"{server.url}/v1/openapi.json")


#: every operation of the API; test_every_operation_is_fuzzed keeps the list equal to the document's
OPERATIONS = [
    ("GET", "/v1/health"), ("POST", "/v1/audits"), ("GET", "/v1/audits"), ("GET", "/v1/audits/compare"),
    ("GET", "/v1/audits/{audit_id}"), ("GET", "/v1/audits/{audit_id}/report.{fmt}"), ("GET", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"), ("POST", "/v1/jobs/{job_id}/cancel"), ("POST", "/v1/federated"),
]


def errors_are_one_sentence(ctx: Any, response: Any, case: Any) -> bool | None:
    """A refusal is JSON ``{"error": "<one line>"}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
            and body["error"].strip() and "\n" not in body["error"]):
        raise AssertionError(f"error body is not {{'error': '<one line>'}}: {response.text[:300]}")
    return True


def _fuzz(api_schema: Any, fuzzed: tuple[Server, str], method: str, path: str, max_examples: int) -> int:
    """Positive and negative examples of one operation (schemathesis' strategies driven by
    Hypothesis here: its pytest plugin's lazy loader does not run on this pytest)."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    _server, token = fuzzed
    operation = api_schema[path][method]
    calls = [0]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  derandomize=True)
        def run(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=120)
            calls[0] += 1
            case.validate_response(response, checks=[not_a_server_error, errors_are_one_sentence])

        try:
            run()
        except Unsatisfiable:
            if mode is GenerationMode.POSITIVE:
                raise
            # an operation without parameters or body (GET /v1/health) has no invalid request to make
    return calls[0]


def test_every_operation_is_fuzzed(api_schema: Any) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert found == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error(api_schema: Any, fuzzed: tuple[Server, str], method: str, path: str) -> None:
    assert _fuzz(api_schema, fuzzed, method, path, max_examples=25) > 0  # requests were made and all passed


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_long(api_schema: Any, fuzzed: tuple[Server, str], method: str, path: str) -> None:
    assert _fuzz(api_schema, fuzzed, method, path, max_examples=300) > 0


def test_the_log_shows_no_server_error(fuzzed: tuple[Server, str]) -> None:
    """After the fuzzing (file order): no traceback, no 5xx, the server still answers."""
    server, _token = fuzzed
    import httpx

    assert server.problems() == []
    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/v1/health", timeout=10).status_code == 200
    assert server.log_text().count("HTTP/1.1") > 100  # the fuzzer really sent requests
