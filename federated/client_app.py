"""The Flower ClientApp (Message API): one implementation for every server path.

``app`` answers three message types:

* ``query``: build the local data (the client's partition in simulation, or the CSV named by
  the SuperNode's ``data-path`` node config in a deployment) and return sufficient statistics
  for the federated encoder plus a summary of the local rows. No rows leave the client.
* ``train``: load the global parameters, evaluate them on the local validation rows (the
  per-client accuracy of the incoming global model), train locally, return the parameters.
* ``evaluate``: evaluate the global parameters on the local validation rows.

The same handlers accept the Message-API layout (``arrays`` / ``config`` / ``metrics``
records, sent by ``flwr.serverapp.strategy`` strategies) and the legacy ``fitins`` /
``fitres`` layout that the SecAgg+ workflow (``flwr.server.workflow.SecAggPlusWorkflow``) sends.
The train handler carries a mod that runs Flower's ``secaggplus_mod`` only for messages of the
SecAgg+ protocol, so one ClientApp serves both the plain and the secure-aggregation ServerApp.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from federated._faults import fault_roles, is_dropped, is_late

__all__ = ["DROPOUT_ERROR_CODE", "LATE_ERROR_CODE", "app", "maybe_secaggplus_mod"]

#: Error code of a simulated drop-out reply (Flower's own codes are 0-8).
DROPOUT_ERROR_CODE = 901
DROPOUT_REASON = "simulated drop-out"
#: Error code of a simulated straggler that missed the round's deadline (SecAgg+ path).
LATE_ERROR_CODE = 902
LATE_REASON = "simulated straggler missed the round deadline"

app = ClientApp()


# --- local data -------------------------------------------------------------------------------


def _partition_id(context: Context) -> int:
    return int(context.node_config.get("partition-id", context.node_id))


@lru_cache(maxsize=8)
def _deployment_data(path: str, setup_json: str) -> Any:
    """A real site's data: the whole CSV is this client's (no partitioning)."""
    import pandas as pd

    from audit.io import load_table
    from federated._data import label_vector

    setup = json.loads(setup_json)
    frame = load_table(path)
    target = setup["target"]
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} not found in {path}")
    frame = frame.loc[frame[target].notna()].reset_index(drop=True)
    y = label_vector(frame[target], setup["positive_label"])
    excluded = {c.strip() for c in str(setup["exclude_features"]).split(",") if c.strip()}
    X = frame.loc[:, [c for c in frame.columns if c != target and c not in excluded]]
    sens_cols = [c.strip() for c in str(setup["sensitive"]).split(",") if c.strip() and c.strip() in frame.columns]
    rng = np.random.default_rng([int(setup["seed"]), 0xC11E])
    perm = rng.permutation(len(frame))
    n_val = min(int(np.floor(len(frame) * float(setup["val_fraction"]))), len(frame) - 1)
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    sens = frame.loc[:, sens_cols] if sens_cols else pd.DataFrame(index=frame.index)
    return X.iloc[tr], y[tr], X.iloc[val], y[val], X, y, sens


def _sim_data(setup_json: str, num_partitions: int) -> Any:
    """The simulated federation's data (cached per process), checked against the node count."""
    from federated._data import load_run_data

    data = load_run_data(setup_json)
    if num_partitions != len(data.parts):
        raise ValueError(f"the federation has {num_partitions} simulated nodes but the run is configured for "
                         f"{len(data.parts)} clients (num-clients)")
    return data


@lru_cache(maxsize=4)
def _sim_columns(setup_json: str) -> tuple[Any, Any]:
    """The training table's feature and sensitive columns as arrays, once per process.

    Each simulated client still computes its statistics from its own rows only (by row index);
    converting the shared table once spares a hundred clients pandas' per-call overhead.
    """
    from federated._data import load_run_data
    from federated._encoder import ColumnarTable

    data = load_run_data(setup_json)
    feats = ColumnarTable.from_frame(data.train.loc[:, list(data.features)])
    sens = (ColumnarTable.from_frame(data.train.loc[:, list(data.sensitive)], all_categorical=True)
            if data.sensitive else None)
    return feats, sens


def _setup_reply(setup_json: str, context: Context) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """(encoder statistics, summary, feature columns) of this client's rows."""
    nc = context.node_config
    pid = _partition_id(context)
    data_path = str(nc.get("data-path", "") or "")
    if data_path:
        from federated._encoder import column_stats
        from federated.partition import partition_summary

        _, ytr, _, yval, X_all, y_all, sens = _deployment_data(data_path, setup_json)
        summary = partition_summary([np.arange(len(y_all))], np.asarray(y_all), sens if sens.shape[1] else None)[0]
        stats, columns = column_stats(X_all), [str(c) for c in X_all.columns]
        n_train, n_val = len(ytr), len(yval)
    else:
        data = _sim_data(setup_json, int(nc.get("num-partitions", 0)))
        feats, sens_cols = _sim_columns(setup_json)
        rows = data.parts[pid]
        yk = data.y_train[rows]
        rate = float(yk.mean()) if len(rows) else float("nan")
        # the record partition_summary gives for one client's own rows (label_tv is the server's)
        summary = {"partition_id": pid, "rows": len(rows), "positives": int(yk.sum()), "positive_rate": rate,
                   "label_tv": 0.0 if len(rows) else float("nan")}
        if sens_cols is not None:
            summary.update(sens_cols.group_counts(rows))
        stats, columns = feats.column_stats(rows), list(feats.names)
        n_train, n_val = len(data.splits[pid].train), len(data.splits[pid].val)
    summary["partition_id"] = pid
    summary["train_rows"] = n_train
    summary["val_rows"] = n_val
    return stats, summary, columns


@lru_cache(maxsize=4)
def _sim_encoded_table(setup_json: str, encoder_json: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole training table encoded once per process (the encoder works row by row)."""
    from audit.model import TabularEncoder
    from federated._data import load_run_data

    data = load_run_data(setup_json)
    enc = TabularEncoder.from_dict(json.loads(encoder_json))
    return enc.transform(data.train.loc[:, list(data.features)]), np.asarray(data.y_train, dtype=np.float32)


@lru_cache(maxsize=1024)
def _encoded(setup_json: str, encoder_json: str, pid: int, data_path: str, num_partitions: int) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_val, y_val) of this client, encoded."""
    if data_path:
        from audit.model import TabularEncoder

        enc = TabularEncoder.from_dict(json.loads(encoder_json))
        Xtr, ytr, Xval, yval, *_ = _deployment_data(data_path, setup_json)
        return (enc.transform(Xtr), np.asarray(ytr, dtype=np.float32), enc.transform(Xval),
                np.asarray(yval, dtype=np.float32))
    sp = _sim_data(setup_json, num_partitions).splits[pid]
    Z, y = _sim_encoded_table(setup_json, encoder_json)
    return Z[sp.train], y[sp.train], Z[sp.val], y[sp.val]


def _arrays_for(config: dict[str, Any], context: Context) -> tuple[np.ndarray, ...]:
    nc = context.node_config
    return _encoded(str(config["setup"]), str(config["encoder"]), _partition_id(context),
                    str(nc.get("data-path", "") or ""), int(nc.get("num-partitions", 0)))


@lru_cache(maxsize=8)
def _cached_model(kind: str, width: int, hidden: int) -> Any:
    """One module per shape and process, reused by every message (weights are always overwritten).

    A Ray actor serves one message at a time, so reuse is safe; DP-SGD gets a fresh module because
    Opacus attaches hooks to it.
    """
    from federated._torch import build_model

    return build_model(kind, width, hidden)


# --- message layouts ------------------------------------------------------------------------


def _unpack(msg: Message, kind: str) -> tuple[list[np.ndarray], dict[str, Any], bool]:
    """(parameter arrays, config, legacy?) from a Message-API or legacy fit/evaluate message."""
    content = msg.content
    legacy_key = f"{kind}ins.parameters"
    if legacy_key in content.array_records:
        from flwr.compat.common import recorddict_compat as compat

        ins = compat.recorddict_to_fitins(content, keep_input=True) if kind == "fit" else \
            compat.recorddict_to_evaluateins(content, keep_input=True)
        from flwr.common import parameters_to_ndarrays

        return parameters_to_ndarrays(ins.parameters), dict(ins.config), True
    arrays = content.array_records["arrays"].to_numpy_ndarrays()
    return arrays, dict(content.config_records["config"]), False


def _pack_fit(msg: Message, arrays: list[np.ndarray], n: int, metrics: dict[str, Any], legacy: bool) -> Message:
    if legacy:
        from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
        from flwr.compat.common import recorddict_compat as compat

        res = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(arrays), n, metrics)
        return Message(compat.fitres_to_recorddict(res, keep_input=False), reply_to=msg)
    content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _pack_evaluate(msg: Message, loss: float, n: int, metrics: dict[str, Any], legacy: bool) -> Message:
    if legacy:
        from flwr.common import Code, EvaluateRes, Status
        from flwr.compat.common import recorddict_compat as compat

        res = EvaluateRes(Status(Code.OK, "ok"), float(loss), n, metrics)
        return Message(compat.evaluateres_to_recorddict(res), reply_to=msg)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def _delay(config: dict[str, Any], pid: int) -> float:
    """This client's simulated extra latency (stragglers only)."""
    _, stragglers = fault_roles(int(config["seed"]), int(config["num-clients"]), int(config["malicious"]),
                                int(config["stragglers"]))
    return float(config["straggler-delay"]) if pid in stragglers else 0.0


def _dropout_reply(msg: Message) -> Message:
    return Message(Error(code=DROPOUT_ERROR_CODE, reason=DROPOUT_REASON), reply_to=msg)


# --- handlers -------------------------------------------------------------------------------


def _one_torch_thread(handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """Run a handler with one torch intra-op thread, restored afterwards (clients share the cores;
    importing the torch side changes no global setting)."""

    @functools.wraps(handler)
    def run(msg: Message, context: Context) -> Message:
        from federated._torch import one_thread

        with one_thread():
            return handler(msg, context)

    return run


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Return encoder statistics and a summary of the local rows."""
    setup_json = str(msg.content.config_records["setup"]["setup"])
    stats, summary, columns = _setup_reply(setup_json, context)
    reply = ConfigRecord({
        "partition-id": _partition_id(context),
        "stats": json.dumps(stats),
        "summary": json.dumps(summary),
        "columns": json.dumps(columns),
    })
    return Message(RecordDict({"setup": reply}), reply_to=msg)


def _secagg_dropout_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Run ``secaggplus_mod`` for SecAgg+ messages; simulate drop-outs at its masking stage."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return call_next(msg, context)
    if configs.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS:
        # a client that shared its keys and then vanishes: SecAgg+ must recover the sum without it
        cfg = dict(msg.content.config_records["fitins.config"])
        pid = _partition_id(context)
        if is_dropped(int(cfg["seed"]), int(cfg["server-round"]), pid, float(cfg["dropout"])):
            return _dropout_reply(msg)
        if is_late(_delay(cfg, pid), float(cfg["round-timeout"])):
            return Message(Error(code=LATE_ERROR_CODE, reason=LATE_REASON), reply_to=msg)
    return secaggplus_mod(msg, context, call_next)


#: The mod on the train handler (exported for tests and custom ClientApps).
maybe_secaggplus_mod = _secagg_dropout_mod


@app.train(mods=[maybe_secaggplus_mod])
@_one_torch_thread
def train(msg: Message, context: Context) -> Message:
    """Evaluate the incoming global model locally, train, and return the new parameters."""
    t0 = time.perf_counter()
    arrays, config, legacy = _unpack(msg, "fit")
    pid = _partition_id(context)
    seed = int(config["seed"])
    rnd = int(config["server-round"])
    if not legacy and is_dropped(seed, rnd, pid, float(config["dropout"])):
        return _dropout_reply(msg)
    malicious, _ = fault_roles(seed, int(config["num-clients"]), int(config["malicious"]),
                               int(config["stragglers"]))
    from federated._torch import LocalDP, build_model, evaluate_arrays, get_weights, set_weights, train_local

    Xtr, ytr, Xval, yval = _arrays_for(config, context)
    local_dp = bool(config["local-dp"])
    shape = (str(config["model"]), Xtr.shape[1], int(config["hidden"]))
    model = build_model(*shape) if local_dp else _cached_model(*shape)
    set_weights(model, arrays)
    Xe, ye = (Xval, yval) if len(yval) else (Xtr, ytr)
    pre_loss, pre_acc = evaluate_arrays(model, Xe, ye)
    is_bad = pid in malicious
    attack = str(config["attack"])
    y_fit = (1.0 - ytr) if (is_bad and attack == "label-flip") else ytr
    dp = None
    if local_dp:
        dp = LocalDP(float(config["local-noise"]), float(config["local-clip"]), float(config["local-delta"]))
    out = train_local(
        model, Xtr, y_fit,
        epochs=int(config["local-epochs"]), batch_size=int(config["batch-size"]), lr=float(config["lr"]),
        seed=int(np.random.default_rng([seed, rnd, pid]).integers(2**31)),
        proximal_mu=float(config.get("proximal-mu", 0.0)), dp=dp,
    )
    new = get_weights(model)
    if is_bad and attack == "scale":
        scale = float(config["attack-scale"])
        new = [(g + scale * (w - g)).astype(np.float32) for w, g in zip(new, arrays, strict=True)]
    metrics: dict[str, Any] = {
        "num-examples": len(ytr),
        "weight-uniform": 1.0,
        "partition-id": pid,
        "train-loss": out.loss,
        "pre-loss": pre_loss,
        "pre-accuracy": pre_acc,
        "pre-n": len(ye),
        "malicious": int(is_bad),
        "local-steps": out.steps,
    }
    if dp is not None:
        metrics["epsilon"] = _local_epsilon(context, str(config["run-key"]), out.sample_rate, dp, out.steps)
        metrics["sample-rate"] = out.sample_rate
    metrics["delay"] = _delay(config, pid)
    metrics["fit-seconds"] = time.perf_counter() - t0
    return _pack_fit(msg, new, len(ytr), metrics, legacy)


def _local_epsilon(context: Context, run_key: str, sample_rate: float, dp: Any, steps: int) -> float:
    """Compose this round's DP-SGD steps with the client's earlier ones in this run (kept in its Context)."""
    from federated._privacy import epsilon_from_rdp, rdp_of

    key = f"trustaudit-ldp-{run_key}"
    rec = context.state.config_records.get(key)
    prev = np.asarray(rec["rdp"], dtype=float) if rec is not None else 0.0
    total = prev + rdp_of(sample_rate, dp.noise_multiplier, steps)
    steps_total = int(rec["steps"]) + steps if rec is not None else steps
    context.state.config_records[key] = ConfigRecord(
        {"rdp": [float(v) for v in np.atleast_1d(total)], "steps": steps_total, "sample-rate": float(sample_rate)}
    )
    return epsilon_from_rdp(total, dp.delta)


@app.evaluate()
@_one_torch_thread
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy and loss of the global parameters on the local validation rows."""
    arrays, config, legacy = _unpack(msg, "evaluate")
    from federated._torch import evaluate_arrays, set_weights

    Xtr, ytr, Xval, yval = _arrays_for(config, context)
    model = _cached_model(str(config["model"]), Xtr.shape[1], int(config["hidden"]))
    set_weights(model, arrays)
    Xe, ye = (Xval, yval) if len(yval) else (Xtr, ytr)
    loss, acc = evaluate_arrays(model, Xe, ye)
    metrics = {"num-examples": len(ye), "weight-uniform": 1.0, "partition-id": _partition_id(context),
               "loss": loss, "accuracy": acc}
    return _pack_evaluate(msg, loss, len(ye), metrics, legacy)
