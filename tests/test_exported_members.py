"""Every package keeps an honest ``__all__``, in both directions (after httpx's tests/test_exported_members.py).

The packages are discovered, not listed, so a new package is covered the day it appears. For each:

* ``__all__`` is a list or tuple of unique strings in the order ruff's RUF022 keeps (constants,
  then classes, then the rest, each alphabetical);
* every name in it exists, and a class or function it names is defined inside the package (in
  the package itself or one of its modules), not imported from elsewhere;
* every public name the package binds is in it: a function or class defined in the project, or a
  constant the package assigns or imports from the project. A name meant for internal use only
  is given a leading underscore (or lives in a private module) instead;
* a name loaded lazily (PEP 562) is declared in the package's ``_EXPORTS`` table (name -> module),
  resolves to that module's object and is listed by ``dir()``.

A second test imports each package in a fresh interpreter: importing is cheap and changes nothing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import types

import pytest

TOP_LEVEL = ("audit", "causal", "federated", "dashboard")

# dashboard/app_pages/ holds the Streamlit page scripts that app.py hands to st.navigation: they run
# as scripts inside a Streamlit session, are not an importable API, and have no __all__ to keep.
NOT_PACKAGES = ("dashboard.app_pages",)

# Packages that are a façade over private modules and re-export each of those modules' whole
# __all__ (a public name added to one of them must reach the package).
FACADES = {
    "audit.report": ("_html", "_text", "_write"),
    "causal": ("_discover", "_effects", "_estimation", "_graph", "_scm", "_validate"),
}


def _discover() -> list[str]:
    names: list[str] = []
    for top in TOP_LEVEL:
        names.append(top)
        pkg = importlib.import_module(top)
        # walk_packages imports each package to look inside it; a package that fails to import is
        # still yielded (and then fails its own test below), so nothing is dropped silently.
        for info in pkgutil.walk_packages(pkg.__path__, f"{top}.", onerror=lambda _name: None):
            skipped = any(info.name == s or info.name.startswith(f"{s}.") for s in NOT_PACKAGES)
            if info.ispkg and not skipped:
                names.append(info.name)
    return names


PACKAGES = _discover()


def _ruf022_key(name: str) -> tuple[int, tuple[str | int, ...]]:
    """isort-style: CONSTANTS, then Classes, then the rest; digits compare as numbers (B_2 < B_10)."""
    natural = tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
    if len(name) > 1 and name.isupper():
        return (0, natural)
    if name[:1].isupper():
        return (1, natural)
    return (2, natural)


def _in_project(module: str, top: str) -> bool:
    return module == top or module.startswith(f"{top}.")


def _constant_bindings(pkg: types.ModuleType) -> set[str]:
    """Names the package's own source binds by assignment or by a ``from <project> import``.

    Constants carry no ``__module__``, so where a non-callable came from is read off the source:
    ``RENDERERS = {...}`` or ``from dashboard._settings import ENV_DATA_DIR`` count, ``from typing
    import TYPE_CHECKING`` does not.
    """
    top = pkg.__name__.partition(".")[0]
    bound: set[str] = set()
    pending = list(ast.parse(inspect.getsource(pkg)).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If | ast.Try | ast.With):  # module-level blocks, not function bodies
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)
        elif isinstance(node, ast.ImportFrom) and (node.level > 0 or _in_project(node.module or "", top)):
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return bound


def _public_bindings(pkg: types.ModuleType) -> set[str]:
    """Public names in the package namespace that are the project's, not imported third-party ones."""
    top = pkg.__name__.partition(".")[0]
    constants = _constant_bindings(pkg)
    public = set()
    for name, value in vars(pkg).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if callable(value):
            if _in_project(getattr(value, "__module__", None) or "", top):
                public.add(name)
        elif name in constants:
            public.add(name)
    return public


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_honest(name: str) -> None:
    pkg = importlib.import_module(name)
    eager = set(vars(pkg))  # before any lazy name is loaded (and cached) below

    # 1. __all__: a list or tuple of unique strings, in RUF022 order
    assert "__all__" in vars(pkg), f"{name} defines no __all__"
    exported = pkg.__all__
    assert isinstance(exported, list | tuple), f"{name}.__all__ is a {type(exported).__name__}"
    assert all(isinstance(n, str) for n in exported), f"{name}.__all__ holds a non-string"
    duplicates = sorted({n for n in exported if list(exported).count(n) > 1})
    assert not duplicates, f"{name}.__all__ repeats {duplicates}"
    assert list(exported) == sorted(exported, key=_ruf022_key), f"{name}.__all__ is not sorted (RUF022)"

    # 2. every listed name exists; classes and functions are the package's own
    lazy: dict[str, str] = getattr(pkg, "_EXPORTS", {})
    for member in exported:
        assert member in eager or member in lazy, f"{name}.__all__ names {member!r}, neither bound nor in _EXPORTS"
        assert hasattr(pkg, member), f"{name}.__all__ names {member!r} which does not exist"
        obj = getattr(pkg, member)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert _in_project(obj.__module__, name), (
                f"{name}.{member} is {obj.__module__}.{obj.__qualname__}, not defined in {name}")

    # lazily loaded names: declared, listed, the declared module's own object, visible to dir()
    assert set(lazy) <= set(exported), f"{name}._EXPORTS loads names missing from __all__: {set(lazy) - set(exported)}"
    for member, module in lazy.items():
        assert getattr(pkg, member) is getattr(importlib.import_module(module), member), f"{name}.{member}"
    missing_from_dir = set(exported) - set(dir(pkg))
    assert not missing_from_dir, f"dir({name}) does not list {sorted(missing_from_dir)}"

    # 3. the converse: nothing public is left out (checked after the lazy names are loaded)
    unlisted = _public_bindings(pkg) - set(exported)
    assert not unlisted, f"{name} exposes public names missing from __all__: {sorted(unlisted)}"

    # a façade re-exports the whole public API of its private modules
    for module_name in FACADES.get(name, ()):
        module = importlib.import_module(f"{name}.{module_name}")
        left_out = set(module.__all__) - set(exported)
        assert not left_out, f"{name}.{module_name} exports {sorted(left_out)} which {name} does not re-export"
        for member in module.__all__:
            assert getattr(pkg, member) is getattr(module, member), f"{name}.{member}"


def test_every_package_is_covered() -> None:
    """The discovery found the packages this file is known to guard (guards against an empty walk)."""
    assert {"audit", "audit.checks", "audit.privacy", "audit.report", "causal", "federated", "dashboard"} <= set(
        PACKAGES)
    assert not any(p.startswith("dashboard.app_pages") for p in PACKAGES)


# Libraries no package may import at import time: they are loaded by the functions that use them.
HEAVY = ("causallearn", "dowhy", "flwr", "onnxruntime", "opacus", "ray", "shap", "skops", "streamlit", "torch")
# These packages (and the CLI plugins they ship) load nothing third-party at all: the CLI imports
# them to add its sub-commands, so `trustaudit --help` stays fast.
STDLIB_ONLY = ("causal", "federated", "federated._compat")
DATA_STACK = ("networkx", "numpy", "pandas", "pydantic", "scipy", "sklearn")


@pytest.mark.parametrize("name", PACKAGES)
def test_importing_is_light_and_side_effect_free(name: str) -> None:
    forbidden = HEAVY + (DATA_STACK if name in STDLIB_ONLY else ())
    code = (
        "import importlib, json, os, sys\n"
        "env = dict(os.environ)\n"
        f"importlib.import_module({name!r})\n"
        f"loaded = sorted(m for m in {forbidden!r} if m in sys.modules)\n"
        "print(json.dumps({'loaded': loaded, 'environ_changed': dict(os.environ) != env}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTAUDIT_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    assert out.stderr == "", f"importing {name} wrote to stderr: {out.stderr.strip()[:300]}"
    lines = out.stdout.splitlines()
    assert len(lines) == 1, f"importing {name} printed: {lines[:-1]}"
    assert json.loads(lines[0]) == {"loaded": [], "environ_changed": False}, f"import {name}: {lines[0]}"


def test_the_cli_plugins_stay_light() -> None:
    """The CLI imports each family's command module to build its parser; none pulls heavy libraries."""
    forbidden = (*HEAVY, "networkx", "scipy.stats")
    code = ("import sys, causal.cli_commands, federated.cli_commands; "
            f"print(sorted(m for m in {forbidden!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
