"""The Federated page: configuration errors, live per-round progress, and (slow) a real Flower run."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import errors, new_app

PAGE = "app_pages/federated.py"


def _page():
    at = new_app(timeout=120).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _number(at, label: str):
    return next(n for n in at.number_input if n.label == label)


def test_bad_configuration_is_one_line(dash_env):
    at = _page()
    at.selectbox[0].set_value("dirichlet")  # partition
    _number(at, "Dirichlet α").set_value(0.0)
    at.button[0].click().run()
    assert not at.exception
    assert errors(at) == ["alpha must be greater than 0 (the Dirichlet concentration); got 0.0"]
    assert at.info[-1].value == "Configure the federation above and run it; the per-round charts appear here."


def test_upload_source_needs_a_file(dash_env):
    at = _page()
    at.radio[0].set_value("upload a CSV or Parquet file")
    at.button[0].click().run()
    assert errors(at) == ["choose a data file to upload, or use the lending generator"]


def test_rounds_are_charted_as_they_arrive(dash_env, monkeypatch):
    """The page shows each round the simulation reports and a failure as one line (engine faked)."""
    import federated
    from audit.exceptions import ConfigError
    from federated import RoundProgress

    seen = []

    def fake_simulate(cfg, *, progress=None, **kwargs):
        seen.append(cfg)
        for r in (1, 2):
            progress(RoundProgress(round=r, num_rounds=cfg.num_rounds, run_index=0, accuracy=0.7 + r / 100,
                                   loss=0.6 - r / 100, answered=3, sampled=3, epsilon=None, seconds=0.1))
        raise ConfigError("the engine stopped after round 2")

    monkeypatch.setattr(federated, "simulate", fake_simulate)
    at = _page()
    _number(at, "Clients").set_value(3)
    _number(at, "Rounds").set_value(4)
    _number(at, "Generated training rows (holdout and test: half as many each)").set_value(500)
    at.button[0].click().run()
    assert not at.exception
    assert (seen[0].num_clients, seen[0].num_rounds, seen[0].n_rows) == (3, 4, 500)
    assert len(at.get("arrow_vega_lite_chart")) + len(at.get("vega_lite_chart")) == 1  # the live chart
    assert errors(at) == ["The simulation failed: the engine stopped after round 2"]
    assert at.get("progress")[0].proto.text == "Round 2/4: accuracy 0.720, 3/3 clients answered"


@pytest.mark.slow
def test_real_simulation_and_audit(dash_env):
    """Flower's simulation engine through the page, then the audit of the exported model."""
    at = _page()
    _number(at, "Clients").set_value(3)
    _number(at, "Rounds").set_value(2)
    _number(at, "Generated training rows (holdout and test: half as many each)").set_value(600)
    at.multiselect[0].set_value(["fairness"])
    at.button[0].click().run(timeout=900)
    assert not at.exception and not errors(at)
    assert at.subheader[0].value == "Last run"
    assert [m.label for m in at.metric][:2] == ["Final accuracy", "Final loss"]
    report = at.session_state["trustaudit_federated_audit"]
    assert report.results and report.model["format"] == "torchscript"
    assert report.model["path"].startswith("federated run ") and report.model["path"].endswith(": model.pt")
    files = list((dash_env / "federated").iterdir())
    assert len(files) == 1 and (files[0] / "model.pt").is_file()
