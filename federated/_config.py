"""The configuration of a federated run, validated once at the boundary.

One flat set of settings serves both ways of running the app: it is the ``[tool.flwr.app.config]``
table that ``flwr run`` reads (kebab-case keys, scalar values) and the flags of
``trustaudit federated simulate`` (the same names with ``--``). :class:`FederatedConfig` holds
them with Python names; :meth:`FederatedConfig.from_mapping` validates a run config and
:meth:`FederatedConfig.to_run_config` writes one back, so the ServerApp sees identical settings
whichever way it was started.

The allowed values are declared on the fields (pydantic ``Field`` bounds and ``Literal`` choices)
and the rules between settings are pydantic model validators; :meth:`FederatedConfig.validate`
runs them through a ``TypeAdapter``. Error messages name the setting (its flag name), what is
allowed and what came; the fixed ones are module constants so tests can assert them verbatim.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, model_validator, with_config

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
Strategy = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg", "krum", "multikrum"]
STRATEGIES: tuple[str, ...] = typing.get_args(Strategy)
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
Model = Literal["logreg", "mlp"]
MODELS: tuple[str, ...] = typing.get_args(Model)
Partition = Literal["iid", "dirichlet", "column", "quantity"]
PARTITIONS: tuple[str, ...] = typing.get_args(Partition)
Attack = Literal["label-flip", "scale"]
ATTACKS: tuple[str, ...] = typing.get_args(Attack)

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
MSG_PARTITION_COLUMN = "partition 'column' needs partition-column (the column whose values define the clients)"

# Declared value ranges (pydantic Field constraints); the error message is written from them.
Fraction = Annotated[float, Field(ge=0, lt=1)]  # a share in [0, 1)
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(gt=0, lt=1)]  # a DP delta, in (0, 1)
Share = Annotated[float, Field(gt=0, le=1)]  # in (0, 1]


@with_config(ConfigDict(strict=True, revalidate_instances="always"))
@dataclass(frozen=True)
class FederatedConfig:
    """Every setting of a federated run (see ``docs/federated.md`` for the meaning of each).

    Constructing one does not validate it; :meth:`validate` (called by :meth:`from_mapping` and
    :meth:`replace`) checks each field's declared range or choices and the rules between
    settings, and raises :class:`ConfigError` with one line on the first bad setting.
    """

    # federation
    num_clients: Annotated[int, Field(ge=1, le=100_000)] = 10
    num_rounds: Annotated[int, Field(ge=1, le=100_000)] = 5
    fraction_train: Share = 1.0
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    # data ("" = the ground-truth lending generator)
    data: str = ""
    target: str = "approved"
    positive_label: str = "1"
    sensitive: str = "sex,age_group"
    exclude_features: str = ""
    n_rows: Annotated[int, Field(ge=10, le=10_000_000)] = 8000
    holdout_fraction: Fraction = 0.2
    test_fraction: Fraction = 0.2
    # partitioning
    partition: Partition = "iid"
    alpha: Positive = 0.5
    partition_column: str = ""
    min_partition_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    val_fraction: Fraction = 0.2
    # model and local training
    model: Model = "logreg"
    hidden: Annotated[int, Field(ge=1, le=4096)] = 32
    local_epochs: Annotated[int, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    lr: Positive = 0.1
    # aggregation
    strategy: Strategy = "fedavg"
    proximal_mu: NonNegative = 0.1
    server_lr: Positive = 0.1
    trim_beta: Annotated[float, Field(ge=0, lt=0.5)] = 0.2
    krum_f: Annotated[int, Field(ge=-1, le=100_000)] = -1
    # central DP (server-side fixed clipping)
    central_dp: bool = False
    noise_multiplier: Positive = 1.0
    clip_norm: Positive = 1.0
    dp_delta: Probability = 1e-5
    # local DP (DP-SGD in each client, Opacus)
    local_dp: bool = False
    local_noise: Positive = 1.0
    local_clip: Positive = 1.0
    local_delta: Probability = 1e-5
    # secure aggregation (SecAgg+)
    secagg: bool = False
    secagg_shares: Share = 1.0
    secagg_threshold: Share = 0.5
    secagg_clip_range: Positive = 8.0
    secagg_quant_range: Annotated[int, Field(ge=2, le=2**31)] = 2**22
    # faults and adversaries
    dropout: Fraction = 0.0
    stragglers: Fraction = 0.0
    straggler_delay: NonNegative = 5.0
    round_timeout: NonNegative = 0.0
    malicious: Fraction = 0.0
    attack: Attack = "label-flip"
    attack_scale: Annotated[float, Field(allow_inf_nan=False)] = -4.0
    # evaluation and outputs
    evaluate_every: Annotated[int, Field(ge=0, le=100_000)] = 0
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
        try:
            _adapter().validate_python(self)
        except ValidationError as exc:
            raise ConfigError(_message(exc)) from None

    # The rules between settings (pydantic runs them once every field is valid, in this order).

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> FederatedConfig:
        if self.holdout_fraction + self.test_fraction >= 0.9:
            raise ValueError(MSG_RANGE.format(key="holdout-fraction + test-fraction", rule="below 0.9",
                                              got=self.holdout_fraction + self.test_fraction))
        return self

    @model_validator(mode="after")
    def _column_partition_names_its_column(self) -> FederatedConfig:
        if self.partition == "column" and not self.partition_column:
            raise ValueError(MSG_PARTITION_COLUMN)
        return self

    @model_validator(mode="after")
    def _secagg_fits_the_run(self) -> FederatedConfig:
        if self.secagg and self.strategy not in SECAGG_STRATEGIES:
            raise ValueError(MSG_SECAGG_STRATEGY.format(allowed=", ".join(SECAGG_STRATEGIES), got=self.strategy))
        if self.secagg and self.central_dp:
            raise ValueError(MSG_SECAGG_CENTRAL_DP)
        if self.secagg and self.clients_per_round < 2:
            raise ValueError(MSG_RANGE.format(key="clients per round with secagg", rule="at least 2",
                                              got=self.clients_per_round))
        return self

    @model_validator(mode="after")
    def _krum_has_enough_clients(self) -> FederatedConfig:
        if self.strategy in ("krum", "multikrum"):
            f = self.krum_f_used
            if self.clients_per_round <= 2 * f + 2:
                raise ValueError(MSG_KRUM.format(strategy=self.strategy, m=self.clients_per_round, f=f,
                                                 need=2 * f + 3))
        return self

    @model_validator(mode="after")
    def _central_dp_strategy(self) -> FederatedConfig:
        if self.central_dp and self.strategy not in CENTRAL_DP_STRATEGIES:
            raise ValueError(MSG_CENTRAL_DP_STRATEGY.format(allowed=", ".join(CENTRAL_DP_STRATEGIES),
                                                            got=self.strategy))
        return self

    @model_validator(mode="after")
    def _checks_are_known_families(self) -> FederatedConfig:
        if self.checks:
            from audit.registry import family_names

            families = family_names()
            for name in self.audit_checks:
                if name.split(".", 1)[0] not in families:
                    raise ValueError(MSG_CHOICE.format(key="checks", allowed=", ".join(families), got=name))
        return self


@functools.cache
def _adapter() -> TypeAdapter[FederatedConfig]:
    """The pydantic validator of a config, built once on first use."""
    return TypeAdapter(FederatedConfig)


#: Per-setting messages that say more than the range (``alpha`` is also checked in partition.py).
_FIELD_MESSAGES = {"alpha": MSG_ALPHA}


@functools.cache
def _allowed(name: str) -> str:
    """What a setting allows, in words, written from its declaration: its choices or its range."""
    hint = typing.get_type_hints(FederatedConfig, include_extras=True)[name]
    if typing.get_origin(hint) is Literal:
        return ", ".join(typing.get_args(hint))
    base, bounds = hint, {}
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        for constraint in (m for e in extras for m in getattr(e, "metadata", [e])):
            bounds.update({k: getattr(constraint, k) for k in ("ge", "gt", "le", "lt")
                           if getattr(constraint, k, None) is not None})
    if base is bool:
        return "true or false"
    if base is int:
        return f"an integer in [{bounds['ge']}, {bounds['le']}]" if {"ge", "le"} <= bounds.keys() else "an integer"
    if base is not float:
        return "text"
    low = f"[{bounds['ge']:g}" if "ge" in bounds else f"({bounds['gt']:g}" if "gt" in bounds else None
    high = f"{bounds['le']:g}]" if "le" in bounds else f"{bounds['lt']:g})" if "lt" in bounds else None
    if low and high:
        return f"in {low}, {high}"
    if low == "(0":
        return "a positive number"
    if low == "[0":
        return "a number >= 0"
    return "a finite number"


def _message(exc: ValidationError) -> str:
    """The first error as one line: the setting's flag name, what is allowed, what came."""
    err = exc.errors()[0]
    if not err["loc"]:  # a rule between settings: its message is the line
        msg = err["msg"]
        return msg.removeprefix("Value error, ")
    name = str(err["loc"][0])
    got = err.get("input")
    if name in _FIELD_MESSAGES:
        return _FIELD_MESSAGES[name].format(got=got)
    hint = typing.get_type_hints(FederatedConfig, include_extras=True)[name]
    key = name.replace("_", "-")
    if typing.get_origin(hint) is Literal:
        return MSG_CHOICE.format(key=key, allowed=_allowed(name), got=got)
    return MSG_RANGE.format(key=key, rule=_allowed(name), got=got)


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
