"""The Flower ServerApp (Message API) of a trustaudit federated run.

``app`` is what ``flwr run`` loads (``[tool.flwr.app.components] serverapp``). Its main reads
the run config (``[tool.flwr.app.config]`` plus ``--run-config`` overrides), then:

1. **setup**: a ``query`` message to every node; each client builds its local data and
   returns sufficient statistics, from which the server builds the input encoder (no rows are
   sent), plus a summary of its rows (the partition summary);
2. **training**: ``num-rounds`` rounds with the chosen ``flwr.serverapp.strategy`` strategy
   (wrapped for central DP, observed for the run record), or, with ``secagg = true``, Flower's
   ``SecAggPlusWorkflow`` driving a ``flwr.server.strategy.FedAvg`` through ``LegacyContext``;
3. **evaluation**: after every round, the global model on the server's test rows, overall and
   per sensitive group;
4. **outputs**: with ``output-dir`` set, metrics (JSON + CSV), the run report (HTML), the final
   model (TorchScript with its metadata) and, with ``audit = true``, the audit of that model. A
   run in which no round aggregated any client update writes no model file and fails
   (``ConfigError``): the initial weights are never exported as a trained model.

``trustaudit federated simulate`` runs the same ClientApp and a ServerApp built by
:func:`make_server_app` (which also hands the result back in memory) on Flower's simulation
engine.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from audit.exceptions import ConfigError
from federated._config import FederatedConfig
from federated._run import FederatedRun, ProgressFn, RunRecorder

__all__ = ["app", "make_server_app", "run_server"]

log = logging.getLogger("trustaudit.federated")

#: Seconds the server waits for the configured number of nodes to connect (deployment).
NODE_WAIT_SECONDS = 600.0
#: Wall-clock limit on waiting for replies in a round (a safety net for nodes that vanish in a
#: deployment; simulated stragglers are judged against ``round-timeout`` on a simulated clock).
REPLY_TIMEOUT_SECONDS = 3600.0


def _wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    t0 = time.monotonic()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= n:
            return ids
        if time.monotonic() - t0 > timeout:
            raise ConfigError(f"num-clients is {n} but only {len(ids)} node(s) connected within {timeout:.0f} s")
        time.sleep(0.5)


def _setup_phase(grid: Grid, cfg: FederatedConfig) -> dict[str, Any]:
    """Query every node: node -> partition map, encoder from sufficient statistics, summaries."""
    from federated._encoder import encoder_from_stats

    nodes = _wait_for_nodes(grid, cfg.num_clients, NODE_WAIT_SECONDS)
    content = RecordDict({"setup": ConfigRecord({"setup": cfg.data_setup_json()})})
    msgs = [Message(content, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    replies = list(grid.send_and_receive(msgs, timeout=NODE_WAIT_SECONDS))
    errors = [m for m in replies if m.has_error()]
    if errors:
        reason = " ".join(str(errors[0].error.reason).split())[-400:]
        raise RuntimeError(f"{len(errors)} client(s) could not set up their data: {reason}")
    node_to_pid: dict[int, int] = {}
    stats, summaries, columns = [], [], None
    for m in replies:
        rec = m.content.config_records["setup"]
        node_to_pid[int(m.metadata.src_node_id)] = int(rec["partition-id"])
        stats.append(json.loads(str(rec["stats"])))
        summaries.append(json.loads(str(rec["summary"])))
        cols = json.loads(str(rec["columns"]))
        if columns is None:
            columns = cols
        elif cols != columns:
            raise ConfigError("clients report different feature columns; every site needs the same columns")
    if sorted(node_to_pid.values()) != list(range(len(node_to_pid))):
        # a deployment: nodes report their node ids; number the clients 0..N-1 by that order
        order = sorted(node_to_pid, key=lambda n: (node_to_pid[n], n))
        renumber = {node_to_pid[n]: i for i, n in enumerate(order)}
        for s in summaries:
            s["partition_id"] = renumber[s["partition_id"]]
        node_to_pid = {n: i for i, n in enumerate(order)}
    encoder = encoder_from_stats(stats, columns or [])
    summaries.sort(key=lambda s: s["partition_id"])
    # label skew is relative to the pooled label rate, which only the server can know
    pooled = sum(s["positives"] for s in summaries) / max(1, sum(s["rows"] for s in summaries))
    for s in summaries:
        s["label_tv"] = abs(s["positive_rate"] - pooled) if s["rows"] else float("nan")
    return {"node_to_pid": node_to_pid, "encoder": encoder, "summaries": summaries}


class _CentralEvaluator:
    """The global model on the server's test rows: loss, accuracy, AUC, per-group metrics."""

    def __init__(self, cfg: FederatedConfig, data: Any, encoder: Any, recorder: RunRecorder) -> None:
        from federated._torch import build_model

        self.cfg = cfg
        self.recorder = recorder
        self.X = encoder.transform(data.test.loc[:, list(data.features)])
        self.y = data.y_test
        self.sens = data.test.loc[:, list(data.sensitive)]
        self.model = build_model(cfg.model, encoder.width, cfg.hidden)

    def __call__(self, server_round: int, arrays: list[np.ndarray]) -> tuple[float, dict[str, float]]:
        from federated._metrics import fairness_gaps, global_metrics, group_metrics
        from federated._torch import predict_logits, set_weights

        set_weights(self.model, arrays)
        z = predict_logits(self.model, self.X)
        metrics = global_metrics(self.y, z)
        groups = group_metrics(self.y, z, self.sens) if self.sens.shape[1] else []
        self.recorder.central(server_round, metrics, groups, fairness_gaps(groups))
        return metrics["loss"], {k: v for k, v in metrics.items() if k != "loss"}


def _train_config(cfg: FederatedConfig, encoder: Any, run_key: str) -> dict[str, Any]:
    return {
        "run-key": run_key,
        "setup": cfg.data_setup_json(),
        "encoder": json.dumps(encoder.to_dict()),
        "model": cfg.model,
        "hidden": cfg.hidden,
        "local-epochs": cfg.local_epochs,
        "batch-size": cfg.batch_size,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "num-clients": cfg.num_clients,
        "dropout": cfg.dropout,
        "malicious": cfg.num_malicious,
        "stragglers": cfg.num_stragglers,
        "straggler-delay": cfg.straggler_delay,
        "round-timeout": cfg.round_timeout,
        "attack": cfg.attack,
        "attack-scale": cfg.attack_scale,
        "local-dp": cfg.local_dp,
        "local-noise": cfg.local_noise,
        "local-clip": cfg.local_clip,
        "local-delta": cfg.local_delta,
        "proximal-mu": cfg.proximal_mu if cfg.strategy == "fedprox" else 0.0,
    }


def run_server(grid: Grid, context: Context, *, config: FederatedConfig | None = None, run_index: int = 0,
               progress: ProgressFn | None = None, keep_round_arrays: bool = True,
               engine: dict[str, Any] | None = None) -> FederatedRun:
    """Everything the ServerApp does for one run; returns the run record (see the module docstring).

    ``config`` defaults to the context's run config. Several runs may share one federation (one
    engine start); ``run_index`` keeps their client-side state (DP accountants) apart.
    """
    import hashlib

    from federated._data import load_run_data
    from federated._strategies import ClientSampler, ObservedStrategy, make_strategy
    from federated._torch import build_model, get_weights

    t0 = time.perf_counter()
    if isinstance(getattr(grid, "pull_interval", None), float):
        # the simulation's in-memory grid polls for replies every 0.1 s by default; a round of
        # small clients is that short (bench/bench_federated.py times the rounds), so poll more often
        grid.pull_interval = min(grid.pull_interval, 0.02)  # type: ignore[attr-defined]
    cfg = config if config is not None else FederatedConfig.from_mapping(dict(context.run_config))
    run_key = f"{run_index}-" + hashlib.sha256(json.dumps(cfg.to_run_config(), sort_keys=True).encode()).hexdigest()[:12]
    data = load_run_data(cfg.data_setup_json())
    setup = _setup_phase(grid, cfg)
    t_setup = time.perf_counter() - t0
    encoder = setup["encoder"]
    pid_to_node = {p: n for n, p in setup["node_to_pid"].items()}
    recorder = RunRecorder(cfg, setup["node_to_pid"], progress, run_index=run_index)
    sampler = ClientSampler(cfg, pid_to_node)
    evaluator = _CentralEvaluator(cfg, data, encoder, recorder)
    initial = get_weights(build_model(cfg.model, encoder.width, cfg.hidden, seed=cfg.seed))
    base = _train_config(cfg, encoder, run_key)
    kept: list[tuple[np.ndarray, ...]] | None = [tuple(initial)] if keep_round_arrays else None

    if cfg.secagg:
        final = _run_secagg(grid, context, cfg, setup, sampler, recorder, evaluator, initial, base, kept)
    else:
        strategy = ObservedStrategy(make_strategy(cfg), cfg, sampler, recorder, kept)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            loss, metrics = evaluator(server_round, arrays.to_numpy_ndarrays())
            return MetricRecord({"loss": loss, **metrics})

        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([np.asarray(a) for a in initial]),
            num_rounds=cfg.num_rounds,
            timeout=REPLY_TIMEOUT_SECONDS,
            train_config=ConfigRecord(base),
            evaluate_config=ConfigRecord(base),
            evaluate_fn=evaluate_fn,
        )
        final = [np.asarray(a) for a in result.arrays.to_numpy_ndarrays()] if len(result.arrays) else list(initial)

    rounds = recorder.round_records()
    privacy = _privacy_summary(cfg, recorder, rounds)
    return FederatedRun(
        config=cfg,
        data={"source": data.source, "train_rows": len(data.train), "holdout_rows": len(data.holdout),
              "test_rows": len(data.test), "features": list(data.features), "sensitive": list(data.sensitive),
              "target": data.target, "positive_label": data.positive_label, "dropped_rows": data.dropped_rows},
        partitions=tuple(setup["summaries"]),
        rounds=tuple(rounds),
        encoder=encoder.to_dict(),
        final_arrays=tuple(np.asarray(a, dtype=np.float32) for a in final),
        round_arrays=tuple(kept) if kept is not None else (),
        privacy=privacy,
        timings={"setup_seconds": t_setup, "server_seconds": time.perf_counter() - t0,
                 "_started_at": t0, "_ended_at": time.perf_counter()},
        engine=dict(engine or {}),
    )


def _run_secagg(grid: Grid, context: Context, cfg: FederatedConfig, setup: dict[str, Any], sampler: Any,
                recorder: RunRecorder, evaluator: Any, initial: list[np.ndarray], base: dict[str, Any],
                kept: list[tuple[np.ndarray, ...]] | None) -> list[np.ndarray]:
    """FedAvg under SecAgg+: Flower's legacy workflow API, the same ClientApp."""
    from flwr.common import parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    from federated._strategies import make_legacy_strategy

    strategy = make_legacy_strategy(cfg, sampler, recorder, initial, base, evaluator, kept)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.num_rounds), strategy=strategy)
    # every client's weight (its number of training rows) must fit in [0, max_weight]
    max_weight = float(max(s["train_rows"] for s in setup["summaries"]))
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=float(cfg.secagg_shares),
            reconstruction_threshold=float(cfg.secagg_threshold),
            max_weight=max_weight,
            clipping_range=float(cfg.secagg_clip_range),
            quantization_range=int(cfg.secagg_quant_range),
            timeout=REPLY_TIMEOUT_SECONDS,
        )
    )
    workflow(grid, legacy)
    record = legacy.state.array_records[MAIN_PARAMS_RECORD]
    return list(parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True)))


def _privacy_summary(cfg: FederatedConfig, recorder: RunRecorder, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    from federated._privacy import dp_conditions

    out: dict[str, Any] = {}
    acc = recorder.accountant
    if acc is not None:
        out["central"] = {
            "mechanism": "server-side fixed clipping (Flower DifferentialPrivacyServerSideFixedClipping), "
                         "noise from an OS-entropy generator",
            "unit": "client",
            "epsilon": acc.epsilon,
            "delta": acc.delta,
            "noise_multiplier": acc.noise_multiplier,
            "clip_norm": cfg.clip_norm,
            "sample_rate": acc.sample_rate,
            "sampling_fraction": acc.sampling_fraction,
            "amplification": "none: clients are a fixed-size sample reproducible from the seed, so each "
                             "round is accounted at q = 1 (as Flower's accountant does for fixed clipping)",
            "num_clients": acc.num_clients,
            "clients_per_round": acc.m,
            "releases": acc.releases,
            "effective_noise_multipliers": list(acc.effective_multipliers),
            "accountant": "Gaussian mechanism RDP without amplification (opacus.accountants.analysis.rdp, q = 1)",
            "conditions": dp_conditions("central"),
        }
    if cfg.local_dp:
        last: dict[int, dict[str, Any]] = {}
        for r in rounds:
            for c in r["clients"]:
                if "epsilon" in c:
                    last[c["partition_id"]] = {"epsilon": c["epsilon"], "round": r["round"]}
        worst = max(last.items(), key=lambda kv: kv[1]["epsilon"]) if last else None
        out["local"] = {
            "mechanism": "DP-SGD in each client (Opacus), Poisson batches",
            "unit": "record",
            "noise_multiplier": cfg.local_noise,
            "max_grad_norm": cfg.local_clip,
            "delta": cfg.local_delta,
            "per_client_epsilon": {str(k): v["epsilon"] for k, v in sorted(last.items())},
            "epsilon_max": worst[1]["epsilon"] if worst else None,
            "worst_client": worst[0] if worst else None,
            "conditions": dp_conditions("local", secagg=cfg.secagg),
        }
        if worst is not None:
            # the worst client's accountant inputs, so the claim can be recomputed
            steps, q = _local_accounting_inputs(cfg, worst[0], rounds)
            out["local"]["worst_steps"] = steps
            out["local"]["worst_sample_rate"] = q
    return out


def _local_accounting_inputs(cfg: FederatedConfig, pid: int, rounds: list[dict[str, Any]]) -> tuple[int, float]:
    """(total DP-SGD steps, Poisson sample rate) of one client, as it reported them."""
    steps, q = 0, float("nan")
    for r in rounds:
        for c in r["clients"]:
            if c["partition_id"] == pid and "epsilon" in c:
                steps += int(c.get("local_steps", 0))
                q = float(c.get("sample_rate", q))
    return steps, q


def make_server_app(sink: Callable[[FederatedRun], None] | None = None, *, progress: ProgressFn | None = None,
                    engine: dict[str, Any] | None = None, write_outputs: bool = True,
                    configs: Sequence[FederatedConfig] | None = None) -> ServerApp:
    """A ServerApp that runs :func:`run_server` and passes each result to ``sink``.

    ``configs``: run these one after the other on the same federation instead of the run config
    (all with the same ``num-clients``). ``write_outputs``: write artefacts to ``output-dir`` (if
    set) from inside the ServerApp; the CLI writes them itself after the simulation instead.
    """
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        plan: list[FederatedConfig | None] = list(configs) if configs else [None]
        for i, cfg in enumerate(plan):
            run = run_server(grid, context, config=cfg, run_index=i, progress=progress, engine=engine)
            if write_outputs and run.config.output_dir:
                from pathlib import Path

                from federated._run import write_outputs as write_checked

                written = write_checked(run, run.config.output_dir, audit=run.config.audit)
                logging.getLogger("flwr").info("trustaudit: run outputs written to %s (%s)",
                                               Path(run.config.output_dir).resolve(), ", ".join(written))
                if not run.trained:  # no model file was written; the run fails
                    raise ConfigError(run.untrained_message(Path(run.config.output_dir).resolve()))
            if sink is not None:
                sink(run)

    return server


#: The ServerApp ``flwr run`` loads: writes its outputs (and audits, if asked) itself.
app = make_server_app(engine={"runner": "flwr run"})
