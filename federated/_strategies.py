"""Strategies selectable by name, and the thin wrappers that observe them.

The aggregation itself is Flower's (``flwr.serverapp.strategy``; on the SecAgg+ path,
``flwr.server.strategy.FedAvg`` under ``SecAggPlusWorkflow``). The wrappers add what a simulation
report needs and Flower leaves to the user:

* seeded client sampling (by partition id, so runs are reproducible; Flower samples node ids,
  which are random per run, with the global ``random`` module). The sample is not secret, so
  central DP is accounted without amplification by sampling (``federated._privacy``);
* central DP noise from a generator seeded from OS entropy (Flower's wrapper otherwise);
* a record of who was sampled, who answered, who dropped out or timed out;
* aggregation over the replies that arrived (error replies are set aside before the inner
  strategy sees them: the DP wrapper would otherwise skip the whole round);
* federated evaluation only every ``evaluate-every`` rounds and after the last one (per-client
  accuracy in the other rounds comes for free from the clients' pre-training evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from federated._config import FederatedConfig
from federated._run import RunRecorder

__all__ = ["ClientSampler", "ObservedStrategy", "make_legacy_strategy", "make_strategy"]


class ClientSampler:
    """Seeded sampling of ``clients_per_round`` partitions per round, mapped to node ids."""

    def __init__(self, cfg: FederatedConfig, pid_to_node: dict[int, int]) -> None:
        self.cfg = cfg
        self.pid_to_node = dict(pid_to_node)

    def partitions(self, server_round: int) -> list[int]:
        n, m = self.cfg.num_clients, self.cfg.clients_per_round
        if m >= n:
            return list(range(n))
        rng = np.random.default_rng([self.cfg.seed, 0x5A3, server_round])
        return sorted(int(i) for i in rng.choice(n, size=m, replace=False))

    def nodes(self, server_round: int) -> list[int]:
        return [self.pid_to_node[p] for p in self.partitions(server_round)]

    def all_nodes(self) -> list[int]:
        return [self.pid_to_node[p] for p in sorted(self.pid_to_node)]


class _SubsetGrid:
    """A view of the Grid that offers only the chosen nodes to the inner strategy's sampler."""

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self._grid = grid
        self._ids = list(node_ids)

    def get_node_ids(self) -> list[int]:
        return list(self._ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _krum_f(cfg: FederatedConfig) -> int:
    """Krum's assumed number of malicious clients: never the simulated count (see KRUM_F_FRACTION)."""
    return cfg.krum_f_used


def _secure_central_dp(inner: Strategy, cfg: FederatedConfig) -> Strategy:
    """Flower's server-side fixed clipping, with its Gaussian noise drawn from a generator seeded
    from OS entropy (Flower draws from numpy's global generator, which any code may seed)."""
    from flwr.app import Array
    from flwr.serverapp import strategy as st
    from flwr.supercore.differential_privacy import compute_stdv

    from audit.privacy.secure_rng import secure_numpy_generator

    class SecureNoiseServerSideFixedClipping(st.DifferentialPrivacyServerSideFixedClipping):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._noise_rng = secure_numpy_generator()

        def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
            stdv = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
            out = {}
            for k, v in zip(aggregated_arrays.keys(), aggregated_arrays.to_numpy_ndarrays(), strict=True):
                arr = np.array(v, copy=True)
                arr += self._noise_rng.normal(0.0, stdv, arr.shape).astype(arr.dtype)
                out[k] = Array(np.asarray(arr))
            return ArrayRecord(out)

    return SecureNoiseServerSideFixedClipping(
        inner, noise_multiplier=cfg.noise_multiplier, clipping_norm=cfg.clip_norm,
        num_sampled_clients=cfg.clients_per_round,
    )


def make_strategy(cfg: FederatedConfig) -> Strategy:
    """The Message-API strategy named by ``cfg.strategy`` (wrapped for central DP if asked)."""
    from flwr.serverapp import strategy as st

    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": 1,
        # the central-DP accountant models a uniform mean of clipped updates
        "weighted_by_key": "weight-uniform" if cfg.central_dp else "num-examples",
    }
    name = cfg.strategy
    inner: Strategy
    if name == "fedavg":
        inner = st.FedAvg(**common)
    elif name == "fedprox":
        inner = st.FedProx(**common, proximal_mu=cfg.proximal_mu)
    elif name == "fedadam":
        inner = st.FedAdam(**common, eta=cfg.server_lr, eta_l=cfg.lr)
    elif name == "fedyogi":
        inner = st.FedYogi(**common, eta=cfg.server_lr, eta_l=cfg.lr)
    elif name == "fedmedian":
        inner = st.FedMedian(**common)
    elif name == "fedtrimmedavg":
        inner = st.FedTrimmedAvg(**common, beta=cfg.trim_beta)
    elif name == "krum":
        inner = st.Krum(**common, num_malicious_nodes=_krum_f(cfg))
    elif name == "multikrum":
        f = _krum_f(cfg)
        inner = st.MultiKrum(**common, num_malicious_nodes=f, num_nodes_to_select=max(1, cfg.clients_per_round - f))
    else:  # validated before; kept for type checkers
        raise ValueError(name)
    if cfg.central_dp:
        inner = _secure_central_dp(inner, cfg)
    return inner


class ObservedStrategy(Strategy):
    """Wraps a Message-API strategy: seeded sampling, bookkeeping, aggregation of what arrived."""

    def __init__(self, inner: Strategy, cfg: FederatedConfig, sampler: ClientSampler, recorder: RunRecorder,
                 keep_round_arrays: list[tuple[np.ndarray, ...]] | None = None) -> None:
        self.inner = inner
        self.cfg = cfg
        self.sampler = sampler
        self.recorder = recorder
        self.keep = keep_round_arrays

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = self.sampler.nodes(server_round)
        self.recorder.start_round(server_round, nodes)
        return list(self.inner.configure_train(server_round, arrays, config, _SubsetGrid(grid, nodes)))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = self.recorder.train_replies(server_round, list(replies))
        arrays, metrics = self.inner.aggregate_train(server_round, valid) if valid else (None, None)
        self.recorder.aggregated(server_round, arrays is not None)
        if self.keep is not None and arrays is not None:
            self.keep.append(tuple(arrays.to_numpy_ndarrays()))
        return arrays, metrics

    def _evaluates(self, server_round: int) -> bool:
        every = self.cfg.evaluate_every
        return server_round == self.cfg.num_rounds or (every > 0 and server_round % every == 0)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        if not self._evaluates(server_round):
            return []
        return list(self.inner.configure_evaluate(server_round, arrays, config,
                                                  _SubsetGrid(grid, self.sampler.all_nodes())))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        valid = self.recorder.eval_replies(server_round, list(replies))
        return self.inner.aggregate_evaluate(server_round, valid) if valid else None


def make_legacy_strategy(
    cfg: FederatedConfig,
    sampler: ClientSampler,
    recorder: RunRecorder,
    initial: Sequence[np.ndarray],
    fit_config: dict[str, Any],
    central_eval: Callable[[int, list[np.ndarray]], tuple[float, dict[str, Any]]],
    keep_round_arrays: list[tuple[np.ndarray, ...]] | None,
) -> Any:
    """A ``flwr.server.strategy.FedAvg`` for the SecAgg+ workflow, with the same bookkeeping."""
    from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    class _ObservedLegacyFedAvg(LegacyFedAvg):
        def _proxies(self, client_manager: Any, node_ids: Sequence[int]) -> list[Any]:
            by_node = {p.node_id: p for p in client_manager.all().values()}
            return [by_node[n] for n in node_ids if n in by_node]

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            nodes = sampler.nodes(server_round)
            client_manager.wait_for(len(nodes), timeout=3600)
            recorder.start_round(server_round, nodes)
            cfg_round = dict(fit_config, **{"server-round": server_round})
            ins = FitIns(parameters, cfg_round)
            return [(p, ins) for p in self._proxies(client_manager, nodes)]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            recorder.legacy_fit(server_round, results, failures)
            params, metrics = super().aggregate_fit(server_round, results, failures)
            recorder.aggregated(server_round, params is not None)
            if keep_round_arrays is not None and params is not None:
                keep_round_arrays.append(tuple(parameters_to_ndarrays(params)))
            return params, metrics

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            every = cfg.evaluate_every
            if not (server_round == cfg.num_rounds or (every > 0 and server_round % every == 0)):
                return []
            ins = EvaluateIns(parameters, dict(fit_config, **{"server-round": server_round}))
            return [(p, ins) for p in self._proxies(client_manager, sampler.all_nodes())]

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            recorder.legacy_evaluate(server_round, results)
            return super().aggregate_evaluate(server_round, results, failures)

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            return central_eval(server_round, parameters_to_ndarrays(parameters))

    m = cfg.clients_per_round
    return _ObservedLegacyFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=1.0,
        min_fit_clients=m,
        min_evaluate_clients=1,
        min_available_clients=cfg.num_clients,
        initial_parameters=ndarrays_to_parameters(list(initial)),
        accept_failures=True,
        # per-client metrics are kept by the recorder; Flower's history gets weighted means
        fit_metrics_aggregation_fn=_weighted_mean,
        evaluate_metrics_aggregation_fn=_weighted_mean,
    )


def _weighted_mean(results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """Example-weighted mean of the numeric metrics every client reported."""
    total = sum(n for n, _ in results)
    if not results or total == 0:
        return {}
    keys = set.intersection(*(set(m) for _, m in results))
    return {k: sum(n * float(m[k]) for n, m in results) / total for k in sorted(keys)
            if all(isinstance(m[k], (int, float)) for _, m in results)}
