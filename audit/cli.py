"""``trustaudit`` command line.

Exit codes: 0 every check that ran passed, 1 a check failed its policy (or could not run), 2 bad
input or usage: one line ``trustaudit: error: ...`` on stderr, never a traceback.

* An audit in which every selected check was SKIPPED is exit 2 (nothing audited is not a pass),
  with one line naming the inputs that would let the checks run; no report is written. When some
  checks ran and others were skipped, the skipped ones stay SKIPPED in the report and the exit
  code is decided by the ones that ran.
* Output locations (``--json``, ``--out``...) are checked before the work: a missing or
  read-only folder, or ``--out`` naming a file, is exit 2 at once.
* A history store that stays locked by another process past its busy timeout is exit 2 with one
  line; the report files are written before the store is touched, so they are kept.
* Any other operating-system error (permission denied, a folder where a file was expected, a
  symbolic link loop, a full disk) is exit 2 with one line naming the path.
* Anything else that escapes is a bug in trustaudit: exit 3 with one line
  (``trustaudit: internal error: ...``; ``TRUSTAUDIT_DEBUG=1`` prints the traceback), so that exit 1
  keeps meaning only "a check failed its policy".

Other packages add sub-commands through the ``trustaudit.commands`` entry-point group: each entry
names a function ``add_commands(subparsers)``; each command sets ``func(args) -> int`` and raises
``TrustAuditError`` for bad input. A package whose commands fail to load is left out with a warning.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from audit.exceptions import TrustAuditError, UsageError

__all__ = ["build_parser", "main"]

#: the entry-point group through which packages add sub-commands
COMMANDS_GROUP = "trustaudit.commands"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog.split()[1:]
        raise UsageError(f"{' '.join(sub)}: {message}" if sub else message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trustaudit", description="Audit ML models: fairness, explanations, causal effects, privacy.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_audit(sub)
    _add_demo(sub)
    _add_history(sub)
    from importlib.metadata import entry_points

    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            add_commands = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the CLI down
            warnings.warn(f"trustaudit: commands of {ep.name!r} ({ep.value}) could not be loaded: "
                          f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        add_commands(sub)
    return parser


def _add_store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        metavar="PATH_OR_URL",
        help="history store: a SQLite file, sqlite:///PATH or postgresql+psycopg://USER@HOST/DB "
        "(default: $TRUSTAUDIT_STORE or ~/.local/share/trustaudit/history.sqlite)",
    )


def _add_audit(sub: Any) -> None:
    p = sub.add_parser("audit", help="audit a model on a dataset", description="Audit a model on a dataset.")
    p.add_argument("--spec", metavar="TOML", help="audit spec file; flags given too win over it")
    p.add_argument("--model", metavar="FILE", help="model file: skops, ONNX or TorchScript")
    p.add_argument("--data", metavar="FILE", help="the audited rows (CSV or Parquet)")
    p.add_argument("--train", metavar="FILE", help="training rows (refit mitigation, membership inference)")
    p.add_argument("--holdout", metavar="FILE", help="rows not used in training (membership inference)")
    p.add_argument("--target", help="target column")
    p.add_argument("--positive-label", dest="positive_label", help="the favourable outcome's value")
    p.add_argument("--sensitive", action="append", metavar="COLUMN", help="a sensitive column (repeatable)")
    p.add_argument("--features", action="append", metavar="COLUMN", help="a model input column (repeatable; default: the model's own list)")
    p.add_argument("--checks", action="append", metavar="FAMILY", help="check family or check id to run (repeatable, or comma-separated)")
    p.add_argument("--seed", type=int, help="seed of every stochastic step")
    p.add_argument("--multiclass", choices=["one-vs-rest"],
                   help="audit a target of 3 or more classes as the positive label against the rest "
                   "(refused otherwise; data.multiclass)")
    p.add_argument("--max-groups", dest="max_groups", type=int, metavar="N",
                   help="most groups a sensitive feature may have (default 50; policy.max_groups)")
    p.add_argument("--bin-sensitive", dest="bin_sensitive", action="append", metavar="COLUMN=BINS",
                   help="cut a numeric sensitive column into BINS quantile bins of the audited rows "
                   "(repeatable; data.bin_sensitive)")
    p.add_argument("--trust", action="append", metavar="TYPE", help="trust this skops type explicitly (repeatable)")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow pickle/joblib models: runs any code in the file")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.html, report.md and report.xml here")
    p.add_argument("--json", metavar="FILE", help="JSON report path")
    p.add_argument("--html", metavar="FILE", help="HTML report path")
    p.add_argument("--markdown", metavar="FILE", help="Markdown summary path")
    p.add_argument("--junit", metavar="FILE", help="JUnit XML path")
    p.add_argument("--sarif", metavar="FILE", help="SARIF path (for code-scanning dashboards)")
    p.add_argument("--strict", action="store_true", help="exit 1 on WARN too")
    p.add_argument("--no-store", action="store_true", help="do not record the audit in the history store")
    p.add_argument("--memory-limit", type=int, metavar="MIB", default=None,
                   help="address space the audit process may add, in MiB (default: 60%% of this machine's memory; "
                        "0: none; a full audit needs several GiB of address space)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=None,
                   help="stop the audit after this many seconds (default: no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress display or summary table")
    p.add_argument("--server", metavar="URL",
                   help="run the audit on a trustaudit server (trustaudit serve) instead of here; the API token "
                        "comes from $TRUSTAUDIT_TOKEN; same progress, report files and exit codes")
    _add_store_flag(p)
    p.set_defaults(func=_cmd_audit)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="generate the default data, train a model, audit it")
    p.add_argument("--out", metavar="DIR", default="trustaudit-demo", help="folder for data, model and reports")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checks", action="append", metavar="FAMILY", help="families to run (default: all)")
    p.add_argument("--no-store", action="store_true")
    p.add_argument("--quiet", action="store_true")
    _add_store_flag(p)
    p.set_defaults(func=_cmd_demo)


def _add_history(sub: Any) -> None:
    p = sub.add_parser("history", help="list past audits from the history store")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--verdict", choices=["PASS", "FAIL", "WARN", "ERROR"], help="only audits with this verdict")
    p.add_argument("--show", metavar="AUDIT_ID", help="print one audit's JSON report")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    _add_store_flag(p)
    p.set_defaults(func=_cmd_history)


def _split_multi(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def spec_from_args(args: argparse.Namespace) -> Any:
    """The spec file and the flags (which win over it) as a ``SpecFile``: what to audit and where
    the model and data files are."""
    from audit.spec import load_spec_file, parse_spec_file

    overrides: dict[str, Any] = {}
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if args.model:
        model["path"] = args.model
    if args.trust:
        model["trusted_types"] = list(args.trust)
    if args.data:
        data["test"] = args.data
    if args.train:
        data["train"] = args.train
    if args.holdout:
        data["holdout"] = args.holdout
    if args.target:
        data["target"] = args.target
    if args.positive_label is not None:
        data["positive_label"] = args.positive_label
    if args.sensitive:
        data["sensitive"] = _split_multi(args.sensitive)
    if args.features:
        data["features"] = _split_multi(args.features)
    if args.multiclass:
        data["multiclass"] = args.multiclass
    if args.bin_sensitive:
        data["bin_sensitive"] = _parse_bins(args.bin_sensitive)
    if model:
        overrides["model"] = model
    if data:
        overrides["data"] = data
    checks = _split_multi(args.checks)
    if checks:
        overrides["checks"] = checks
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.max_groups is not None:
        overrides["policy"] = {"max_groups": args.max_groups}
    if args.spec:
        spec = load_spec_file(args.spec, _resolve_cli_paths(overrides))
    else:
        if not args.model or not args.data or not args.target or args.positive_label is None:
            missing = [f for f, v in (("--model", args.model), ("--data", args.data), ("--target", args.target),
                                      ("--positive-label", args.positive_label)) if not v and v != 0]
            raise UsageError(f"audit: give --spec or all of --model, --data, --target, --positive-label (missing: {', '.join(missing)})")
        spec = parse_spec_file(_resolve_cli_paths(overrides), source="flags")
    return spec


def _parse_bins(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in _split_multi(values) or []:
        col, sep, bins = item.rpartition("=")
        if not sep or not col.strip() or not bins.strip().isdigit():
            raise UsageError(f"audit: --bin-sensitive takes COLUMN=BINS, e.g. age=4; got {item!r}")
        out[col.strip()] = int(bins)
    return out


def _resolve_cli_paths(overrides: dict[str, Any]) -> dict[str, Any]:
    """CLI paths are relative to the working directory, not to the spec file."""
    # absolute, but symbolic links kept as given (a link loop is then named by the loader)
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in overrides.items()}
    if "model" in out and "path" in out["model"]:
        out["model"]["path"] = os.path.abspath(out["model"]["path"])
    for role in ("test", "train", "holdout"):
        if role in out.get("data", {}):
            out["data"][role] = os.path.abspath(out["data"][role])
    return out


def _report_targets(args: argparse.Namespace) -> dict[str, Path]:
    targets: dict[str, Path] = {}
    if getattr(args, "out", None):
        out = Path(args.out)
        targets.update(json=out / "report.json", html=out / "report.html", markdown=out / "report.md",
                       junit=out / "report.xml", sarif=out / "report.sarif")
    for kind in ("json", "html", "markdown", "junit", "sarif"):
        v = getattr(args, kind, None)
        if v:
            targets[kind] = Path(v)
    return targets


def _progress_runner(quiet: bool):
    from contextlib import nullcontext

    if quiet or (not sys.stderr.isatty() and os.environ.get("TRUSTAUDIT_PROGRESS") != "1"):
        # plain lines on a non-terminal (CI logs), nothing when quiet
        if quiet:
            return nullcontext(None)

        class _Plain:
            def __enter__(self):
                def cb(event: str, check_id: str, i: int, n: int) -> None:
                    if event == "start":
                        print(f"[{i + 1}/{n}] {check_id} ...", file=sys.stderr, flush=True)
                return cb

            def __exit__(self, *exc: object) -> None:
                return None

        return _Plain()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class _Rich:
        def __enter__(self):
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                              TimeElapsedColumn(), transient=True)
            self.p.__enter__()
            self.task = self.p.add_task("checks", total=None)

            def cb(event: str, check_id: str, i: int, n: int) -> None:
                self.p.update(self.task, total=n, completed=i, description=f"{check_id}")
            return cb

        def __exit__(self, *exc: object) -> None:
            self.p.__exit__(None, None, None)

    return _Rich()


def _cmd_audit(args: argparse.Namespace) -> int:
    """The audit runs in a child process (``audit._isolate``): the model is untrusted code's input,
    and a crash, a memory blow-up or a hang in it ends the child, not this process, which reports
    it in one line (exit 2). The report crosses back as JSON; this process writes the reports and
    records the audit."""
    if getattr(args, "server", None):
        from audit.service.client import audit_on_server

        return audit_on_server(args)
    from audit._isolate import fork_safe_native_threads, run_isolated
    from audit.report import write_reports
    from audit.results import AuditReport

    targets = _report_targets(args)
    _check_outputs(args, targets)
    store = None if args.no_store else _open_store(args)
    if args.memory_limit is not None and args.memory_limit < 0:
        raise UsageError(f"audit: --memory-limit must be 0 (no limit) or a number of MiB, got {args.memory_limit}")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"audit: --timeout must be a positive number of seconds, got {args.timeout:g}")
    with _progress_runner(args.quiet) as cb:
        data = run_isolated(
            _audit_in_child, args, what="audit", timeout=args.timeout, memory_bytes=_memory_limit(args),
            native_threads=fork_safe_native_threads(),
            on_message=(lambda m: cb(*m)) if cb is not None else None,
        )
    report = AuditReport.from_dict(data)
    written = write_reports(report, targets)
    if store is not None:
        _record(store, report)
    if not args.quiet:
        _print_summary(report, written)
    return report.exit_code(strict=args.strict)


def _memory_limit(args: argparse.Namespace) -> int | None:
    from audit._isolate import default_memory_limit

    if args.memory_limit == 0:
        return None
    return int(args.memory_limit) * 1024**2 if args.memory_limit is not None else default_memory_limit()


def _audit_in_child(args: argparse.Namespace) -> dict[str, Any]:
    """In the audit's child process: validate the spec, run the audit, return the JSON report."""
    from audit._isolate import send_message
    from audit.runner import run_spec

    spec = spec_from_args(args)
    with warnings.catch_warnings():
        if args.unsafe_pickle:
            warnings.simplefilter("always")
        report = run_spec(spec, allow_unsafe_pickle=args.unsafe_pickle,
                          progress=lambda *event: send_message(list(event)))
    return report.to_dict()


def _check_outputs(args: argparse.Namespace, targets: dict[str, Path]) -> None:
    """Every output location is checked before the audit starts (exit 2 at once, not after it)."""
    from audit._preflight import check_output_dir, check_output_file

    if getattr(args, "out", None):
        check_output_dir(args.out, "--out")
    for kind, path in targets.items():
        flag = f"--{kind}" if getattr(args, kind, None) else "--out"
        check_output_file(path, flag)


def _record(store: Any, report: Any) -> None:
    """Record the audit; a store locked past its busy timeout is one line (the reports are kept)."""
    from audit.exceptions import StoreError
    from audit.store import StoreLockedError, StoreUnavailableError

    try:
        store.record(report)
    except StoreLockedError as exc:  # "history store X is locked by another process (reason)"
        raise StoreError(f"{exc.message}; the audit {report.audit_id[:12]} (verdict {report.verdict.value}) "
                         "was not recorded; its reports are written") from None
    except StoreUnavailableError as exc:  # "history store X cannot be written: reason"
        raise StoreError(f"{exc.message}; the audit {report.audit_id[:12]} was not recorded; "
                         "its reports are written") from None


def _open_store(args: argparse.Namespace):
    """The store of ``--store`` (a path or a URL), else ``$TRUSTAUDIT_STORE``, else the default file;
    a bad URL, an unreachable server or an unusable file is a one-line ``StoreError``."""
    from audit.store import open_store

    return open_store(args.store or None)


def _print_summary(report: Any, written: dict[str, Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, soft_wrap=True)
    colours = {"PASS": "green", "FAIL": "red", "WARN": "yellow", "ERROR": "magenta", "SKIPPED": "dim"}
    table = Table(title=f"trustaudit {report.audit_id[:12]}: {report.verdict.value}", show_lines=False)
    table.add_column("check")
    table.add_column("verdict")
    table.add_column("summary", overflow="fold")
    table.add_column("s", justify="right")
    for r in report.results:
        c = colours[r.verdict.value]
        table.add_row(r.check_id, f"[{c}]{r.verdict.value}[/{c}]", r.summary, f"{r.provenance.seconds:.1f}")
    console.print(table)
    for kind, path in written.items():
        console.print(f"{kind:>8}: {path}")


def _cmd_demo(args: argparse.Namespace) -> int:
    from audit._preflight import check_output_dir
    from audit.demo import run_demo

    check_output_dir(args.out, "--out")
    store = None if args.no_store else _open_store(args)
    return run_demo(Path(args.out), seed=args.seed, checks=_split_multi(args.checks), store=store, quiet=args.quiet)


def _cmd_history(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    store = _open_store(args)
    if args.show:
        print(json.dumps(store.get(args.show).to_dict(), indent=2))
        return 0
    rows = store.list(limit=args.limit, verdict=args.verdict)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"audits in {store.path}")
    for col in ("audit_id", "created_at", "verdict", "model", "data", "checks", "fail", "warn", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["audit_id"][:12], r["created_at"], r["verdict"], r["model_path"], r["data_path"],
                      str(r["n_checks"]), str(r["n_fail"]), str(r["n_warn"]), str(r["n_error"]))
    Console().print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_parser(build_parser, argv)


def run_parser(make_parser: Any, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` with ``make_parser()`` and run the chosen command with the CLI's exit codes
    and one-line errors (also used by ``python -m audit.service``)."""
    try:
        parser = make_parser()
        args = parser.parse_args(argv)
        if getattr(args, "version", False):
            from importlib.metadata import version

            print(version("trustaudit"))
            return 0
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args))
    except TrustAuditError as exc:
        print(f"trustaudit: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("trustaudit: error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # permission denied, a folder for a file, a link loop, a full disk...
        from audit._preflight import os_error_line

        print(f"trustaudit: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"trustaudit: error: history store: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except MemoryError:
        print("trustaudit: error: out of memory (an input is too large for this machine)", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a bug: never exit 1, which means "a check failed its policy"
        if os.environ.get("TRUSTAUDIT_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        from audit._isolate import IsolatedError

        # an error in the audit's child process comes back as text: name the original type
        name, msg = ((exc.type_name, exc.message) if isinstance(exc, IsolatedError)
                     else (type(exc).__name__, str(exc)))
        msg = " ".join(msg.split())[:300]
        print(f"trustaudit: internal error: {name}: {msg} (a bug, not a verdict; "
              "TRUSTAUDIT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 3


def entrypoint() -> NoReturn:  # pragma: no cover - the console script; tests call main()
    """The ``trustaudit`` command: run, then exit without the interpreter's final cycle collection.

    Every report and store write is finished and closed when ``main`` returns, but at exit Python
    would still walk every object for reference cycles, and with torch, Ray and pandas loaded (after
    a federated simulation) that walk is slow. ``gc.freeze`` puts the survivors out of the
    collector's reach (objects are still released by reference counting as modules unload).
    """
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    entrypoint()
