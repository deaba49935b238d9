"""What a federated run records, and the frozen result it hands back.

:class:`RunRecorder` lives in the ServerApp. The strategy wrappers call it with what crossed
the wire each round (who was sampled, who answered, who dropped out or timed out, the clients'
training metrics, their accuracy on local validation rows) and the server-side evaluator adds
the global model's metrics on the test rows, overall and per sensitive group. Per-client
accuracy of the global model after round r comes from the clients' pre-training evaluation
in round r + 1 (no extra messages) and, after the last round, from a federated evaluation of
every client.

:class:`FederatedRun` is the result: plain records (``to_dict()`` is JSON-ready, the
``*_frame()`` methods give the CSV tables) plus the final parameters and the encoder.

A round's quorum: each round records ``min_answered`` (a majority of the clients sampled,
``ceil(sampled / 2)``, at least 1) and ``quorum`` (whether at least that many training updates
were received). A run in which no round aggregated a single update trained nothing:
:attr:`FederatedRun.trained` is False, :func:`write_outputs` writes the metrics and the run
report but no model file (a stale one in the folder is removed), and the CLI exits 2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from federated._config import FederatedConfig
from federated._metrics import client_spread

__all__ = ["FederatedRun", "RoundProgress", "RunRecorder", "min_answered", "write_outputs"]

ProgressFn = Callable[["RoundProgress"], None]


@dataclass(frozen=True)
class RoundProgress:
    """What the progress display shows after each round."""

    round: int
    num_rounds: int
    run_index: int
    accuracy: float
    loss: float
    answered: int
    sampled: int
    epsilon: float | None
    seconds: float


def _clean(v: Any) -> Any:
    """JSON-safe scalars: NaN/inf become None, numpy scalars plain Python."""
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def min_answered(sampled: int) -> int:
    """Fewest training updates a round needs to count as having a quorum: a majority of the
    clients sampled (``ceil(sampled / 2)``), at least 1."""
    return max(1, math.ceil(sampled / 2))


class RunRecorder:
    """Collects per-round facts; every call comes from the ServerApp thread."""

    def __init__(self, cfg: FederatedConfig, node_to_pid: Mapping[int, int], progress: ProgressFn | None = None,
                 run_index: int = 0) -> None:
        self.cfg = cfg
        self.run_index = run_index
        self.node_to_pid = dict(node_to_pid)
        self.progress = progress
        self.rounds: dict[int, dict[str, Any]] = {}
        self.client_eval: dict[int, dict[int, dict[str, Any]]] = {}
        self.accountant = None
        if cfg.central_dp:
            from federated._privacy import CentralAccountant

            self.accountant = CentralAccountant(cfg.noise_multiplier, cfg.num_clients, cfg.clients_per_round,
                                                cfg.dp_delta)
        self._t_round = time.perf_counter()

    def _round(self, r: int) -> dict[str, Any]:
        return self.rounds.setdefault(r, {
            "round": r, "sampled": [], "answered": [], "dropped": [], "failed": {}, "timed_out": [],
            "aggregated": r == 0, "clients": {}, "global": {}, "groups": [], "fairness": {},
            "epsilon": None, "seconds": 0.0, "latency": 0.0,
        })

    def pid(self, node_id: int) -> int:
        return self.node_to_pid.get(int(node_id), int(node_id))

    # --- training -----------------------------------------------------------------------------

    def start_round(self, r: int, node_ids: Iterable[int]) -> None:
        self._t_round = time.perf_counter()
        self._round(r)["sampled"] = sorted(self.pid(n) for n in node_ids)

    def train_replies(self, r: int, replies: Sequence[Any]) -> list[Any]:
        """Record Message-API train replies; return the ones to aggregate."""
        from federated._faults import is_late
        from federated.client_app import DROPOUT_ERROR_CODE, LATE_ERROR_CODE

        rec = self._round(r)
        valid = []
        seen = set()
        late = []
        for msg in replies:
            pid = self.pid(msg.metadata.src_node_id)
            seen.add(pid)
            if msg.has_error():
                if msg.error.code == DROPOUT_ERROR_CODE:
                    rec["dropped"].append(pid)
                elif msg.error.code == LATE_ERROR_CODE:
                    late.append(pid)
                else:
                    rec["failed"][pid] = str(msg.error.reason)[:300]
                continue
            metrics = dict(next(iter(msg.content.metric_records.values())))
            delay = float(metrics.get("delay", 0.0))
            if is_late(delay, self.cfg.round_timeout):
                late.append(pid)  # the round closed before this answer arrived
                continue
            rec["latency"] = max(rec.get("latency", 0.0), delay)
            valid.append(msg)
            self._client_train(r, pid, metrics)
        rec["timed_out"] = sorted(set(rec["sampled"]) - seen) + late
        return valid

    def legacy_fit(self, r: int, results: Sequence[Any], failures: Sequence[Any]) -> None:
        """Record the SecAgg+ path's fit results (per-client metrics travel unmasked)."""
        rec = self._round(r)
        answered = set()
        for proxy, fitres in results:
            pid = self.pid(proxy.node_id)
            answered.add(pid)
            self._client_train(r, pid, dict(fitres.metrics))
        missing = sorted(set(rec["sampled"]) - answered)
        # SecAgg+ reports failures without node ids: the seeded drop-out rule tells them apart
        from federated._faults import is_dropped

        for pid in missing:
            if is_dropped(self.cfg.seed, r, pid, self.cfg.dropout):
                rec["dropped"].append(pid)
            else:
                rec["timed_out"].append(pid)
        for _, fitres in results:
            rec["latency"] = max(rec.get("latency", 0.0), float(fitres.metrics.get("delay", 0.0)))
        rec["failures_reported"] = len(failures)

    def _client_train(self, r: int, pid: int, metrics: dict[str, Any]) -> None:
        rec = self._round(r)
        rec["answered"].append(pid)
        rec["clients"][pid] = {
            "train_loss": float(metrics.get("train-loss", float("nan"))),
            "num_examples": int(metrics.get("num-examples", 0)),
            "malicious": int(metrics.get("malicious", 0)),
            "local_steps": int(metrics.get("local-steps", 0)),
            "fit_seconds": float(metrics.get("fit-seconds", float("nan"))),
        }
        if "epsilon" in metrics:
            rec["clients"][pid]["epsilon"] = float(metrics["epsilon"])
            rec["clients"][pid]["sample_rate"] = float(metrics.get("sample-rate", float("nan")))
        # the pre-training evaluation is the accuracy of the global model after round r - 1
        self.client_eval.setdefault(r - 1, {})[pid] = {
            "accuracy": float(metrics.get("pre-accuracy", float("nan"))),
            "loss": float(metrics.get("pre-loss", float("nan"))),
            "n": int(metrics.get("pre-n", 0)),
            "source": "pre-fit",
        }

    def aggregated(self, r: int, ok: bool) -> None:
        rec = self._round(r)
        rec["aggregated"] = bool(ok)
        rec["answered"] = sorted(rec["answered"])
        rec["min_answered"] = min_answered(len(rec["sampled"]))
        rec["quorum"] = len(rec["answered"]) >= rec["min_answered"]
        rec["dropped"] = sorted(rec["dropped"])
        rec["timed_out"] = sorted(rec["timed_out"])
        if self.accountant is not None:
            rec["epsilon"] = self.accountant.compose_round(len(rec["answered"]) if ok else 0)

    # --- evaluation ---------------------------------------------------------------------------

    def eval_replies(self, r: int, replies: Sequence[Any]) -> list[Any]:
        valid = []
        for msg in replies:
            if msg.has_error():
                continue
            valid.append(msg)
            m = dict(next(iter(msg.content.metric_records.values())))
            self._client_eval(r, self.pid(msg.metadata.src_node_id), m)
        return valid

    def legacy_evaluate(self, r: int, results: Sequence[Any]) -> None:
        for proxy, res in results:
            self._client_eval(r, self.pid(proxy.node_id), dict(res.metrics))

    def _client_eval(self, r: int, pid: int, m: dict[str, Any]) -> None:
        self.client_eval.setdefault(r, {})[pid] = {
            "accuracy": float(m.get("accuracy", float("nan"))),
            "loss": float(m.get("loss", float("nan"))),
            "n": int(m.get("num-examples", 0)),
            "source": "evaluate",
        }

    def _close_halted_secagg_round(self, r: int) -> None:
        """SecAgg+ stops a round (no aggregate, no call to the strategy) when too few clients are
        left to unmask the sum; record who dropped out and that the round was halted."""
        rec = self._round(r)
        if not self.cfg.secagg or r == 0 or rec["aggregated"] or rec["answered"] or "failures_reported" in rec:
            return
        from federated._faults import is_dropped

        rec["dropped"] = [p for p in rec["sampled"] if is_dropped(self.cfg.seed, r, p, self.cfg.dropout)]
        reason = "SecAgg+ halted the round: too few clients left to reconstruct the masks"
        rec["failed"] = {p: reason for p in rec["sampled"] if p not in rec["dropped"]}
        rec["halted"] = True
        rec["min_answered"] = min_answered(len(rec["sampled"]))
        rec["quorum"] = False
        if self.accountant is not None:
            self.aggregated(r, False)

    def central(self, r: int, metrics: dict[str, float], groups: list[dict[str, Any]],
                fairness: dict[str, dict[str, float]]) -> None:
        self._close_halted_secagg_round(r)
        rec = self._round(r)
        rec["global"] = dict(metrics)
        rec["groups"] = groups
        rec["fairness"] = fairness
        rec["seconds"] = time.perf_counter() - self._t_round
        if self.progress is not None and r > 0:
            self.progress(RoundProgress(
                round=r, num_rounds=self.cfg.num_rounds, run_index=self.run_index, accuracy=metrics.get("accuracy", float("nan")),
                loss=metrics.get("loss", float("nan")), answered=len(rec["answered"]), sampled=len(rec["sampled"]),
                epsilon=rec["epsilon"], seconds=rec["seconds"],
            ))

    # --- the result ---------------------------------------------------------------------------

    def round_records(self) -> list[dict[str, Any]]:
        out = []
        for r in sorted(self.rounds):
            rec = dict(self.rounds[r])
            evals = self.client_eval.get(r, {})
            clients = []
            pids = sorted(set(rec["clients"]) | set(evals))
            for pid in pids:
                c = {"partition_id": pid, **rec["clients"].get(pid, {})}
                if pid in evals:
                    e = evals[pid]
                    c.update({"accuracy": e["accuracy"], "eval_loss": e["loss"], "eval_n": e["n"],
                              "eval_source": e["source"]})
                clients.append(c)
            rec["clients"] = clients
            rec["client_fairness"] = client_spread([evals[p]["accuracy"] for p in evals])
            rec["failed"] = [{"partition_id": k, "reason": v} for k, v in sorted(rec["failed"].items())]
            out.append(rec)
        return out


@dataclass(frozen=True)
class FederatedRun:
    """The result of a federated run (frozen records; ``to_dict()`` is JSON-ready)."""

    config: FederatedConfig
    data: dict[str, Any]
    partitions: tuple[dict[str, Any], ...]
    rounds: tuple[dict[str, Any], ...]
    encoder: dict[str, Any]
    final_arrays: tuple[np.ndarray, ...] = field(repr=False)
    round_arrays: tuple[tuple[np.ndarray, ...], ...] = field(repr=False, default=())
    privacy: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)

    # --- summaries ----------------------------------------------------------------------------

    @property
    def final(self) -> dict[str, Any]:
        return self.rounds[-1]

    @property
    def final_accuracy(self) -> float:
        return float(self.final["global"].get("accuracy", float("nan")))

    @property
    def trained(self) -> bool:
        """Whether any round aggregated at least one client's update (else the model is the
        initial one)."""
        return any(r["round"] > 0 and r.get("aggregated") and r.get("answered") for r in self.rounds)

    def training_status(self) -> dict[str, Any]:
        """Rounds that aggregated an update, rounds below their quorum, and whether the run trained."""
        rounds = [r for r in self.rounds if r["round"] > 0]
        return {
            "trained": self.trained,
            "rounds": len(rounds),
            "rounds_aggregated": [r["round"] for r in rounds if r.get("aggregated") and r.get("answered")],
            "rounds_below_quorum": [r["round"] for r in rounds
                                    if len(r["answered"]) < min_answered(len(r["sampled"]))],
            "quorum_rule": "a round needs updates from a majority of the clients sampled (ceil(sampled / 2), at least 1)",
        }

    def untrained_message(self, out_dir: Any = None) -> str:
        """The one line the CLI prints when the run trained nothing."""
        cfg = self.config
        n = len([r for r in self.rounds if r["round"] > 0])
        sampled = sum(len(r["sampled"]) for r in self.rounds if r["round"] > 0)
        where = f"; metrics and run report in {out_dir}" if out_dir else ""
        return (f"federated run trained nothing: no client update was aggregated in any of the {n} round(s) "
                f"(0 of {sampled} sampled updates used; dropout {cfg.dropout:g}, stragglers {cfg.stragglers:g}, "
                f"round-timeout {cfg.round_timeout:g}); no model file written{where}")

    def answered(self) -> dict[int, list[int]]:
        """Round -> partition ids whose training update was received."""
        return {r["round"]: list(r["answered"]) for r in self.rounds if r["round"] > 0}

    def dp_claim(self) -> dict[str, Any] | None:
        """The DP claim block the audit's privacy checks read (None without DP).

        A claim has one noise multiplier, so it must be recomputable from (noise_multiplier,
        sample_rate, steps). Central DP: a client-level claim (``dataset_size`` is the number of
        clients, a step is a released round) at the smallest effective multiplier of any round,
        an upper bound on the run's exact composition when drop-outs varied it, without
        amplification by sampling (``sample_rate`` 1: the clients were not sampled secretly).
        Local DP only: the record-level claim of the worst client. :meth:`dp_conditions` says how
        the run sampled and drew its noise, and what the ε does not cover.
        """
        p = self.privacy
        if "central" in p:
            from federated._privacy import epsilon_from_rdp, rdp_of

            c = p["central"]
            z = min(c["effective_noise_multipliers"]) if c["effective_noise_multipliers"] else c["noise_multiplier"]
            steps = max(1, int(c["releases"]))
            eps = epsilon_from_rdp(rdp_of(c["sample_rate"], z, steps), c["delta"])
            return {"epsilon": eps, "delta": c["delta"], "noise_multiplier": z, "sample_rate": c["sample_rate"],
                    "steps": steps, "dataset_size": c["num_clients"], "accountant": "rdp"}
        if "local" in p and p["local"].get("epsilon_max") is not None:
            loc = p["local"]
            return {"epsilon": loc["epsilon_max"], "delta": loc["delta"], "noise_multiplier": loc["noise_multiplier"],
                    "sample_rate": loc["worst_sample_rate"], "steps": loc["worst_steps"], "accountant": "rdp"}
        return None

    def aggregation(self) -> dict[str, Any]:
        """The aggregation as run: the strategy and, for Krum / Multi-Krum, the f it assumed."""
        cfg = self.config
        out: dict[str, Any] = {"strategy": cfg.strategy, "clients_per_round": cfg.clients_per_round}
        if cfg.strategy in ("krum", "multikrum"):
            out["krum_f"] = cfg.krum_f_used
            out["krum_f_source"] = cfg.krum_f_source
            if cfg.strategy == "multikrum":
                out["multikrum_selected"] = max(1, cfg.clients_per_round - cfg.krum_f_used)
        return out

    def dp_conditions(self) -> dict[str, Any] | None:
        """How the run behind :meth:`dp_claim` sampled and drew its noise, and what its ε does not
        cover (the ``dp_conditions`` block of the exported model; None without a claim)."""
        p = self.privacy
        if "central" in p:
            return dict(p["central"]["conditions"])
        if "local" in p and p["local"].get("epsilon_max") is not None:
            return dict(p["local"]["conditions"])
        return None

    def metadata(self) -> dict[str, Any]:
        """The ``federated`` block written into the exported model."""
        from flwr import __version__ as flwr_version

        return _clean({
            "config": self.config.to_run_config(),
            "data": self.data,
            "rounds": len(self.rounds) - 1,
            "final": self.final["global"],
            "final_client_accuracy": self.final.get("client_fairness", {}),
            "answered_per_round": {str(k): len(v) for k, v in self.answered().items()},
            "training": self.training_status(),
            "aggregation": self.aggregation(),
            "privacy": self.privacy,
            "encoder_source": "federated statistics: pooled mean and population std of numeric columns "
                              "and the union of categories, merged from per-client sufficient statistics",
            "flwr": flwr_version,
            "engine": self.engine,
        })

    def to_dict(self) -> dict[str, Any]:
        return _clean({
            "config": self.config.to_run_config(),
            "data": self.data,
            "partitions": list(self.partitions),
            "rounds": list(self.rounds),
            "encoder": self.encoder,
            "aggregation": self.aggregation(),
            "training": self.training_status(),
            "privacy": self.privacy,
            "timings": {k: v for k, v in self.timings.items() if not k.startswith("_")},
            "engine": self.engine,
        })

    # --- tables (CSV) -------------------------------------------------------------------------

    def rounds_frame(self) -> pd.DataFrame:
        rows = []
        for r in self.rounds:
            row: dict[str, Any] = {"round": r["round"], "sampled": len(r["sampled"]), "answered": len(r["answered"]),
                                   "dropped": len(r["dropped"]), "timed_out": len(r["timed_out"]),
                                   "failed": len(r["failed"]), "aggregated": r["aggregated"],
                                   "quorum": r.get("quorum", r["round"] == 0),
                                   "secagg_halted": bool(r.get("halted", False))}
            row.update({f"global_{k}": v for k, v in r["global"].items()})
            row.update({f"clients_{k}": v for k, v in r.get("client_fairness", {}).items()})
            for attr, gaps in r["fairness"].items():
                row.update({f"{attr}_{k}": v for k, v in gaps.items()})
            row["epsilon"] = r["epsilon"]
            eps_local = [c["epsilon"] for c in r["clients"] if "epsilon" in c]
            row["epsilon_local_max"] = max(eps_local) if eps_local else None
            row["seconds"] = r["seconds"]
            row["simulated_latency"] = r.get("latency", 0.0)
            rows.append(row)
        return pd.DataFrame(rows)

    def clients_frame(self) -> pd.DataFrame:
        rows = []
        for r in self.rounds:
            status = {p: "answered" for p in r["answered"]}
            status.update({p: "dropped" for p in r["dropped"]})
            status.update({p: "timed_out" for p in r["timed_out"]})
            status.update({f["partition_id"]: "failed" for f in r["failed"]})
            by_pid = {c["partition_id"]: c for c in r["clients"]}
            for pid in sorted(set(status) | set(by_pid)):
                default = "initial_model" if r["round"] == 0 else "not_sampled"
                rows.append({"round": r["round"], "partition_id": pid, "status": status.get(pid, default),
                             **{k: v for k, v in by_pid.get(pid, {}).items() if k != "partition_id"}})
        return pd.DataFrame(rows)

    def groups_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{"round": r["round"], **g} for r in self.rounds for g in r["groups"]])

    def partitions_frame(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.partitions)).fillna(0)

    # --- the model ----------------------------------------------------------------------------

    def build_module(self) -> Any:
        """The final global model as a torch module (eval mode)."""
        from audit.model import TabularEncoder
        from federated._torch import build_model, set_weights

        enc = TabularEncoder.from_dict(self.encoder)
        model = build_model(self.config.model, enc.width, self.config.hidden)
        set_weights(model, list(self.final_arrays))
        model.eval()
        return model


def write_outputs(run: FederatedRun, out_dir: Any, *, audit: bool = False) -> dict[str, Any]:
    """Write the run's outputs; a run that trained nothing gets no model file.

    A trained run: :func:`federated.export.write_run_outputs` (metrics, tables, model, run report,
    optionally the audit). An untrained one: the metrics, tables and run report only, and a
    ``model.pt`` left in the folder by an earlier run is removed, so no file there presents the
    initial weights as a trained model.
    """
    from pathlib import Path

    from federated.export import MODEL_FILE, write_run_outputs

    if run.trained:
        return write_run_outputs(run, out_dir, audit=audit)
    import json

    from audit.io import write_text_atomic
    from federated._report import render_run_report

    out = Path(out_dir)
    written: dict[str, Any] = {"metrics": write_text_atomic(out / "metrics.json", json.dumps(run.to_dict(), indent=2))}
    for name, frame in (("rounds", run.rounds_frame()), ("clients", run.clients_frame()),
                        ("groups", run.groups_frame()), ("partitions", run.partitions_frame())):
        written[name] = write_text_atomic(out / f"{name}.csv", frame.to_csv(index=False))
    (out / MODEL_FILE).unlink(missing_ok=True)
    written["report"] = write_text_atomic(out / "report.html", render_run_report(run))
    return written
