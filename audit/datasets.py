"""The embedded default data: a lending dataset drawn from a structural causal model whose
true quantities are known exactly.

The model (every continuous node linear-Gaussian given the categorical roots, so every truth
below is a closed form, not a simulation)::

    sex ~ Bernoulli(p_male)                      binary sensitive attribute ("female"/"male")
    age_group ~ Categorical                      multi-valued sensitive attribute
    region ~ Categorical                         confounder (of education, income and the label)
    education = 13 + edu_shift[region] + 2.5 u_e                        confounder of income & label
    years_experience = exp_mean[age_group] + exp_sd[age_group] u_x
    marketing_segment = proxy_strength * male + u_p                      proxy of sex (no effect on label)
    income = 30 + 2.5 (education-13) + 0.7 years_experience + inc_shift[region]
             + pay_gap * male + 9 u_i                                    mediator
    debt_ratio = 0.40 - 0.004 (income - 40) + 0.08 u_d                   mediator (via income)
    L = b0 + b_inc (income-40)/10 + b_debt (debt_ratio-0.4) 10 + b_edu (education-13)/2.5
        + y_shift[region] + direct_bias * male + u_y
    approved = 1{L > 0}                                                  the label (1 = approved)

with every ``u`` an independent standard normal. ``direct_bias`` is the injected direct effect
of sex on the label (latent scale); ``pay_gap`` opens the mediated path sex -> income ->
(debt_ratio ->) approved. ``ground_truth()`` returns on the probability scale: base rates by each
sensitive attribute and their intersection, the label's demographic-parity difference, and the
total, natural direct and natural indirect effects of sex (male vs female) on P(approved).
Because L given the roots is Gaussian, P(approved) = Phi(mean / sd) exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

__all__ = [
    "GroundTruth",
    "LendingData",
    "LendingSCM",
    "TrueScoreModel",
    "make_lending_data",
    "model_causal_truth",
]

TARGET = "approved"
SENSITIVE = ("sex", "age_group")
PROXY = "marketing_segment"
MEDIATORS = ("income", "debt_ratio")
FEATURES = (
    "sex",
    "age_group",
    "region",
    "education",
    "years_experience",
    "marketing_segment",
    "income",
    "debt_ratio",
)
NOISES = ("u_e", "u_x", "u_p", "u_i", "u_d", "u_y")

EDGES: tuple[tuple[str, str], ...] = (
    ("region", "education"),
    ("region", "income"),
    ("region", "approved"),
    ("education", "income"),
    ("education", "approved"),
    ("age_group", "years_experience"),
    ("years_experience", "income"),
    ("sex", "marketing_segment"),
    ("sex", "income"),
    ("sex", "approved"),
    ("income", "debt_ratio"),
    ("income", "approved"),
    ("debt_ratio", "approved"),
)


@dataclass(frozen=True)
class LendingSCM:
    """Parameters of the structural causal model (defaults give a clear but realistic bias)."""

    p_male: float = 0.5
    age_groups: Mapping[str, float] = field(
        default_factory=lambda: {"18-29": 0.30, "30-49": 0.45, "50+": 0.25}
    )
    exp_mean: Mapping[str, float] = field(
        default_factory=lambda: {"18-29": 6.0, "30-49": 15.0, "50+": 27.0}
    )
    exp_sd: Mapping[str, float] = field(
        default_factory=lambda: {"18-29": 2.0, "30-49": 4.0, "50+": 5.0}
    )
    regions: Mapping[str, float] = field(
        default_factory=lambda: {"north": 0.40, "south": 0.35, "east": 0.25}
    )
    edu_shift: Mapping[str, float] = field(
        default_factory=lambda: {"north": 0.0, "south": -0.8, "east": 0.6}
    )
    inc_shift: Mapping[str, float] = field(
        default_factory=lambda: {"north": 0.0, "south": -4.0, "east": 3.0}
    )
    y_shift: Mapping[str, float] = field(
        default_factory=lambda: {"north": 0.0, "south": -0.15, "east": 0.10}
    )
    proxy_strength: float = 2.0
    pay_gap: float = 7.0
    direct_bias: float = 0.35
    b0: float = -0.35
    b_inc: float = 0.5
    b_debt: float = -0.3
    b_edu: float = 0.25

    # -- linear-Gaussian algebra: each node = const + coef . u, for fixed (male, age, region) --

    def _nodes(self, male: float, age: str, region: str, male_for_mediators: float | None = None):
        """Constants and noise coefficients of every node for one configuration of the roots.

        ``male_for_mediators`` lets the mediators see another value of sex than the direct term
        (the nested counterfactual Y_{a, M_{a'}} of mediation analysis).
        """
        mm = male if male_for_mediators is None else male_for_mediators
        k = len(NOISES)
        e = np.eye(k)
        iu = {n: e[i] for i, n in enumerate(NOISES)}
        edu = (13 + self.edu_shift[region], 2.5 * iu["u_e"])
        exp = (self.exp_mean[age], self.exp_sd[age] * iu["u_x"])
        prox = (self.proxy_strength * male, iu["u_p"])
        inc_c = 30 + 2.5 * (edu[0] - 13) + 0.7 * exp[0] + self.inc_shift[region] + self.pay_gap * mm
        inc_v = 2.5 * edu[1] + 0.7 * exp[1] + 9 * iu["u_i"]
        debt_c = 0.40 - 0.004 * (inc_c - 40)
        debt_v = -0.004 * inc_v + 0.08 * iu["u_d"]
        lat_c = (
            self.b0
            + self.b_inc * (inc_c - 40) / 10
            + self.b_debt * (debt_c - 0.4) * 10
            + self.b_edu * (edu[0] - 13) / 2.5
            + self.y_shift[region]
            + self.direct_bias * male
        )
        lat_v = (
            self.b_inc * inc_v / 10 + self.b_debt * debt_v * 10 + self.b_edu * edu[1] / 2.5 + iu["u_y"]
        )
        return {
            "education": edu,
            "years_experience": exp,
            "marketing_segment": prox,
            "income": (inc_c, inc_v),
            "debt_ratio": (debt_c, debt_v),
            "latent": (lat_c, lat_v),
        }

    def _configs(self):
        for age, pa in self.age_groups.items():
            for region, pr in self.regions.items():
                yield age, region, pa * pr

    def p_approved(
        self, male: float, *, male_for_mediators: float | None = None, age: str | None = None,
        score_threshold: float | None = None,
    ) -> float:
        """P(approved=1 | sex) (or a nested counterfactual), optionally within one age group.

        With ``score_threshold`` t: P(true score > t), the selection rate of the rule that
        approves when the Bayes score Phi(E[L | parents]) exceeds t.
        """
        total, weight = 0.0, 0.0
        for a, region, w in self._configs():
            if age is not None and a != age:
                continue
            c, v = self._nodes(male, a, region, male_for_mediators)["latent"]
            if score_threshold is None:
                sd = float(np.sqrt(v @ v))
                p = norm.cdf(c / sd)
            else:
                v_no_y = v.copy()
                v_no_y[NOISES.index("u_y")] = 0.0
                sd = float(np.sqrt(v_no_y @ v_no_y))
                p = norm.sf((norm.ppf(score_threshold) - c) / sd)
            total += w * p
            weight += w
        return float(total / weight)


@dataclass(frozen=True)
class GroundTruth:
    """True population quantities of the generator (probability scale unless said)."""

    base_rate_by_sex: Mapping[str, float]
    base_rate_by_age_group: Mapping[str, float]
    base_rate_by_sex_age: Mapping[str, float]
    base_rate: float
    demographic_parity_difference: float  # of the label, male - female
    total_effect: float  # P(Y | do(male)) - P(Y | do(female)) on the label
    natural_direct_effect: float  # P(Y_{male, M_female}) - P(Y_{female, M_female})
    natural_indirect_effect: float  # P(Y_{male, M_male}) - P(Y_{male, M_female})
    direct_bias_latent: float
    mediated_effect_latent: float
    proxy_auc: float  # AUC of marketing_segment for sex
    threshold_rule_selection_rate: Mapping[str, float]  # rule: true score > 0.5, by sex
    threshold_rule_dp_difference: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}


def ground_truth(scm: LendingSCM) -> GroundTruth:
    f, m = 0.0, 1.0
    pf, pm = scm.p_approved(f), scm.p_approved(m)
    p_m_mf = scm.p_approved(m, male_for_mediators=f)
    by_age = {
        a: scm.p_male * scm.p_approved(m, age=a) + (1 - scm.p_male) * scm.p_approved(f, age=a)
        for a in scm.age_groups
    }
    by_sex_age = {}
    for a in scm.age_groups:
        by_sex_age[f"female|{a}"] = scm.p_approved(f, age=a)
        by_sex_age[f"male|{a}"] = scm.p_approved(m, age=a)
    c_inc = scm.b_inc / 10 + scm.b_debt * 10 * (-0.004)
    rule = {"female": scm.p_approved(f, score_threshold=0.5), "male": scm.p_approved(m, score_threshold=0.5)}
    return GroundTruth(
        base_rate_by_sex={"female": pf, "male": pm},
        base_rate_by_age_group=by_age,
        base_rate_by_sex_age=by_sex_age,
        base_rate=scm.p_male * pm + (1 - scm.p_male) * pf,
        demographic_parity_difference=pm - pf,
        total_effect=pm - pf,
        natural_direct_effect=p_m_mf - pf,
        natural_indirect_effect=pm - p_m_mf,
        direct_bias_latent=scm.direct_bias,
        mediated_effect_latent=c_inc * scm.pay_gap,
        proxy_auc=float(norm.cdf(scm.proxy_strength / np.sqrt(2.0))),
        threshold_rule_selection_rate=rule,
        threshold_rule_dp_difference=rule["male"] - rule["female"],
    )


def sample(
    scm: LendingSCM, n: int, seed: int | np.random.Generator, *, return_noise: bool = False
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Draw ``n`` rows from the SCM (every column of FEATURES plus the label)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    male = (rng.random(n) < scm.p_male).astype(float)
    ages = rng.choice(list(scm.age_groups), size=n, p=list(scm.age_groups.values()))
    regions = rng.choice(list(scm.regions), size=n, p=list(scm.regions.values()))
    u = pd.DataFrame(rng.standard_normal((n, len(NOISES))), columns=list(NOISES))
    frame = _structural(scm, male, ages, regions, u)
    return (frame, u) if return_noise else frame


def _structural(
    scm: LendingSCM, male: np.ndarray, ages: np.ndarray, regions: np.ndarray, u: pd.DataFrame,
    male_for_mediators: np.ndarray | None = None,
) -> pd.DataFrame:
    mm = male if male_for_mediators is None else male_for_mediators
    edu = 13 + pd.Series(regions).map(scm.edu_shift).to_numpy() + 2.5 * u["u_e"].to_numpy()
    exp = (
        pd.Series(ages).map(scm.exp_mean).to_numpy()
        + pd.Series(ages).map(scm.exp_sd).to_numpy() * u["u_x"].to_numpy()
    )
    prox = scm.proxy_strength * male + u["u_p"].to_numpy()
    inc = (
        30 + 2.5 * (edu - 13) + 0.7 * exp + pd.Series(regions).map(scm.inc_shift).to_numpy()
        + scm.pay_gap * mm + 9 * u["u_i"].to_numpy()
    )
    debt = 0.40 - 0.004 * (inc - 40) + 0.08 * u["u_d"].to_numpy()
    lat = (
        scm.b0 + scm.b_inc * (inc - 40) / 10 + scm.b_debt * (debt - 0.4) * 10
        + scm.b_edu * (edu - 13) / 2.5 + pd.Series(regions).map(scm.y_shift).to_numpy()
        + scm.direct_bias * male + u["u_y"].to_numpy()
    )
    return pd.DataFrame(
        {
            "sex": np.where(male == 1, "male", "female"),
            "age_group": ages,
            "region": regions,
            "education": np.round(edu, 3),
            "years_experience": np.round(exp, 3),
            "marketing_segment": np.round(prox, 4),
            "income": np.round(inc, 3),
            "debt_ratio": np.round(debt, 5),
            TARGET: (lat > 0).astype(int),
        }
    )


def counterfactual(
    scm: LendingSCM, frame: pd.DataFrame, noise: pd.DataFrame, sex: str
) -> pd.DataFrame:
    """The same individuals (same exogenous noise) had their sex been ``sex`` (exact)."""
    male = np.full(len(frame), 1.0 if sex == "male" else 0.0)
    return _structural(scm, male, frame["age_group"].to_numpy(), frame["region"].to_numpy(), noise)


def model_causal_truth(
    scm: LendingSCM,
    score: Callable[[pd.DataFrame], np.ndarray],
    n: int,
    seed: int,
) -> dict[str, float]:
    """The causal truths of a fixed model's score, from the generator on ``n`` fresh draws.

    ``score`` maps a frame of the generator's columns to P(positive label); the decision is
    score > 0.5 (the argmax of a binary classifier). Every individual's exogenous noise is drawn
    once and reused in every world (exact counterfactuals):

    * ``total_effect``: E[s(X_male)] − E[s(X_female)] (sex set for everyone);
    * ``natural_direct_effect``: E[s(X_{male, M_female})] − E[s(X_female)], the mediators
      (income, debt_ratio) kept at their values under female; the proxy follows sex;
    * ``natural_indirect_effect``: E[s(X_male)] − E[s(X_{male, M_female})];
    * ``counterfactual_flip_rate``: share whose decision changes had their sex been the other;
    * ``counterfactual_mean_abs_delta``: mean |s(X_other sex) − s(X)| over individuals.
    """
    frame, noise = sample(scm, n, seed, return_noise=True)
    ages, regions = frame["age_group"].to_numpy(), frame["region"].to_numpy()
    male = (frame["sex"] == "male").to_numpy(float)
    zeros, ones = np.zeros(n), np.ones(n)
    s_f = np.asarray(score(_structural(scm, zeros, ages, regions, noise)), dtype=float)
    s_m = np.asarray(score(_structural(scm, ones, ages, regions, noise)), dtype=float)
    s_m_mf = np.asarray(score(_structural(scm, ones, ages, regions, noise, male_for_mediators=zeros)), dtype=float)
    s_fact = np.where(male == 1, s_m, s_f)
    s_other = np.where(male == 1, s_f, s_m)
    return {
        "total_effect": float(np.mean(s_m) - np.mean(s_f)),
        "natural_direct_effect": float(np.mean(s_m_mf) - np.mean(s_f)),
        "natural_indirect_effect": float(np.mean(s_m) - np.mean(s_m_mf)),
        "counterfactual_flip_rate": float(np.mean((s_fact > 0.5) != (s_other > 0.5))),
        "counterfactual_mean_abs_delta": float(np.mean(np.abs(s_other - s_fact))),
    }


class TrueScoreModel:
    """The Bayes score P(approved | parents) = Phi(E[L | parents]); a scikit-learn-style classifier.

    Uses sex directly (the label does). Handy as an oracle in tests: its causal effects are the
    generator's. Not a model to ship.
    """

    def __init__(self, scm: LendingSCM | None = None) -> None:
        self.scm = scm or LendingSCM()
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = np.array(["sex", "region", "education", "income", "debt_ratio"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)

    def fit(self, X: Any = None, y: Any = None) -> TrueScoreModel:
        return self

    def latent_mean(self, X: pd.DataFrame) -> np.ndarray:
        s = self.scm
        male = (X["sex"].astype(str) == "male").to_numpy(float)
        return (
            s.b0 + s.b_inc * (X["income"].to_numpy(float) - 40) / 10
            + s.b_debt * (X["debt_ratio"].to_numpy(float) - 0.4) * 10
            + s.b_edu * (X["education"].to_numpy(float) - 13) / 2.5
            + X["region"].map(s.y_shift).to_numpy(float) + s.direct_bias * male
        )

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = norm.cdf(self.latent_mean(X))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


@dataclass(frozen=True)
class LendingData:
    """Train / holdout / test frames plus everything true about them."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    test: pd.DataFrame
    scm: LendingSCM
    truth: GroundTruth
    seed: int
    target: str = TARGET
    positive_label: int = 1
    sensitive: tuple[str, ...] = SENSITIVE
    proxy: str = PROXY
    mediators: tuple[str, ...] = MEDIATORS
    features: tuple[str, ...] = FEATURES
    edges: tuple[tuple[str, str], ...] = EDGES

    @property
    def graph_dot(self) -> str:
        body = "\n".join(f'  "{a}" -> "{b}";' for a, b in self.edges)
        return f"digraph lending {{\n{body}\n}}\n"

    def sample(self, n: int, seed: int, *, return_noise: bool = False):
        return sample(self.scm, n, seed, return_noise=return_noise)

    def params(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self.scm).items()}


def make_lending_data(
    n_train: int = 8000,
    n_holdout: int = 4000,
    n_test: int = 6000,
    *,
    seed: int = 0,
    scm: LendingSCM | None = None,
    **overrides: Any,
) -> LendingData:
    """Draw the default lending dataset. ``overrides`` replace SCM parameters (e.g. direct_bias=0)."""
    for name, n in (("n_train", n_train), ("n_holdout", n_holdout), ("n_test", n_test)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    scm = scm or LendingSCM()
    if overrides:
        unknown = sorted(set(overrides) - set(LendingSCM.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown SCM parameter(s): {', '.join(unknown)}")
        scm = LendingSCM(**{**{k: getattr(scm, k) for k in LendingSCM.__dataclass_fields__}, **overrides})
    frame = sample(scm, n_train + n_holdout + n_test, seed)
    assert isinstance(frame, pd.DataFrame)
    train = frame.iloc[:n_train].reset_index(drop=True)
    holdout = frame.iloc[n_train : n_train + n_holdout].reset_index(drop=True)
    test = frame.iloc[n_train + n_holdout :].reset_index(drop=True)
    return LendingData(train, holdout, test, scm, ground_truth(scm), seed)


def feature_columns(exclude: Sequence[str] = ()) -> list[str]:
    return [c for c in FEATURES if c not in set(exclude)]
