"""Privacy library: DP accounting, membership-inference attacks, DP-SGD training.

- :mod:`audit.privacy.accounting` recomputes a DP-SGD claim's ε with Opacus' accountants.
- :mod:`audit.privacy.attacks` scores membership, computes AUC / TPR at low FPR / the empirical
  ε lower bound (Jagielski et al. 2020).
- :mod:`audit.privacy.reference` trains the calibrated attack's reference models.
- :mod:`audit.privacy.train_dp` trains and exports DP-SGD MLPs (imports torch; loaded lazily
  through this package's attributes).

The registered checks live in :mod:`audit.checks.privacy`. The intervals these use (Clopper–Pearson,
DeLong) are :mod:`audit.stats`', the one home of the statistics, and are imported from there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from audit.privacy.accounting import (
    ACCOUNTANTS,
    AccountantEstimate,
    ClaimAssessment,
    assess_claim,
    opacus_epsilon,
    recompute_claim,
)
from audit.privacy.attacks import (
    ATTACKS,
    FPR_LEVELS,
    EpsilonBound,
    MembershipAudit,
    calibrated_scores,
    entropy_scores,
    epsilon_from_rates,
    logit_confidence,
    loss_scores,
    membership_audit,
)

if TYPE_CHECKING:  # these load lazily (PEP 562): train_dp imports torch
    from audit.privacy.train_dp import DPTrainConfig, train_dp_models, train_mlp

__all__ = [
    "ACCOUNTANTS",
    "ATTACKS",
    "FPR_LEVELS",
    "AccountantEstimate",
    "ClaimAssessment",
    "DPTrainConfig",
    "EpsilonBound",
    "MembershipAudit",
    "assess_claim",
    "calibrated_scores",
    "entropy_scores",
    "epsilon_from_rates",
    "logit_confidence",
    "loss_scores",
    "membership_audit",
    "opacus_epsilon",
    "recompute_claim",
    "train_dp_models",
    "train_mlp",
]

_EXPORTS: dict[str, str] = {  # name -> the module that defines it, loaded on first use
    "DPTrainConfig": "audit.privacy.train_dp",
    "train_dp_models": "audit.privacy.train_dp",
    "train_mlp": "audit.privacy.train_dp",
}


def __getattr__(name: str) -> Any:
    """Torch-dependent names load on first use, so importing this package stays light."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audit.privacy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
