"""``trustaudit dashboard``: start the Streamlit dashboard on this machine, with its workers.

Streamlit runs in a child process (``python -m streamlit run dashboard/app.py``, its public
command line) with the server options fixed here: headless, the upload limit as
``server.maxUploadSize``, no file watcher, no usage statistics, error details hidden from
visitors. The dashboard's own settings (data folder, upload limit, the unsafe-pickle switch,
the store, the jobs folder) travel in the child's environment, where
``DashboardSettings.from_env`` reads them.

The dashboard submits audits as jobs; unless ``--no-worker``, this command also starts
``--workers`` local worker processes (``audit.service.LocalWorkers``) on the same store and jobs
folder, and stops them when the dashboard stops, so nothing else has to be started by hand. With
``--no-worker``, run ``trustaudit worker`` on the same store and jobs folder (here or elsewhere).
The store is opened once before anything starts: an unknown URL scheme or an unreachable
database exits 2 with one line. Bad flags exit 2 with one line, like every trustaudit command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from audit.exceptions import ConfigError, MissingExtraError, UsageError

__all__ = ["add_commands", "streamlit_command"]

MSG_PORT = "--port must be a TCP port from 1 to 65535; got {got}"
MSG_DATA_DIR = "--data-dir {path} is a file; give a folder for the dashboard's uploads"
MSG_JOBS_DIR = "--jobs-dir {path} is a file; give a folder for the jobs' inputs"
MSG_WORKERS = "--workers must be at least 1 (or give --no-worker); got {got}"
DEFAULT_WORKERS = 1


def add_commands(subparsers: Any) -> None:
    """Add ``dashboard`` to the trustaudit CLI."""
    from dashboard._settings import DEFAULT_MAX_UPLOAD_MB

    p = subparsers.add_parser(
        "dashboard",
        help="start the web dashboard (Streamlit): upload, audit, read findings, browse history",
        description="Start the trustaudit dashboard (Streamlit) on this machine.",
    )
    p.add_argument("--port", type=int, default=8501, help="TCP port to serve on (default: 8501)")
    p.add_argument("--address", default="localhost",
                   help="address to listen on (default: localhost; 0.0.0.0 serves every interface)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder for uploads (stored under generated names) and federated runs "
                        "(default: ~/.local/share/trustaudit/dashboard)")
    p.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, metavar="N",
                   help=f"largest file a visitor may upload, in MB (default: {DEFAULT_MAX_UPLOAD_MB})")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="accept pickle/joblib model uploads: unpickling runs any code the file contains")
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help="the store (history and jobs): a SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
                        "(default: $TRUSTAUDIT_STORE or ~/.local/share/trustaudit/history.sqlite)")
    p.add_argument("--jobs-dir", metavar="DIR",
                   help="folder where a submitted job's uploads wait for a worker, shared with the workers "
                        "(default: $TRUSTAUDIT_JOBS_DIR or ~/.local/share/trustaudit/jobs)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="N",
                   help=f"local worker processes that run the submitted audits (default: {DEFAULT_WORKERS})")
    p.add_argument("--no-worker", action="store_true",
                   help="start no worker here (run 'trustaudit worker' on the same store and jobs folder)")
    p.set_defaults(func=_cmd_dashboard)


def _settings_from_args(args: argparse.Namespace) -> Any:
    from dashboard._settings import DashboardSettings, default_data_dir

    if not 1 <= args.port <= 65535:
        raise UsageError(MSG_PORT.format(got=args.port))
    if args.workers < 1 and not args.no_worker:
        raise UsageError(MSG_WORKERS.format(got=args.workers))
    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(MSG_DATA_DIR.format(path=data_dir))
    jobs_dir = Path(args.jobs_dir).expanduser().resolve() if args.jobs_dir else None
    if jobs_dir is not None and jobs_dir.exists() and not jobs_dir.is_dir():
        raise UsageError(MSG_JOBS_DIR.format(path=jobs_dir))
    try:
        return DashboardSettings(
            data_dir=data_dir,
            max_upload_mb=args.max_upload_mb,
            allow_unsafe_pickle=bool(args.unsafe_pickle),
            store=_store_arg(args.store) if args.store else None,
            jobs_dir=jobs_dir,
        )
    except ConfigError as exc:
        raise UsageError("--" + exc.message) from None


def _store_arg(value: str) -> str:
    """A URL as given; a file path made absolute (the workers and Streamlit may start elsewhere)."""
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def _check_store(settings: Any) -> Any:
    """Open the store once (and bring its schema up to date) before anything starts: a bad URL or
    an unreachable database is one line and exit 2 here, not an error page later."""
    from audit.store import open_store

    store = open_store(settings.store_url)
    store.close()
    return store


def _start_workers(settings: Any, n: int) -> Any:
    """``n`` local workers on the dashboard's store and jobs folder, tied to this process; they
    accept pickle models only when the dashboard does."""
    from audit.service import LocalWorkers

    return LocalWorkers(settings.store_url, n, jobs_dir=settings.job_folders,
                        allow_unsafe_pickle=settings.allow_unsafe_pickle).start()


def streamlit_command(settings: Any, *, port: int, address: str) -> list[str]:
    """The ``python -m streamlit run`` command line that serves the app with these settings."""
    from dashboard import APP_PATH

    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true",
        "--server.maxUploadSize", str(settings.max_upload_mb),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--browser.gatherUsageStats", "false",
        "--client.showErrorDetails", "none",
        "--client.toolbarMode", "minimal",
        "--global.developmentMode", "false",
        "--theme.base", "light",
    ]


def _child_env(settings: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.to_env())
    # the app imports the trustaudit packages: make them importable from wherever we were started
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    return env


def _launch(cmd: list[str], env: dict[str, str]) -> int:
    """Run Streamlit until it exits; Ctrl-C or SIGTERM here stops it too. Returns its exit code."""
    import signal

    proc = subprocess.Popen(cmd, env=env)

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        return proc.wait()
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _cmd_dashboard(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise MissingExtraError("the dashboard needs Streamlit: pip install 'streamlit~=1.67.0'")
    import dataclasses

    settings = _settings_from_args(args)
    # the store and jobs folder this server uses, spelled out for Streamlit and the workers alike
    settings = dataclasses.replace(settings, store=settings.store_url, jobs_dir=settings.job_folders)
    store = _check_store(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = streamlit_command(settings, port=args.port, address=args.address)
    workers = None if args.no_worker else _start_workers(settings, args.workers)
    running = "no local worker (run 'trustaudit worker')" if workers is None else (
        f"{args.workers} local worker{'s' if args.workers != 1 else ''}")
    print(f"trustaudit dashboard: http://{args.address}:{args.port} (store {store}; jobs {settings.job_folders}; "
          f"{running}; uploads under {settings.data_dir}; limit {settings.max_upload_mb} MB; "
          f"pickle {'ALLOWED' if settings.allow_unsafe_pickle else 'refused'})", file=sys.stderr, flush=True)
    try:
        return _launch(cmd, _child_env(settings))
    finally:
        if workers is not None:
            workers.stop()
