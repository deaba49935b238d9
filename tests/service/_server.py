"""The HTTP API as the tests meet it: ``trustaudit serve`` in its own process on a free loopback
port (``--port 0``; the address is read from its start line), its log kept in a file so a test can
assert that no request produced a traceback or a 500."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)")


@dataclass
class Server:
    """A running ``trustaudit serve``."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    store: str
    jobs_dir: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def problems(self) -> list[str]:
        """Log lines that show a server error: a traceback, an exception logged, a 5xx answered."""
        bad = []
        for line in self.log_text().splitlines():
            if ("Traceback" in line or "internal error on" in line or "Exception in ASGI" in line
                    or re.search(r'HTTP/1\.1" 5\d\d', line)):
                bad.append(line)
        return bad

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (uvicorn shuts down, the local workers are stopped), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120.0, **kw)


def start_server(store: str, jobs_dir: Path, log: Path, *flags: str, timeout: float = 300.0) -> Server:
    """``python -m audit.service serve --port 0 ...``; returns once ``/v1/health`` answers 200."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "audit.service", "serve", "--port", "0", "--store", store,
           "--jobs-dir", str(jobs_dir), *flags]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trustaudit serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        m = _LISTENING.search(log.read_text(errors="replace"))
        if m:
            server = Server(m.group(1), proc, log, store, jobs_dir)
            try:
                if httpx.get(f"{server.url}/v1/health", timeout=5).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise AssertionError(f"trustaudit serve did not start within {timeout:g} s: {log.read_text()[-2000:]}")


def make_token(store: str, project: str) -> str:
    from audit.store import open_store

    return open_store(store).create_token(project, f"tests of {project}")[1]


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *needles: str) -> str:
    """A refusal as the API promises it: that status, JSON ``{"error": "<one line>"}`` naming the problem."""
    expected = (status,) if isinstance(status, int) else status
    assert response.status_code in expected, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message.strip() and "\n" not in message, body
    assert "Traceback" not in message
    for needle in needles:
        assert needle.lower() in message.lower(), (needle, message)
    return message


def multipart(files: dict[str, tuple[str, bytes]], spec: str | None) -> list[tuple[str, Any]]:
    """httpx ``files=``: each role as (file name, bytes), the spec as a text part."""
    out: list[tuple[str, Any]] = [(role, (name, content, "application/octet-stream"))
                                  for role, (name, content) in files.items()]
    if spec is not None:
        out.append(("spec", ("spec.toml", spec.encode(), "text/plain")))
    return out
