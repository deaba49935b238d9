"""``trustaudit causal ...`` sub-commands.

* ``trustaudit causal discover --data FILE [--out graph.dot]`` proposes a graph with the PC
  algorithm (causal-learn). The output is labelled a suggestion to review; undecided edges are
  comments, so the file is never silently a finished graph.
* ``trustaudit causal validate-graph`` checks a graph against a data file (or an audit spec):
  acyclic, every node a column or declared latent, treatment / outcome / mediators present.
  Exit 0 when valid, 2 with one line naming the node or edge at fault otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from audit.exceptions import UsageError

__all__ = ["add_commands"]


def add_commands(subparsers: Any) -> None:
    """Add ``trustaudit causal`` with its ``discover`` and ``validate-graph`` sub-commands."""
    p = subparsers.add_parser(
        "causal", help="causal graph tools: propose a graph from data, validate a graph",
        description="Causal graph tools.",
    )
    sub = p.add_subparsers(dest="causal_command", parser_class=type(p))
    p.set_defaults(func=lambda args: _missing_sub(p))

    d = sub.add_parser(
        "discover", help="propose a causal graph from data (PC algorithm): a suggestion to review",
        description="Propose a causal graph from data with causal-learn's PC algorithm. The result is a "
        "SUGGESTION to review with domain knowledge, never used by an audit unless you put it in the spec.",
    )
    d.add_argument("--data", required=True, metavar="FILE", help="data file (CSV or Parquet)")
    d.add_argument("--out", metavar="FILE", help="write the suggested graph (DOT) here; default: print it")
    d.add_argument("--columns", action="append", metavar="COL", help="columns to include (repeatable or comma-separated; default: all)")
    d.add_argument("--exclude", action="append", metavar="COL", help="columns to leave out (repeatable or comma-separated)")
    d.add_argument("--alpha", type=float, default=0.05, help="significance level of the independence tests (default 0.05)")
    d.add_argument("--max-rows", dest="max_rows", type=int, default=5000, help="rows used, a seeded sample (default 5000)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_discover)

    v = sub.add_parser(
        "validate-graph", help="check a causal graph against a data file or an audit spec",
        description="Check a causal graph: acyclic, every node a data column or declared latent, roles present.",
    )
    v.add_argument("--spec", metavar="TOML", help="audit spec: its [causal] section and data.test")
    v.add_argument("--graph", metavar="DOT|GML|FILE", help="the graph as DOT/GML text or a .dot/.gv/.gml file")
    v.add_argument("--edge", action="append", metavar="A->B", help="an edge 'cause->effect' (repeatable or comma-separated)")
    v.add_argument("--data", metavar="FILE", help="data file whose columns the nodes must match")
    v.add_argument("--latent", action="append", metavar="NODE", help="a node without a data column (repeatable)")
    v.add_argument("--treatment", help="treatment node")
    v.add_argument("--outcome", help="outcome node")
    v.add_argument("--mediator", action="append", metavar="NODE", help="a mediator node (repeatable)")
    v.add_argument("--sensitive", action="append", metavar="COL", help="sensitive feature (the first is the default treatment)")
    v.set_defaults(func=_cmd_validate)


def _missing_sub(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def _cmd_discover(args: argparse.Namespace) -> int:
    from audit.io import load_table, write_text_atomic
    from causal._discover import discover_graph

    if not 0 < args.alpha < 1:
        raise UsageError(f"discover: --alpha must be between 0 and 1, got {args.alpha}")
    if args.max_rows < 20:
        raise UsageError(f"discover: --max-rows must be at least 20, got {args.max_rows}")
    if args.out:
        from audit._preflight import check_output_file

        check_output_file(args.out, "--out")  # before the search
    frame = load_table(args.data)
    cols = _split(args.columns) or [str(c) for c in frame.columns]
    unknown = [c for c in cols + _split(args.exclude) if c not in frame.columns]
    if unknown:
        raise UsageError(f"discover: column(s) not in {args.data}: {', '.join(unknown)}")
    cols = [c for c in cols if c not in set(_split(args.exclude))]
    if len(cols) < 2:
        raise UsageError("discover: need at least two columns")
    try:
        found = discover_graph(frame, columns=cols, alpha=args.alpha, max_rows=args.max_rows, seed=args.seed)
    except ValueError as exc:
        raise UsageError(f"discover: {exc}") from None
    dot = found.to_dot()
    note = (
        f"SUGGESTION ONLY: {len(found.directed)} oriented edge(s), {len(found.undirected)} undecided, "
        f"{len(found.bidirected)} possible hidden common cause(s). Review every edge before using it as "
        "causal.graph in an audit spec."
    )
    if args.out:
        write_text_atomic(Path(args.out), dot)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(dot)
    print(note, file=sys.stderr)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from audit.io import load_table
    from causal._validate import validate_causal_spec

    edges = []
    for e in _split(args.edge):
        if "->" not in e:
            raise UsageError(f"validate-graph: --edge must look like 'cause->effect', got {e!r}")
        a, b = (x.strip() for x in e.split("->", 1))
        edges.append((a, b))
    na: tuple[str, ...] = ("?",)
    sensitive = _split(args.sensitive)
    if args.spec:
        from audit.spec import load_spec_file

        sf = load_spec_file(args.spec)
        spec = sf.spec
        causal = spec.causal
        if not args.data and sf.sources.data.test is None:
            raise UsageError("validate-graph: give --data FILE (the spec names no data.test)")
        data_path = args.data or str(sf.sources.data.test)
        na = sf.sources.data.na_values
        sensitive = sensitive or list(spec.data.sensitive)
        overrides: dict[str, Any] = {}
        for key, val in (("treatment", args.treatment), ("outcome", args.outcome)):
            if val:
                overrides[key] = val
        if args.mediator:
            overrides["mediators"] = tuple(_split(args.mediator))
        if args.latent:
            overrides["latent"] = tuple(_split(args.latent))
        if args.graph or edges:
            overrides.update(graph=args.graph, edges=tuple(edges))
        causal = causal.model_copy(update=overrides)
    else:
        from causal._spec import CausalSpec

        if not args.data:
            raise UsageError("validate-graph: give --data FILE (or --spec TOML)")
        if not args.graph and not edges:
            raise UsageError("validate-graph: give the graph with --graph or --edge (or --spec TOML)")
        if args.graph and edges:
            raise UsageError("validate-graph: give the graph as --graph or as --edge, not both")
        causal = CausalSpec(
            graph=args.graph, edges=tuple(edges), latent=tuple(_split(args.latent)), treatment=args.treatment,
            outcome=args.outcome, mediators=tuple(_split(args.mediator)),
        )
        data_path = args.data
    frame = load_table(data_path, na_values=na)
    out = validate_causal_spec(causal, frame.columns, sensitive=sensitive, frame=frame)
    if out is None:
        raise UsageError("validate-graph: the spec has no causal graph (causal.graph or causal.edges)")
    g, roles = out
    parts = [f"causal graph OK: {len(g.nodes)} nodes, {len(g.edges)} edges, {len(g.latent)} latent"]
    if roles.treatment:
        parts.append(f"treatment '{roles.treatment}' ({roles.treatment_from}), "
                     f"{len(g.descendants(roles.treatment))} descendant(s)")
    if roles.outcome:
        parts.append(f"outcome '{roles.outcome}'")
    if roles.mediators:
        parts.append("mediators " + ", ".join(f"'{m}'" for m in roles.mediators))
    unused = [str(c) for c in frame.columns if c not in g]
    if unused:
        parts.append(f"columns not in the graph: {', '.join(unused[:10])}" + (" ..." if len(unused) > 10 else ""))
    print("; ".join(parts))
    return 0
