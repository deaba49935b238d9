"""Causal graphs: parse (DOT, GML, an edge list), validate against the data, draw as DOT.

Validation happens once, here, and every error is a one-line ``GraphError`` naming the node or
edge at fault: a cycle is printed as the cycle itself, an unknown node is named with the two ways
out (declare it latent, or add the column). Inner code trusts a ``CausalGraph`` it receives.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from audit.exceptions import DataFileError, GraphError

__all__ = [
    "CausalGraph",
    "GraphRoles",
    "load_graph",
    "parse_graph",
    "resolve_roles",
]

_GRAPH_SUFFIXES = {".dot", ".gv", ".gml", ".txt"}
_DOT_KEYWORDS = {"node", "edge", "graph"}


@dataclass(frozen=True)
class CausalGraph:
    """A directed acyclic causal graph; ``latent`` nodes have no data column."""

    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    latent: frozenset[str] = frozenset()
    source: str = "edges"  # "dot", "gml" or "edges"
    _nx: nx.DiGraph = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        g.add_edges_from(self.edges)
        object.__setattr__(self, "_nx", g)

    # -- structure ----------------------------------------------------------------------------

    def to_networkx(self) -> nx.DiGraph:
        """A fresh networkx copy (callers may mutate it)."""
        return nx.DiGraph(self._nx)

    @property
    def observed(self) -> tuple[str, ...]:
        return tuple(n for n in self.nodes if n not in self.latent)

    def parents(self, node: str) -> list[str]:
        return sorted(self._nx.predecessors(node))

    def children(self, node: str) -> list[str]:
        return sorted(self._nx.successors(node))

    def descendants(self, node: str) -> set[str]:
        return set(nx.descendants(self._nx, node))

    def ancestors(self, node: str) -> set[str]:
        return set(nx.ancestors(self._nx, node))

    def topological_order(self) -> list[str]:
        return list(nx.lexicographical_topological_sort(self._nx))

    def __contains__(self, node: object) -> bool:
        return node in self._nx

    # -- drawing ------------------------------------------------------------------------------

    def to_dot(
        self,
        *,
        treatment: str | None = None,
        outcome: str | None = None,
        mediators: Iterable[str] = (),
        name: str = "causal",
    ) -> str:
        """DOT text for the report: latent nodes dashed, treatment / outcome / mediators marked."""
        meds = set(mediators)
        lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;", "  node [shape=box, style=rounded];"]
        for n in self.nodes:
            attrs: list[str] = []
            if n in self.latent:
                attrs += ['style="dashed,rounded"', 'tooltip="latent (no data column)"']
            if n == treatment:
                attrs += ["penwidth=2.5", 'color="#1f77b4"', 'xlabel="treatment"']
            elif n == outcome:
                attrs += ["penwidth=2.5", 'color="#d62728"', 'xlabel="outcome"']
            elif n in meds:
                attrs += ['color="#2ca02c"', 'xlabel="mediator"']
            lines.append(f"  {_quote(n)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
        for a, b in self.edges:
            style = " [style=dashed]" if a in self.latent or b in self.latent else ""
            lines.append(f"  {_quote(a)} -> {_quote(b)}{style};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "edges": [list(e) for e in self.edges],
            "latent": sorted(self.latent),
            "source": self.source,
        }


@dataclass(frozen=True)
class GraphRoles:
    """The roles of nodes, checked against a graph (``resolve_roles``)."""

    treatment: str | None
    outcome: str | None
    mediators: tuple[str, ...]
    treatment_from: str  # "causal.treatment", "first sensitive feature" or "" (none)


def _quote(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in nodes)


# --- parsing ------------------------------------------------------------------------------------


def _looks_like_text(text: str) -> bool:
    return "{" in text or "[" in text or "\n" in text.strip()


def _read_graph_file(path: str) -> str:
    from audit.io import read_text

    p = Path(path)
    if p.suffix.lower() not in _GRAPH_SUFFIXES:
        raise GraphError(
            "causal.graph: expected DOT text ('digraph { a -> b }'), GML text ('graph [ ... ]') or "
            f"a .dot/.gv/.gml file, got {path!r}"
        )
    try:
        return read_text(p)
    except DataFileError as exc:
        raise GraphError(f"causal.graph: {exc.message}") from None


def _parse_dot(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    import pydot

    out = io.StringIO()
    try:
        # pydot prints its parse errors; its grammar module warns about pyparsing deprecations
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            graphs = pydot.graph_from_dot_data(text)
    except Exception as exc:  # noqa: BLE001 - pydot raises several parser exception types
        graphs, reason = None, str(exc)
    else:
        reason = out.getvalue()
    if not graphs:
        lines = [ln.strip() for ln in reason.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else "no graph found"
        raise GraphError(f"causal.graph: could not parse the DOT text: {why}")
    g = graphs[0]
    if g.get_type() != "digraph":
        raise GraphError(
            "causal.graph: the graph is undirected; a causal graph must be directed "
            "(write 'digraph' and '->')"
        )
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []

    def ends(x: Any) -> list[str]:
        if isinstance(x, str):
            return [_unquote(x)]
        if isinstance(x, Mapping) and "nodes" in x:  # an anonymous subgraph: a -> {b c}
            return [_unquote(str(k)) for k in x["nodes"]]
        return [_unquote(str(x))]

    def walk(sub: Any) -> None:
        for n in sub.get_nodes():
            name = _unquote(n.get_name())
            if name not in _DOT_KEYWORDS and name:
                nodes.append(name)
        for e in sub.get_edges():
            for a in ends(e.get_source()):
                for b in ends(e.get_destination()):
                    edges.append((a, b))
        for s in sub.get_subgraphs():
            walk(s)

    walk(g)
    return nodes, edges


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"')
    return name


def _strip_leading_comments(text: str) -> str:
    lines = text.strip().splitlines()
    while lines and lines[0].lstrip().startswith(("//", "#")):
        lines.pop(0)
    return "\n".join(lines).strip()


def _parse_gml(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    try:
        g = nx.parse_gml(text, label="label")
    except Exception as exc:  # noqa: BLE001 - networkx raises NetworkXError and others
        try:
            g = nx.parse_gml(text, label="id")
        except Exception:  # noqa: BLE001
            raise GraphError(f"causal.graph: could not parse the GML text: {exc}") from None
    if not g.is_directed():
        raise GraphError(
            "causal.graph: the graph is undirected; a causal graph must be directed (write 'directed 1')"
        )
    return [str(n) for n in g.nodes], [(str(a), str(b)) for a, b in g.edges()]


def parse_graph(
    graph: str | None = None,
    *,
    edges: Sequence[Sequence[str]] = (),
    latent: Sequence[str] = (),
) -> CausalGraph:
    """Parse a graph given as DOT/GML text, a file path, or an edge list; check it is a DAG.

    ``latent`` names nodes without a data column; each must be a node of the graph.
    """
    if graph is not None and len(edges):
        raise GraphError("causal: give the graph as 'graph' (DOT or GML) or as 'edges', not both")
    if graph is None and not len(edges):
        raise GraphError("causal: no graph given: set causal.graph (DOT or GML) or causal.edges")
    if graph is not None:
        text = graph if _looks_like_text(graph) else _read_graph_file(graph)
        body = _strip_leading_comments(text)
        i_brace, i_brack = body.find("{"), body.find("[")
        if i_brace != -1 and (i_brack == -1 or i_brace < i_brack):
            nodes, edge_list = _parse_dot(text)
            source = "dot"
        elif i_brack != -1:
            nodes, edge_list = _parse_gml(text)
            source = "gml"
        else:
            shown = body[:40] + ("..." if len(body) > 40 else "")
            raise GraphError(
                "causal.graph: expected DOT text ('digraph { a -> b }'), GML text ('graph [ ... ]') or "
                f"a .dot/.gv/.gml file, got {shown!r}"
            )
    else:
        nodes, edge_list = [], []
        for i, e in enumerate(edges):
            if len(e) != 2:
                raise GraphError(f"causal.edges: edge {i + 1} must be a pair [cause, effect], got {list(e)!r}")
            a, b = (str(x).strip() for x in e)
            if not a or not b:
                raise GraphError(f"causal.edges: edge {i + 1} has an empty node name: {list(e)!r}")
            edge_list.append((a, b))
        source = "edges"
    # nodes in first-seen order, deduplicated edges
    seen: dict[str, None] = {}
    for a, b in edge_list:
        seen.setdefault(a)
        seen.setdefault(b)
    for n in nodes:
        seen.setdefault(n)
    uniq_edges = list(dict.fromkeys(edge_list))
    if not uniq_edges:
        raise GraphError("causal.graph: the graph has no edges")
    for a, b in uniq_edges:
        if a == b:
            raise GraphError(f"causal graph has a cycle: {a} -> {a} (an edge from a node to itself)")
    g = nx.DiGraph()
    g.add_nodes_from(seen)
    g.add_edges_from(uniq_edges)
    try:
        cycle = nx.find_cycle(g, orientation="original")
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = [cycle[0][0]] + [e[1] for e in cycle]
        raise GraphError(f"causal graph has a cycle: {' -> '.join(path)}")
    lat = tuple(dict.fromkeys(str(x) for x in latent))
    missing = [x for x in lat if x not in g]
    if missing:
        which = "which is not a node" if len(missing) == 1 else "which are not nodes"
        raise GraphError(f"causal.latent names {_names(missing)}, {which} of the causal graph")
    return CausalGraph(tuple(seen), tuple(uniq_edges), frozenset(lat), source)


def load_graph(
    graph: str | None,
    edges: Sequence[Sequence[str]],
    latent: Sequence[str],
    columns: Iterable[str],
) -> CausalGraph:
    """Parse, then check every node is a data column or declared latent."""
    g = parse_graph(graph, edges=edges, latent=latent)
    cols = {str(c) for c in columns}
    unknown = [n for n in g.nodes if n not in cols and n not in g.latent]
    if len(unknown) == 1:
        raise GraphError(
            f"causal graph node '{unknown[0]}' is not a column of the data: declare it latent "
            "(causal.latent) or add the column"
        )
    if unknown:
        raise GraphError(
            f"causal graph nodes {_names(unknown)} are not columns of the data: declare them latent "
            "(causal.latent) or add the columns"
        )
    return g


def resolve_roles(
    g: CausalGraph,
    *,
    treatment: str | None,
    outcome: str | None,
    mediators: Sequence[str] = (),
    sensitive: Sequence[str] = (),
) -> GraphRoles:
    """Check treatment, outcome and mediators against the graph.

    The treatment is ``treatment`` or else the first sensitive feature; it must be an observed
    node. Mediators must be observed descendants of the treatment.
    """
    src = "causal.treatment" if treatment else ("first sensitive feature" if sensitive else "")
    t = treatment or (sensitive[0] if sensitive else None)
    shown = ", ".join(g.nodes[:12]) + (", ..." if len(g.nodes) > 12 else "")
    if t is not None:
        if t not in g:
            if src == "causal.treatment":
                raise GraphError(f"causal.treatment '{t}' is not a node of the causal graph (nodes: {shown})")
            raise GraphError(
                f"the treatment of the causal checks defaults to the first sensitive feature, '{t}', which "
                "is not a node of the causal graph: add it to the graph or name the treatment with "
                "causal.treatment"
            )
        if t in g.latent:
            raise GraphError(f"causal.treatment '{t}' is declared latent; the treatment must be a data column")
    if outcome is not None:
        if outcome not in g:
            raise GraphError(f"causal.outcome '{outcome}' is not a node of the causal graph (nodes: {shown})")
        if outcome in g.latent:
            raise GraphError(f"causal.outcome '{outcome}' is declared latent; the outcome must be a data column")
        if outcome == t:
            raise GraphError(f"causal.treatment and causal.outcome are both '{t}'")
    meds = tuple(mediators)
    for m in meds:
        if m not in g:
            raise GraphError(f"causal.mediators: '{m}' is not a node of the causal graph (nodes: {shown})")
        if m in g.latent:
            raise GraphError(f"causal.mediators: '{m}' is declared latent; mediators must be data columns")
        if t is not None and m == t:
            raise GraphError(f"causal.mediators: '{m}' is the treatment")
        if outcome is not None and m == outcome:
            raise GraphError(f"causal.mediators: '{m}' is the outcome")
        if t is not None and m not in g.descendants(t):
            raise GraphError(f"causal.mediators: '{m}' is not a descendant of the treatment '{t}' in the causal graph")
    return GraphRoles(t, outcome, meds, src)
