"""Recompute a DP-SGD claim's ε with Opacus' own accountants (RDP, PRV, GDP).

A claim (``audit.spec.DPClaim``) gives the Poisson-subsampled Gaussian mechanism's parameters:
noise multiplier σ, sampling rate q, number of steps T and δ. When the claim gives a batch size B
and a data-set size N instead of q, the schedule is Opacus' (:func:`opacus_schedule`): its data
loader has ``ceil(N / B)`` batches per epoch and samples each row with probability
``q = 1 / ceil(N / B)``, so E epochs are ``E · ceil(N / B)`` steps.

The federated runs' accountants (``federated._privacy``) compose their rounds with :func:`rdp_of`
and :func:`epsilon_from_rdp` from here: one module holds the privacy arithmetic.

A claim's ε holds only under the conditions its accountant assumes: Poisson sampling that nobody
can predict (for amplification by subsampling, q < 1) and noise nobody can reproduce.
:class:`ClaimConditions` records how a run actually sampled and drew its noise, and what the
guarantee does not cover; :func:`broken_assumptions` lists what a claim assumes that the run
did not give. Each accountant is given exactly the
history Opacus' ``PrivacyEngine`` records for such a run, ``[(σ, q, T)]`` (the same way
``opacus.accountants.utils.get_noise_multiplier`` drives them), and asked for ε at the claim's δ:

- ``rdp``: Rényi-DP accountant (Mironov 2017; Mironov, Talwar & Zhang 2019), converted to
  (ε, δ) over Opacus' default orders. A rigorous upper bound, usually the loosest.
- ``prv``: privacy-loss-random-variable accountant (Gopi, Lee & Wutschitz 2021). Opacus returns
  the upper end of its numerical error bracket, so it is a rigorous upper bound and the tightest.
- ``gdp``: Gaussian-DP central-limit approximation (Bu, Dong, Long & Su 2020). It is an
  approximation that can *under*-estimate ε (Opacus warns so); reported only in the regime the
  central limit theorem targets (many steps of a small sampling rate: T ≥ 100 and q ≤ 0.1, a
  heuristic), and never used alone as evidence that a claim holds.

Opacus is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.spec import DPClaim

__all__ = [
    "ACCOUNTANTS",
    "CONDITION_KEYS",
    "GDP_MAX_SAMPLE_RATE",
    "GDP_MIN_STEPS",
    "ORDERS",
    "SAMPLING_KINDS",
    "AccountantEstimate",
    "ClaimAssessment",
    "ClaimConditions",
    "assess_claim",
    "broken_assumptions",
    "dp_sgd_conditions",
    "epsilon_from_rdp",
    "opacus_epsilon",
    "opacus_schedule",
    "rdp_of",
    "recompute_claim",
]

#: The accountants compared, in report order.
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "gdp")
#: Regime in which the GDP central-limit approximation is reported (a heuristic, see module doc).
GDP_MIN_STEPS = 100
GDP_MAX_SAMPLE_RATE = 0.1
_RIGOROUS = {"rdp": True, "prv": True, "gdp": False}


@dataclass(frozen=True)
class AccountantEstimate:
    """ε from one accountant for a claim's parameters (NaN when not computed; ``note`` says why)."""

    accountant: str
    epsilon: float
    rigorous: bool
    note: str = ""
    rdp_order: float = math.nan  # the optimal Rényi order (RDP only)


def opacus_schedule(claim: DPClaim) -> tuple[float, int]:
    """(q, steps) of a claim, as Opacus runs it.

    * ``sample_rate`` given: q is it; steps are ``steps`` or ``ceil(epochs / q)`` (never fewer
      than the epochs imply).
    * ``batch_size`` B and ``dataset_size`` N instead: Opacus' ``DPDataLoader`` takes
      ``q = 1 / len(data_loader) = 1 / ceil(N / B)`` and E epochs are ``E · ceil(N / B)`` steps
      (``ceil`` for a fractional E). Not B / N: with N = 100 and B = 30 that is 0.3 where Opacus
      samples at 0.25.

    The arithmetic lives on the claim itself (``DPClaim.effective_sample_rate`` / ``effective_steps``),
    validated at the boundary; this names it for the accountants.
    """
    return claim.effective_sample_rate, claim.effective_steps


#: How a run drew its batches (record level) or clients (client level) for a private step.
#: ``poisson``: each independently with probability q (what the accountants' amplification
#: assumes); ``fixed-size``: a fixed number without replacement; ``shuffle``: shuffled disjoint
#: batches; ``all``: every record / client in every step (no subsampling).
SAMPLING_KINDS: tuple[str, ...] = ("poisson", "fixed-size", "shuffle", "all")
#: Keys of the conditions block (``dp_conditions`` in a model's metadata).
CONDITION_KEYS: tuple[str, ...] = (
    "mechanism", "unit", "sampling", "sampling_secret", "noise_secret", "noise_source",
    "sampling_source", "neighbouring", "not_covered",
)


@dataclass(frozen=True)
class ClaimConditions:
    """How a DP run actually sampled and drew its noise, and what its ε does not cover.

    ``None`` means not recorded (a claim stated by hand): the check then says what it assumes.
    """

    mechanism: str | None = None
    unit: str | None = None  # "record" or "client"
    sampling: str | None = None  # one of SAMPLING_KINDS
    sampling_secret: bool | None = None  # drawn from a source nobody can replay
    noise_secret: bool | None = None
    noise_source: str | None = None
    sampling_source: str | None = None
    neighbouring: str | None = None  # e.g. "add/remove one record"
    not_covered: tuple[str, ...] = ()

    @property
    def recorded(self) -> bool:
        return any(getattr(self, k) not in (None, ()) for k in CONDITION_KEYS)

    @classmethod
    def from_mapping(cls, raw: Any) -> ClaimConditions:
        """Read a ``dp_conditions`` block (JSON text or a mapping); unknown keys are refused."""
        import json

        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = json.loads(raw)
        if not isinstance(raw, dict):
            raise ValueError(f"dp_conditions must be a mapping, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(CONDITION_KEYS))
        if unknown:
            raise ValueError(f"dp_conditions: unknown key(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(CONDITION_KEYS)}")
        sampling = raw.get("sampling")
        if sampling is not None and sampling not in SAMPLING_KINDS:
            raise ValueError(f"dp_conditions: sampling must be one of {', '.join(SAMPLING_KINDS)}, "
                             f"got {sampling!r}")
        for key in ("sampling_secret", "noise_secret"):
            if raw.get(key) is not None and not isinstance(raw[key], bool):
                raise ValueError(f"dp_conditions: {key} must be true or false, got {raw[key]!r}")
        nc = raw.get("not_covered") or ()
        if isinstance(nc, str) or not all(isinstance(x, str) for x in nc):
            raise ValueError("dp_conditions: not_covered must be a list of texts")
        return cls(**{k: raw.get(k) for k in CONDITION_KEYS if k != "not_covered"}, not_covered=tuple(nc))

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in CONDITION_KEYS}
        out["not_covered"] = list(self.not_covered)
        return out


def dp_sgd_conditions(mechanism: str, neighbouring: str, not_covered: Sequence[str]) -> dict[str, Any]:
    """The ``dp_conditions`` of DP-SGD run by trustaudit (train-dp, local DP in a federation):
    Poisson batches and Gaussian noise, both drawn from generators seeded from OS entropy."""
    from audit.privacy.secure_rng import NOISE_SOURCE, SAMPLING_SOURCE

    return {
        "mechanism": mechanism,
        "unit": "record",
        "sampling": "poisson",
        "sampling_secret": True,
        "noise_secret": True,
        "noise_source": NOISE_SOURCE,
        "sampling_source": SAMPLING_SOURCE,
        "neighbouring": neighbouring,
        "not_covered": list(not_covered),
    }


def broken_assumptions(sample_rate: float, conditions: ClaimConditions) -> list[str]:
    """What a claim at sampling rate ``sample_rate`` assumes that the recorded run did not give.

    * Noise drawn from a replayable source (seeded): whoever has the seed can subtract it, and no
      ε holds.
    * Amplification by subsampling (q < 1) needs Poisson sampling (each record or client
      included independently with probability q) that nobody can predict: a fixed-size sample,
      shuffled batches, or a sample reproducible from a seed do not give the claimed ε.

    Conditions that were not recorded (``None``) are assumptions, not breaks.
    """
    out = []
    if conditions.noise_secret is False:
        out.append("the noise was drawn from a seeded generator, so it can be reproduced and removed")
    if sample_rate < 1.0:
        if conditions.sampling is not None and conditions.sampling != "poisson":
            out.append(f"the claim uses amplification by subsampling at q = {sample_rate:.4g}, which assumes "
                       f"Poisson sampling, but the run sampled {conditions.sampling}")
        if conditions.sampling_secret is False:
            out.append(f"the claim uses amplification by subsampling at q = {sample_rate:.4g}, but the "
                       "sampling was seeded (reproducible), so who took part in each step is known")
    return out


#: RDP orders (Opacus' defaults extended to large orders for small epsilons).
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512])


def rdp_of(sample_rate: float, noise_multiplier: float, steps: int) -> np.ndarray:
    """RDP of ``steps`` compositions of the sampled Gaussian mechanism, at every order in ORDERS."""
    from opacus.accountants.analysis.rdp import compute_rdp

    if steps <= 0:
        return np.zeros(len(ORDERS))
    return np.asarray(
        compute_rdp(q=float(sample_rate), noise_multiplier=float(noise_multiplier), steps=int(steps), orders=list(ORDERS)),
        dtype=float,
    )


def epsilon_from_rdp(rdp: Sequence[float] | np.ndarray, delta: float) -> float:
    """The (epsilon, delta) conversion of an RDP curve (Balle et al. 2020, as Opacus does)."""
    import warnings

    from opacus.accountants.analysis.rdp import get_privacy_spent

    r = np.asarray(rdp, dtype=float)
    if not np.any(r > 0):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=r, delta=float(delta))
    return float(eps)


def opacus_epsilon(
    accountant: str,
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    prv_eps_error: float = 0.01,
) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps under Opacus' ``accountant``.

    Builds the accountant with ``opacus.accountants.create_accountant`` and sets its history to
    ``[(noise_multiplier, sample_rate, steps)]``, exactly what ``PrivacyEngine`` records for a run
    with constant parameters; ``prv_eps_error`` is passed to the PRV accountant (Opacus' default).
    """
    from opacus.accountants import create_accountant

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # the GDP accountant warns on construction, RDP when its best order is the largest one,
        # PRV's log(1 - q) divides by zero at q = 1 (handled inside Opacus)
        warnings.simplefilter("ignore")
        acc = create_accountant(mechanism=accountant)
        acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
        if accountant == "prv":
            return float(acc.get_epsilon(delta=delta, eps_error=prv_eps_error))
        return float(acc.get_epsilon(delta=delta))


def _rdp_with_order(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> tuple[float, float]:
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "optimal order is the largest alpha": noted by the caller
        eps, alpha = acc.get_privacy_spent(delta=delta)
    return float(eps), float(alpha)


def recompute_claim(claim: DPClaim) -> dict[str, AccountantEstimate]:
    """ε for the claim's (σ, q, T, δ) under each of RDP, PRV and GDP (where valid)."""
    q, steps = opacus_schedule(claim)
    sigma = claim.noise_multiplier
    delta = claim.delta
    out: dict[str, AccountantEstimate] = {}
    from opacus.accountants import RDPAccountant

    eps, alpha = _rdp_with_order(sigma, q, steps, delta)
    note = "Rényi DP, Opacus default orders"
    if alpha >= max(RDPAccountant.DEFAULT_ALPHAS):
        note += "; the optimal order is the largest one, so this bound is loose"
    out["rdp"] = AccountantEstimate("rdp", eps, True, note, alpha)
    try:
        eps = opacus_epsilon("prv", noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
        out["prv"] = AccountantEstimate("prv", eps, True, "PRV upper bound (eps_error 0.01)")
    except (ValueError, ArithmeticError, RuntimeError) as exc:  # numerical domain problems
        out["prv"] = AccountantEstimate("prv", math.nan, True, f"not computed: {exc}")
    if steps >= GDP_MIN_STEPS and q <= GDP_MAX_SAMPLE_RATE:
        try:
            eps = opacus_epsilon("gdp", noise_multiplier=sigma, sample_rate=q, steps=steps, delta=delta)
            out["gdp"] = AccountantEstimate(
                "gdp", eps, False, "central-limit approximation; can underestimate ε"
            )
        except (ValueError, ArithmeticError, RuntimeError) as exc:
            out["gdp"] = AccountantEstimate("gdp", math.nan, False, f"not computed: {exc}")
    else:
        out["gdp"] = AccountantEstimate(
            "gdp",
            math.nan,
            False,
            f"not computed: the central-limit approximation needs >= {GDP_MIN_STEPS} steps "
            f"of a sampling rate <= {GDP_MAX_SAMPLE_RATE} (got {steps} steps, q = {q:.4g})",
        )
    return out


@dataclass(frozen=True)
class ClaimAssessment:
    """How a claim's ε compares with the recomputed ones.

    ``stated`` is the ε of the accountant the claim names; ``rigorous`` the smallest rigorous
    upper bound (min of RDP and PRV). A claim is *supported* by a value when that value does not
    exceed the claimed ε by more than the relative ``tolerance``.
    """

    claimed: float
    stated: float
    rigorous: float
    tolerance: float
    supported_by_stated: bool
    supported_by_rigorous: bool

    @property
    def excess(self) -> float:
        """Relative excess of the rigorous ε over the claimed one (negative: claim is conservative)."""
        return self.rigorous / self.claimed - 1.0 if math.isfinite(self.rigorous) else math.nan


def assess_claim(
    claim: DPClaim, estimates: dict[str, AccountantEstimate], tolerance: float
) -> ClaimAssessment:
    """Compare the claimed ε with the claim's own accountant and with the rigorous ones."""
    limit = claim.epsilon * (1.0 + tolerance)
    stated = estimates[claim.accountant].epsilon
    rig = [e.epsilon for e in estimates.values() if e.rigorous and math.isfinite(e.epsilon)]
    rigorous = min(rig) if rig else math.nan
    return ClaimAssessment(
        claimed=claim.epsilon,
        stated=stated,
        rigorous=rigorous,
        tolerance=tolerance,
        supported_by_stated=math.isfinite(stated) and stated <= limit,
        supported_by_rigorous=math.isfinite(rigorous) and rigorous <= limit,
    )
