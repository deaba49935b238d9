"""Benchmark of the federated simulation (a script, not a test): prints figures.

    python bench/bench_federated.py [--repeats 3] [--sections perf,skew,robust]

* ``ray``: starting and stopping Ray alone (the bare library cost every simulation pays).
* ``bare``: the same engine call with a trivial ClientApp (adds 1 to the parameters) and
  Flower's FedAvg, 100 clients x 10 rounds: the framework's own cost, for the ratio.
* ``perf``: 100 clients x 10 rounds of logistic regression on the lending generator (10,000
  training rows), with one CPU per client (two Ray actors on two cores, the default), two (one
  actor) and half a CPU (four actors). Wall time of the whole ``simulate`` call (median of ``--repeats``), and where it
  goes: engine start and client set-up, the first round (each actor imports torch), the steady
  rounds (wall per client fit, and the part spent inside the client), the final evaluation.
* ``skew``: FedAvg vs FedProx (mu 0.5) on IID partitions and on Dirichlet(0.1) label skew, 20
  clients, 5 local epochs, logistic regression and the MLP, against centralised training.
* ``robust``: 20 % of clients send scaled updates (x -4): what FedMedian, trimmed mean and Krum
  keep of FedAvg's accuracy.

Other work may share the machine: the load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from federated import FederatedConfig, centralised_baseline, simulate, simulate_many


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.1f} / {b:.1f} / {c:.1f}"


def bench_ray(repeats: int) -> None:
    import ray

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        ray.shutdown()
        times.append(time.perf_counter() - t0)
    print(f"[ray] init + shutdown alone: median {statistics.median(times):.1f} s of {repeats} ({load()})")


def bench_bare(repeats: int) -> None:
    """The same engine call with a trivial ClientApp and Flower's FedAvg: the framework's own cost."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    from federated._engine import _quiet, backend_config

    client = ClientApp()

    @client.train()
    def _train(msg: Message, context: Context) -> Message:
        arrays = [a + 1.0 for a in msg.content["arrays"].to_numpy_ndarrays()]
        return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        FedAvg(fraction_evaluate=0.0, min_available_nodes=100).start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(27, dtype=np.float32)]), num_rounds=10)

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with _quiet(False):
            _run_simulation(num_supernodes=100, exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                            client_app=client, server_app=server, backend_config=backend_config(2.0))
        times.append(time.perf_counter() - t0)
    print(f"[bare] trivial ClientApp, Flower FedAvg, 100 clients x 10 rounds, one actor: median "
          f"{statistics.median(times):.1f} s of {repeats} ({load()})")


def _breakdown(run: Any, wall: float) -> dict[str, float]:
    rounds = [r for r in run.rounds if r["round"] > 0]
    steady = rounds[1:]
    fits = sum(len(r["answered"]) for r in steady)
    inside = [c["fit_seconds"] for r in steady for c in r["clients"] if c.get("fit_seconds") is not None]
    t = run.timings
    return {
        "wall": wall,
        "before_engine": wall - t["simulation_wall_seconds"],
        "engine_start": t["engine_start_seconds"],
        "setup": t["setup_seconds"],
        "engine_stop": t["engine_stop_seconds"],
        "first_round": rounds[0]["seconds"],
        "steady_rounds": sum(r["seconds"] for r in steady),
        "wall_ms_per_fit": 1000 * sum(r["seconds"] for r in steady) / max(fits, 1),
        "client_ms_per_fit": 1000 * statistics.median(inside) if inside else float("nan"),
        "accuracy": run.final_accuracy,
    }


def bench_perf(repeats: int) -> None:
    cfg = FederatedConfig(num_clients=100, num_rounds=10, n_rows=10_000, seed=0)
    for cpus in (1.0, 2.0, 0.5):  # 1.0 (one actor per core) is the automatic choice
        rows = []
        for _ in range(repeats):
            before = load()
            t0 = time.perf_counter()
            run = simulate(cfg, client_cpus=cpus)
            rows.append(_breakdown(run, time.perf_counter() - t0))
            print(f"  client_cpus={cpus}: {rows[-1]['wall']:.1f} s wall (before: {before}; after: {load()})")
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(
            f"[perf] 100 clients x 10 rounds, logreg, client_cpus={cpus} ({int(2 / cpus)} actor(s)): "
            f"median wall {med['wall']:.1f} s of {repeats}; data + imports before the engine "
            f"{med['before_engine']:.1f} s, engine start {med['engine_start']:.1f} s, client set-up round "
            f"{med['setup']:.1f} s, first round {med['first_round']:.1f} s, rounds 2-10 {med['steady_rounds']:.1f} s = "
            f"{med['wall_ms_per_fit']:.1f} ms wall per client fit, of which {med['client_ms_per_fit']:.1f} ms "
            f"inside the client (median), engine stop {med['engine_stop']:.1f} s; final accuracy {med['accuracy']:.4f}"
        )


def bench_skew() -> None:
    grid = []
    for model in ("logreg", "mlp"):
        base = FederatedConfig(num_clients=20, num_rounds=15, n_rows=6000, local_epochs=5, seed=1, model=model,
                               hidden=32)
        for part, cfg in (("IID", base), ("Dirichlet 0.1", base.replace(partition="dirichlet", alpha=0.1))):
            grid.append((model, part, "fedavg", cfg))
            grid.append((model, part, "fedprox", cfg.replace(strategy="fedprox", proximal_mu=0.5)))
    t0 = time.perf_counter()
    runs = simulate_many([g[3] for g in grid])
    print(f"[skew] {len(grid)} runs on one engine start: {time.perf_counter() - t0:.1f} s ({load()})")
    for model in ("logreg", "mlp"):
        ref = next(g[3] for g in grid if g[0] == model)
        central = centralised_baseline(ref.replace(num_rounds=3))
        print(f"[skew] {model}: centralised reference (15 epochs on the pooled rows): accuracy "
              f"{central['accuracy']:.4f}")
    for (model, part, strat, _), run in zip(grid, runs, strict=True):
        accs = [r["global"]["accuracy"] for r in run.rounds]
        cf = run.final["client_fairness"]
        tv = statistics.mean(p["label_tv"] for p in run.partitions)
        print(f"[skew] {model:>6} {part:>13} {strat:>7}: accuracy after rounds 1/2/5/15 "
              f"{accs[1]:.3f}/{accs[2]:.3f}/{accs[5]:.3f}/{accs[15]:.3f}, per-client accuracy min {cf['min']:.3f} "
              f"std {cf['std']:.3f} (mean label skew {tv:.3f})")


def bench_robust() -> None:
    base = FederatedConfig(num_clients=10, num_rounds=10, n_rows=4000, seed=2)
    attack = {"malicious": 0.2, "attack": "scale", "attack_scale": -4.0}
    grid = [
        ("fedavg, no attack", base),
        ("fedavg", base.replace(**attack)),
        ("fedmedian", base.replace(strategy="fedmedian", **attack)),
        ("fedtrimmedavg", base.replace(strategy="fedtrimmedavg", trim_beta=0.2, **attack)),
        ("krum", base.replace(strategy="krum", **attack)),
        ("fedavg, label flip", base.replace(malicious=0.2, attack="label-flip")),
        ("fedmedian, label flip", base.replace(strategy="fedmedian", malicious=0.2, attack="label-flip")),
    ]
    t0 = time.perf_counter()
    runs = simulate_many([g[1] for g in grid])
    print(f"[robust] {len(grid)} runs on one engine start: {time.perf_counter() - t0:.1f} s ({load()})")
    for (name, _), run in zip(grid, runs, strict=True):
        krum = (f" (Krum f = {run.config.krum_f_used}: {run.config.krum_f_source})"
                if run.config.strategy in ("krum", "multikrum") else "")
        print(f"[robust] 2 of 10 clients attacking, {name:>22}: final accuracy {run.final_accuracy:.4f}{krum}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="ray,bare,perf,skew,robust")
    args = ap.parse_args()
    sections = args.sections.split(",")
    print(f"machine: {os.cpu_count()} CPUs; {load()}")
    if "ray" in sections:
        bench_ray(args.repeats)
    if "bare" in sections:
        bench_bare(args.repeats)
    if "perf" in sections:
        bench_perf(args.repeats)
    if "skew" in sections:
        bench_skew()
    if "robust" in sections:
        bench_robust()


if __name__ == "__main__":
    main()
