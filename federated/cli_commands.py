"""``trustaudit federated simulate``: the Flower app on the simulation engine, then (optionally) its audit.

Every run-config setting of the app is a flag of the same name (``--num-clients``,
``--strategy``, ``--alpha``...), so a command line and a ``flwr run --run-config`` say the same
thing. Values are validated by :class:`federated.FederatedConfig`; bad ones exit 2 with one line.
With ``--audit`` the exit code is the audit's (0 pass, 1 a check failed); otherwise 0.

The output folder is checked before the data is partitioned or the engine starts (``--out``
naming a file, or a folder that cannot be written, is exit 2 at once). A run in which no round
aggregated a single client update (every sampled client dropped out or timed out) trained
nothing: its metrics and run report are written, no model file is (a stale ``model.pt`` is
removed), no audit runs, and the command exits 2 with one line. Rounds in which fewer than a
majority of the sampled clients answered are recorded (``quorum`` false in the metrics) and
listed in the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from audit.exceptions import ConfigError

__all__ = ["add_commands"]

DEFAULT_OUT = "trustaudit-federated"

_HELP: dict[str, str] = {
    "num_clients": "simulated clients (SuperNodes)",
    "num_rounds": "federated rounds",
    "fraction_train": "fraction of clients sampled per round",
    "seed": "seed of every stochastic step",
    "data": "CSV or Parquet file (default: the ground-truth lending generator)",
    "target": "target column (with --data)",
    "positive_label": "the favourable outcome's value (with --data)",
    "sensitive": "sensitive column(s), comma-separated or repeated",
    "exclude_features": "columns not given to the model, comma-separated",
    "n_rows": "training rows drawn from the generator (holdout and test: half as many each)",
    "holdout_fraction": "share of a CSV kept as holdout (membership inference)",
    "test_fraction": "share of a CSV kept as test rows (server evaluation, audit)",
    "partition": "iid, dirichlet (label skew), column, quantity (size skew)",
    "alpha": "Dirichlet concentration for dirichlet / quantity partitions (> 0)",
    "partition_column": "column whose values define the clients (partition=column)",
    "min_partition_size": "fewest rows a client may get",
    "val_fraction": "share of each client's rows kept for its local accuracy",
    "model": "logreg or mlp",
    "hidden": "hidden units of the MLP",
    "local_epochs": "local epochs per round",
    "batch_size": "local mini-batch size",
    "lr": "local learning rate (SGD)",
    "strategy": "fedavg, fedprox, fedadam, fedyogi, fedmedian, fedtrimmedavg, krum, multikrum",
    "proximal_mu": "FedProx proximal weight",
    "server_lr": "server learning rate (fedadam, fedyogi)",
    "trim_beta": "fraction trimmed at each end (fedtrimmedavg)",
    "krum_f": "assumed malicious clients for krum/multikrum (-1: floor(0.2 x clients per round), at most (m - 3) // 2)",
    "central_dp": "central DP: server-side fixed clipping + Gaussian noise",
    "noise_multiplier": "central DP noise multiplier z",
    "clip_norm": "central DP clipping norm C of each client update",
    "dp_delta": "central DP delta",
    "local_dp": "local DP: DP-SGD in every client (Opacus)",
    "local_noise": "DP-SGD noise multiplier",
    "local_clip": "DP-SGD per-sample clipping norm",
    "local_delta": "DP-SGD delta",
    "secagg": "secure aggregation with SecAgg+",
    "secagg_shares": "SecAgg+ key shares, as a fraction of the sampled clients",
    "secagg_threshold": "SecAgg+ reconstruction threshold, as a fraction of the shares",
    "secagg_clip_range": "SecAgg+ clipping range of parameters before quantisation",
    "secagg_quant_range": "SecAgg+ quantisation range",
    "dropout": "probability that a sampled client drops out of a round",
    "stragglers": "fraction of clients that are slow",
    "straggler_delay": "extra seconds a straggler takes to answer (simulated clock)",
    "round_timeout": "round deadline in simulated seconds: later answers are left out (0: wait for all)",
    "malicious": "fraction of clients that attack",
    "attack": "label-flip or scale",
    "attack_scale": "factor applied to a scaling attacker's update",
    "evaluate_every": "federated evaluation of all clients every N rounds (0: after the last round)",
    "output_dir": f"folder for metrics, report and model (default: {DEFAULT_OUT})",
    "audit": "audit the final model on the held-out rows and write the audit reports",
    "checks": "check families for --audit (comma-separated; default: all)",
}


def add_commands(subparsers: Any) -> None:
    """Add ``federated simulate`` to the trustaudit CLI."""
    fed = subparsers.add_parser("federated", help="federated training simulation with Flower",
                                description="Federated training simulation with Flower.")
    sub = fed.add_subparsers(dest="federated_command", parser_class=type(fed))
    sim = sub.add_parser(
        "simulate",
        help="run the Flower app on the simulation engine; write metrics, report and model",
        description="Run the trustaudit Flower app (the one `flwr run` runs) on Flower's simulation engine.",
    )
    from federated._config import FederatedConfig

    for f in fields(FederatedConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            sim.add_argument(flag, dest=f.name, action="store_true", default=None, help=_HELP.get(f.name))
        elif f.name == "sensitive":
            sim.add_argument(flag, dest=f.name, action="append", metavar="COLUMN", help=_HELP.get(f.name))
        else:
            sim.add_argument(flag, dest=f.name, metavar=f.name.split("_")[-1].upper(), help=_HELP.get(f.name))
    sim.add_argument("--out", dest="output_dir", metavar="DIR", help="alias of --output-dir")
    sim.add_argument("--client-cpus", type=float, default=None,
                     help="CPUs per simulated client, i.e. Ray actor size (default 1: one actor per core)")
    sim.add_argument("--ray-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    sim.add_argument("--strict", action="store_true", help="with --audit, exit 1 on WARN too")
    sim.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    sim.add_argument("--quiet", action="store_true", help="no progress display or summary")
    sim.set_defaults(func=_cmd_simulate)

    def _usage(args: argparse.Namespace) -> int:
        fed.print_help(sys.stderr)
        return 2

    fed.set_defaults(func=_usage)


def _config_from_args(args: argparse.Namespace) -> Any:
    from federated._config import FederatedConfig

    raw: dict[str, Any] = {}
    for f in fields(FederatedConfig):
        v = getattr(args, f.name, None)
        if v is None:
            continue
        if f.name == "sensitive":
            v = ",".join(x.strip() for item in v for x in item.split(",") if x.strip())
        raw[f.name.replace("_", "-")] = v
    if raw.get("data"):
        missing = [flag for flag in ("--target", "--positive-label") if flag[2:] not in raw]
        if missing:
            raise ConfigError(f"--data needs {' and '.join(missing)}")
        raw.setdefault("sensitive", "")
    raw.setdefault("output-dir", DEFAULT_OUT)
    return FederatedConfig.from_mapping(raw)


class _Progress:
    """A rich progress bar on a terminal, one line per round otherwise, nothing when quiet."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.rich = not quiet and (sys.stderr.isatty() or os.environ.get("TRUSTAUDIT_PROGRESS") == "1")
        self.p: Any = None

    def __enter__(self) -> _Progress:
        if self.rich:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                              TimeElapsedColumn(), transient=True)
            self.p.__enter__()
            self.task = self.p.add_task("starting the simulation engine", total=self.total)
        elif not self.quiet:
            print("starting the simulation engine ...", file=sys.stderr, flush=True)
        return self

    def __call__(self, pr: Any) -> None:
        eps = f", epsilon {pr.epsilon:.3g}" if pr.epsilon is not None else ""
        text = (f"round {pr.round}/{pr.num_rounds}: accuracy {pr.accuracy:.4f}, "
                f"{pr.answered}/{pr.sampled} answered{eps}")
        if self.p is not None:
            self.p.update(self.task, completed=pr.round, description=text)
        elif not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.p is not None:
            self.p.__exit__(None, None, None)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from audit._preflight import check_output_dir
    from audit.io import write_text_atomic
    from federated._data import load_run_data
    from federated._engine import simulate
    from federated._run import write_outputs
    from federated.export import audit_run, write_audit_reports

    cfg = _config_from_args(args)
    if args.client_cpus is not None and args.client_cpus <= 0:
        raise ConfigError(f"--client-cpus must be a positive number; got {args.client_cpus}")
    load_run_data(cfg.data_setup_json())  # data and partition errors exit 2 before the engine starts
    out = check_output_dir(cfg.output_dir, "--out")  # ... and so is an output folder that cannot be written
    early: dict[str, Any] = {}

    def write_early(finished: Any) -> None:
        """Write the outputs on a thread of their own while the engine stops (seconds of waiting)."""
        def work() -> None:
            try:
                early["written"] = write_outputs(finished, out, audit=False)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                early["error"] = exc

        early["thread"] = threading.Thread(target=work, name="trustaudit-run-outputs")
        early["thread"].start()

    with _Progress(cfg.num_rounds, args.quiet) as bar:
        run = simulate(cfg, client_cpus=args.client_cpus, ray_cpus=args.ray_cpus, progress=bar,
                       verbose=args.verbose, on_run=write_early)
    if "thread" in early:
        early["thread"].join()
    if "error" in early:
        raise early["error"]
    if "written" in early:
        # the metrics again, now with the engine's start and stop timings
        early["written"]["metrics"] = write_text_atomic(out / "metrics.json", json.dumps(run.to_dict(), indent=2))
        written = early["written"]
    else:
        written = write_outputs(run, out, audit=False)
    if not run.trained:
        raise ConfigError(run.untrained_message(out))
    report = None
    if cfg.audit:
        from audit.cli import _progress_runner

        with _progress_runner(args.quiet) as cb:
            report = audit_run(run, written["model"], checks=cfg.audit_checks, progress=cb)
        written.update({f"audit_{k}": Path(v) for k, v in write_audit_reports(report, out).items()})
    if not args.quiet:
        _print_summary(run, written, report)
    return report.exit_code(strict=args.strict) if report is not None else 0


def _print_summary(run: Any, written: dict[str, Path], report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    cfg = run.config
    t = Table(title=f"federated run: {cfg.strategy}, {cfg.num_clients} clients, {cfg.num_rounds} rounds, "
                    f"partition {cfg.partition}")
    for col in ("round", "accuracy", "loss", "answered", "dropped", "timed out", "client acc min", "epsilon"):
        t.add_column(col, justify="right")
    for r in run.rounds:
        cf = r.get("client_fairness", {})
        eps = r.get("epsilon")
        t.add_row(str(r["round"]), f"{r['global'].get('accuracy', float('nan')):.4f}",
                  f"{r['global'].get('loss', float('nan')):.4f}", f"{len(r['answered'])}/{len(r['sampled'])}",
                  str(len(r["dropped"])), str(len(r["timed_out"])),
                  f"{cf.get('min', float('nan')):.3f}", "" if eps is None else f"{eps:.3g}")
    console.print(t)
    for attr, gaps in run.final["fairness"].items():
        console.print(f"{attr}: demographic parity difference {gaps['demographic_parity_difference']:.3f}, "
                      f"equalized odds difference {gaps['equalized_odds_difference']:.3f}")
    below = run.training_status()["rounds_below_quorum"]
    if below:
        console.print(f"rounds below quorum (fewer than a majority of the sampled clients answered): "
                      f"{', '.join(map(str, below))}")
    if cfg.strategy in ("krum", "multikrum"):
        console.print(f"{cfg.strategy}: f = {cfg.krum_f_used} ({cfg.krum_f_source})")
    claim = run.dp_claim()
    if claim is not None:
        cond = run.dp_conditions() or {}
        amp = "" if claim["sample_rate"] < 1 else ", no amplification by sampling"
        console.print(f"DP claim ({cond.get('unit', '?')} level): epsilon {claim['epsilon']:.3g} at delta "
                      f"{claim['delta']:g}{amp}; noise from OS entropy, not from the seed")
        if cond.get("not_covered"):
            console.print("not covered by epsilon: " + "; ".join(cond["not_covered"]))
    if report is not None:
        console.print(f"audit {report.audit_id[:12]}: {report.verdict.value}")
    for kind, path in written.items():
        console.print(f"{kind:>12}: {path}")
