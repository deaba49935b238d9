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
