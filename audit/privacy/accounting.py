"""Recompute a DP-SGD claim's ε with Opacus' own accountants (RDP, PRV, GDP).

A claim (``audit.spec.DPClaim``) gives the Poisson-subsampled Gaussian mechanism's parameters:
noise multiplier σ, sampling rate q, number of steps T and δ. Each accountant is given exactly the
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
from dataclasses import dataclass

import numpy as np

from audit.spec import DPClaim

__all__ = [
    "ACCOUNTANTS",
    "GDP_MAX_SAMPLE_RATE",
    "GDP_MIN_STEPS",
    "AccountantEstimate",
    "ClaimAssessment",
    "assess_claim",
    "opacus_epsilon",
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
    q = claim.effective_sample_rate
    steps = claim.effective_steps
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
