"""Built-in checks. Importing this package registers them (the registry does it lazily).

Check modules import heavy libraries (shap, torch, dowhy...) inside the check functions, so that
registering checks stays cheap.
"""

from __future__ import annotations

import importlib
import importlib.util

_CHECK_MODULES = (
    "audit.checks.fairness",
    "audit.checks.explain",
    "audit.checks.privacy",
    "causal.checks",
)

for _name in _CHECK_MODULES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)
