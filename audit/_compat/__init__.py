"""Compatibility modules: the only places that rely on a library's internals or on how one
library version behaves, each gated on the versions it was tested against.

Every module has a ``SUPPORTED = (lower, upper)`` version range (``lower <= version < upper``),
an ``enabled()`` function, the fast path and a fallback through the library's public API that
gives the same results (tested in tests/audit/test_compat.py). The fast path is used only when
the installed version is in range and the module's switch is not off: set
``TRUSTAUDIT_COMPAT_<PACKAGE>=0`` (or ``false``/``off``/``no``) to force the public path. Nothing
here changes global state at import.

Filled in as the modules move here; see each module's docstring for what it bypasses.
"""

__all__: list[str] = []
