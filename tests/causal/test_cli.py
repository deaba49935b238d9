"""``trustaudit causal ...`` and bad graphs through ``trustaudit audit``: clear errors, exit 2."""

from __future__ import annotations

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from audit.cli import main
from audit.datasets import make_lending_data
from audit.io import save_skops
from causal import parse_graph


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("causal_cli")
    data = make_lending_data(800, 0, 400, seed=6)
    data.test.to_csv(d / "test.csv", index=False)
    cols = ["region", "education", "income"]
    model = Pipeline([("p", ColumnTransformer([("c", OneHotEncoder(), ["region"]),
                                               ("n", StandardScaler(), ["education", "income"])])),
                      ("m", LogisticRegression())]).fit(data.train[cols], data.train["approved"])
    save_skops(model, d / "model.skops")
    return d, data


def _edges_args(data):
    out = []
    for a, b in data.edges:
        out += ["--edge", f"{a}->{b}"]
    return out


def test_validate_graph_ok(files, capsys) -> None:
    d, data = files
    rc = main(["causal", "validate-graph", "--data", str(d / "test.csv"), *_edges_args(data),
               "--treatment", "sex", "--outcome", "approved", "--mediator", "income"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.strip() == ("causal graph OK: 9 nodes, 13 edges, 0 latent; treatment 'sex' (causal.treatment), "
                           "4 descendant(s); outcome 'approved'; mediators 'income'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--graph", "digraph { sex -> income; income -> sex }"],
         "causal graph has a cycle: sex -> income -> sex"),
        (["--edge", "sex->income", "--edge", "zipcode->income"],
         "causal graph node 'zipcode' is not a column of the data: declare it latent (causal.latent) or add the "
         "column"),
        (["--edge", "sex->income", "--treatment", "gender"],
         "causal.treatment 'gender' is not a node of the causal graph (nodes: sex, income)"),
        (["--edge", "sex income"], "validate-graph: --edge must look like 'cause->effect', got 'sex income'"),
    ],
)
def test_validate_graph_errors_exit_2(files, capsys, args, message) -> None:
    d, _ = files
    rc = main(["causal", "validate-graph", "--data", str(d / "test.csv"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == f"trustaudit: error: {message}"


def _spec(d, causal_toml: str) -> str:
    path = d / "audit.toml"
    path.write_text(
        'checks = ["causal"]\n[model]\npath = "model.skops"\n[data]\ntest = "test.csv"\ntarget = "approved"\n'
        'positive_label = 1\nsensitive = ["sex"]\n[causal]\n' + causal_toml, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("causal_toml", "message"),
    [
        ('graph = "digraph { sex -> income -> debt_ratio -> sex }"\n',
         "causal graph has a cycle: sex -> income -> debt_ratio -> sex"),
        ('edges = [["sex", "income"], ["wealth", "income"]]\n',
         "causal graph node 'wealth' is not a column of the data: declare it latent (causal.latent) or add the "
         "column"),
        ('treatment = "gender"\nedges = [["sex", "income"], ["income", "approved"]]\n',
         "causal.treatment 'gender' is not a node of the causal graph (nodes: sex, income, approved)"),
        ('edges = [["region", "income"], ["income", "approved"]]\n',
         "the treatment of the causal checks defaults to the first sensitive feature, 'sex', which is not a node "
         "of the causal graph: add it to the graph or name the treatment with causal.treatment"),
        ('graph = "graph.dot"\n', "causal.graph: file not found: {d}/graph.dot"),
    ],
)
def test_audit_with_a_bad_graph_exits_2(files, capsys, causal_toml, message) -> None:
    d, _ = files
    rc = main(["audit", "--spec", _spec(d, causal_toml), "--no-store", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "trustaudit: error: " + message.format(d=d)


def test_validate_graph_from_a_spec(files, capsys) -> None:
    d, data = files
    (d / "graph.dot").write_text(data.graph_dot, encoding="utf-8")
    spec = _spec(d, 'graph = "graph.dot"\nmediators = ["income", "debt_ratio"]\n')
    rc = main(["causal", "validate-graph", "--spec", spec])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("causal graph OK: 9 nodes, 13 edges, 0 latent; treatment 'sex' (first "
                                      "sensitive feature)")


def test_discover_writes_a_labelled_suggestion(files, capsys) -> None:
    d, _ = files
    out = d / "suggested.dot"
    rc = main(["causal", "discover", "--data", str(d / "test.csv"), "--out", str(out), "--exclude", "age_group"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "SUGGESTION ONLY" in err
    text = out.read_text(encoding="utf-8")
    assert text.startswith("// SUGGESTED causal graph: proposed by the PC algorithm (causal-learn), NOT a validated")
    g = parse_graph(text)  # the oriented part parses; undecided edges stay comments
    assert "age_group" not in g and len(g.edges) >= 3
    for line in text.splitlines():
        if " -- " in line:
            assert line.strip().startswith("// undecided:")


def test_discover_and_bare_causal_usage_errors(files, capsys) -> None:
    d, _ = files
    assert main(["causal", "discover", "--data", str(d / "test.csv"), "--columns", "sex,nope"]) == 2
    assert capsys.readouterr().err.strip() == f"trustaudit: error: discover: column(s) not in {d / 'test.csv'}: nope"
    assert main(["causal"]) == 2
