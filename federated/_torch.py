"""The torch side: models, local training (FedProx term, DP-SGD with Opacus), evaluation.

Imported only inside ClientApp / ServerApp code paths, never at package import, so the CLI and
check registration stay fast.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "LocalDP",
    "TrainOutcome",
    "build_model",
    "evaluate_arrays",
    "get_weights",
    "one_thread",
    "predict_logits",
    "set_weights",
    "train_local",
]

_THREADS_LOCK = threading.Lock()
_THREADS_USERS = 0
_THREADS_ORIGINAL = 0
_THREADS_DEPTH = threading.local()


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch intra-op thread for the duration (a simulated client's training and evaluation).

    Simulated clients share few cores: one thread per client process avoids oversubscription.
    With OpenMP, torch's setting belongs to the calling thread and seeds threads that start using
    torch later; elsewhere it is process-wide. So the outermost use in each thread restores, in
    that thread, the value found by the first of the users present at once (not what an
    overlapping user had set), and nothing is left changed in either case. Importing this module
    changes nothing.
    """
    global _THREADS_USERS, _THREADS_ORIGINAL
    with _THREADS_LOCK:
        if _THREADS_USERS == 0:
            _THREADS_ORIGINAL = torch.get_num_threads()
        before = _THREADS_ORIGINAL
        _THREADS_USERS += 1
    depth = getattr(_THREADS_DEPTH, "n", 0)
    _THREADS_DEPTH.n = depth + 1
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_USERS -= 1
        _THREADS_DEPTH.n = depth
        if depth == 0 and torch.get_num_threads() != before:
            torch.set_num_threads(before)


def build_model(kind: str, n_inputs: int, hidden: int = 32, seed: int | None = None) -> nn.Module:
    """Logistic regression (one linear layer) or a one-hidden-layer MLP; both output one logit."""
    if seed is not None:
        torch.manual_seed(seed)
    if kind == "logreg":
        return nn.Sequential(nn.Linear(n_inputs, 1))
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))
    raise ValueError(f"unknown model kind {kind!r}")


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as float32 numpy arrays, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    if len(keys) != len(arrays):
        raise ValueError(f"expected {len(keys)} parameter arrays, got {len(arrays)}")
    state = OrderedDict((k, torch.as_tensor(np.asarray(a, dtype=np.float32))) for k, a in zip(keys, arrays, strict=True))
    model.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class LocalDP:
    """DP-SGD settings for a client (Opacus): noise multiplier, per-sample clipping norm, delta."""

    noise_multiplier: float
    max_grad_norm: float
    delta: float


class _PlainSGD:
    """``torch.optim.SGD`` without momentum or weight decay, minus its per-instance set-up cost."""

    def __init__(self, params: list[Any], lr: float) -> None:
        self.params, self.lr = params, lr

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-self.lr)


class _Batches:
    """Shuffled mini-batches of (X, y) tensors, reshuffled on every pass (seeded generator)."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.X, self.y, self.bs, self.g = X, y, batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.X) // self.bs)

    def __iter__(self) -> Any:
        perm = torch.randperm(len(self.X), generator=self.g)
        for i in range(0, len(perm), self.bs):
            idx = perm[i : i + self.bs]
            yield self.X[idx], self.y[idx]


@dataclass(frozen=True)
class TrainOutcome:
    loss: float
    steps: int
    sample_rate: float


def train_local(
    model: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    proximal_mu: float = 0.0,
    dp: LocalDP | None = None,
) -> TrainOutcome:
    """Mini-batch SGD on the local rows with logistic loss.

    FedProx's proximal term ``mu/2 ||w - w_global||^2`` is applied as a separate,
    data-independent gradient step after each optimiser step (``w -= lr * mu * (w - w_global)``),
    so it works unchanged under DP-SGD, where Opacus replaces the data gradient by its clipped,
    noised per-sample version. With ``dp`` the loader samples Poisson batches and every step is
    accounted by the caller from ``steps`` and ``sample_rate``; the batches and the noise come
    from generators seeded from OS entropy, so ``seed`` (the shuffling of non-private training)
    does not reproduce them.
    """
    n = len(X)
    g = torch.Generator().manual_seed(int(seed))
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.float32)).reshape(-1, 1)
    bs = max(1, min(batch_size, n))
    params = [p for p in model.parameters()]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    opt: Any = _PlainSGD(params, lr) if dp is None else torch.optim.SGD(params, lr=lr)
    module: Any = model
    model.train()
    loader: Any
    if dp is None:
        # shuffled mini-batches by slicing a permutation: what DataLoader(shuffle=True) does,
        # without its per-row fetch and collate (most of a small client's time)
        loader = _Batches(Xt, yt, bs, g)
        sample_rate = 1.0 / len(loader)
    else:
        from opacus import PrivacyEngine

        from audit.privacy.secure_rng import secure_torch_generator

        # the Poisson batches (drawn by Opacus' DPDataLoader from this loader's generator) and the
        # noise are part of the private mechanism: secret generators, never the run's seed
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xt, yt), batch_size=bs, shuffle=True,
                                             generator=secure_torch_generator())
        engine = PrivacyEngine(accountant="rdp")  # warns that Opacus' secure RNG (torchcsprng) is off
        module, opt, loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            noise_generator=secure_torch_generator(),
        )
        # Opacus samples each row independently with probability 1 / (number of batches)
        sample_rate = float(getattr(loader, "sample_rate", 1.0 / -(-n // bs)))
    loss_fn = nn.BCEWithLogitsLoss()
    module.train()
    with warnings.catch_warnings():
        # Opacus' per-sample hooks warn that inputs do not require gradients: expected here
        warnings.simplefilter("ignore", UserWarning)
        steps, total, count = _epochs(module, opt, loader, loss_fn, params, anchor, epochs, lr, proximal_mu, dp)
    if dp is not None:
        # drop Opacus' hooks and per-sample buffers from the shared parameters
        for p in params:
            for attr in ("grad_sample", "summed_grad", "_forward_counter"):
                if hasattr(p, attr):
                    try:
                        delattr(p, attr)
                    except AttributeError:
                        pass
        if hasattr(module, "_close"):
            module._close()
    model.eval()
    return TrainOutcome(loss=total / count if count else float("nan"), steps=steps, sample_rate=sample_rate)


def _epochs(module: Any, opt: Any, loader: Any, loss_fn: Any, params: list[Any], anchor: list[Any], epochs: int,
            lr: float, proximal_mu: float, dp: LocalDP | None) -> tuple[int, float, int]:
    steps, total, count = 0, 0.0, 0
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            if len(xb) == 0:
                # an empty Poisson batch still takes a (pure-noise) private step
                if dp is not None:
                    for p in params:
                        p.grad = torch.zeros_like(p)
                        p.grad_sample = torch.zeros((0, *p.shape))
                    opt.step()
                    steps += 1
                continue
            loss = loss_fn(module(xb), yb)
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(xb)
            count += len(xb)
            if proximal_mu > 0:
                with torch.no_grad():
                    for p, a in zip(params, anchor, strict=True):
                        p.sub_(lr * proximal_mu * (p - a))
    return steps, total, count


def predict_logits(model: nn.Module, X: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy().reshape(-1).astype(np.float64)


def evaluate_arrays(model: nn.Module, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean logistic loss, accuracy at logit 0) of the model on (X, y); NaN for no rows."""
    if len(X) == 0:
        return float("nan"), float("nan")
    z = predict_logits(model, X)
    yv = np.asarray(y, dtype=np.float64)
    loss = float(np.mean(np.logaddexp(0.0, z) - yv * z))
    acc = float(np.mean((z > 0).astype(np.float64) == yv))
    return loss, acc
