"""Federated training simulation with Flower, and an audit of the result.

One Flower app (``federated.client_app:app``, ``federated.server_app:app``) runs two ways: with
``flwr run`` (the ``[tool.flwr.app]`` tables of the project's pyproject.toml) and with
``trustaudit federated simulate`` / :func:`simulate`, which runs the same ClientApp and ServerApp
on Flower's simulation engine in this process. Data is partitioned locally (:mod:`federated.partition`);
the final global model is exported as TorchScript with its run metadata (:func:`export_model`)
and audited like any other model (:func:`audit_run`).

Public names load on first use (PEP 562), so ``import federated`` (and the trustaudit CLI, which
imports ``federated.cli_commands``) loads neither pandas, torch nor Flower.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "MODELS",
    "PARTITIONS",
    "ROBUST_STRATEGIES",
    "STRATEGIES",
    "FederatedConfig",
    "FederatedRun",
    "RoundProgress",
    "audit_run",
    "auto_client_cpus",
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

_EXPORTS: dict[str, str] = {  # name -> the module that defines it, loaded on first use
    "MODELS": "federated._config",
    "PARTITIONS": "federated._config",
    "ROBUST_STRATEGIES": "federated._config",
    "STRATEGIES": "federated._config",
    "FederatedConfig": "federated._config",
    "FederatedRun": "federated._run",
    "RoundProgress": "federated._run",
    "audit_run": "federated.export",
    "auto_client_cpus": "federated._engine",
    "backend_config": "federated._engine",
    "centralised_baseline": "federated._baseline",
    "column_partition": "federated.partition",
    "dirichlet_partition": "federated.partition",
    "export_model": "federated.export",
    "iid_partition": "federated.partition",
    "partition_summary": "federated.partition",
    "quantity_partition": "federated.partition",
    "simulate": "federated._engine",
    "simulate_many": "federated._engine",
    "write_run_outputs": "federated.export",
}

if TYPE_CHECKING:  # pragma: no cover
    from federated._baseline import centralised_baseline
    from federated._config import MODELS, PARTITIONS, ROBUST_STRATEGIES, STRATEGIES, FederatedConfig
    from federated._engine import auto_client_cpus, backend_config, simulate, simulate_many
    from federated._run import FederatedRun, RoundProgress
    from federated.export import audit_run, export_model, write_run_outputs
    from federated.partition import (
        column_partition,
        dirichlet_partition,
        iid_partition,
        partition_summary,
        quantity_partition,
    )


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'federated' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
