"""The spine's own check families. Importing this package registers them (the registry does it
lazily, then loads the families other packages declare in the ``trustaudit.checks`` entry-point
group: trustaudit's causal family, and any plugin).

Check modules import heavy libraries (shap, torch, dowhy...) inside the check functions, so that
registering checks stays cheap.
"""

from __future__ import annotations

import importlib

__all__: list[str] = []

for _name in ("fairness", "explain", "privacy"):  # registration order is the reports' order
    importlib.import_module(f"{__name__}.{_name}")
