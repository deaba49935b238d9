"""``trustaudit dashboard``: start the Streamlit dashboard on this machine.

Streamlit runs in a child process (``python -m streamlit run dashboard/app.py``, its public
command line) with the server options fixed here: headless, the upload limit as
``server.maxUploadSize``, no file watcher, no usage statistics, error details hidden from
visitors. The dashboard's own settings (data folder, upload limit, the unsafe-pickle switch,
the history store) travel in the child's environment, where ``DashboardSettings.from_env``
reads them. Bad flags exit 2 with one line, like every trustaudit command.
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
    p.add_argument("--store", metavar="PATH",
                   help="history SQLite file (default: $TRUSTAUDIT_STORE or ~/.local/share/trustaudit/history.sqlite)")
    p.set_defaults(func=_cmd_dashboard)


def _settings_from_args(args: argparse.Namespace) -> Any:
    from dashboard._settings import DashboardSettings, default_data_dir

    if not 1 <= args.port <= 65535:
        raise UsageError(MSG_PORT.format(got=args.port))
    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise UsageError(MSG_DATA_DIR.format(path=data_dir))
    try:
        return DashboardSettings(
            data_dir=data_dir,
            max_upload_mb=args.max_upload_mb,
            allow_unsafe_pickle=bool(args.unsafe_pickle),
            store_path=Path(args.store).expanduser().resolve() if args.store else None,
        )
    except ConfigError as exc:
        raise UsageError("--" + exc.message) from None


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
    settings = _settings_from_args(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cmd = streamlit_command(settings, port=args.port, address=args.address)
    print(f"trustaudit dashboard: http://{args.address}:{args.port} (uploads under {settings.data_dir}; "
          f"limit {settings.max_upload_mb} MB; pickle {'ALLOWED' if settings.allow_unsafe_pickle else 'refused'})",
          file=sys.stderr, flush=True)
    return _launch(cmd, _child_env(settings))
