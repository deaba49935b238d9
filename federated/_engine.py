"""Run the app on Flower's simulation engine, in this process.

``flwr run`` (Flower 1.42) submits the app to a SuperLink, which starts a ``flwr-simulation``
process; that process calls ``flwr.simulation.run_simulation._run_simulation`` with the app's
ClientApp and ServerApp and a ``SimulationConfig`` (number of SuperNodes, backend resources).
We call the same function directly, with our ClientApp object and a ServerApp object built by
``make_server_app`` (so the result comes back in memory and progress can be shown), instead of
the public ``flwr.simulation.run_simulation`` wrapper that 1.42 deprecates. The function is
private in Flower; the version is pinned (``flwr[simulation]~=1.42.0``) and this module is the
only place that touches it.

Tuning (see bench/bench_federated.py): by default one Ray actor per core (``auto_client_cpus``);
Ray is left to Flower to start, so that its start-up overlaps the ServerApp's (starting it
beforehand, even without Flower's runtime environment, was slower in bench/bench_federated.py);
torch runs one thread per client handler (``federated._torch.one_thread``, set and restored
around training and evaluation); clients reuse their model object and batch by slicing;
Flower's and Ray's logs stay off the console.

For large federations one hot spot of Flower 1.42's in-memory link state is bypassed while the
simulation runs: the message lookup the engine's extractor repeats for every node ten times a
second. That replacement, and any other use of Flower's or Ray's internals beyond the engine call
above, lives in the version-gated :mod:`federated._compat` modules (each with an off switch).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from audit.exceptions import ConfigError, MissingExtraError
from federated._config import FederatedConfig
from federated._run import FederatedRun, ProgressFn

__all__ = ["auto_client_cpus", "backend_config", "simulate", "simulate_many"]


def auto_client_cpus(ray_cpus: int | None = None) -> float:
    """CPUs per simulated client: one Ray actor per core.

    The driver's per-message work (link state, queues, serialisation) is light (for large
    federations once the link state's extractor hot spot is bypassed, :mod:`federated._compat.flwr`),
    and two actors keep the driver's and the clients' work overlapping; more actors than cores pay
    torch imports at start-up that they do not win back. bench/bench_federated.py measures the
    time per client fit for one, two and four actors.
    """
    return 1.0


def backend_config(client_cpus: float | None = None, ray_cpus: int | None = None) -> dict[str, Any]:
    """The simulation backend settings: resources per client (None: automatic) and Ray's CPU budget."""
    # Ray's own defaults otherwise (its private ``_system_config`` with no worker prestart measured no
    # faster: bench/bench_compat.py, section ray)
    init: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    if ray_cpus:
        init["num_cpus"] = int(ray_cpus)
    cpus = auto_client_cpus(ray_cpus) if client_cpus is None else float(client_cpus)
    return {"client_resources": {"num_cpus": cpus, "num_gpus": 0.0}, "init_args": init}


@contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("flwr", "ray")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def simulate(
    config: FederatedConfig | dict[str, Any],
    *,
    client_cpus: float | None = None,
    ray_cpus: int | None = None,
    progress: ProgressFn | None = None,
    verbose: bool = False,
    on_run: Callable[[FederatedRun], None] | None = None,
) -> FederatedRun:
    """Run the federated app on Flower's simulation engine and return the run record.

    Bad settings raise :class:`audit.exceptions.ConfigError` (or ``DataError``) before Ray starts:
    the data is loaded and partitioned here first (and cached for the ServerApp). ``on_run`` is
    called from the ServerApp's thread as soon as the run is recorded, while the engine is still
    stopping (a couple of seconds); its run lacks only the engine's start/stop timings.
    """
    return simulate_many([config], client_cpus=client_cpus, ray_cpus=ray_cpus, progress=progress,
                         verbose=verbose, on_run=on_run)[0]


def simulate_many(
    configs: Sequence[FederatedConfig | dict[str, Any]],
    *,
    client_cpus: float | None = None,
    ray_cpus: int | None = None,
    progress: ProgressFn | None = None,
    verbose: bool = False,
    on_run: Callable[[FederatedRun], None] | None = None,
) -> list[FederatedRun]:
    """Several runs one after the other on one federation: Ray and the clients start once.

    All configs need the same ``num-clients`` (the number of simulated SuperNodes). Useful for
    comparisons (FedAvg vs FedProx, IID vs label skew, with and without SecAgg+): starting the
    engine and importing torch in every actor costs several seconds, a round a fraction of one.
    """
    cfgs = [c if isinstance(c, FederatedConfig) else FederatedConfig.from_mapping(c) for c in configs]
    if not cfgs:
        raise ConfigError("simulate_many needs at least one configuration")
    sizes = sorted({c.num_clients for c in cfgs})
    if len(sizes) != 1:
        raise ConfigError(f"runs sharing one simulation need the same num-clients; got {sizes}")
    from federated._data import load_run_data

    for cfg in cfgs:
        cfg.validate()
        load_run_data(cfg.data_setup_json())  # fail fast on data / partition errors, warm the cache
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        from flwr.app import Context, RecordDict
        from flwr.simulation.run_simulation import _run_simulation
        from flwr.supercore.telemetry import EventType
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError(f"federated simulation needs Flower with Ray: pip install 'flwr[simulation]~=1.42.0' "
                                f"({exc})") from None
    from federated.client_app import app as client_app
    from federated.server_app import make_server_app

    results: list[FederatedRun] = []
    backend = backend_config(client_cpus, ray_cpus)
    engine = {"backend": "ray", "client_cpus": backend["client_resources"]["num_cpus"],
              "ray_cpus": ray_cpus or os.cpu_count(),
              "num_supernodes": sizes[0], "runs_in_simulation": len(cfgs)}
    def sink(run: FederatedRun) -> None:
        results.append(run)
        if on_run is not None:
            on_run(run)

    server = make_server_app(sink, progress=progress, engine=engine, write_outputs=False, configs=cfgs)
    context = Context(run_id=secrets.randbits(63), node_id=0, node_config={}, state=RecordDict(),
                      run_config=cfgs[0].to_run_config())
    t0 = time.perf_counter()
    from federated._compat.flwr import indexed_message_ins

    with _quiet(verbose), indexed_message_ins(sizes[0]) as indexed:
        engine["indexed_message_ins"] = indexed
        _run_simulation(
            num_supernodes=sizes[0],
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server,
            backend_name="ray",
            backend_config=backend,  # type: ignore[arg-type]
            server_app_context=context,
            verbose_logging=verbose,
        )
    t1 = time.perf_counter()
    if len(results) != len(cfgs):
        raise RuntimeError("the Flower simulation ended without a result; rerun with verbose logging to see why")
    # when the ServerApp started its first run and ended its last, relative to the engine call:
    # before = engine start-up seen by the server thread, after = engine shutdown (Ray, actors)
    first, last = results[0].timings["_started_at"], results[-1].timings["_ended_at"]
    shared = {"simulation_wall_seconds": t1 - t0, "engine_start_seconds": first - t0, "engine_stop_seconds": t1 - last}
    return [dataclasses.replace(r, timings={**{k: v for k, v in r.timings.items() if not k.startswith("_")}, **shared})
            for r in results]
