"""Federated training simulation with Flower, and an audit of the result.

One Flower app (``federated.client_app:app``, ``federated.server_app:app``) runs two ways: with
``flwr run`` (the ``[tool.flwr.app]`` tables of the project's pyproject.toml) and with
``trustaudit federated simulate`` / :func:`simulate`, which runs the same ClientApp and ServerApp
on Flower's simulation engine in this process. Data is partitioned locally (:mod:`federated.partition`);
the final global model is exported as TorchScript with its run metadata
(:func:`export_model`) and audited like any other model (:func:`audit_run`).

Importing this package loads neither torch nor Flower; they load when a run starts.
"""

from __future__ import annotations

from federated._baseline import centralised_baseline
from federated._config import MODELS, PARTITIONS, ROBUST_STRATEGIES, STRATEGIES, FederatedConfig
from federated._engine import backend_config, simulate, simulate_many
from federated._run import FederatedRun, RoundProgress
from federated.export import audit_run, export_model, write_run_outputs
from federated.partition import (
    column_partition,
    dirichlet_partition,
    iid_partition,
    partition_summary,
    quantity_partition,
)

__all__ = [
    "MODELS",
    "PARTITIONS",
    "ROBUST_STRATEGIES",
    "STRATEGIES",
    "FederatedConfig",
    "FederatedRun",
    "RoundProgress",
    "audit_run",
    "backend_config",
    "centralised_baseline",
    "column_partition",
    "dirichlet_partition",
    "export_model",
    "iid_partition",
    "partition_summary",
    "quantity_partition",
    "simulate",
    "simulate_many",
    "write_run_outputs",
]
