"""Benchmark of the compatibility modules' fast paths against their public fallbacks (a script,
not a test): prints figures, with the load average, so that each fast path is kept only while
it measurably pays.

    python bench/bench_compat.py [--repeats 5] [--sections shap,flwr-sweep,flwr-sim,ray,torch]

* ``shap``: exact TreeSHAP of 2,000 audited Adult rows (the anchor pipeline of
  bench/bench_explain.py) split between this process and a forked child
  (``audit._compat.shap``) against the public call in this process (``TRUSTAUDIT_COMPAT_SHAP=0``).
* ``flwr-sweep``: one sweep of Flower's message extractor (every node asks for its next message)
  over an in-memory link state holding one message per node, with Flower's
  ``get_message_ins`` and with the indexed one (``federated._compat.flwr``), at 100, 300 and
  1,000 nodes: the sweep that delivers the round's messages and a sweep while the clients work
  (all delivered; the engine repeats it ten times a second).
* ``flwr-sim``: whole simulations with a trivial ClientApp and Flower's FedAvg (the framework's
  own cost; ``--real``: trustaudit's app, logistic regression, 30 rows per client), with and
  without the indexed lookup, at ``--clients`` (default 100,1000) and ``--rounds``.
* ``ray``: a small simulation (10 clients, one round; after one uncounted warm-up run) with and
  without Ray's private ``_system_config={"enable_worker_prestart": False}`` (formerly passed by
  federated/_engine.py, dropped for want of a measurable gain): wall and the client set-up round.
* ``torch``: what one torch intra-op thread costs a torch workload of the driver process (what
  the former import-time ``torch.set_num_threads(1)`` of federated/_torch.py imposed on every
  later audit in the dashboard), and what the per-message set-and-restore of
  ``federated._torch.one_thread`` costs a client.

Run from the repository root (the ``shap`` section needs ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def load() -> str:
    a, b, c = os.getloadavg()
    return f"load average {a:.1f} / {b:.1f} / {c:.1f}"


def med(xs: list[float]) -> float:
    return statistics.median(xs)


class switch:  # noqa: N801 - reads as a statement
    """Set ``TRUSTAUDIT_COMPAT_<PACKAGE>`` to on or off for the duration."""

    def __init__(self, package: str, on: bool) -> None:
        self.name, self.on = f"TRUSTAUDIT_COMPAT_{package.upper()}", on

    def __enter__(self) -> None:
        self.old = os.environ.get(self.name)
        os.environ[self.name] = "1" if self.on else "0"

    def __exit__(self, *exc: Any) -> None:
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old


# --- shap ---------------------------------------------------------------------------------


def bench_shap(repeats: int) -> None:
    import numpy as np
    from bench_explain import DATA, build

    from audit._compat import shap as compat_shap

    if not (DATA / "adult_train.csv").is_file():
        print(f"[shap] Adult not found in {DATA}; skipped")
        return
    pipe, _train, test = build()
    Z = np.asarray(pipe[:-1].transform(test.drop(columns=["income"]).head(2000)), dtype=np.float64)
    final = pipe[-1]
    fork, serial, fork_path, serial_cpu = [], [], [], []
    for r in range(repeats):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            with switch("shap", on):
                t0, c0 = time.perf_counter(), os.times()
                values, _, backend = compat_shap.tree_shap_values(final, "tree_path_dependent", None, Z, 2)
                dt, c1 = time.perf_counter() - t0, os.times()
            own = (c1.user + c1.system) - (c0.user + c0.system)
            child = (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)
            (fork if on else serial).append(dt)
            # the CPU-time critical path: the wall time when every process has a core to itself
            (fork_path if on else serial_cpu).append(max(own, child))
            if on:
                fork_values, fork_backend = values, backend
            else:
                serial_values = values
    same = np.array_equal(fork_values, serial_values)
    print(f"[shap] TreeSHAP of {len(Z)} Adult rows x {Z.shape[1]} columns: fast path ({fork_backend}, 2 processes) "
          f"median {med(fork):.2f} s, public in-process call {med(serial):.2f} s of {repeats} "
          f"(x{med(serial) / med(fork):.2f}); values identical: {same} ({load()}, {os.cpu_count()} cores)")
    print(f"[shap] CPU seconds on the longest process (the wall time on free cores): fast path "
          f"{med(fork_path):.2f} s, public call {med(serial_cpu):.2f} s (x{med(serial_cpu) / med(fork_path):.2f})")


# --- flwr ---------------------------------------------------------------------------------


def _federation(n: int) -> tuple[Any, list[int]]:
    """An in-memory link state set up as Flower's simulation loop does, one message per node."""
    import importlib

    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.supercore.task_identity import TaskIdentity

    rs = importlib.import_module("flwr.simulation.run_simulation")
    factory = rs.LinkStateFactory(rs.FLWR_IN_MEMORY_DB_NAME, rs.NoOpFederationManager(), rs.ObjectStoreFactory())
    state = factory.state()
    run = rs.Run.create_empty(run_id=rs.generate_rand_int_from_bytes(rs.RUN_ID_NUM_BYTES))
    run.primary_task_id = rs.generate_rand_int_from_bytes(rs.TASK_ID_NUM_BYTES)
    run.federation_id = rs.NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, rs.SUPERLINK_NODE_ID
    state.run_ids[run.run_id] = rs.RunRecord(run=run)
    state.task_store[run.primary_task_id] = rs.Task(task_id=run.primary_task_id, run_id=run.run_id)
    nodes = sorted(_register_nodes(num_nodes=n, state_factory=factory))
    grid = rs.InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    grid.push_messages([Message(RecordDict({"c": ConfigRecord({"k": k})}), dst_node_id=node,
                                message_type=MessageType.TRAIN) for k, node in enumerate(nodes)])
    return state, nodes


def bench_flwr_sweep(repeats: int) -> None:
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

    from federated._compat.flwr import indexed_get_message_ins

    original = InMemoryLinkState.get_message_ins
    for n in (100, 300, 1000):
        figures: dict[str, tuple[list[float], list[float]]] = {}
        for name, fn in (("Flower", original), ("indexed", indexed_get_message_ins)):
            deliver, idle = [], []
            for _ in range(repeats):
                state, nodes = _federation(n)
                t0 = time.perf_counter()
                got = sum(len(fn(state, node, 1)) for node in nodes)
                deliver.append(time.perf_counter() - t0)
                assert got == n
                t0 = time.perf_counter()
                assert not any(fn(state, node, 1) for node in nodes)
                idle.append(time.perf_counter() - t0)
            figures[name] = (deliver, idle)
        (fd, fi), (xd, xi) = figures["Flower"], figures["indexed"]
        print(f"[flwr-sweep] {n} nodes: delivering sweep Flower {1e3 * med(fd):.1f} ms, indexed {1e3 * med(xd):.1f} ms; "
              f"sweep while clients work Flower {1e3 * med(fi):.1f} ms, indexed {1e3 * med(xi):.1f} ms "
              f"(x{med(fi) / med(xi):.0f}; the engine sweeps ten times a second) ({load()})")


def _bare_simulation(n: int, rounds: int) -> float:
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    from federated._compat.flwr import indexed_message_ins
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
        FedAvg(fraction_evaluate=0.0, min_available_nodes=n).start(
            grid=grid, initial_arrays=ArrayRecord([np.zeros(27, dtype=np.float32)]), num_rounds=rounds)

    t0 = time.perf_counter()
    with _quiet(False), indexed_message_ins(n):
        _run_simulation(num_supernodes=n, exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                        client_app=client, server_app=server, backend_config=backend_config())
    return time.perf_counter() - t0


def _real_simulation(n: int, rounds: int) -> float:
    from federated import FederatedConfig, simulate

    cfg = FederatedConfig(num_clients=n, num_rounds=rounds, n_rows=max(10_000, 30 * n), seed=0)
    t0 = time.perf_counter()
    run = simulate(cfg)
    wall = time.perf_counter() - t0
    steady = [r["seconds"] for r in run.rounds if r["round"] > 1]
    print(f"    rounds 2-{rounds}: {sum(steady):.1f} s; engine start {run.timings['engine_start_seconds']:.1f} s",
          flush=True)
    return wall


def bench_flwr_sim(repeats: int, clients: list[int], rounds: int, real: bool) -> None:
    from federated._compat import flwr as compat_flwr

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    threshold = compat_flwr.MIN_CLIENTS
    compat_flwr.MIN_CLIENTS = 0  # measured on both sides of the threshold
    try:
        for n in clients:
            on, off = [], []
            for r in range(repeats):
                for use in ((True, False) if r % 2 == 0 else (False, True)):
                    with switch("flwr", use):
                        dt = (_real_simulation if real else _bare_simulation)(n, rounds)
                    (on if use else off).append(dt)
                    print(f"  {n} clients, indexed {use}: {dt:.1f} s ({load()})", flush=True)
            kind = "trustaudit's app (logistic regression)" if real else "trivial ClientApp, FedAvg"
            print(f"[flwr-sim] {kind}, {n} clients x {rounds} rounds: Flower's lookup median "
                  f"{med(off):.1f} s, indexed {med(on):.1f} s of {repeats} (x{med(off) / med(on):.2f}) ({load()})",
                  flush=True)
    finally:
        compat_flwr.MIN_CLIENTS = threshold


# --- ray ----------------------------------------------------------------------------------


def bench_ray(repeats: int) -> None:
    import federated._engine as engine
    from federated import FederatedConfig, simulate

    plain = engine.backend_config

    def no_prestart(*args: Any, **kwargs: Any) -> dict[str, Any]:
        config = plain(*args, **kwargs)
        config["init_args"]["_system_config"] = {"enable_worker_prestart": False}
        return config

    cfg = FederatedConfig(num_clients=10, num_rounds=1, n_rows=2000, seed=0)
    rows: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    simulate(cfg)  # warm-up, not counted: the first run in a process also pays the imports
    for r in range(repeats):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            engine.backend_config = no_prestart if on else plain
            try:
                t0 = time.perf_counter()
                run = simulate(cfg)
                wall = time.perf_counter() - t0
            finally:
                engine.backend_config = plain
            rows[on].append((wall, run.timings["setup_seconds"]))
            print(f"  prestart off {on}: wall {wall:.1f} s, client set-up {rows[on][-1][1]:.1f} s ({load()})",
                  flush=True)
    for on in (True, False):
        w, s = med([x[0] for x in rows[on]]), med([x[1] for x in rows[on]])
        label = "enable_worker_prestart False" if on else "Ray's default"
        print(f"[ray] 10 clients x 1 round, {label}: median wall {w:.1f} s, client set-up round (waits for the "
              f"actors) {s:.1f} s of {repeats} ({load()})")


# --- torch --------------------------------------------------------------------------------


def bench_torch(repeats: int) -> None:
    import torch

    from federated._torch import build_model, one_thread

    default = torch.get_num_threads()
    net = build_model("mlp", 100, 256, seed=0)
    X = torch.randn(20_000, 100)

    def work() -> float:
        t0 = time.perf_counter()
        for _ in range(5):
            net(X).sum().backward()
        return time.perf_counter() - t0

    work()
    one, many = [], []
    for r in range(repeats):
        for single in ((True, False) if r % 2 == 0 else (False, True)):
            if single:
                with one_thread():
                    one.append(work())
            else:
                many.append(work())
    print(f"[torch] an MLP's forward+backward on 20,000 rows x5 in the driver process: {default} threads "
          f"{med(many):.3f} s, one thread {med(one):.3f} s (x{med(one) / med(many):.2f}) ({load()})")
    small = build_model("logreg", 30, seed=0)
    x = torch.randn(64, 30)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        with one_thread():
            small(x).sum().backward()
    wrapped = (time.perf_counter() - t0) / n
    with one_thread():
        t0 = time.perf_counter()
        for _ in range(n):
            small(x).sum().backward()
        bare = (time.perf_counter() - t0) / n
    print(f"[torch] one_thread set-and-restore around a small client step: {1e6 * wrapped:.0f} us per step, "
          f"{1e6 * bare:.0f} us without it ({load()})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="shap,flwr-sweep,flwr-sim,ray,torch")
    ap.add_argument("--clients", default="100,1000", help="client counts of the flwr-sim section")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the flwr-sim section")
    ap.add_argument("--real", action="store_true",
                    help="flwr-sim runs trustaudit's federated app (30 rows per client) instead of a trivial one")
    args = ap.parse_args()
    sections = {s.strip() for s in args.sections.split(",")}
    print(f"{os.cpu_count()} cores; {load()}")
    if "shap" in sections:
        bench_shap(args.repeats)
    if "flwr-sweep" in sections:
        bench_flwr_sweep(args.repeats)
    if "torch" in sections:
        bench_torch(args.repeats)
    if "ray" in sections:
        bench_ray(args.repeats)
    if "flwr-sim" in sections:
        bench_flwr_sim(args.repeats, [int(c) for c in args.clients.split(",")], args.rounds, args.real)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
