"""Privacy library: DP accounting, membership-inference attacks, DP-SGD training.

- :mod:`audit.privacy.accounting` recomputes a DP-SGD claim's ε with Opacus' accountants.
- :mod:`audit.privacy.attacks` scores membership, computes AUC / TPR at low FPR / the empirical
  ε lower bound (Jagielski et al. 2020).
- :mod:`audit.privacy.reference` trains the calibrated attack's reference models.
- :mod:`audit.privacy.train_dp` trains and exports DP-SGD MLPs (imports torch; loaded lazily
  through this package's attributes).

The registered checks live in :mod:`audit.checks.privacy`.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    clopper_pearson,
    delong_auc,
    entropy_scores,
    epsilon_from_rates,
    logit_confidence,
    loss_scores,
    membership_audit,
)

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
    "clopper_pearson",
    "delong_auc",
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

_LAZY = {"DPTrainConfig", "train_dp_models", "train_mlp"}


def __getattr__(name: str) -> Any:
    """Torch-dependent names load on first use, so importing this package stays light."""
    if name in _LAZY:
        return getattr(importlib.import_module("audit.privacy.train_dp"), name)
    raise AttributeError(f"module 'audit.privacy' has no attribute {name!r}")
