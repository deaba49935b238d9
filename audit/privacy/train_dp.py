"""Train a tabular torch MLP with Opacus DP-SGD to target ε values and export it as TorchScript.

``train_dp_models`` trains one model per target ε (``inf`` = non-private, same recipe without
clipping or noise) with ``opacus.PrivacyEngine.make_private_with_epsilon``, exports each with
``audit.io.save_torchscript`` and a metadata block the audit reads (encoder, classes, output
"logits", and the ``dp_claim`` the run's own accountant certifies), and reports the
privacy–utility–fairness trade-off: accuracy overall and per sensitive group on the test rows.

Privacy randomness is secret: with DP, the Poisson batch sampling and the noise come from
generators seeded from the operating system's entropy afresh for every run
(:mod:`audit.privacy.secure_rng`), in every grad-sample mode; ``seed`` fixes everything else
(initial weights, the non-private path's shuffling), so a private run is not reproducible and a
non-private one is. Each private model's metadata carries ``dp_conditions``: how it sampled and
drew its noise, and what its ε does not cover.

Rows reach the model through a dataset with batched fetching (``__getitems__``), so an epoch
costs the model's work, not one Python call per row; the same loader serves both private and
non-private runs. torch runs on ``threads`` intra-op threads (1 by default: small MLPs are
faster single-threaded on a shared machine).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from audit.exceptions import UsageError
from audit.model import TabularEncoder
from audit.privacy.reference import torch_threads

__all__ = [
    "GRAD_SAMPLE_MODES",
    "BatchedTensorDataset",
    "DPTrainConfig",
    "TrainedModel",
    "build_mlp",
    "default_delta",
    "evaluate_accuracy",
    "export_model",
    "exported_conditions",
    "passthrough_collate",
    "train_dp_models",
    "train_mlp",
]

#: Per-sample-gradient modes: ``bk`` (book-keeping clipping in one backward pass, with Opacus'
#: noise calibration, noise and accountant; see :mod:`audit.privacy.bookkeeping`) and Opacus' own
#: hooks, expanded weights, functorch and ghost clipping.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("bk", "hooks", "ew", "functorch", "ghost")


@dataclass(frozen=True)
class DPTrainConfig:
    """The training recipe, identical for every target ε."""

    epochs: int = 5
    batch_size: int = 256
    lr: float = 2e-3
    hidden: tuple[int, ...] = (64, 64)
    max_grad_norm: float = 1.0
    delta: float | None = None  # default: default_delta(n_train)
    accountant: str = "prv"
    grad_sample_mode: str = "bk"
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"train-dp: --epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"train-dp: --batch-size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise UsageError(f"train-dp: --lr must be > 0, got {self.lr}")
        if not self.max_grad_norm > 0:
            raise UsageError(f"train-dp: --max-grad-norm must be > 0, got {self.max_grad_norm}")
        if self.delta is not None and not 0 < self.delta < 1:
            raise UsageError(f"train-dp: --delta must be in (0, 1), got {self.delta}")
        if self.accountant not in ("rdp", "prv", "gdp"):
            raise UsageError(f"train-dp: --accountant must be one of rdp, prv, gdp, got {self.accountant!r}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise UsageError(
                f"train-dp: --grad-sample-mode must be one of {', '.join(GRAD_SAMPLE_MODES)}, "
                f"got {self.grad_sample_mode!r}"
            )
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise UsageError(f"train-dp: --hidden must list positive widths, got {list(self.hidden)}")


def default_delta(n: int) -> float:
    """δ = min(1e-5, 1 / (10 n)): well below 1/n, the usual requirement."""
    return min(1e-5, 1.0 / (10.0 * max(1, n)))


class BatchedTensorDataset(TensorDataset):
    """A TensorDataset that hands a whole batch over in one indexing call (``__getitems__``)."""

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def passthrough_collate(batch: Any) -> Any:
    """Collate for :class:`BatchedTensorDataset`: the batch is already stacked."""
    return batch


def build_mlp(n_inputs: int, hidden: Sequence[int] = (64, 64), n_outputs: int = 2) -> nn.Module:
    """Linear-ReLU layers ending in ``n_outputs`` logits (scriptable, Opacus-compatible)."""
    layers: list[nn.Module] = []
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


@dataclass
class TrainedModel:
    """One trained model and how it was made."""

    module: nn.Module
    target_epsilon: float  # inf = non-private
    dp_claim: dict[str, Any] | None
    dp_conditions: dict[str, Any] | None = None  # see audit.privacy.accounting.ClaimConditions
    epoch_seconds: list[float] = field(default_factory=list)  # wall time
    epoch_cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time
    setup_seconds: float = 0.0


#: What a record-level DP-SGD claim of ``train_mlp`` does not cover.
NOT_COVERED_TRAINING = (
    "the number of training rows (dataset_size; it sets the sampling rate), treated as public",
)
#: Added by ``export_model``: the encoder's statistics are fitted on the training rows without noise.
NOT_COVERED_ENCODER = (
    "the input encoder's statistics fitted on the training rows without noise (numeric means and "
    "standard deviations, the set of categories of each column), stored in the model's metadata"
)


def _loader(Z: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator, batched: bool) -> DataLoader:
    if batched:
        return DataLoader(BatchedTensorDataset(Z, y), batch_size=batch_size, shuffle=True,
                          generator=gen, collate_fn=passthrough_collate)
    return DataLoader(TensorDataset(Z, y), batch_size=batch_size, shuffle=True, generator=gen)


def train_mlp(
    Z: np.ndarray,
    y: np.ndarray,
    *,
    target_epsilon: float,
    config: DPTrainConfig,
    delta: float | None = None,
    noise_multiplier: float | None = None,
    batched_loader: bool = True,
) -> TrainedModel:
    """Train the MLP on encoded rows; DP-SGD unless ``target_epsilon`` is infinite.

    With DP, Opacus picks the noise multiplier reaching ``target_epsilon`` at ``delta`` after
    ``config.epochs`` epochs (``make_private_with_epsilon``), unless ``noise_multiplier`` is given
    (``make_private``, used by the benchmark). The returned ``dp_claim`` is what the run's own
    accountant certifies after training; ``dp_conditions`` how the run sampled and drew its noise.

    ``config.seed`` seeds the initial weights and the non-private path's shuffling. A private
    run's Poisson sampling and noise come from generators seeded from OS entropy, never from it.
    """
    private = math.isfinite(target_epsilon)
    n = len(Z)
    delta = default_delta(n) if delta is None else delta
    with torch_threads(config.threads), torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ff]ull backward hook.*")
        warnings.filterwarnings("ignore", message=".*GDP accounting is experimental.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the largest alpha.*")
        torch.manual_seed(config.seed)
        Zt = torch.from_numpy(np.array(Z, dtype=np.float32, order="C", copy=True))
        yt = torch.from_numpy(np.array(y, dtype=np.int64, copy=True))
        net = build_mlp(Zt.shape[1], config.hidden)
        opt: torch.optim.Optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        criterion: Any = nn.CrossEntropyLoss()
        if private:
            from audit.privacy.secure_rng import secure_torch_generator

            # Opacus' DPDataLoader draws its Poisson batches from the loader's generator
            gen = secure_torch_generator()
        else:
            gen = torch.Generator().manual_seed(config.seed)
        loader = _loader(Zt, yt, config.batch_size, gen, batched_loader)
        t0 = time.perf_counter()
        model: Any = net
        engine = None
        bk: Any = None
        if private:
            from opacus import PrivacyEngine

            engine = PrivacyEngine(accountant=config.accountant)
            common: dict[str, Any] = dict(
                module=net, optimizer=opt, criterion=criterion, data_loader=loader,
                max_grad_norm=config.max_grad_norm, grad_sample_mode=config.grad_sample_mode,
                noise_generator=secure_torch_generator(),
            )
            if config.grad_sample_mode == "bk":
                # Opacus' ghost set-up gives the calibrated optimizer, the accountant hook and the
                # sampling parameters; clipping (one backward pass) and batch sampling are ours
                common["grad_sample_mode"] = "ghost"
            if noise_multiplier is None:
                res = engine.make_private_with_epsilon(
                    target_epsilon=float(target_epsilon), target_delta=delta, epochs=config.epochs, **common
                )
            else:
                res = engine.make_private(noise_multiplier=float(noise_multiplier), **common)
            if config.grad_sample_mode == "bk":
                from audit.privacy.bookkeeping import (
                    BookKeepingDPOptimizer,
                    BookKeepingMLP,
                    PoissonBatchSampler,
                )

                gsm, opacus_opt, _, dp_loader = res
                gsm._close()  # no Opacus hooks on ``net``: book-keeping needs none
                opt = BookKeepingDPOptimizer.replacing(opacus_opt)
                # the same Poisson sampling (rows, rate, steps per epoch) as Opacus' loader
                bs = dp_loader.batch_sampler
                sampler = PoissonBatchSampler(bs.num_samples, bs.sample_rate, bs.steps)  # secret rng
                loader = DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=dp_loader.collate_fn)
                bk = BookKeepingMLP(net, opt, config.max_grad_norm)
            elif config.grad_sample_mode == "ghost":
                model, opt, criterion, loader = res
            else:
                model, opt, loader = res
        setup = time.perf_counter() - t0
        model.train()
        epoch_seconds, epoch_cpu = [], []
        for _ in range(config.epochs):
            te, tc = time.perf_counter(), time.process_time()
            if bk is not None:
                for xb, yb in loader:
                    bk.backward(xb, yb)  # overwrites the whole gradient buffer
                    opt.step()
            else:
                for xb, yb in loader:
                    opt.zero_grad()
                    loss = criterion(model(xb), yb)
                    loss.backward()
                    opt.step()
            epoch_seconds.append(time.perf_counter() - te)
            epoch_cpu.append(time.process_time() - tc)
        claim = conditions = None
        if private:
            assert engine is not None
            if hasattr(model, "to_standard_module"):
                model.to_standard_module()  # removes Opacus' hooks from ``net``
            hist = engine.accountant.history
            if len(hist) != 1:
                raise RuntimeError(f"expected one constant (σ, q) phase in the accountant, got {hist}")
            sigma, q, steps = hist[0]
            claim = {
                "epsilon": float(engine.get_epsilon(delta)),
                "delta": float(delta),
                "noise_multiplier": float(sigma),
                "sample_rate": float(q),
                "steps": int(steps),
                "batch_size": int(config.batch_size),
                "dataset_size": int(n),
                "epochs": float(config.epochs),
                "accountant": engine.accountant.mechanism(),
                "max_grad_norm": float(config.max_grad_norm),
            }
            from audit.privacy.accounting import dp_sgd_conditions

            conditions = dp_sgd_conditions(f"DP-SGD (Opacus, grad-sample mode {config.grad_sample_mode})",
                                           "add or remove one training row", NOT_COVERED_TRAINING)
        for p in net.parameters():  # drop Opacus' per-sample attributes before export
            for attr in ("grad_sample", "_forward_counter", "summed_grad", "_current_grad_sample"):
                if hasattr(p, attr):
                    delattr(p, attr)
            p.grad = None
        net.eval()
    return TrainedModel(net, float(target_epsilon), claim, conditions, epoch_seconds, epoch_cpu, setup)


def exported_conditions(trained: TrainedModel) -> dict[str, Any] | None:
    """The ``dp_conditions`` block of an exported private model (the encoder is not covered)."""
    if trained.dp_conditions is None:
        return None
    cond = dict(trained.dp_conditions)
    cond["not_covered"] = [*cond.get("not_covered", []), NOT_COVERED_ENCODER]
    return cond


def export_model(
    trained: TrainedModel, encoder: TabularEncoder, classes: Sequence[Any], path: str | Path
) -> Path:
    """Save as TorchScript with the metadata the audit reads (encoder, classes, DP claim)."""
    from audit.io import save_torchscript

    meta: dict[str, Any] = {
        "encoder": encoder.to_dict(),
        "classes": list(classes),
        "output": "logits",
        "training": {"target_epsilon": None if math.isinf(trained.target_epsilon) else trained.target_epsilon},
    }
    if trained.dp_claim is not None:
        meta["dp_claim"] = trained.dp_claim
    cond = exported_conditions(trained)
    if cond is not None:
        meta["dp_conditions"] = cond
    return save_torchscript(trained.module, path, metadata=meta)


def evaluate_accuracy(
    adapter: Any, frame: pd.DataFrame, y01: np.ndarray, sensitive: Mapping[str, pd.Series]
) -> dict[str, Any]:
    """Accuracy overall and per group of each sensitive column (the model's argmax decision)."""
    proba = adapter.predict_proba(frame)
    pred = (np.argmax(proba, axis=1) == 1).astype(int)
    correct = pred == y01
    out: dict[str, Any] = {"accuracy": float(correct.mean()), "groups": {}, "accuracy_gap": {}}
    for col, values in sensitive.items():
        v = values.astype(str).where(values.notna(), "<missing>").to_numpy()
        accs = {g: float(correct[v == g].mean()) for g in sorted(set(v.tolist()))}
        out["groups"][col] = {g: {"accuracy": a, "n": int((v == g).sum())} for g, a in accs.items()}
        out["accuracy_gap"][col] = float(max(accs.values()) - min(accs.values())) if accs else math.nan
    return out


def _slug(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}".replace(".", "p")


def train_dp_models(
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    target: str,
    positive: Any,
    classes: Sequence[Any],
    sensitive: Sequence[str],
    epsilons: Sequence[float],
    out_dir: str | Path,
    config: DPTrainConfig,
    features: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train and export one model per ε; returns the JSON-ready trade-off report.

    ``positive`` is the target value counted as the positive class (index 1 of ``classes``).
    """
    from audit.io import load_model

    out = Path(out_dir)
    feats = list(features) if features else [c for c in train.columns if c != target]
    encoder = TabularEncoder.fit(train[feats])
    Z = encoder.transform(train[feats])
    y = _is_positive(train[target], positive)
    y_test = _is_positive(test[target], positive)
    delta = config.delta if config.delta is not None else default_delta(len(train))
    models = []
    for eps in epsilons:
        t0 = time.perf_counter()
        trained = train_mlp(Z, y, target_epsilon=eps, config=config, delta=delta)
        path = export_model(trained, encoder, classes, out / f"model_eps{_slug(eps)}.pt")
        adapter = load_model(path).adapter  # measure the exported artefact itself
        acc = evaluate_accuracy(adapter, test[feats], y_test, {s: test[s] for s in sensitive})
        claim = trained.dp_claim
        models.append({
            "target_epsilon": None if math.isinf(eps) else float(eps),
            "private": claim is not None,
            "epsilon": claim["epsilon"] if claim else None,
            "delta": claim["delta"] if claim else None,
            "noise_multiplier": claim["noise_multiplier"] if claim else None,
            "sample_rate": claim["sample_rate"] if claim else None,
            "steps": claim["steps"] if claim else None,
            "dp_conditions": exported_conditions(trained),
            "model": path.name,
            **acc,
            "epoch_seconds": [round(s, 4) for s in trained.epoch_seconds],
            "seconds": round(time.perf_counter() - t0, 3),
        })
    return {
        "target": target,
        "positive_label": positive,
        "classes": list(classes),
        "sensitive": list(sensitive),
        "features": feats,
        "encoded_width": encoder.width,
        "n_train": len(train),
        "n_test": len(test),
        "delta": delta,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "models": models,
    }


def _is_positive(values: pd.Series, positive: Any) -> np.ndarray:
    s = values.astype(str).str.strip()
    hit = (s == str(positive).strip()).to_numpy()
    if not hit.any():
        try:
            hit = (pd.to_numeric(values, errors="coerce") == float(positive)).to_numpy()
        except (TypeError, ValueError):
            pass
    return hit.astype(np.int64)
