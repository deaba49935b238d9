"""The HTTP API of the audit service (FastAPI), version 1, under ``/v1``.

``create_app(store_url, jobs_dir=...)`` builds the application; ``trustaudit serve`` runs it with
uvicorn (``audit/service/_serve.py``). The OpenAPI document is ``GET /v1/openapi.json``.

Endpoints (every one but ``GET /v1/health`` needs ``Authorization: Bearer <token>``; a token sees
its project's jobs and audits only — another project's are "not found", as unknown ones):

* ``POST /v1/audits`` — multipart: ``model``, ``data`` (files), optional ``train``, ``holdout``
  (files), ``spec`` (TOML or JSON text: what to audit, no paths) → 202 ``{"job_id", "state", "links"}``.
* ``GET /v1/jobs``, ``GET /v1/jobs/{job_id}``, ``POST /v1/jobs/{job_id}/cancel``.
* ``GET /v1/audits``, ``GET /v1/audits/compare?a=&b=``, ``GET /v1/audits/{audit_id}`` (the JSON
  report), ``GET /v1/audits/{audit_id}/report.{json,html,md,xml,sarif}``.
* ``POST /v1/federated`` — a federated simulation job (its settings as a JSON object).

Errors are ``{"error": "<one sentence>"}``: 400 malformed request, 401 no or bad token, 404
unknown (or another project's) id, 409 a conflict, 413 too large, 415 wrong content type, 422
invalid input (FastAPI's validation errors included, rewritten to this shape), 429 queue full,
431 headers too large, 503 store unreachable. An unexpected exception is a 500 with one line and
its traceback in the server's log (the tests assert that none happens).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from audit.exceptions import (
    ConfigError,
    DataError,
    ModelError,
    SpecError,
    StoreError,
    TrustAuditError,
    UsageError,
)
from audit.service._uploads import (
    FILE_ROLES,
    ApiError,
    UploadLimits,
    display_name,
    parse_job_spec,
    probe_inputs,
    receive_form,
    spec_from_part,
    warm_intake,
)

__all__ = ["API_PREFIX", "API_VERSION", "create_app"]

API_VERSION = "1.0.0"
API_PREFIX = "/v1"
log = logging.getLogger("trustaudit.api")

#: report formats served, by the file suffix in the URL, and the renderer that writes each
REPORT_FORMATS: dict[str, tuple[str, str]] = {
    "json": ("json", "application/json"),
    "html": ("html", "text/html; charset=utf-8"),
    "md": ("markdown", "text/markdown; charset=utf-8"),
    "xml": ("junit", "application/xml"),
    "sarif": ("sarif", "application/sarif+json"),
}
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Verdict = Literal["PASS", "FAIL", "WARN", "ERROR"]
ReportFormat = Literal["json", "html", "md", "xml", "sarif"]
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_AUDIT_ID = re.compile(r"^[0-9a-f]{6,64}$")
_MAX_HEADER_BYTES = 32 * 1024
_MAX_HEADERS = 100
_MAX_JSON_BODY = 64 * 1024


# --- response shapes (the OpenAPI document describes them) ----------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(..., description="one sentence naming the problem")


class Health(BaseModel):
    status: Literal["ok"]
    api: str
    version: str


class JobLinks(BaseModel):
    model_config = ConfigDict(extra="allow")
    self: str
    cancel: str


class Accepted(BaseModel):
    job_id: str
    state: JobState
    links: JobLinks


class JobView(BaseModel):
    model_config = ConfigDict(extra="allow")
    job_id: str
    kind: Literal["audit", "federated"]
    state: JobState
    project: str
    submitted_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    attempts: int
    progress: dict[str, Any]
    error: str | None
    audit_id: str | None
    cancel_requested: bool
    spec: dict[str, Any]
    inputs: dict[str, Any]
    result: dict[str, Any] | None
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobView]


class AuditList(BaseModel):
    audits: list[dict[str, Any]]


class Comparison(BaseModel):
    a: dict[str, Any]
    b: dict[str, Any]
    changes: list[dict[str, Any]]


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_E = {"model": ErrorBody}
_bearer = HTTPBearer(auto_error=False, description="an API token: trustaudit token create --project NAME")


def _token_of(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Any:
    """The caller's token (``TokenInfo``), or 401."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'", _CHALLENGE)
        raise ApiError(401, "this endpoint needs an API token: send 'Authorization: Bearer <token>' "
                            "(create one with 'trustaudit token create --project NAME')", _CHALLENGE)
    info = request.app.state.store.verify_token(credentials.credentials)
    if info is None:
        raise ApiError(401, "the API token is not valid (unknown or revoked)", _CHALLENGE)
    return info


Token = Annotated[Any, Depends(_token_of)]
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: _E, 422: _E, 431: _E, 503: _E}


# --- the application ---------------------------------------------------------------------------


def create_app(
    store_url: str | Path | None,
    *,
    jobs_dir: str | Path,
    max_upload_mb: int = 200,
    max_files: int = 4,
    max_queued: int | None = 1000,
    allow_unsafe_pickle: bool = False,
    intake_timeout: float = 120.0,
    intake_memory_mb: int | None = 2048,
    intake_concurrency: int = 2,
    warm: bool = True,
) -> FastAPI:
    """The API on the store at ``store_url`` (a path or URL, as ``open_store`` takes).

    ``jobs_dir``: where each job's uploads are written (``<jobs_dir>/<job_id>/``), read by the
    workers. ``max_upload_mb``: each file; ``max_files``: file parts per job; ``max_queued``: jobs
    waiting before a submission answers 429 (None: no bound). ``allow_unsafe_pickle``: accept
    pickle/joblib models (unpickling runs any code they hold). The intake check of each
    submission (model and data loaded once) runs in a child process with ``intake_timeout``
    seconds and ``intake_memory_mb``, at most ``intake_concurrency`` at a time. ``warm``: import
    the loaders' libraries now (seconds, once) rather than in every check's child.
    """
    from audit.store import open_store

    __version__ = _trustaudit_version()

    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb must be at least 1, got {max_upload_mb}")
    if max_files < 2:
        raise UsageError(f"the file limit per job must be at least 2 (model and data), got {max_files}")
    if max_queued is not None and max_queued < 1:
        raise UsageError(f"--max-queued must be at least 1, got {max_queued}")
    store = open_store(store_url)
    jobs = Path(jobs_dir).expanduser().resolve()
    try:
        jobs.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"--jobs-dir {jobs} cannot be created: {exc.strerror or exc}") from None
    if not jobs.is_dir():
        raise UsageError(f"--jobs-dir {jobs} is not a folder")
    if warm:
        warm_intake()
    limits = UploadLimits(file_bytes=max_upload_mb * 1024**2, files=max_files)
    probes = asyncio.Semaphore(max(1, intake_concurrency))
    memory = None if intake_memory_mb is None else int(intake_memory_mb) * 1024**2

    app = FastAPI(
        title="trustaudit audit service",
        version=API_VERSION,
        description=(f"Audits as jobs (trustaudit {__version__}). Every endpoint but /v1/health needs "
                     "'Authorization: Bearer <token>' (trustaudit token create --project NAME). Errors are "
                     '{"error": "<one sentence>"}.'),
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.jobs_dir = jobs
    app.state.limits = limits
    v1 = APIRouter(prefix=API_PREFIX)

    @v1.get("/health", response_model=Health, responses={503: _E}, tags=["service"],
            summary="Liveness and store reachability (no token needed)")
    def health() -> dict[str, Any]:
        try:
            store.count_jobs(state="queued")
        except StoreError as exc:
            log.warning("health: %s", exc)
            raise ApiError(503, "the store cannot be reached") from None
        return {"status": "ok", "api": "v1", "version": __version__}

    # --- audits submitted ---------------------------------------------------------------------

    @v1.post(
        "/audits", status_code=202, response_model=Accepted, tags=["audits"],
        summary="Submit an audit (multipart: model, data, optional train and holdout, spec)",
        responses={**_AUTH_ERRORS, 400: _E, 413: _E, 415: _E, 429: _E},
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["model", "data", "spec"],
            "properties": {
                "model": {"type": "string", "format": "binary",
                          "description": "model file: skops, ONNX or TorchScript (pickle only if the server allows)"},
                "data": {"type": "string", "format": "binary", "description": "the audited rows: CSV or Parquet"},
                "train": {"type": "string", "format": "binary", "description": "training rows (optional)"},
                "holdout": {"type": "string", "format": "binary", "description": "holdout rows (optional)"},
                "spec": {"type": "string", "description": "what to audit, TOML or JSON text (no file paths)"},
            },
        }}}}},
    )
    async def submit_audit(request: Request, token: Token) -> JSONResponse:
        folder_name = uuid.uuid4().hex  # the job folder; the job names it in its inputs ("folder")
        folder = jobs / folder_name
        try:
            folder.mkdir(mode=0o700)
        except OSError as exc:
            log.error("jobs folder %s: %s", jobs, exc)
            raise ApiError(507, "the server cannot store uploads now (its jobs folder is not writable)") from None
        try:
            try:
                parts = await receive_form(request.headers, request.stream(), folder, limits)
            except ClientDisconnect:
                raise ApiError(400, "the client disconnected during the upload") from None
            for role in ("model", "data", "spec"):
                if role not in parts:
                    what = ("'spec' part: what to audit as TOML or JSON text (data.target, data.positive_label, "
                            "checks...)" if role == "spec" else f"'{role}' file part")
                    raise ApiError(422, f"the submission has no {what}")
            for role in FILE_ROLES:
                part = parts.get(role)
                if part is not None and part.size == 0:
                    raise ApiError(422, f"the {role} file '{display_name(part.name)}' is empty")
            spec_part = parts["spec"]
            assert spec_part.content is not None
            job_spec = parse_job_spec(spec_from_part(spec_part.content))
            async with probes:
                found = await run_in_threadpool(
                    probe_inputs, folder, parts, job_spec, allow_unsafe_pickle=allow_unsafe_pickle,
                    timeout=intake_timeout, memory_bytes=memory)
            inputs: dict[str, Any] = {"folder": folder_name}
            for role in FILE_ROLES:
                if role in parts:
                    entry = parts[role].input_entry()
                    if role == "model":
                        pickle = found["model"]["format"] == "pickle"
                        entry.update(format=job_spec.model_format, trusted_types=list(job_spec.trusted_types),
                                     allow_unsafe_pickle=bool(allow_unsafe_pickle and pickle))
                    else:
                        entry.update(na_values=list(job_spec.na_values), **found["tables"].get(role, {}))
                    inputs[role] = entry
            job_id = await run_in_threadpool(
                _submit, store, "audit", job_spec.spec, inputs, project=token.project, submitted_by=token.token_id,
                max_queued=max_queued)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("job %s queued: audit of %r for project %s (token %s)", job_id, display_name(parts["model"].name),
                 token.project, token.token_id)
        return JSONResponse(status_code=202, content={"job_id": job_id, "state": "queued", "links": _links(job_id)},
                            headers={"Location": f"{API_PREFIX}/jobs/{job_id}"})

    @v1.post(
        "/federated", status_code=202, response_model=Accepted, tags=["federated"],
        summary="Submit a federated simulation (its settings as a JSON object; no file paths)",
        responses={**_AUTH_ERRORS, 400: _E, 413: _E, 415: _E, 429: _E},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": _federated_schema()}}}},
    )
    async def submit_federated(request: Request, token: Token) -> JSONResponse:
        body = await _read_json_body(request)
        config = await run_in_threadpool(_federated_config, body)
        job_id = await run_in_threadpool(
            _submit, store, "federated", config, {}, project=token.project, submitted_by=token.token_id,
            max_queued=max_queued)
        log.info("job %s queued: federated simulation for project %s", job_id, token.project)
        return JSONResponse(status_code=202, content={"job_id": job_id, "state": "queued", "links": _links(job_id)},
                            headers={"Location": f"{API_PREFIX}/jobs/{job_id}"})

    # --- jobs ---------------------------------------------------------------------------------

    @v1.get("/jobs", response_model=JobList, responses=_AUTH_ERRORS, tags=["jobs"],
            summary="This project's jobs, newest first")
    def list_jobs(token: Token, state: Annotated[JobState | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"jobs": [_job_view(j) for j in store.list_jobs(project=token.project, state=state, limit=limit)]}

    @v1.get("/jobs/{job_id}", response_model=JobView, responses={**_AUTH_ERRORS, 404: _E}, tags=["jobs"],
            summary="A job's state and progress")
    def get_job(token: Token, job_id: Annotated[str, PathParam(max_length=200)]) -> dict[str, Any]:
        return _job_view(_job(store, job_id, token.project))

    @v1.post("/jobs/{job_id}/cancel", response_model=JobView, responses={**_AUTH_ERRORS, 404: _E, 409: _E},
             tags=["jobs"], summary="Cancel a queued or running job")
    def cancel_job(token: Token, job_id: Annotated[str, PathParam(max_length=200)]) -> dict[str, Any]:
        before = _job(store, job_id, token.project)
        if before.state in ("succeeded", "failed"):
            raise ApiError(409, f"job {job_id} has already {before.state}; there is nothing to cancel")
        from audit.store import NotFoundError

        try:
            job = store.cancel_job(job_id, project=token.project)
        except NotFoundError:
            raise ApiError(404, f"no job {job_id!r}") from None
        if job.state == "cancelled" and before.state == "queued":
            from audit.service._jobs import remove_job_folder

            remove_job_folder(jobs, job.job_id, job.inputs)  # no worker will read its uploads
        return _job_view(job)

    # --- audits recorded ----------------------------------------------------------------------

    @v1.get("/audits", response_model=AuditList, responses=_AUTH_ERRORS, tags=["audits"],
            summary="This project's audits, newest first")
    def list_audits(token: Token, verdict: Annotated[Verdict | None, Query()] = None,
                    search: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        return {"audits": store.list(limit=limit, verdict=verdict, search=search or None, project=token.project)}

    @v1.get("/audits/compare", response_model=Comparison, responses={**_AUTH_ERRORS, 404: _E, 409: _E},
            tags=["audits"], summary="Compare two audits check by check (a: the older, b: the newer)")
    def compare(token: Token, a: Annotated[str, Query(max_length=200)],
                b: Annotated[str, Query(max_length=200)]) -> dict[str, Any]:
        from audit.store import compare_reports

        ra, rb = _audit(store, a, token.project), _audit(store, b, token.project)
        return {"a": _audit_head(ra), "b": _audit_head(rb), "changes": compare_reports(ra, rb)}

    @v1.get("/audits/{audit_id}", responses={**_AUTH_ERRORS, 404: _E, 409: _E, 200: {
        "description": "the JSON report", "content": {"application/json": {"schema": {"type": "object"}}}}},
        tags=["audits"], summary="An audit's JSON report")
    def get_audit(token: Token, audit_id: Annotated[str, PathParam(max_length=200)]) -> JSONResponse:
        return JSONResponse(_audit(store, audit_id, token.project).to_dict())

    @v1.get("/audits/{audit_id}/report.{fmt}", responses={**_AUTH_ERRORS, 404: _E, 409: _E, 200: {
        "description": "the report in that format", "content": {
            media: {"schema": {"type": "string"}} for _, media in REPORT_FORMATS.values()}}},
        tags=["audits"], summary="An audit's report: json, html, md (Markdown), xml (JUnit) or sarif")
    def get_report(token: Token, audit_id: Annotated[str, PathParam(max_length=200)],
                   fmt: Annotated[ReportFormat, PathParam()]) -> Response:
        from audit.report import RENDERERS

        kind, media = REPORT_FORMATS[fmt]
        report = _audit(store, audit_id, token.project)
        body = RENDERERS[kind](report)
        return Response(body, media_type=media, headers={
            "Content-Disposition": f'inline; filename="report-{report.audit_id[:12]}.{fmt}"'})

    app.include_router(v1)
    _install_error_handlers(app)
    app.add_middleware(_Guard)
    return app


def _trustaudit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("trustaudit")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
        return "unknown"


def _links(job_id: str, audit_id: str | None = None) -> dict[str, Any]:
    links: dict[str, Any] = {"self": f"{API_PREFIX}/jobs/{job_id}", "cancel": f"{API_PREFIX}/jobs/{job_id}/cancel"}
    if audit_id:
        links["audit"] = f"{API_PREFIX}/audits/{audit_id}"
        links["reports"] = {fmt: f"{API_PREFIX}/audits/{audit_id}/report.{fmt}" for fmt in REPORT_FORMATS}
    return links


def _job_view(job: Any) -> dict[str, Any]:
    """A job as the API shows it: the store's row without the stored file names of its uploads."""
    d = job.to_dict()
    d["inputs"] = {role: {k: v for k, v in entry.items() if k != "stored"} if isinstance(entry, Mapping) else entry
                   for role, entry in (d.get("inputs") or {}).items()}
    d["links"] = _links(job.job_id, job.audit_id)
    return d


def _submit(store: Any, kind: str, spec: dict[str, Any], inputs: dict[str, Any], *, project: str,
            submitted_by: str, max_queued: int | None) -> str:
    from audit.store import QueueFullError

    try:
        return store.submit_job(kind, spec, inputs, project=project, submitted_by=submitted_by, max_queued=max_queued)
    except QueueFullError as exc:
        raise ApiError(429, exc.message, {"Retry-After": "5"}) from None


def _job(store: Any, job_id: str, project: str) -> Any:
    from audit.store import NotFoundError

    if not _JOB_ID.match(job_id):
        raise ApiError(404, f"no job {display_name(job_id)[:80]!r} (a job id is 32 hexadecimal characters)")
    try:
        return store.get_job(job_id, project=project)
    except NotFoundError:
        raise ApiError(404, f"no job {job_id!r}") from None


def _audit(store: Any, audit_id: str, project: str) -> Any:
    from audit.store import NotFoundError, StoreUnavailableError

    if not _AUDIT_ID.match(audit_id):
        raise ApiError(404, f"no audit {display_name(audit_id)[:80]!r} (an audit id, or its first 6 or more "
                            "characters, is hexadecimal)")
    try:
        return store.get(audit_id, project=project)
    except NotFoundError:
        raise ApiError(404, f"no audit {audit_id!r}") from None
    except StoreUnavailableError:
        raise
    except StoreError as exc:
        if "ambiguous" in exc.message:
            raise ApiError(409, f"audit id prefix {audit_id!r} is ambiguous; give more characters") from None
        raise


def _audit_head(report: Any) -> dict[str, Any]:
    return {"audit_id": report.audit_id, "created_at": report.created_at, "verdict": report.verdict.value}


async def _read_json_body(request: Request) -> Any:
    import json

    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"send the settings as application/json; got Content-Type {kind[:80] or 'none'!r}")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_JSON_BODY:
                raise ApiError(413, f"the JSON body is larger than {_MAX_JSON_BODY // 1024} KB")
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected during the request") from None

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a valid setting value")

    try:
        return json.loads(bytes(body).decode("utf-8"), parse_constant=refuse)
    except UnicodeDecodeError:
        raise ApiError(400, "the JSON body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {str(exc).splitlines()[0][:200]}") from None


def _federated_keys() -> list[tuple[str, type]]:
    from dataclasses import fields

    from federated._config import FederatedConfig

    defaults = FederatedConfig()
    return [(f.name.replace("_", "-"), type(getattr(defaults, f.name))) for f in fields(FederatedConfig)]


#: federated settings that name files on the server; a client may not set them
_FEDERATED_PATHS = ("data", "output-dir")


def _federated_schema() -> dict[str, Any]:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    props = {key: {"type": kinds.get(t, "string")} for key, t in _federated_keys() if key not in _FEDERATED_PATHS}
    return {"type": "object", "properties": props, "additionalProperties": False,
            "description": "settings of trustaudit federated simulate (kebab-case names; defaults for the rest)"}


def _federated_config(body: Any) -> dict[str, Any]:
    from federated._config import FederatedConfig

    if not isinstance(body, dict):
        raise ApiError(422, "the body must be a JSON object of federated settings, e.g. {\"num-clients\": 10}")
    for key, value in body.items():
        if str(key).replace("_", "-") in _FEDERATED_PATHS:
            raise ApiError(422, f"federated setting {key!r} names a file or folder on the server; the service runs "
                                "the built-in data generator and keeps results in the store")
        if isinstance(value, dict | list):
            raise ApiError(422, f"federated setting {str(key)[:80]!r} must be a number, true/false or text")
    cfg = FederatedConfig.from_mapping(body)
    return cfg.to_run_config()


# --- errors --------------------------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": " ".join(str(message).split())}, headers=dict(headers or {}))


def _status_of(exc: TrustAuditError) -> int:
    from audit.store import NotFoundError, QueueFullError, StoreUnavailableError

    if isinstance(exc, QueueFullError):
        return 429
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, StoreUnavailableError):
        return 503
    if isinstance(exc, SpecError | DataError | ModelError | ConfigError | UsageError):
        return 422
    if isinstance(exc, StoreError):
        return 503
    return 422


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(TrustAuditError)
    async def trustaudit_error(_request: Request, exc: TrustAuditError) -> JSONResponse:
        status = _status_of(exc)
        if status == 503:
            log.warning("store: %s", exc.message)
            return _error(503, "the store cannot answer now; try again later", {"Retry-After": "5"})
        return _error(status, exc.message, {"Retry-After": "5"} if status == 429 else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            msg = (f"no such endpoint: {request.method} {display_name(request.url.path)[:100]}; the API is under "
                   f"{API_PREFIX} (see {API_PREFIX}/openapi.json)")
        elif exc.status_code == 405:
            msg = f"method {request.method} is not allowed on {display_name(request.url.path)[:100]}"
        else:
            msg = str(exc.detail)
        return _error(exc.status_code, msg, getattr(exc, "headers", None))


def _validation_message(errors: Any) -> str:
    """FastAPI's first validation error as one sentence: where, what is allowed, what came."""
    errors = list(errors)
    if not errors:
        return "the request is invalid"
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    where = {"query": "query parameter", "path": "path parameter", "header": "header", "body": "body field",
             "cookie": "cookie"}.get(loc[0] if loc else "", "field")
    name = ".".join(loc[1:]) or (loc[0] if loc else "request")
    if err.get("type") == "json_invalid":
        return "the body is not valid JSON"
    if err.get("type") == "missing":
        return f"{where} '{name}' is required"
    msg = str(err.get("msg", "is invalid"))
    msg = msg[0].lower() + msg[1:] if msg else msg
    got = err.get("input")
    shown = repr(got)[:80] if got is not None else "nothing"
    return f"{where} '{name}': {msg} (got {shown})"


class _Guard:
    """Outer ASGI layer: headers bounded (431), and any exception escaping the app answered with a
    one-line 500 (logged with its traceback) instead of a dropped connection."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        size = sum(len(k) + len(v) for k, v in headers)
        if size > _MAX_HEADER_BYTES or len(headers) > _MAX_HEADERS:
            response = _error(431, f"the request headers are too large ({size} bytes in {len(headers)} headers; "
                                   f"at most {_MAX_HEADER_BYTES} bytes in {_MAX_HEADERS})", {"Connection": "close"})
            await response(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # the exception's type only: its text may hold server paths or data
                await _error(500, f"internal error ({type(exc).__name__}); see the server log")(scope, receive, send)
