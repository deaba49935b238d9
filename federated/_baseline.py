"""Centralised training of the same model on the same rows: the yardstick for federated accuracy.

Pools the clients' local training rows (not their validation rows, which federated training
never fits on either), encodes them with ``TabularEncoder.fit`` on the pooled rows (equal to the
federated encoder), and runs the same local-training routine for ``num-rounds x local-epochs``
passes, then scores the model on the same test rows as the federated run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from federated._config import FederatedConfig

__all__ = ["centralised_baseline"]


def centralised_baseline(config: FederatedConfig | dict[str, Any]) -> dict[str, float]:
    """Test loss and accuracy of the centrally trained model."""
    from audit.model import TabularEncoder
    from federated._data import load_run_data
    from federated._metrics import global_metrics
    from federated._torch import build_model, predict_logits, train_local

    cfg = config if isinstance(config, FederatedConfig) else FederatedConfig.from_mapping(config)
    data = load_run_data(cfg.data_setup_json())
    enc = TabularEncoder.fit(data.train.loc[:, list(data.features)])
    rows = np.sort(np.concatenate([s.train for s in data.splits]))
    X = enc.transform(data.train.loc[:, list(data.features)].iloc[rows])
    y = data.y_train[rows].astype(np.float32)
    model = build_model(cfg.model, enc.width, cfg.hidden, seed=cfg.seed)
    train_local(model, X, y, epochs=cfg.num_rounds * cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                seed=cfg.seed)
    z = predict_logits(model, enc.transform(data.test.loc[:, list(data.features)]))
    m = global_metrics(data.y_test, z)
    return {"accuracy": m["accuracy"], "loss": m["loss"], "auc": m["auc"], "rows": float(len(rows))}
