"""``causal.__all__`` is honest: everything listed exists, everything public is listed."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import causal

PRIVATE_MODULES = ("_discover", "_effects", "_estimation", "_graph", "_scm", "_validate")


def test_all_lists_exactly_the_public_names() -> None:
    for name in causal.__all__:
        assert getattr(causal, name) is not None, name
    assert set(causal.__all__) == set(causal._EXPORTS)
    assert len(causal.__all__) == len(set(causal.__all__))
    # every public name a private module exports is re-exported
    for mod_name in PRIVATE_MODULES:
        mod = importlib.import_module(f"causal.{mod_name}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or name.isupper():
                assert name in causal.__all__, f"causal.{mod_name}.{name} is not re-exported"


def test_importing_the_cli_plugin_stays_light() -> None:
    code = ("import sys, causal, causal.cli_commands; "
            "print(any(m in sys.modules for m in ('dowhy', 'networkx', 'causallearn', 'scipy.stats')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
