"""Every public package keeps an honest __all__ (like httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["audit", "audit.results", "audit.spec", "audit.registry", "audit.runner", "audit.io", "audit.model",
            "audit.exceptions", "audit.store", "audit.report", "audit.datasets", "causal", "federated", "dashboard"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_honest(name):
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            pytest.skip(f"{name} not present")
        raise
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported)
    for member in exported:
        assert hasattr(mod, member), f"{name}.__all__ names {member!r} which does not exist"
    if name in ("audit", "causal", "federated"):
        public = {n for n, v in vars(mod).items() if not n.startswith("_") and not isinstance(v, type(importlib))
                  and getattr(v, "__module__", "").startswith(name)}
        assert public <= set(exported), f"{name} exposes names missing from __all__: {public - set(exported)}"
