"""The configuration of a federated run, validated once at the boundary.

One flat set of settings serves both ways of running the app: it is the ``[tool.flwr.app.config]``
table that ``flwr run`` reads (kebab-case keys, scalar values) and the flags of
``trustaudit federated simulate`` (the same names with ``--``). :class:`FederatedConfig` holds
them with Python names; :meth:`FederatedConfig.from_mapping` validates a run config and
:meth:`FederatedConfig.to_run_config` writes one back, so the ServerApp sees identical settings
whichever way it was started.

Error messages name the setting, what is allowed and what came; they are module constants so
tests can assert them verbatim.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from audit.exceptions import ConfigError

__all__ = [
    "ATTACKS",
    "CENTRAL_DP_STRATEGIES",
    "KRUM_F_FRACTION",
    "MODELS",
    "PARTITIONS",
    "ROBUST_STRATEGIES",
    "SECAGG_STRATEGIES",
    "STRATEGIES",
    "FederatedConfig",
]

#: Aggregation strategies, by the name a user selects (Flower's ``flwr.serverapp.strategy``).
STRATEGIES: tuple[str, ...] = (
    "fedavg",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
)
#: Aggregators that bound the influence of a few bad updates.
ROBUST_STRATEGIES: tuple[str, ...] = ("fedmedian", "fedtrimmedavg", "krum", "multikrum")
#: Strategies whose aggregate is the (weighted) mean, which is all SecAgg+ reveals.
SECAGG_STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox")
#: Strategies whose aggregate is a uniform mean, the release the central-DP accountant models.
CENTRAL_DP_STRATEGIES: tuple[str, ...] = ("fedavg", "fedprox")
#: Krum / Multi-Krum's assumed share of malicious clients among those sampled in a round, when
#: ``krum-f`` is not set: f = floor(0.2 m), capped at the most Krum tolerates (m > 2f + 2). It
#: never reads the simulated number of attackers: an aggregator is not told the answer.
KRUM_F_FRACTION = 0.2
MODELS: tuple[str, ...] = ("logreg", "mlp")
PARTITIONS: tuple[str, ...] = ("iid", "dirichlet", "column", "quantity")
ATTACKS: tuple[str, ...] = ("label-flip", "scale")

# Exact error texts (asserted by the tests).
MSG_CHOICE = "{key} must be one of {allowed}; got {got!r}"
MSG_ALPHA = "alpha must be greater than 0 (the Dirichlet concentration); got {got}"
MSG_TOO_MANY_CLIENTS = (
    "num-clients ({clients}) is larger than the number of training rows ({rows}); "
    "every client needs at least one row"
)
MSG_RANGE = "{key} must be {rule}; got {got!r}"
MSG_UNKNOWN_KEY = "unknown federated setting {key!r}; allowed: {allowed}"
MSG_SECAGG_STRATEGY = (
    "secagg hides individual updates, so the strategy must aggregate by a mean: one of "
    "{allowed}; got {got!r}"
)
MSG_SECAGG_CENTRAL_DP = (
    "secagg and central-dp cannot be combined: server-side clipping needs the individual updates "
    "that secure aggregation hides; use local-dp with secagg"
)
MSG_KRUM = (
    "{strategy} tolerates f malicious clients only with more than 2f + 2 clients per round; "
    "f = {f} needs at least {need}, got {m}"
)
MSG_CENTRAL_DP_STRATEGY = (
    "central-dp accounts for a uniform mean of clipped updates, so the strategy must be one of "
    "{allowed}; got {got!r}"
)


@dataclass(frozen=True)
class FederatedConfig:
    """Every setting of a federated run (see ``docs/federated.md`` for the meaning of each)."""

    # federation
    num_clients: int = 10
    num_rounds: int = 5
    fraction_train: float = 1.0
    seed: int = 0
    # data ("" = the ground-truth lending generator)
    data: str = ""
    target: str = "approved"
    positive_label: str = "1"
    sensitive: str = "sex,age_group"
    exclude_features: str = ""
    n_rows: int = 8000
    holdout_fraction: float = 0.2
    test_fraction: float = 0.2
    # partitioning
    partition: str = "iid"
    alpha: float = 0.5
    partition_column: str = ""
    min_partition_size: int = 1
    val_fraction: float = 0.2
    # model and local training
    model: str = "logreg"
    hidden: int = 32
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    # aggregation
    strategy: str = "fedavg"
    proximal_mu: float = 0.1
    server_lr: float = 0.1
    trim_beta: float = 0.2
    krum_f: int = -1
    # central DP (server-side fixed clipping)
    central_dp: bool = False
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    dp_delta: float = 1e-5
    # local DP (DP-SGD in each client, Opacus)
    local_dp: bool = False
    local_noise: float = 1.0
    local_clip: float = 1.0
    local_delta: float = 1e-5
    # secure aggregation (SecAgg+)
    secagg: bool = False
    secagg_shares: float = 1.0
    secagg_threshold: float = 0.5
    secagg_clip_range: float = 8.0
    secagg_quant_range: int = 2**22
    # faults and adversaries
    dropout: float = 0.0
    stragglers: float = 0.0
    straggler_delay: float = 5.0
    round_timeout: float = 0.0
    malicious: float = 0.0
    attack: str = "label-flip"
    attack_scale: float = -4.0
    # evaluation and outputs
    evaluate_every: int = 0
    output_dir: str = ""
    audit: bool = False
    checks: str = ""

    # --- conversion -------------------------------------------------------------------------

    @staticmethod
    def keys() -> tuple[str, ...]:
        """The run-config keys (kebab-case), in declaration order."""
        return tuple(f.name.replace("_", "-") for f in fields(FederatedConfig))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> FederatedConfig:
        """Validate a run config (kebab- or snake-case keys) into a config; unknown keys refused."""
        types = {f.name: f.type for f in fields(cls)}
        defaults = cls()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key).replace("-", "_")
            if name not in types:
                raise ConfigError(MSG_UNKNOWN_KEY.format(key=key, allowed=", ".join(cls.keys())))
            values[name] = _coerce(key, value, type(getattr(defaults, name)))
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """The Flower run config (kebab-case keys, scalar values)."""
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> FederatedConfig:
        """A validated copy with some settings changed (Python names)."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    # --- derived values ---------------------------------------------------------------------

    @property
    def sensitive_columns(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.sensitive.split(",") if s.strip())

    @property
    def excluded_features(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.exclude_features.split(",") if s.strip())

    @property
    def audit_checks(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.checks.split(",") if s.strip())

    @property
    def clients_per_round(self) -> int:
        """How many clients the server samples each round (at least one)."""
        return max(1, min(self.num_clients, round(self.num_clients * self.fraction_train)))

    @property
    def krum_f_used(self) -> int:
        """Krum's f: ``krum-f`` when set (>= 0), else floor(KRUM_F_FRACTION · clients per round)
        capped at the most Krum tolerates, floor((m - 3) / 2), and at least 0."""
        if self.krum_f >= 0:
            return self.krum_f
        m = self.clients_per_round
        return max(0, min(math.floor(KRUM_F_FRACTION * m + 1e-9), (m - 3) // 2))

    @property
    def krum_f_source(self) -> str:
        if self.krum_f >= 0:
            return "krum-f setting"
        return f"default: floor({KRUM_F_FRACTION:g} x {self.clients_per_round} clients per round), at most (m - 3) // 2"

    @property
    def num_malicious(self) -> int:
        return math.floor(self.malicious * self.num_clients + 1e-9)

    @property
    def num_stragglers(self) -> int:
        return math.floor(self.stragglers * self.num_clients + 1e-9)

    def data_setup(self) -> dict[str, Any]:
        """The settings that determine the data and its partitions (sent to every client)."""
        keys = ("data", "target", "positive_label", "sensitive", "exclude_features", "n_rows",
                "holdout_fraction", "test_fraction", "partition", "alpha", "partition_column",
                "min_partition_size", "val_fraction", "num_clients", "seed")
        return {k: getattr(self, k) for k in keys}

    def data_setup_json(self) -> str:
        return json.dumps(self.data_setup(), sort_keys=True)

    # --- validation -------------------------------------------------------------------------

    def validate(self) -> None:
        """Check every setting that does not need the data; raise ConfigError on the first bad one."""
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("model", self.model, MODELS)
        _choice("partition", self.partition, PARTITIONS)
        _choice("attack", self.attack, ATTACKS)
        if not self.alpha > 0 or not math.isfinite(self.alpha):
            raise ConfigError(MSG_ALPHA.format(got=self.alpha))
        _int_range("num-clients", self.num_clients, 1, 100_000)
        _int_range("num-rounds", self.num_rounds, 1, 100_000)
        _int_range("n-rows", self.n_rows, 10, 10_000_000)
        _int_range("min-partition-size", self.min_partition_size, 1, 1_000_000)
        _int_range("hidden", self.hidden, 1, 4096)
        _int_range("local-epochs", self.local_epochs, 1, 1000)
        _int_range("batch-size", self.batch_size, 1, 1_000_000)
        _int_range("evaluate-every", self.evaluate_every, 0, 100_000)
        _int_range("seed", self.seed, 0, 2**32 - 1)
        _int_range("krum-f", self.krum_f, -1, 100_000)
        _int_range("secagg-quant-range", self.secagg_quant_range, 2, 2**31)
        _open_closed("fraction-train", self.fraction_train, 0.0, 1.0)
        for key, v in (("holdout-fraction", self.holdout_fraction), ("test-fraction", self.test_fraction),
                       ("val-fraction", self.val_fraction)):
            _closed_open(key, v, 0.0, 1.0)
        if self.holdout_fraction + self.test_fraction >= 0.9:
            raise ConfigError(MSG_RANGE.format(key="holdout-fraction + test-fraction", rule="below 0.9",
                                               got=self.holdout_fraction + self.test_fraction))
        for key, v in (("dropout", self.dropout), ("stragglers", self.stragglers), ("malicious", self.malicious)):
            _closed_open(key, v, 0.0, 1.0)
        _closed_open("trim-beta", self.trim_beta, 0.0, 0.5)
        for key, v in (("lr", self.lr), ("server-lr", self.server_lr), ("noise-multiplier", self.noise_multiplier),
                       ("clip-norm", self.clip_norm), ("local-noise", self.local_noise),
                       ("local-clip", self.local_clip), ("secagg-clip-range", self.secagg_clip_range)):
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(MSG_RANGE.format(key=key, rule="a positive number", got=v))
        for key, v in (("proximal-mu", self.proximal_mu), ("straggler-delay", self.straggler_delay),
                       ("round-timeout", self.round_timeout)):
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(MSG_RANGE.format(key=key, rule="a number >= 0", got=v))
        for key, v in (("dp-delta", self.dp_delta), ("local-delta", self.local_delta)):
            _open_open(key, v, 0.0, 1.0)
        _open_closed("secagg-shares", self.secagg_shares, 0.0, 1.0)
        _open_closed("secagg-threshold", self.secagg_threshold, 0.0, 1.0)
        if not math.isfinite(self.attack_scale):
            raise ConfigError(MSG_RANGE.format(key="attack-scale", rule="a finite number", got=self.attack_scale))
        if self.partition == "column" and not self.partition_column:
            raise ConfigError("partition 'column' needs partition-column (the column whose values define the clients)")
        if self.secagg and self.strategy not in SECAGG_STRATEGIES:
            raise ConfigError(MSG_SECAGG_STRATEGY.format(allowed=", ".join(SECAGG_STRATEGIES), got=self.strategy))
        if self.secagg and self.central_dp:
            raise ConfigError(MSG_SECAGG_CENTRAL_DP)
        if self.secagg and self.clients_per_round < 2:
            raise ConfigError(MSG_RANGE.format(key="clients per round with secagg", rule="at least 2",
                                               got=self.clients_per_round))
        if self.strategy in ("krum", "multikrum"):
            f = self.krum_f_used
            if self.clients_per_round <= 2 * f + 2:
                raise ConfigError(MSG_KRUM.format(strategy=self.strategy, m=self.clients_per_round, f=f,
                                                  need=2 * f + 3))
        if self.central_dp and self.strategy not in CENTRAL_DP_STRATEGIES:
            raise ConfigError(MSG_CENTRAL_DP_STRATEGY.format(allowed=", ".join(CENTRAL_DP_STRATEGIES),
                                                             got=self.strategy))
        if self.checks:
            from audit.spec import FAMILIES

            for name in self.audit_checks:
                if name.split(".", 1)[0] not in FAMILIES:
                    raise ConfigError(MSG_CHOICE.format(key="checks", allowed=", ".join(FAMILIES), got=name))


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(MSG_CHOICE.format(key=key, allowed=", ".join(allowed), got=value))


def _int_range(key: str, v: int, lo: int, hi: int) -> None:
    if not lo <= v <= hi:
        raise ConfigError(MSG_RANGE.format(key=key, rule=f"an integer in [{lo}, {hi}]", got=v))


def _open_closed(key: str, v: float, lo: float, hi: float) -> None:
    if not (lo < v <= hi):
        raise ConfigError(MSG_RANGE.format(key=key, rule=f"in ({lo:g}, {hi:g}]", got=v))


def _closed_open(key: str, v: float, lo: float, hi: float) -> None:
    if not (lo <= v < hi):
        raise ConfigError(MSG_RANGE.format(key=key, rule=f"in [{lo:g}, {hi:g})", got=v))


def _open_open(key: str, v: float, lo: float, hi: float) -> None:
    if not (lo < v < hi):
        raise ConfigError(MSG_RANGE.format(key=key, rule=f"in ({lo:g}, {hi:g})", got=v))


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Run-config values arrive as TOML scalars or strings; convert them to the declared type."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        rule = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")
        raise ConfigError(MSG_RANGE.format(key=key, rule=rule, got=value)) from None
