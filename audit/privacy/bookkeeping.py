"""Book-keeping DP-SGD for MLPs: per-sample clipping in one backward pass, over Opacus' parts.

Opacus' per-sample modes materialise every row's gradient (hooks, expanded weights, functorch)
or, with ghost clipping, run two backward passes (one for the per-sample norms, one for the
re-weighted loss). For a stack of ``nn.Linear`` layers with parameter-free layers between them
(the MLP ``train-dp`` trains) neither is needed. With ``a`` a layer's input and ``b`` the
gradient of the summed per-sample losses with respect to its output (row ``i`` of ``b`` depends
on row ``i`` only):

* the per-sample gradient of row ``i`` is ``b_i a_iᵀ`` (weight) and ``b_i`` (bias), so its squared
  norm is ``(‖a_i‖² + 1) ‖b_i‖²`` — the ghost norm (Goodfellow 2015; Li et al. 2022), which is
  what Opacus' own ghost mode computes for 2-D inputs;
* the sum of clipped per-sample gradients is ``(c ⊙ b)ᵀ a`` and ``Σ_i c_i b_i``, with
  ``c_i = min(1, C / (‖g_i‖ + 1e-6))`` — Opacus' clipping factor — the book-keeping trick
  (Bu et al. 2023, "Differentially private optimization on large model at small cost").

One ``torch.autograd.grad`` to the layers' outputs (no weight gradients) plus one matrix product
per layer replaces Opacus' second backward pass. Batches are Poisson-sampled by
:class:`PoissonBatchSampler` (the distribution of Opacus' sampler, drawn in O(batch) per step)
with the rows, rate and steps per epoch of the loader Opacus prepares. Everything else is
Opacus': the noise multiplier calibrated to the target ε, Opacus' noise (one draw over a flat
gradient buffer rather than one per parameter, the same i.i.d. N(0, σ²C²) per coordinate, from
the optimizer's generator — seeded from OS entropy by ``train_dp``; in secure mode Opacus' own
noise function, through the version-gated :mod:`audit._compat.opacus`), the division by the
expected batch size, and the accountant's step hook. ``tests/audit/test_privacy_bookkeeping.py`` checks the clipped sum
against brute-force per-sample gradients and Opacus' hooks mode, the noise's scale and the
sampler's distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from opacus.optimizers import DPOptimizerFastGradientClipping
from torch import nn

from audit._compat import opacus as compat_opacus
from audit.exceptions import UsageError

__all__ = ["BookKeepingDPOptimizer", "BookKeepingMLP", "PoissonBatchSampler"]


class PoissonBatchSampler:
    """Poisson sampling of batches: every row is in a batch independently with probability ``q``.

    The distribution of Opacus' ``UniformWithReplacementSampler`` (the one its accountants
    assume), drawn in O(batch) rather than O(rows) per step: the batch size is
    Binomial(rows, q) and, given its size, the batch is a uniformly random subset of the rows —
    which is exactly independent inclusion with probability ``q``. Opacus draws one uniform
    number per row per step (34,189 per step on Adult); this draws
    two numbers per selected row. ``steps`` batches per epoch, as Opacus' sampler.
    ``tests/audit/test_privacy_bookkeeping.py`` checks batch sizes, per-row inclusion rates and
    within-batch uniqueness.

    The sampling is part of the private mechanism (the accountant's amplification assumes nobody
    knows which rows a step used), so by default it draws from a generator seeded from the
    operating system's entropy (:func:`audit.privacy.secure_rng.secure_numpy_generator`); there is
    deliberately no seed argument. ``rng`` exists for tests of the distribution.
    """

    def __init__(self, num_samples: int, sample_rate: float, steps: int,
                 rng: np.random.Generator | None = None) -> None:
        if num_samples < 1 or not 0 < sample_rate <= 1 or steps < 1:
            raise ValueError(f"Poisson sampling needs rows >= 1, 0 < q <= 1 and steps >= 1; "
                             f"got {num_samples}, {sample_rate}, {steps}")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator or None (secret), got {type(rng).__name__}")
        self.num_samples, self.sample_rate, self.steps = int(num_samples), float(sample_rate), int(steps)
        if rng is None:
            from audit.privacy.secure_rng import secure_numpy_generator

            rng = secure_numpy_generator()
        self._rng = rng

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        rng, n = self._rng, self.num_samples
        for _ in range(self.steps):
            k = int(rng.binomial(n, self.sample_rate))
            yield np.sort(rng.choice(n, size=k, replace=False)).tolist()


class BookKeepingDPOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' optimizer for already-clipped summed gradients, on one flat gradient buffer.

    ``p.grad`` of every parameter is a view into one flat tensor, written in place by
    :class:`BookKeepingMLP`; noise is drawn once for the whole buffer (Opacus' distribution, from
    the optimizer's generator), then the buffer is divided by the expected batch size
    (``loss_reduction="mean"``). Every Poisson batch is one step: a request to skip a step (Opacus'
    ``BatchMemoryManager`` splitting a batch into virtual steps) is refused when it is made.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, **kwargs: Any) -> None:
        super().__init__(optimizer, **kwargs)
        self._plist: list[torch.Tensor] = list(self.params)
        sizes = [p.numel() for p in self._plist]
        ref = self._plist[0]
        self.flat_grad = torch.zeros(sum(sizes), dtype=ref.dtype, device=ref.device)
        self.grad_views: list[torch.Tensor] = [
            v.view_as(p) for p, v in zip(self._plist, self.flat_grad.split(sizes), strict=True)
        ]
        for p, v in zip(self._plist, self.grad_views, strict=True):
            p.grad = v
        self._noise = torch.empty_like(self.flat_grad)

    @classmethod
    def replacing(cls, opacus_optimizer: Any) -> BookKeepingDPOptimizer:
        """The same settings (σ, C, expected batch size, generator, accountant hook) as an Opacus one."""
        generator = opacus_optimizer.generator
        if generator is None:  # never torch's global generator (seeded by the user's seed)
            from audit.privacy.secure_rng import secure_torch_generator

            generator = secure_torch_generator()
        new = cls(
            opacus_optimizer.original_optimizer,
            noise_multiplier=opacus_optimizer.noise_multiplier,
            max_grad_norm=opacus_optimizer.max_grad_norm,
            expected_batch_size=opacus_optimizer.expected_batch_size,
            loss_reduction=opacus_optimizer.loss_reduction,
            generator=generator,
            secure_mode=opacus_optimizer.secure_mode,
        )
        new.step_hook = opacus_optimizer.step_hook
        return new

    def zero_grad(self, set_to_none: bool = False) -> None:
        self.flat_grad.zero_()  # the views stay attached: never set to None

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        if self.secure_mode or std == 0:  # Opacus' own generator (secure: sums of four draws)
            self.flat_grad.add_(compat_opacus.generate_noise(std, self.flat_grad, self.generator,
                                                             secure_mode=self.secure_mode))
        else:  # what Opacus draws in plain mode, torch.normal(0, std), into a buffer kept across steps
            self.flat_grad.add_(self._noise.normal_(0.0, std, generator=self.generator))

    def scale_grad(self) -> None:
        if self.loss_reduction == "mean":
            self.flat_grad.div_(self.expected_batch_size * self.accumulated_iterations)

    def signal_skip_step(self, do_skip: bool = True) -> None:
        """Opacus' public hook for virtual steps: a skip is refused (every batch is one step)."""
        if do_skip:
            raise RuntimeError("book-keeping DP-SGD does not split Poisson batches into virtual steps")

    def pre_step(self, closure: Callable[[], float] | None = None) -> bool:
        self.add_noise()
        self.scale_grad()
        if self.step_hook:
            self.step_hook(self)
        return True


class BookKeepingMLP:
    """Writes the sum of clipped per-sample gradients of ``net`` into the optimizer's buffer.

    ``net`` must be an ``nn.Sequential`` of ``nn.Linear`` layers (with bias) and parameter-free
    layers applied row by row (activations); inputs are 2-D ``(rows, features)``.
    """

    def __init__(self, net: nn.Module, optimizer: BookKeepingDPOptimizer, max_grad_norm: float,
                 loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        if not isinstance(net, nn.Sequential):
            raise UsageError("book-keeping DP-SGD needs an nn.Sequential MLP; use an Opacus grad-sample mode")
        linears = []
        for m in net:
            if isinstance(m, nn.Linear):
                if m.bias is None:
                    raise UsageError("book-keeping DP-SGD needs nn.Linear layers with a bias")
                linears.append(m)
            elif any(True for _ in m.parameters()):
                raise UsageError(f"book-keeping DP-SGD supports nn.Linear and parameter-free layers, "
                                 f"not {type(m).__name__}; use an Opacus grad-sample mode")
        if not linears:
            raise UsageError("book-keeping DP-SGD needs at least one nn.Linear layer")
        expected = [t for m in linears for t in (m.weight, m.bias)]
        if [id(p) for p in optimizer._plist] != [id(p) for p in expected]:
            raise UsageError("the optimizer must hold the MLP's parameters, weights and biases in layer order")
        self.net, self.linears, self.optimizer = net, linears, optimizer
        self._plan = [(m, isinstance(m, nn.Linear)) for m in net]
        self.max_grad_norm = float(max_grad_norm)
        # per-sample losses summed: row i of each output gradient is row i's own gradient
        self.loss = loss or (lambda out, y: nn.functional.cross_entropy(out, y, reduction="sum"))

    def backward(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        """Forward, one backward to the layers' outputs, clip and sum; returns the summed loss."""
        if len(xb) == 0:  # an empty Poisson batch: the step is pure noise
            self.optimizer.flat_grad.zero_()
            return 0.0
        a = xb
        inputs, outputs = [], []
        for m, linear in self._plan:  # modules' forward directly: no hooks are wanted here
            if linear:
                inputs.append(a)
                a = nn.functional.linear(a, m.weight, m.bias)
                outputs.append(a)
            else:
                a = m.forward(a)
        loss = self.loss(a, yb)
        grads = torch.autograd.grad(loss, outputs)
        with torch.no_grad():
            norm2 = None
            for ai, bi in zip(inputs, grads, strict=True):
                sq = torch.linalg.vecdot(ai, ai).add_(1.0).mul_(torch.linalg.vecdot(bi, bi))
                norm2 = sq if norm2 is None else norm2.add_(sq)
            assert norm2 is not None
            coef = torch.clamp(self.max_grad_norm / norm2.sqrt_().add_(1e-6), max=1.0).unsqueeze_(1)
            views = self.optimizer.grad_views
            for k, (ai, bi) in enumerate(zip(inputs, grads, strict=True)):
                bw = bi.mul_(coef)  # the output gradients are ours: scaled in place
                torch.mm(bw.T, ai, out=views[2 * k])
                torch.sum(bw, 0, out=views[2 * k + 1])
        return float(loss.detach())
