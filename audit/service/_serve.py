"""``trustaudit serve`` (the HTTP API with uvicorn, plus local workers) and ``trustaudit token``.

* ``trustaudit serve [--store S] [--host 127.0.0.1] [--port 8765] [--workers 2] [--no-worker]
  [--jobs-dir DIR] [--max-upload-mb N] [--max-files N] [--max-queued N] [--unsafe-pickle]`` serves
  the API on the loopback interface unless ``--host`` says otherwise; ``--port 0`` takes a free
  port. Unless ``--no-worker``, it starts ``--workers`` local worker processes on the same store
  and jobs folder and stops them when it stops. The line ``trustaudit serve: listening on URL``
  (stderr) names the address once the socket is bound.
* ``trustaudit token create --project NAME [--name N] [--store S]`` prints the new token; the
  secret is the last line (shown once: the store keeps its sha256 only). ``token list`` and
  ``token revoke ID``.

Only the parsers are built at import time; FastAPI and uvicorn are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit.exceptions import UsageError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "default_jobs_dir"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
_H11_MAX_EVENT_BYTES = 1024 * 1024  # request line + headers uvicorn buffers; the app refuses > 32 KiB itself


def default_jobs_dir() -> Path:
    """Where uploads wait for a worker when ``--jobs-dir`` is not given: the workers' default
    (``$TRUSTAUDIT_JOBS_DIR``, else ``~/.local/share/trustaudit/jobs``), so that ``serve`` and
    ``worker`` of one machine meet without a flag."""
    from audit.service.worker import default_jobs_dir as workers_default

    return workers_default()


def _add_store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help="the store: a SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
                        "(default: $TRUSTAUDIT_STORE or ~/.local/share/trustaudit/history.sqlite)")


def _add_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve the HTTP API (FastAPI + uvicorn) and run local workers",
        description="Serve the trustaudit HTTP API (/v1, OpenAPI at /v1/openapi.json). Bound to 127.0.0.1 "
                    "unless --host says otherwise; starts local workers unless --no-worker.",
    )
    _add_store_flag(p)
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port (default: {DEFAULT_PORT}; 0: any free port, printed at start)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="local worker processes (default: 2)")
    p.add_argument("--no-worker", action="store_true",
                   help="start no worker here (run 'trustaudit worker' elsewhere on the same store)")
    p.add_argument("--jobs-dir", metavar="DIR",
                   help="folder of each job's uploads, shared with the workers (default: $TRUSTAUDIT_JOBS_DIR or "
                        "~/.local/share/trustaudit/jobs)")
    p.add_argument("--max-upload-mb", type=int, default=200, metavar="N", help="largest file per upload part (default: 200)")
    p.add_argument("--max-files", type=int, default=4, metavar="N", help="file parts per job (default: 4)")
    p.add_argument("--max-queued", type=int, default=1000, metavar="N",
                   help="queued jobs before submissions answer 429 (default: 1000)")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="accept pickle/joblib models: unpickling runs any code the file contains")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: info)")
    p.set_defaults(func=_cmd_serve)


def _add_token(sub: Any) -> None:
    p = sub.add_parser("token", help="create, list and revoke API tokens",
                       description="API tokens of the HTTP API; a token sees its project's jobs and audits only.")
    tsub = p.add_subparsers(dest="token_command", parser_class=type(p))
    p.set_defaults(func=lambda _args: _missing(p))

    c = tsub.add_parser("create", help="create a token for a project; the secret is the last line printed")
    c.add_argument("--project", required=True, help="the project the token may see and submit to")
    c.add_argument("--name", default="", help="a label (who or what uses the token)")
    _add_store_flag(c)
    c.set_defaults(func=_cmd_token_create)

    ls = tsub.add_parser("list", help="list tokens (never their secrets)")
    ls.add_argument("--project", help="only this project's tokens")
    ls.add_argument("--json", action="store_true", help="print JSON")
    _add_store_flag(ls)
    ls.set_defaults(func=_cmd_token_list)

    r = tsub.add_parser("revoke", help="revoke a token: it stops working at once")
    r.add_argument("token_id", metavar="ID", help="the token's id (from 'token create' or 'token list')")
    _add_store_flag(r)
    r.set_defaults(func=_cmd_token_revoke)


def _missing(p: argparse.ArgumentParser) -> int:
    raise UsageError(f"{p.prog}: give a sub-command: create, list or revoke")


# --- token ----------------------------------------------------------------------------------------


def _cmd_token_create(args: argparse.Namespace) -> int:
    from audit.store import open_store

    store = open_store(args.store or None)
    token_id, secret = store.create_token(args.project, args.name)
    print(f"token {token_id} created for project {args.project!r} in {store}.")
    print("The secret below is shown once (the store keeps only its hash); set it as TRUSTAUDIT_TOKEN:")
    print(secret, flush=True)
    return 0


def _cmd_token_list(args: argparse.Namespace) -> int:
    import json

    from audit.store import open_store

    store = open_store(args.store or None)
    tokens = store.list_tokens(project=args.project)
    if args.json:
        print(json.dumps([t.to_dict() for t in tokens], indent=2))
        return 0
    if not tokens:
        print("no tokens" + (f" for project {args.project!r}" if args.project else ""))
        return 0
    for t in tokens:
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        print(f"{t.token_id}  {t.project:<20} {state:<40} {t.created_at}  {t.name}")
    return 0


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from audit.store import open_store

    store = open_store(args.store or None)
    info = store.revoke_token(args.token_id)
    print(f"token {info.token_id} of project {info.project!r} revoked at {info.revoked_at}")
    return 0


# --- serve ----------------------------------------------------------------------------------------


def _check_serve_args(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"serve: --port must be a TCP port from 1 to 65535 (0: any free port); got {args.port}")
    if args.workers < 1 and not args.no_worker:
        raise UsageError(f"serve: --workers must be at least 1 (or give --no-worker); got {args.workers}")
    if args.max_upload_mb < 1:
        raise UsageError(f"serve: --max-upload-mb must be at least 1; got {args.max_upload_mb}")
    if args.max_files < 2:
        raise UsageError(f"serve: --max-files must be at least 2 (the model and the data); got {args.max_files}")
    if args.max_queued < 1:
        raise UsageError(f"serve: --max-queued must be at least 1; got {args.max_queued}")


def _bind(host: str, port: int) -> Any:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"serve: --host {host!r} cannot be resolved: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UsageError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _start_workers(args: argparse.Namespace, store: str, jobs_dir: Path) -> Any:
    """``--workers`` local worker processes on the same store and jobs folder (None with ``--no-worker``);
    they accept pickle models only when the server does."""
    if args.no_worker:
        return None
    from audit.service.worker import LocalWorkers

    return LocalWorkers(store, args.workers, jobs_dir=jobs_dir, allow_unsafe_pickle=bool(args.unsafe_pickle)).start()


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from audit.service.api import create_app
    from audit.store import default_store_url

    _check_serve_args(args)
    store = args.store or default_store_url()
    jobs_dir = Path(args.jobs_dir).expanduser().resolve() if args.jobs_dir else default_jobs_dir()
    if jobs_dir.exists() and not jobs_dir.is_dir():
        raise UsageError(f"serve: --jobs-dir {jobs_dir} is a file; give a folder")
    app = create_app(store, jobs_dir=jobs_dir, max_upload_mb=args.max_upload_mb, max_files=args.max_files,
                     max_queued=args.max_queued, allow_unsafe_pickle=args.unsafe_pickle)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app, log_level=args.log_level, http="h11", h11_max_incomplete_event_size=_H11_MAX_EVENT_BYTES,
        server_header=False, timeout_keep_alive=5, lifespan="off", proxy_headers=False, ws="none",
    )
    server = uvicorn.Server(config)
    logging.getLogger("trustaudit.api").setLevel(args.log_level.upper())
    if args.unsafe_pickle:
        print("trustaudit serve: warning: --unsafe-pickle: pickle/joblib models are accepted and unpickling runs "
              "any code they hold", file=sys.stderr)
    workers = _start_workers(args, store, jobs_dir)
    print(f"trustaudit serve: listening on http://{shown_host}:{port} (store {app.state.store}, jobs {jobs_dir}, "
          f"{'no local worker' if workers is None else f'{args.workers} local workers'})", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        if workers is not None:
            workers.stop()
        sock.close()
    return 0
