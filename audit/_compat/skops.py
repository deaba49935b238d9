"""skops: importing ``skops.io`` without importing torch.

What it bypasses: at import, ``skops.io`` lists scikit-learn's estimators
(``sklearn.utils.all_estimators``) to build its trusted types. That walks every scikit-learn
sub-package with ``pkgutil.walk_packages``, which imports each package to find its children — among
them ``sklearn.externals.array_api_compat.torch``, which imports torch when torch is installed
(it is: trustaudit audits torch models). ``all_estimators`` then ignores everything under
``externals``; the import only cost time: torch's import is most of loading a skops model in a
fresh process, and every CLI audit and worker job pays
it before the first check.

The fast path imports ``skops.io`` with a placeholder module, with no ``__path__``, standing in
for ``sklearn.externals.array_api_compat.torch`` for the duration of that one import, so the walk
does not descend into it; the placeholder is removed afterwards (a later real import of the
module loads it normally). The trusted types come out the same (tested against the public import,
in fresh processes). Nothing is done when torch is already imported, or when the module is.

Off switch: ``TRUSTAUDIT_COMPAT_SKOPS=0`` (or ``false``/``off``/``no``) — a plain
``import skops.io``, as when the installed skops is outside ``SUPPORTED``.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

from audit._compat import _gate

__all__ = ["SUPPORTED", "enabled", "import_skops_io", "installed_version"]

#: skops versions whose import was checked: lower <= version < upper
SUPPORTED = ("0.16", "0.17")
_SKIPPED = "sklearn.externals.array_api_compat.torch"
_LOCK = threading.Lock()


def installed_version() -> str | None:
    return _gate.installed_version("skops")


def enabled() -> bool:
    return _gate.enabled("skops", installed_version(), SUPPORTED)


def import_skops_io() -> Any:
    """``skops.io``, imported without importing torch when the fast path is on."""
    if "skops.io" in sys.modules or not enabled() or "torch" in sys.modules or _SKIPPED in sys.modules:
        return importlib.import_module("skops.io")
    with _LOCK:
        if "skops.io" in sys.modules:
            return sys.modules["skops.io"]
        placeholder = types.ModuleType(_SKIPPED, "placeholder: not walked while skops lists estimators")
        sys.modules[_SKIPPED] = placeholder
        try:
            return importlib.import_module("skops.io")
        finally:
            if sys.modules.get(_SKIPPED) is placeholder:
                del sys.modules[_SKIPPED]
            parent = sys.modules.get(_SKIPPED.rsplit(".", 1)[0])
            if parent is not None and getattr(parent, "torch", None) is placeholder:
                delattr(parent, "torch")
