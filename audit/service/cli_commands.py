"""The service's sub-commands of the ``trustaudit`` CLI (entry point ``trustaudit.commands``: service).

``add_commands`` adds each one through a function of its own (``_add_worker``...), so a new
sub-command is one more function and one more line there. Importing this module loads nothing
beyond the standard library: the CLI imports it to build its parser.

``python -m audit.service worker ...`` runs the same command without the CLI's entry points
(``LocalWorkers`` starts workers that way).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_commands", "main"]


def add_commands(subparsers: Any) -> None:
    """Add the audit service's sub-commands to the trustaudit CLI."""
    from audit.service._serve import _add_serve, _add_token

    _add_worker(subparsers)
    _add_serve(subparsers)
    _add_token(subparsers)


def _store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH_OR_URL",
                   help="history store: a SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
                        "(default: $TRUSTAUDIT_STORE or ~/.local/share/trustaudit/history.sqlite)")


def _add_worker(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run queued audit jobs from the store (one at a time; start several for more)",
        description="Claim queued jobs from the store and run each in a child process with a time and "
                    "memory limit, heartbeating and recording progress; a job whose worker dies is re-queued "
                    "once, then failed. SIGTERM/SIGINT: the current job finishes within --grace seconds or "
                    "is given back to the queue; exit 0.",
    )
    _store_flag(p)
    p.add_argument("--jobs-dir", metavar="DIR",
                   help="folder of the job folders (uploaded inputs); shared with the API server "
                        "(default: $TRUSTAUDIT_JOBS_DIR or ~/.local/share/trustaudit/jobs)")
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help="seconds between looks at an empty queue (0.5)")
    p.add_argument("--heartbeat", type=float, default=5.0, metavar="S",
                   help="seconds between heartbeats while a job runs (5)")
    p.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="S",
                   help="a running job whose heartbeat is this old is re-queued by any worker (30)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="stop a job after this many seconds and fail it (default: no limit)")
    p.add_argument("--memory-limit", type=int, default=None, metavar="MIB",
                   help="address space a job's process may add, in MiB (default: 60%% of this machine's "
                        "memory; 0: none; federated simulations run without one)")
    p.add_argument("--once", action="store_true", help="exit when no job is queued (after running the queued ones)")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="exit after N jobs")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="run each audit as a Ray task on this cluster (HOST:PORT of the head, or 'auto'); "
                        "the input bytes travel with the task; audit jobs only")
    p.add_argument("--grace", type=float, default=5.0, metavar="S",
                   help="on SIGTERM/SIGINT, seconds the current job may take to finish before it is given back (5)")
    p.add_argument("--keep-inputs", action="store_true", help="keep job folders after their jobs end")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="allow pickle/joblib models: runs any code in an uploaded file")
    p.add_argument("--federated-cpus", type=int, default=None, metavar="N",
                   help="CPUs a federated simulation job's engine may use (default: all)")
    p.add_argument("--quiet", action="store_true", help="no log line per job")
    p.set_defaults(func=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audit.service.worker import Worker, WorkerOptions, default_jobs_dir

    options = WorkerOptions(
        jobs_dir=Path(args.jobs_dir) if args.jobs_dir else default_jobs_dir(),
        poll=args.poll, heartbeat=args.heartbeat, heartbeat_timeout=args.heartbeat_timeout, timeout=args.timeout,
        memory_limit_mib=args.memory_limit, once=args.once, max_jobs=args.max_jobs, ray_address=args.ray_address,
        grace=args.grace, keep_inputs=args.keep_inputs, unsafe_pickle=args.unsafe_pickle,
        federated_cpus=args.federated_cpus, quiet=args.quiet,
    ).validated()  # bad flags are one line before the store is opened
    return Worker(args.store or None, options).run()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m audit.service COMMAND ...``: these sub-commands only, with the CLI's exit codes
    and one-line errors."""
    from audit.cli import _Parser, run_parser

    def make_parser() -> _Parser:
        parser = _Parser(prog="trustaudit", description="trustaudit audit service commands")
        add_commands(parser.add_subparsers(dest="command", parser_class=_Parser))
        return parser

    return run_parser(make_parser, argv)
