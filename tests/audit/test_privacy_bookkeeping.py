"""Book-keeping DP-SGD: the clipped gradient sum, the noise and the accounting match Opacus'."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from audit.datasets import make_lending_data
from audit.exceptions import UsageError
from audit.privacy.bookkeeping import BookKeepingDPOptimizer, BookKeepingMLP
from audit.privacy.train_dp import DPTrainConfig, build_mlp, train_mlp


def _net_and_batch(n: int = 40, d: int = 7, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    net = build_mlp(d, (5, 4)).double()
    x = torch.randn(n, d, dtype=torch.float64) * torch.linspace(0.1, 3.0, n, dtype=torch.float64)[:, None]
    y = torch.randint(0, 2, (n,))
    return net, x, y


def _bk_optimizer(net: nn.Module, *, sigma: float, clip: float, batch: int,
                  generator: torch.Generator | None = None) -> BookKeepingDPOptimizer:
    return BookKeepingDPOptimizer(torch.optim.SGD(net.parameters(), lr=0.1), noise_multiplier=sigma,
                                  max_grad_norm=clip, expected_batch_size=batch, generator=generator)


def _brute_force_clipped_sum(net: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> list[torch.Tensor]:
    """Row by row: the per-sample gradient, Opacus' clipping factor, summed."""
    params = list(net.parameters())
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1], reduction="sum")
        g = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
        c = min(1.0, clip / (float(norm) + 1e-6))
        for t, gi in zip(total, g, strict=True):
            t += c * gi
    return total


@pytest.mark.parametrize("clip", [0.05, 1.0, 1e3])  # most rows clipped / some / none
def test_clipped_sum_equals_per_sample_gradients_clipped_one_by_one(clip):
    net, x, y = _net_and_batch()
    opt = _bk_optimizer(net, sigma=0.0, clip=clip, batch=len(x))
    BookKeepingMLP(net, opt, clip).backward(x, y)
    want = _brute_force_clipped_sum(net, x, y, clip)
    for p, w in zip(net.parameters(), want, strict=True):
        assert torch.allclose(p.grad, w, atol=1e-12, rtol=1e-10)


def test_clipped_step_equals_opacus_hooks_mode_without_noise():
    """Same batch, σ = 0: our averaged clipped gradient is the one Opacus' DPOptimizer produces."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    clip, n = 0.3, 40
    net, x, y = _net_and_batch(n=n, seed=3)
    ref_net, _, _ = _net_and_batch(n=n, seed=3)
    ref_net.load_state_dict(net.state_dict())

    opt = _bk_optimizer(net, sigma=0.0, clip=clip, batch=n)
    BookKeepingMLP(net, opt, clip).backward(x, y)
    assert opt.pre_step()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gsm = GradSampleModule(ref_net)
        ref_opt = DPOptimizer(torch.optim.SGD(ref_net.parameters(), lr=0.1), noise_multiplier=0.0,
                              max_grad_norm=clip, expected_batch_size=n)
        nn.functional.cross_entropy(gsm(x), y).backward()  # mean loss: Opacus rescales per sample
        assert ref_opt.pre_step()
    for p, q in zip(net.parameters(), ref_net.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=1e-9)
    gsm._close()


def test_noise_is_gaussian_with_sigma_times_clip_over_the_expected_batch():
    torch.manual_seed(0)
    net = build_mlp(50, (64, 64))  # 7,554 coordinates
    sigma, clip, batch = 1.7, 0.8, 128
    opt = _bk_optimizer(net, sigma=sigma, clip=clip, batch=batch, generator=torch.Generator().manual_seed(5))
    draws = []
    for _ in range(20):
        opt.zero_grad()
        opt.pre_step()
        draws.append(opt.flat_grad.clone())
    noise = torch.stack(draws).flatten().numpy() * batch
    want = sigma * clip
    assert noise.std() == pytest.approx(want, rel=0.01)  # 151k draws: the sd's sd is ~0.2 %
    assert abs(noise.mean()) < 4 * want / math.sqrt(noise.size)
    # the views stay attached to the parameters through zero_grad and steps
    assert all(p.grad.data_ptr() == v.data_ptr() for p, v in zip(net.parameters(), opt.grad_views, strict=True))


def test_empty_poisson_batch_gives_a_pure_noise_step():
    net, x, y = _net_and_batch()
    opt = _bk_optimizer(net, sigma=0.0, clip=1.0, batch=10)
    bk = BookKeepingMLP(net, opt, 1.0)
    bk.backward(x, y)
    assert float(opt.flat_grad.abs().sum()) > 0
    assert bk.backward(x[:0], y[:0]) == 0.0
    assert float(opt.flat_grad.abs().sum()) == 0.0


def test_unsupported_networks_are_refused_with_a_clear_error():
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UsageError, match="not Conv1d"):
        BookKeepingMLP(conv, _bk_optimizer(conv, sigma=1.0, clip=1.0, batch=8), 1.0)
    nobias = nn.Sequential(nn.Linear(3, 2, bias=False))
    with pytest.raises(UsageError, match="with a bias"):
        BookKeepingMLP(nobias, _bk_optimizer(nobias, sigma=1.0, clip=1.0, batch=8), 1.0)
    net = build_mlp(3, (4,))
    other = build_mlp(3, (4,))
    with pytest.raises(UsageError, match="optimizer must hold"):
        BookKeepingMLP(net, _bk_optimizer(other, sigma=1.0, clip=1.0, batch=8), 1.0)


def test_training_run_is_accounted_exactly_like_opacus_ghost_mode():
    """Same σ search, sampling rate and step count as Opacus' own ghost mode; the model learns."""
    from audit.model import TabularEncoder

    small = make_lending_data(n_train=300, n_holdout=10, n_test=10, seed=5)
    X = small.train[list(small.features)]
    Z = TabularEncoder.fit(X).transform(X)
    y = small.train[small.target].to_numpy()
    runs = {mode: train_mlp(Z, y, target_epsilon=4.0,
                            config=DPTrainConfig(epochs=3, batch_size=16, accountant="rdp", seed=2,
                                                 grad_sample_mode=mode))
            for mode in ("bk", "ghost")}
    a, b = runs["bk"].dp_claim, runs["ghost"].dp_claim
    for key in ("noise_multiplier", "sample_rate", "steps", "epsilon", "delta"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert a["epsilon"] <= 4.0
    # the exported module is a plain MLP with no Opacus attributes or attached gradients
    mod = runs["bk"].module
    assert all(p.grad is None and not hasattr(p, "grad_sample") for p in mod.parameters())
    with torch.no_grad():
        pred = mod(torch.from_numpy(np.asarray(Z, dtype=np.float32))).argmax(1).numpy()
    assert (pred == y).mean() > max(y.mean(), 1 - y.mean()) - 0.05  # at least near the majority rate


def test_poisson_batches_include_each_row_independently_with_rate_q():
    """Binomial batch sizes, every row at rate q, no repeats in a batch, Opacus' step count."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    from audit.privacy.bookkeeping import PoissonBatchSampler

    n, q, steps = 500, 0.04, 25
    sampler = PoissonBatchSampler(n, q, steps, rng=np.random.default_rng(11))
    assert len(sampler) == len(UniformWithReplacementSampler(num_samples=n, sample_rate=q, steps=steps))
    counts = np.zeros(n)
    sizes = []
    for _ in range(400):  # 400 epochs x 25 steps = 10,000 batches
        for batch in sampler:
            assert len(set(batch)) == len(batch) and all(0 <= i < n for i in batch)
            counts[batch] += 1
            sizes.append(len(batch))
    sizes = np.asarray(sizes)
    draws = 10_000
    assert sizes.size == draws
    # batch size ~ Binomial(500, 0.04): mean 20, variance 19.2 (sd of the mean 0.044)
    assert abs(sizes.mean() - n * q) < 0.2
    assert sizes.var() == pytest.approx(n * q * (1 - q), rel=0.06)
    # every row is drawn with probability q per batch: counts ~ Binomial(10,000, 0.04), sd 19.6
    z = (counts - draws * q) / np.sqrt(draws * q * (1 - q))
    assert np.abs(z).max() < 4.5  # 500 rows: the largest |z| of 500 normals stays below 4.5
    assert abs(z.mean()) < 4.5 / np.sqrt(n) and z.std() == pytest.approx(1.0, rel=0.1)
    # consecutive batches are independent: overlap of successive batches ~ q * |batch|
    seq = [set(b) for b in PoissonBatchSampler(n, q, 2000, rng=np.random.default_rng(3))]
    overlap = np.mean([len(a & b) for a, b in itertools.pairwise(seq)])
    assert overlap == pytest.approx(n * q * q, rel=0.15)


def test_poisson_sampler_gives_empty_batches_and_refuses_bad_parameters():
    from audit.privacy.bookkeeping import PoissonBatchSampler

    sizes = [len(b) for b in PoissonBatchSampler(20, 0.02, 5000, rng=np.random.default_rng(0))]  # P(empty) = 0.98^20 = 0.67
    assert np.mean([s == 0 for s in sizes]) == pytest.approx(0.98 ** 20, abs=0.03)
    for bad in ((0, 0.1, 5), (10, 0.0, 5), (10, 1.5, 5), (10, 0.1, 0)):
        with pytest.raises(ValueError, match="Poisson sampling needs"):
            PoissonBatchSampler(*bad)
