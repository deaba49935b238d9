"""Graph input: DOT, GML, edge lists, files; validation errors name the node or edge at fault."""

from __future__ import annotations

import pytest

from audit.exceptions import GraphError, SpecError
from audit.spec import spec_from_mapping
from causal import load_graph, parse_graph, resolve_roles, validate_causal_spec

LENDING_DOT = """
digraph lending {
  "region" -> "education"; region -> income; region -> approved;
  education -> income -> debt_ratio -> approved;
  education -> approved; income -> approved;
  sex -> {income approved marketing_segment};
  age_group -> years_experience -> income;
}
"""

GML = """graph [
  directed 1
  node [ id 0 label "x" ]
  node [ id 1 label "t" ]
  node [ id 2 label "y" ]
  edge [ source 0 target 1 ]
  edge [ source 0 target 2 ]
  edge [ source 1 target 2 ]
]"""


def test_dot_text_with_quotes_chains_and_anonymous_subgraphs(lending) -> None:
    g = parse_graph(LENDING_DOT)
    assert g.source == "dot"
    assert set(g.edges) == set(lending.edges)


def test_gml_text_and_edge_list_give_the_same_graph() -> None:
    a = parse_graph(GML)
    b = parse_graph(edges=[("x", "t"), ("x", "y"), ("t", "y")])
    assert a.source == "gml" and b.source == "edges"
    assert set(a.edges) == set(b.edges)
    assert a.parents("y") == ["t", "x"]


def test_graph_files_are_read(tmp_path) -> None:
    (tmp_path / "g.dot").write_text("digraph { a -> b; b -> c }", encoding="utf-8")
    (tmp_path / "g.gml").write_text(GML, encoding="utf-8")
    assert parse_graph(str(tmp_path / "g.dot")).edges == (("a", "b"), ("b", "c"))
    assert len(parse_graph(str(tmp_path / "g.gml")).edges) == 3
    with pytest.raises(GraphError) as e:
        parse_graph(str(tmp_path / "missing.dot"))
    assert str(e.value) == f"causal.graph: file not found: {tmp_path / 'missing.dot'}"


def test_to_dot_round_trips_and_marks_roles() -> None:
    g = parse_graph(edges=[("u", "t"), ("u", "y"), ("t", "m"), ("m", "y")], latent=["u"])
    dot = g.to_dot(treatment="t", outcome="y", mediators=["m"])
    assert 'xlabel="treatment"' in dot and 'xlabel="outcome"' in dot and 'style="dashed,rounded"' in dot
    again = parse_graph(dot)
    assert set(again.edges) == set(g.edges)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"graph": "digraph { a -> b; b -> c; c -> a }"}, "causal graph has a cycle: a -> b -> c -> a"),
        ({"edges": [("a", "a")]}, "causal graph has a cycle: a -> a (an edge from a node to itself)"),
        ({"graph": "graph { a -- b }"},
         "causal.graph: the graph is undirected; a causal graph must be directed (write 'digraph' and '->')"),
        ({"graph": "digraph { a -> "},
         "causal.graph: could not parse the DOT text: Expected rbrace, found '-' (at char 12), (line:1, col:13)"),
        ({"graph": "digraph { a; }"}, "causal.graph: the graph has no edges"),
        ({"graph": "data.csv"},
         "causal.graph: expected DOT text ('digraph { a -> b }'), GML text ('graph [ ... ]') or a "
         ".dot/.gv/.gml file, got 'data.csv'"),
        ({"graph": "digraph { a -> b }", "edges": [("a", "b")]},
         "causal: give the graph as 'graph' (DOT or GML) or as 'edges', not both"),
        ({"edges": [("a", "b")], "latent": ["u"]},
         "causal.latent names 'u', which is not a node of the causal graph"),
        ({"edges": [("a", " ")]}, "causal.edges: edge 1 has an empty node name: ['a', ' ']"),
    ],
)
def test_parse_errors_name_the_fault(kwargs, message) -> None:
    with pytest.raises(GraphError) as e:
        parse_graph(kwargs.pop("graph", None), **kwargs)
    assert str(e.value) == message


def test_unknown_nodes_are_named_with_the_way_out() -> None:
    with pytest.raises(GraphError) as e:
        load_graph(None, [("a", "b"), ("zip", "b")], [], ["a", "b"])
    assert str(e.value) == (
        "causal graph node 'zip' is not a column of the data: declare it latent (causal.latent) or add the column"
    )
    with pytest.raises(GraphError) as e:
        load_graph(None, [("a", "b"), ("u", "b"), ("v", "a")], [], ["a", "b"])
    assert str(e.value) == (
        "causal graph nodes 'u', 'v' are not columns of the data: declare them latent (causal.latent) or add "
        "the columns"
    )
    g = load_graph(None, [("a", "b"), ("u", "b"), ("u", "a")], ["u"], ["a", "b"])
    assert g.latent == frozenset({"u"}) and g.observed == ("a", "b")


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"treatment": "sexx"},
         "causal.treatment 'sexx' is not a node of the causal graph (nodes: u, sex, income, approved)"),
        ({"treatment": None, "sensitive": ["race"]},
         "the treatment of the causal checks defaults to the first sensitive feature, 'race', which is not a node "
         "of the causal graph: add it to the graph or name the treatment with causal.treatment"),
        ({"treatment": "u"}, "causal.treatment 'u' is declared latent; the treatment must be a data column"),
        ({"treatment": "sex", "outcome": "sex"}, "causal.treatment and causal.outcome are both 'sex'"),
        ({"treatment": "sex", "outcome": "u"},
         "causal.outcome 'u' is declared latent; the outcome must be a data column"),
        ({"treatment": "income", "mediators": ["sex"]},
         "causal.mediators: 'sex' is not a descendant of the treatment 'income' in the causal graph"),
        ({"treatment": "sex", "mediators": ["wage"]},
         "causal.mediators: 'wage' is not a node of the causal graph (nodes: u, sex, income, approved)"),
    ],
)
def test_role_errors(roles, message) -> None:
    g = parse_graph(edges=[("u", "sex"), ("u", "income"), ("sex", "income"), ("income", "approved")], latent=["u"])
    kw = {"treatment": None, "outcome": None, "mediators": (), "sensitive": (), **roles}
    with pytest.raises(GraphError) as e:
        resolve_roles(g, **kw)
    assert str(e.value) == message


def test_treatment_defaults_to_first_sensitive_feature() -> None:
    g = parse_graph(edges=[("sex", "income"), ("income", "approved")])
    r = resolve_roles(g, treatment=None, outcome="approved", mediators=["income"], sensitive=["sex", "age"])
    assert (r.treatment, r.treatment_from, r.mediators) == ("sex", "first sensitive feature", ("income",))


def test_spec_level_validation(lending) -> None:
    base = {"model": {"path": "m.skops"}, "data": {"test": "t.csv", "target": "approved", "positive_label": 1}}
    with pytest.raises(SpecError) as e:
        spec_from_mapping({**base, "causal": {"graph": "g.dot", "edges": [["a", "b"]]}})
    assert str(e.value) == (
        "spec: field 'causal' give the graph as 'graph' (DOT or GML) or as 'edges', not both"
    )
    spec = spec_from_mapping({**base, "causal": {"edges": [list(e) for e in lending.edges], "treatment": "sex",
                                                 "treatment_value": "mal"}})
    with pytest.raises(SpecError) as e:
        validate_causal_spec(spec.causal, lending.test.columns, frame=lending.test)
    assert str(e.value) == "causal.treatment_value 'mal' is not a value of 'sex' (values: female, male)"
    assert validate_causal_spec(spec.model_copy(update={"causal": spec.causal.model_copy(
        update={"treatment_value": None})}).causal, lending.test.columns) is not None
