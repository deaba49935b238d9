"""`trustaudit federated simulate`: bad inputs exit 2 with one exact line; a run writes its files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audit.cli import main
from tests.federated.conftest import CONFIGS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "fedfoo"],
         "strategy must be one of fedavg, fedprox, fedadam, fedyogi, fedmedian, fedtrimmedavg, krum, multikrum; "
         "got 'fedfoo'"),
        (["--partition", "dirichlet", "--alpha", "0"],
         "alpha must be greater than 0 (the Dirichlet concentration); got 0.0"),
        (["--partition", "quantity", "--alpha", "-1"],
         "alpha must be greater than 0 (the Dirichlet concentration); got -1.0"),
        (["--num-clients", "50", "--n-rows", "40"],
         "num-clients (50) is larger than the number of training rows (40); every client needs at least one row"),
        (["--num-clients", "ten"], "num-clients must be an integer; got 'ten'"),
        (["--data", "loans.csv"], "--data needs --target and --positive-label"),
        (["--secagg", "--central-dp"],
         "secagg and central-dp cannot be combined: server-side clipping needs the individual updates that "
         "secure aggregation hides; use local-dp with secagg"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    rc = main(["federated", "simulate", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"trustaudit: error: {message}\n"
    assert not (tmp_path / "out").exists()


def test_more_clients_than_rows_of_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "small.csv"
    pd.DataFrame({"x": range(20), "y": [0, 1] * 10}).to_csv(csv, index=False)
    rc = main(["federated", "simulate", "--data", str(csv), "--target", "y", "--positive-label", "1",
               "--num-clients", "15"])
    # 20 rows, 20 % test and 20 % holdout: 12 training rows for 15 clients
    assert rc == 2
    assert capsys.readouterr().err == (
        "trustaudit: error: num-clients (15) is larger than the number of training rows (12); "
        "every client needs at least one row\n")


def test_unknown_column_of_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "small.csv"
    pd.DataFrame({"x": range(20), "y": [0, 1] * 10}).to_csv(csv, index=False)
    rc = main(["federated", "simulate", "--data", str(csv), "--target", "label", "--positive-label", "1"])
    assert rc == 2
    assert capsys.readouterr().err == (
        f"trustaudit: error: target column 'label' not found in data file '{csv}' (columns: x, y)\n")


def test_federated_without_a_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["federated"]) == 2
    assert "simulate" in capsys.readouterr().err


def test_simulate_writes_metrics_report_model_and_audit(runs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The command's own work around the engine: flags -> config, progress, files, audit, summary.

    The engine call is the shared fixture's run of the same configuration (one Ray start for the
    whole suite); ``test_cli_end_to_end`` (slow) runs the command on the engine itself.
    """
    import federated._engine as engine

    seen = {}

    def fake_simulate(cfg, *, progress=None, **kw):
        seen["cfg"], seen["kw"] = cfg, kw
        from federated import RoundProgress

        progress(RoundProgress(1, 8, 0, 0.7, 0.6, 6, 6, None, 0.1))
        return runs["iid"]

    monkeypatch.setattr(engine, "simulate", fake_simulate)
    out = tmp_path / "run"
    rc = main(["federated", "simulate", "--num-clients", "6", "--num-rounds", "8", "--n-rows", "3000", "--seed", "5",
               "--out", str(out), "--audit", "--checks", "fairness", "--client-cpus", "1"])
    captured = capsys.readouterr()
    assert seen["cfg"] == CONFIGS["iid"].replace(output_dir=str(out), audit=True, checks="fairness")
    assert seen["kw"]["client_cpus"] == 1.0  # --client-cpus passed through (default: automatic)
    assert "round 1/8: accuracy 0.7000, 6/6 answered" in captured.err
    report = json.loads((out / "audit.json").read_text())
    assert rc == (1 if any(r["verdict"] in ("FAIL", "ERROR") for r in report["results"]) else 0)
    assert {r["check_id"].split(".")[0] for r in report["results"]} == {"fairness"}
    for name in ("metrics.json", "rounds.csv", "clients.csv", "groups.csv", "partitions.csv", "model.pt",
                 "report.html"):
        assert (out / name).is_file(), name
    assert "federated run: fedavg, 6 clients, 8 rounds" in captured.out


@pytest.mark.slow
def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(["federated", "simulate", "--num-clients", "4", "--num-rounds", "2", "--n-rows", "800",
               "--strategy", "fedprox", "--partition", "dirichlet", "--alpha", "0.3", "--dropout", "0.25",
               "--out", str(out), "--audit", "--checks", "fairness"])
    assert rc in (0, 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == [0, 1, 2]
    assert (out / "audit.json").is_file() and (out / "model.pt").is_file()


def test_simulate_writes_outputs_while_the_engine_stops(tmp_path: Path) -> None:
    """The real command: outputs are written on a thread as soon as the run ends, and the metrics
    file is rewritten afterwards with the engine's start and stop timings."""
    import json

    out = tmp_path / "run"
    rc = main(["federated", "simulate", "--num-clients", "3", "--num-rounds", "1", "--n-rows", "300",
               "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("metrics.json", "rounds.csv", "clients.csv", "groups.csv", "partitions.csv", "model.pt",
                 "report.html"):
        assert (out / name).stat().st_size > 0, name
    timings = json.loads((out / "metrics.json").read_text())["timings"]
    assert timings["engine_stop_seconds"] > 0 and timings["simulation_wall_seconds"] > timings["setup_seconds"]
    assert "<img" in (out / "report.html").read_text()


def test_out_naming_a_file_is_refused_before_the_engine_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`--out FILE` was found only after a 35 s simulation; now before the engine starts."""
    import federated._engine as engine

    def never(*a, **k):
        raise AssertionError("the simulation started before the output folder was checked")

    monkeypatch.setattr(engine, "simulate", never)
    f = tmp_path / "taken"
    f.write_text("x")
    rc = main(["federated", "simulate", "--num-clients", "3", "--n-rows", "300", "--out", str(f), "--quiet"])
    assert rc == 2
    assert capsys.readouterr().err == f"trustaudit: error: --out {f} cannot be written: it is a file, not a folder\n"


def test_rounds_record_their_quorum(runs: dict) -> None:
    """A round below a majority of its sampled clients is recorded as such (drop-out 0.3)."""
    from federated._run import min_answered

    run = runs["drop"]
    below = []
    for r in run.rounds[1:]:
        assert r["min_answered"] == max(1, -(-len(r["sampled"]) // 2))
        assert r["quorum"] == (len(r["answered"]) >= min_answered(len(r["sampled"])))
        if not r["quorum"]:
            below.append(r["round"])
    status = run.training_status()
    assert status["trained"] and status["rounds_below_quorum"] == below
    assert list(run.rounds_frame()["quorum"][1:]) == [r["quorum"] for r in run.rounds[1:]]
    assert run.metadata()["training"] == status


def test_all_clients_dropped_fails_without_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dropout 0.95 with no client answering in any round used to exit 0 and export the initial
    model. Now: exit 2, one line; metrics and run report written, no model file (a stale one removed)."""
    from federated._faults import is_dropped

    seed = 1
    assert all(is_dropped(seed, r, p, 0.95) for r in (1, 2) for p in range(3))  # nobody answers
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_text("a model from an earlier run")
    rc = main(["federated", "simulate", "--num-clients", "3", "--num-rounds", "2", "--n-rows", "300",
               "--dropout", "0.95", "--seed", str(seed), "--out", str(out), "--audit", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        "trustaudit: error: federated run trained nothing: no client update was aggregated in any of the 2 round(s) "
        "(0 of 6 sampled updates used; dropout 0.95, stragglers 0, round-timeout 0); no model file written; "
        f"metrics and run report in {out}\n")
    assert not (out / "model.pt").exists() and not (out / "audit.json").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["trained"] is False
    assert metrics["training"]["rounds_below_quorum"] == [1, 2]
    assert [len(r["answered"]) for r in metrics["rounds"]] == [0, 0, 0]
    assert (out / "report.html").stat().st_size > 0
