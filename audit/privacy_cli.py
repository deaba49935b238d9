"""``trustaudit privacy ...`` sub-commands.

``trustaudit privacy train-dp`` trains a tabular MLP with Opacus DP-SGD for each target ε (and a
non-private one for ``inf``), exports each as TorchScript with its DP claim in the metadata, writes
the train / holdout / test rows it used (so the models can be audited for membership leakage), and
reports accuracy overall and per sensitive group for each ε as JSON and a table::

    trustaudit privacy train-dp --data adult.csv --target income --positive-label '>50K' \\
        --sensitive sex --epsilons 1,3,8,inf --out dp-models

Without ``--data`` it uses the embedded lending generator (target ``approved``, positive 1,
sensitive ``sex`` and ``age_group``). Torch and Opacus load only when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audit.exceptions import DataError, UsageError

__all__ = ["add_commands", "parse_epsilons"]


def parse_epsilons(text: str) -> list[float]:
    """'1,3,8,inf' -> [1.0, 3.0, 8.0, inf]; each must be a positive number or 'inf'."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise UsageError(f"train-dp: --epsilons takes positive numbers or 'inf', got {part!r}") from None
        if math.isnan(v) or v <= 0:
            raise UsageError(f"train-dp: --epsilons takes positive numbers or 'inf', got {part!r}")
        out.append(v)
    if not out:
        raise UsageError("train-dp: --epsilons needs at least one value, e.g. 1,3,8,inf")
    return out


def _parse_hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise UsageError(f"train-dp: --hidden takes comma-separated layer widths, got {text!r}") from None


def add_commands(subparsers: Any) -> None:
    """Add ``privacy`` with its own sub-commands to the ``trustaudit`` parser."""
    p = subparsers.add_parser("privacy", help="differential-privacy tools (train-dp)",
                              description="Differential-privacy tools.")
    sub = p.add_subparsers(dest="privacy_command", parser_class=type(p))
    t = sub.add_parser(
        "train-dp",
        help="train a tabular MLP with Opacus DP-SGD for several target ε and export TorchScript models",
        description="Train a tabular MLP with Opacus DP-SGD for each target ε (inf = non-private), "
        "export each model with its DP claim, and report accuracy overall and per group.",
    )
    t.add_argument("--data", metavar="CSV", help="tabular data (CSV or Parquet); default: the lending generator")
    t.add_argument("--target", help="target column (required with --data)")
    t.add_argument("--positive-label", dest="positive_label", help="the positive class's value (required with --data)")
    t.add_argument("--sensitive", action="append", metavar="COLUMN", help="sensitive column (repeatable or comma-separated)")
    t.add_argument("--drop", action="append", metavar="COLUMN", help="column not to use as a model input (repeatable)")
    t.add_argument("--epsilons", default="1,3,8,inf", help="target ε values, comma-separated; inf = non-private (default 1,3,8,inf)")
    t.add_argument("--out", metavar="DIR", required=True, help="folder for models, data splits and the report")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    t.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    t.add_argument("--hidden", default="64,64", help="hidden layer widths (default 64,64)")
    t.add_argument("--max-grad-norm", dest="max_grad_norm", type=float, default=1.0, help="per-sample clipping norm")
    t.add_argument("--delta", type=float, default=None, help="target δ (default min(1e-5, 1/(10 n)))")
    t.add_argument("--accountant", default="prv", choices=["rdp", "prv", "gdp"])
    t.add_argument("--grad-sample-mode", dest="grad_sample_mode", default="bk",
                   choices=["bk", "hooks", "ew", "functorch", "ghost"],
                   help="per-sample clipping: bk = book-keeping, one backward pass (default); "
                   "hooks, ew, functorch, ghost = Opacus' own modes")
    t.add_argument("--holdout-fraction", dest="holdout_fraction", type=float, default=0.2)
    t.add_argument("--test-fraction", dest="test_fraction", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the data split, initial weights and non-private shuffling; DP noise and "
                   "Poisson batches are drawn from OS entropy, never from the seed")
    t.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    t.add_argument("--quiet", action="store_true", help="no table on stdout")
    t.set_defaults(func=_cmd_train_dp)

    def _help(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(func=_help)


def _split_multi(values: Sequence[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or ():
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _load_frames(args: argparse.Namespace) -> tuple[Any, Any, Any, str, Any, list[str], str]:
    """(train, holdout, test, target, positive value, sensitive, source)."""
    import numpy as np

    sensitive = _split_multi(args.sensitive)
    if args.data is None:
        from audit.datasets import make_lending_data

        if args.target or args.positive_label is not None:
            raise UsageError("train-dp: --target and --positive-label go with --data (the generator has its own)")
        d = make_lending_data(seed=args.seed)
        for s in sensitive:
            if s not in d.train.columns:
                raise DataError(f"sensitive column '{s}' not found in the generated data (columns: "
                                f"{', '.join(d.train.columns)})")
        return d.train, d.holdout, d.test, d.target, d.positive_label, sensitive or list(d.sensitive), "generator"
    if not args.target or args.positive_label is None:
        raise UsageError("train-dp: --data needs --target and --positive-label")
    for name, v in (("--holdout-fraction", args.holdout_fraction), ("--test-fraction", args.test_fraction)):
        if not 0 < v < 1:
            raise UsageError(f"train-dp: {name} must be in (0, 1), got {v}")
    if args.holdout_fraction + args.test_fraction > 0.8:
        raise UsageError(
            f"train-dp: --holdout-fraction + --test-fraction must leave at least 20% for training, "
            f"got {args.holdout_fraction + args.test_fraction:g}"
        )
    from audit.io import load_table

    df = load_table(args.data)
    cols = ", ".join(map(str, df.columns[:20]))
    if args.target not in df.columns:
        raise DataError(f"target column '{args.target}' not found in data file '{args.data}' (columns: {cols})")
    for s in sensitive:
        if s not in df.columns:
            raise DataError(f"sensitive column '{s}' not found in data file '{args.data}' (columns: {cols})")
    y = df[args.target]
    if y.isna().any():
        raise DataError(f"target column '{args.target}' in data file '{args.data}' has {int(y.isna().sum())} missing value(s)")
    match = y.astype(str).str.strip() == str(args.positive_label).strip()
    if not match.any():
        shown = ", ".join(sorted(map(str, y.astype(str).unique()))[:10])
        raise DataError(f"positive label {args.positive_label!r} is not among the values of target "
                        f"'{args.target}' (values: {shown})")
    if match.all():
        raise DataError(f"target column '{args.target}' has a single class; training needs both outcomes")
    positive = y[match].iloc[0]
    positive = positive.item() if hasattr(positive, "item") else positive
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(df))
    n_test = round(args.test_fraction * len(df))
    n_hold = round(args.holdout_fraction * len(df))
    test = df.iloc[perm[:n_test]].reset_index(drop=True)
    hold = df.iloc[perm[n_test:n_test + n_hold]].reset_index(drop=True)
    train = df.iloc[perm[n_test + n_hold:]].reset_index(drop=True)
    if len(train) < 10 or len(test) < 1:
        raise DataError(f"data file '{args.data}' has too few rows ({len(df)}) to train and test")
    return train, hold, test, args.target, positive, sensitive, str(args.data)


def _classes(train: Any, target: str, positive: Any) -> list[Any]:
    values = [v.item() if hasattr(v, "item") else v for v in train[target].dropna().unique()]
    others = [v for v in values if str(v).strip() != str(positive).strip()]
    negative = others[0] if len(others) == 1 else f"not {positive}"
    return [negative, positive]


def _cmd_train_dp(args: argparse.Namespace) -> int:
    from audit._preflight import check_output_dir
    from audit.io import write_text_atomic
    from audit.privacy.train_dp import DPTrainConfig, train_dp_models

    epsilons = parse_epsilons(args.epsilons)
    check_output_dir(args.out, "--out")  # before any training
    config = DPTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, hidden=_parse_hidden(args.hidden),
        max_grad_norm=args.max_grad_norm, delta=args.delta, accountant=args.accountant,
        grad_sample_mode=args.grad_sample_mode, seed=args.seed, threads=args.threads,
    )
    train, hold, test, target, positive, sensitive, source = _load_frames(args)
    drop = set(_split_multi(args.drop))
    unknown = sorted(drop - set(train.columns))
    if unknown:
        raise DataError(f"--drop names columns not in the data: {', '.join(unknown)}")
    if target in drop:
        raise UsageError("train-dp: --drop cannot name the target column")
    features = [c for c in train.columns if c != target and c not in drop]
    out = Path(args.out)
    for name, frame in (("train", train), ("holdout", hold), ("test", test)):
        write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    report = train_dp_models(
        train, test, target=target, positive=positive, classes=_classes(train, target, positive),
        sensitive=sensitive, epsilons=epsilons, out_dir=out, config=config, features=features,
    )
    report["data"] = {"source": source, "train": "train.csv", "holdout": "holdout.csv", "test": "test.csv",
                      "n_holdout": len(hold)}
    write_text_atomic(out / "train_dp.json", json.dumps(report, indent=2, default=str))
    if not args.quiet:
        _print_table(report, out)
    return 0


def _print_table(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def eps(m: dict[str, Any]) -> str:
        return "inf" if m["target_epsilon"] is None else f"{m['target_epsilon']:g}"

    table = Table(title=f"DP-SGD trade-off on {report['n_test']} test rows (δ = {report['delta']:.3g})")
    for col in ("target ε", "ε spent", "σ", "accuracy", *(f"gap {s}" for s in report["sensitive"]), "model"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in report["models"]:
        table.add_row(
            eps(m),
            "-" if m["epsilon"] is None else f"{m['epsilon']:.3g}",
            "-" if m["noise_multiplier"] is None else f"{m['noise_multiplier']:.3g}",
            f"{m['accuracy']:.3f}",
            *(f"{m['accuracy_gap'][s]:.3f}" for s in report["sensitive"]),
            m["model"],
        )
    groups = Table(title="accuracy per sensitive group")
    for col in ("target ε", "feature", "group", "n", "accuracy"):
        groups.add_column(col, justify="right" if col in ("n", "accuracy", "target ε") else "left")
    for m in report["models"]:
        for s in report["sensitive"]:
            for g, v in m["groups"][s].items():
                groups.add_row(eps(m), s, g, str(v["n"]), f"{v['accuracy']:.3f}")
    console = Console(soft_wrap=True)
    console.print(table)
    if report["sensitive"]:
        console.print(groups)
    cond = next((m["dp_conditions"] for m in report["models"] if m.get("dp_conditions")), None)
    if cond:
        console.print("DP noise and Poisson batches: secret (OS entropy), not reproducible from --seed.")
        console.print("Not covered by ε: " + "; ".join(cond["not_covered"]) + ".")
    console.print(f"report: {out / 'train_dp.json'}")
    first = report["models"][0]["model"]
    console.print(
        f"audit one: trustaudit audit --model {out / first} --data {out / 'test.csv'} "
        f"--train {out / 'train.csv'} --holdout {out / 'holdout.csv'} --target {report['target']} "
        f"--positive-label '{report['positive_label']}' --checks privacy"
        + "".join(f" --sensitive {s}" for s in report["sensitive"])
    )
