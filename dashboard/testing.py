"""A harness to drive the dashboard in a real browser: serve it on a free local port through
``trustaudit dashboard``, and launch the system's headless Chromium with Playwright.

Used by the browser test and by ``bench/bench_dashboard.py``. Nothing is downloaded: the browser
is the one installed on the machine (Debian's ``chromium``); Playwright only drives it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM_ARGS", "DashboardServer", "chromium_path", "free_port", "launch_chromium", "serve"]

#: Flags for a quiet, sandbox-free headless Chromium (containers run it as root).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    """The installed Chromium (``chromium`` on PATH, else /usr/bin/chromium), or None."""
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DashboardServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the dashboard did not answer on {url} within {timeout:.0f} s: {log.read_text()[-2000:]}")


@contextmanager
def serve(
    workdir: str | Path,
    *,
    max_upload_mb: int = 200,
    unsafe_pickle: bool = False,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
) -> Iterator[DashboardServer]:
    """Run ``trustaudit dashboard`` on a free localhost port with its data and store under ``workdir``."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", "audit.cli", "dashboard", "--port", str(port), "--address", "127.0.0.1",
           "--data-dir", str(work / "data"), "--store", str(work / "history.sqlite"),
           "--max-upload-mb", str(max_upload_mb)]
    if unsafe_pickle:
        cmd.append("--unsafe-pickle")
    log = work / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_healthy(url, proc, timeout, log)
        yield DashboardServer(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def launch_chromium(playwright: Any, executable: str | None = None) -> Any:
    """The installed Chromium, headless, through Playwright (never a downloaded browser)."""
    path = executable or chromium_path()
    if path is None:
        raise FileNotFoundError("Chromium is not installed (Debian: apt-get install chromium)")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
