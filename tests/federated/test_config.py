"""The run config: one set of settings for `flwr run` and the CLI; validated with exact messages."""

from __future__ import annotations

import io
import tomllib
import zipfile
from pathlib import Path

import pytest

import federated
from audit.exceptions import ConfigError
from federated import FederatedConfig

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_and_coercion() -> None:
    cfg = FederatedConfig.from_mapping({"num-clients": "12", "fraction-train": "0.5", "secagg": "true",
                                        "strategy": "fedprox", "sensitive": "sex"})
    assert (cfg.num_clients, cfg.fraction_train, cfg.secagg, cfg.clients_per_round) == (12, 0.5, True, 6)
    assert FederatedConfig.from_mapping(cfg.to_run_config()) == cfg
    assert set(cfg.to_run_config()) == set(FederatedConfig.keys())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"strategy": "fedfoo"},
         "strategy must be one of fedavg, fedprox, fedadam, fedyogi, fedmedian, fedtrimmedavg, krum, multikrum; "
         "got 'fedfoo'"),
        ({"alpha": 0}, "alpha must be greater than 0 (the Dirichlet concentration); got 0.0"),
        ({"alpha": -0.5}, "alpha must be greater than 0 (the Dirichlet concentration); got -0.5"),
        ({"model": "cnn"}, "model must be one of logreg, mlp; got 'cnn'"),
        ({"num-clients": "many"}, "num-clients must be an integer; got 'many'"),
        ({"dropout": 1.0}, "dropout must be in [0, 1); got 1.0"),
        ({"secagg": True, "strategy": "krum"},
         "secagg hides individual updates, so the strategy must aggregate by a mean: one of fedavg, fedprox; "
         "got 'krum'"),
        ({"secagg": True, "central-dp": True},
         "secagg and central-dp cannot be combined: server-side clipping needs the individual updates that "
         "secure aggregation hides; use local-dp with secagg"),
        ({"central-dp": True, "strategy": "fedmedian"},
         "central-dp accounts for a uniform mean of clipped updates, so the strategy must be one of fedavg, "
         "fedprox; got 'fedmedian'"),
        ({"strategy": "krum", "num-clients": 6, "malicious": 0.34, "krum-f": 2},
         "krum tolerates f malicious clients only with more than 2f + 2 clients per round; f = 2 needs at least 7, "
         "got 6"),
        ({"partition": "column"},
         "partition 'column' needs partition-column (the column whose values define the clients)"),
        ({"rounds": 3}, None),
    ],
)
def test_bad_settings_have_exact_messages(raw: dict, message: str | None) -> None:
    with pytest.raises(ConfigError) as e:
        FederatedConfig.from_mapping(raw)
    if message is None:  # unknown key: the message lists every allowed key
        assert str(e.value).startswith("unknown federated setting 'rounds'; allowed: num-clients, num-rounds,")
    else:
        assert str(e.value) == message
    assert e.value.exit_code == 2


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        # the allowed range in each message is written from the field's pydantic declaration
        ({"num-clients": 0}, "num-clients must be an integer in [1, 100000]; got 0"),
        ({"seed": -1}, "seed must be an integer in [0, 4294967295]; got -1"),
        ({"fraction-train": "0"}, "fraction-train must be in (0, 1]; got 0.0"),
        ({"trim-beta": 0.5}, "trim-beta must be in [0, 0.5); got 0.5"),
        ({"dp-delta": 1}, "dp-delta must be in (0, 1); got 1.0"),
        ({"val-fraction": "nan"}, "val-fraction must be in [0, 1); got nan"),
        ({"lr": "inf"}, "lr must be a positive number; got inf"),
        ({"noise-multiplier": 0}, "noise-multiplier must be a positive number; got 0.0"),
        ({"proximal-mu": -1}, "proximal-mu must be a number >= 0; got -1.0"),
        ({"attack-scale": "-inf"}, "attack-scale must be a finite number; got -inf"),
        ({"attack": "poison"}, "attack must be one of label-flip, scale; got 'poison'"),
        ({"secagg": "maybe"}, "secagg must be true or false; got 'maybe'"),
        # rules between settings (pydantic model validators)
        ({"holdout-fraction": 0.5, "test-fraction": 0.4}, "holdout-fraction + test-fraction must be below 0.9; got 0.9"),
        ({"secagg": True, "num-clients": 1}, "clients per round with secagg must be at least 2; got 1"),
        ({"strategy": "multikrum", "num-clients": 4, "krum-f": 1},
         "multikrum tolerates f malicious clients only with more than 2f + 2 clients per round; f = 1 needs at least 5, "
         "got 4"),
    ],
)
def test_declared_ranges_and_rules_have_exact_messages(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        FederatedConfig.from_mapping(raw)
    assert str(e.value) == message


def test_unknown_check_family_lists_the_registered_ones() -> None:
    from audit.registry import family_names

    with pytest.raises(ConfigError) as e:
        FederatedConfig.from_mapping({"checks": "fairness,bogus.x"})
    assert str(e.value) == f"checks must be one of {', '.join(family_names())}; got 'bogus.x'"


def test_validate_checks_a_directly_built_config() -> None:
    """Building a config does not validate it; validate() does, types included, and replace() too."""
    cfg = FederatedConfig(num_clients=2.5, model="cnn")
    with pytest.raises(ConfigError) as e:  # fields in declaration order: num-clients comes first
        cfg.validate()
    assert str(e.value) == "num-clients must be an integer in [1, 100000]; got 2.5"
    with pytest.raises(ConfigError, match=r"^central-dp must be true or false; got 'yes'$"):
        FederatedConfig(central_dp="yes").validate()
    with pytest.raises(ConfigError, match=r"^positive-label must be text; got 1$"):
        FederatedConfig(positive_label=1).validate()
    with pytest.raises(ConfigError, match=r"^dropout must be in \[0, 1\); got 1.5$"):
        FederatedConfig().replace(dropout=1.5)
    FederatedConfig().validate()  # the defaults are valid
    # a bad field is reported before a rule between settings
    with pytest.raises(ConfigError, match=r"^dropout must be in"):
        FederatedConfig(dropout=1.0, holdout_fraction=0.5, test_fraction=0.5).validate()


def test_constraints_are_pydantic_declarations() -> None:
    """The bounds live on the fields: pydantic's JSON schema of the config shows them."""
    from pydantic import TypeAdapter

    props = TypeAdapter(FederatedConfig).json_schema()["properties"]
    assert (props["dropout"]["minimum"], props["dropout"]["exclusiveMaximum"]) == (0, 1)
    assert (props["num_clients"]["minimum"], props["num_clients"]["maximum"]) == (1, 100_000)
    assert props["strategy"]["enum"] == list(federated.STRATEGIES)
    assert props["fraction_train"]["exclusiveMinimum"] == 0 and props["fraction_train"]["maximum"] == 1


def test_pyproject_flower_app_matches_the_config() -> None:
    """`flwr run` reads these tables: every key is a FederatedConfig setting and the defaults agree."""
    flwr = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]
    assert flwr["app"]["components"] == {"serverapp": "federated.server_app:app",
                                         "clientapp": "federated.client_app:app"}
    table = flwr["app"]["config"]
    assert list(table) == list(FederatedConfig.keys())
    cfg = FederatedConfig.from_mapping(table)
    assert cfg == FederatedConfig(output_dir="trustaudit-federated")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flower_validates_the_app_and_builds_its_fab() -> None:
    """Flower's own checks: components import and are apps; the FAB holds the packages."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate

    _, warnings = load_and_validate(ROOT / "pyproject.toml", check_module=True)
    assert warnings == []
    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(ROOT))).namelist()
    for needed in ("federated/server_app.py", "federated/client_app.py", "audit/io.py", "audit/model.py"):
        assert needed in names


def test_exported_members_exist() -> None:
    for name in federated.__all__:
        assert hasattr(federated, name), name
    import federated.client_app as ca
    import federated.export as ex
    import federated.partition as pa
    import federated.server_app as sa

    for mod in (ca, ex, pa, sa):
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_importing_the_package_loads_neither_torch_nor_flower() -> None:
    """The trustaudit CLI imports federated.cli_commands at start-up: it must stay light."""
    import subprocess
    import sys

    code = ("import sys, federated, federated.cli_commands; "
            "print(*(m in sys.modules for m in ('torch', 'flwr', 'ray', 'matplotlib', 'opacus')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False"] * 5
