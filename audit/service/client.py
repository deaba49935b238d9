"""A client of the trustaudit HTTP API, and ``trustaudit audit --server URL``.

``Client(url, token)`` submits audits (the files are streamed from disk) and federated jobs,
follows a job until it ends, and downloads reports::

    with Client("http://127.0.0.1:8765", token) as c:
        job_id = c.submit_audit("model.skops", "test.csv", {"data": {"target": "y", "positive_label": 1}})
        job = c.wait(job_id)
        report = c.report(job["audit_id"])          # an AuditReport
        html = c.report_text(job["audit_id"], "html")

Every refusal of the server is a :class:`ServiceError` (a ``TrustAuditError``: exit 2 in the CLI)
whose message is the server's one sentence; ``status`` is the HTTP status.

``trustaudit audit --server URL`` (token from ``$TRUSTAUDIT_TOKEN``) validates the spec and the
flags here, as the local command does, uploads the model and data files, shows the same progress,
writes the same report files (as the server rendered them) and exits with the same codes: 0 every
check that ran passed, 1 a check failed its policy, 2 bad input — including a job the server
failed, with its one-line reason. ``--timeout`` bounds the wait; the job is then cancelled, as it
is on Ctrl-C.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from audit.exceptions import SpecError, TrustAuditError, UsageError

__all__ = ["TERMINAL", "Client", "ServiceError", "audit_on_server"]

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
_EXTENSIONS = {"json": "json", "html": "html", "markdown": "md", "junit": "xml", "sarif": "sarif"}
_MAX_GRAPH_BYTES = 1024 * 1024


class ServiceError(TrustAuditError):
    """The server refused a request or could not be reached (``status``: HTTP status, 0 unreached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """The trustaudit HTTP API at ``url`` (``http://host:port``; ``/v1`` is added) with an API token."""

    def __init__(self, url: str, token: str, *, timeout: float = 300.0, transport: Any = None) -> None:
        import httpx

        url = str(url).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"server URL {url!r} must start with http:// or https://")
        if url.endswith("/v1"):
            url = url[:-3]
        if not token or any(c.isspace() for c in token):
            raise UsageError("the API token is empty or holds spaces; set TRUSTAUDIT_TOKEN to the last line "
                             "'trustaudit token create' printed")
        self.url = url
        self._http = httpx.Client(
            base_url=f"{url}/v1", headers={"Authorization": f"Bearer {token}", "User-Agent": "trustaudit-client"},
            timeout=httpx.Timeout(timeout, connect=10.0), transport=transport, follow_redirects=False,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- requests -----------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ServiceError(f"the trustaudit server at {self.url} did not answer in time ({method} /v1{path})") \
                from None
        except httpx.HTTPError as exc:
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ServiceError(f"the trustaudit server at {self.url} cannot be reached: {reason}") from None
        if response.status_code >= 400:
            try:
                message = str(response.json()["error"])
            except (ValueError, KeyError, TypeError):
                message = " ".join(response.text.split())[:200] or response.reason_phrase
            raise ServiceError(f"server {self.url}: {message} (HTTP {response.status_code})", response.status_code)
        return response

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def submit_audit(
        self, model: str | Path, data: str | Path, spec: Mapping[str, Any] | str, *,
        train: str | Path | None = None, holdout: str | Path | None = None,
    ) -> str:
        """Upload the files and the spec (a mapping sent as JSON, or TOML/JSON text); the job id."""
        import json

        spec_text = spec if isinstance(spec, str) else json.dumps(dict(spec), allow_nan=False)
        paths = {"model": model, "data": data, "train": train, "holdout": holdout}
        opened: list[Any] = []
        try:
            files: list[tuple[str, Any]] = []
            for role, path in paths.items():
                if path is None:
                    continue
                p = Path(path)
                try:
                    f = open(p, "rb")  # closed below, after the upload
                except OSError as exc:
                    raise UsageError(f"{role} file {p} cannot be read: {exc.strerror or exc}") from None
                opened.append(f)
                files.append((role, (p.name, f, "application/octet-stream")))
            files.append(("spec", ("spec.json" if spec_text.lstrip().startswith("{") else "spec.toml",
                                   spec_text.encode("utf-8"), "text/plain")))
            return self._request("POST", "/audits", files=files).json()["job_id"]
        finally:
            for f in opened:
                f.close()

    def submit_federated(self, settings: Mapping[str, Any]) -> str:
        return self._request("POST", "/federated", json=dict(settings)).json()["job_id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/jobs/{job_id}").json()

    def jobs(self, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._request("GET", "/jobs", params=params).json()["jobs"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/jobs/{job_id}/cancel").json()

    def wait(
        self, job_id: str, *, poll: float = 0.5, timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it is succeeded, failed or cancelled; returns it. ``on_update`` sees
        every state read. ``timeout``: ``ServiceError`` after that many seconds (the job runs on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.2, poll)
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise ServiceError(f"job {job_id} did not finish within {timeout:g} s")
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(poll, delay * 1.5)

    def audits(self, *, verdict: str | None = None, search: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if verdict:
            params["verdict"] = verdict
        if search:
            params["search"] = search
        return self._request("GET", "/audits", params=params).json()["audits"]

    def report(self, audit_id: str) -> Any:
        """The audit's report as an ``AuditReport``."""
        from audit.results import AuditReport

        return AuditReport.from_dict(self._request("GET", f"/audits/{audit_id}").json())

    def report_text(self, audit_id: str, fmt: str) -> str:
        """The report rendered by the server: ``json``, ``html``, ``md``, ``xml`` (JUnit) or ``sarif``."""
        return self._request("GET", f"/audits/{audit_id}/report.{fmt}").text

    def compare(self, a: str, b: str) -> dict[str, Any]:
        return self._request("GET", "/audits/compare", params={"a": a, "b": b}).json()


# --- trustaudit audit --server URL -----------------------------------------------------------------


def _refuse_local_flags(args: Any) -> None:
    flags = (
        ("store", "--store names a local history store; with --server the audit is recorded in the server's store"),
        ("no_store", "--no-store does not apply with --server: the server records every audit it runs"),
        ("unsafe_pickle", "--unsafe-pickle does not apply with --server: the server decides whether pickle models "
                          "are accepted (trustaudit serve --unsafe-pickle)"),
        ("memory_limit", "--memory-limit does not apply with --server: the workers' limits apply "
                         "(trustaudit worker --memory-limit)"),
    )
    for attr, message in flags:
        value = getattr(args, attr, None)
        if value not in (None, False):
            raise UsageError(f"audit: {message}")


def _spec_document(sf: Any) -> dict[str, Any]:
    """What the server is told to audit: the validated spec, the model's loading options and the
    data's missing-value strings; a causal graph named as a file is read here and sent as text."""
    from audit.service._uploads import _path_like

    doc = sf.spec.to_dict()
    src = sf.sources
    if src.model is not None and (src.model.format != "auto" or src.model.trusted_types):
        doc["model"] = {"format": src.model.format, "trusted_types": list(src.model.trusted_types)}
    if tuple(src.data.na_values) != ("?",):
        doc.setdefault("data", {})["na_values"] = list(src.data.na_values)
    for section in doc.values():
        graph = section.get("graph") if isinstance(section, dict) else None
        if isinstance(graph, str) and _path_like(graph):
            from audit.io import read_text

            section["graph"] = read_text(graph, max_bytes=_MAX_GRAPH_BYTES)
    return doc


def _progress_events(cb: Callable[..., None] | None) -> Callable[[dict[str, Any]], None]:
    """The job's progress (as the worker stores it) as the CLI's progress events: one "start" per
    check, in the order they started."""
    seen: dict[str, None] = {}

    def on_update(job: dict[str, Any]) -> None:
        if cb is None:
            return
        progress = job.get("progress") or {}
        total = int(progress.get("total") or 0)
        checks = progress.get("checks")
        names = list(checks) if isinstance(checks, Mapping) else []
        current = progress.get("current")
        if isinstance(current, str) and current not in names:
            names.append(current)
        for check_id in names:
            if check_id not in seen:
                cb("start", check_id, len(seen), max(total, len(seen) + 1))
                seen[check_id] = None

    return on_update


def audit_on_server(args: Any) -> int:
    """``trustaudit audit --server URL``: the local command's behaviour, the work on the server."""
    from audit.cli import _check_outputs, _print_summary, _progress_runner, _report_targets, spec_from_args
    from audit.io import write_text_atomic

    token = os.environ.get("TRUSTAUDIT_TOKEN", "").strip()
    if not token:
        raise UsageError("audit --server: set TRUSTAUDIT_TOKEN to an API token of the server's store "
                         "(trustaudit token create --project NAME)")
    _refuse_local_flags(args)
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"audit: --timeout must be a positive number of seconds, got {args.timeout:g}")
    targets = _report_targets(args)
    _check_outputs(args, targets)
    sf = spec_from_args(args)
    if sf.sources.model is None:
        raise SpecError("no model: give it with --model or model.path")
    if sf.sources.data.test is None:
        raise SpecError("no audited data: give it with --data or data.test")
    doc = _spec_document(sf)
    with Client(args.server, token) as client:
        job_id = _submit_with_retry(client, sf, doc, quiet=args.quiet)
        if not args.quiet:
            print(f"submitted job {job_id} to {client.url}", file=sys.stderr, flush=True)
        try:
            with _progress_runner(args.quiet) as cb:
                job = client.wait(job_id, timeout=args.timeout, on_update=_progress_events(cb))
        except ServiceError as exc:
            if "did not finish within" not in exc.message:
                raise
            _cancel_quietly(client, job_id)
            raise ServiceError(f"the audit did not finish within {args.timeout:g} s on the server; job {job_id} "
                               "was cancelled") from None
        except KeyboardInterrupt:
            _cancel_quietly(client, job_id)
            raise
        if job["state"] == "failed":
            raise ServiceError(f"the server's audit job {job_id} failed: {job.get('error') or 'no reason given'}")
        if job["state"] == "cancelled":
            raise ServiceError(f"the server's audit job {job_id} was cancelled: {job.get('error') or 'cancelled'}")
        audit_id = job.get("audit_id")
        if not audit_id:
            raise ServiceError(f"the server's audit job {job_id} succeeded without a report")
        report = client.report(audit_id)
        written: dict[str, Path] = {}
        for kind, path in targets.items():
            written[kind] = write_text_atomic(path, client.report_text(audit_id, _EXTENSIONS[kind]))
    if not args.quiet:
        _print_summary(report, written)
    return report.exit_code(strict=args.strict)


def _submit_with_retry(client: Client, sf: Any, doc: dict[str, Any], *, quiet: bool, patience: float = 120.0) -> str:
    """Submit; while the server's queue is full (429), try again for up to ``patience`` seconds."""
    src = sf.sources
    deadline = time.monotonic() + patience
    delay = 2.0
    while True:
        try:
            return client.submit_audit(src.model.path, src.data.test, doc, train=src.data.train,
                                       holdout=src.data.holdout)
        except ServiceError as exc:
            if exc.status != 429 or time.monotonic() + delay > deadline:
                raise
            if not quiet:
                print(f"the server's queue is full; trying again in {delay:g} s", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _cancel_quietly(client: Client, job_id: str) -> None:
    try:
        client.cancel(job_id)
    except ServiceError:
        pass
