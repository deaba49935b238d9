"""The version gate and the off switch shared by the compatibility modules.

A compatibility module's fast path runs only when (1) its environment switch
``TRUSTAUDIT_COMPAT_<PACKAGE>`` is not set to an "off" value (``0``, ``false``, ``off``, ``no``)
and (2) the installed distribution's version lies in the module's ``SUPPORTED`` range
(``lower <= version < upper``). Both are read when asked, never at import.
"""

from __future__ import annotations

import functools
import os
import re

__all__ = ["OFF_VALUES", "enabled", "env_var", "in_range", "installed_version", "switch_on"]

OFF_VALUES = frozenset({"0", "false", "off", "no"})


def env_var(package: str) -> str:
    """The name of a package's off switch: ``TRUSTAUDIT_COMPAT_<PACKAGE>`` (upper case)."""
    return "TRUSTAUDIT_COMPAT_" + re.sub(r"[^A-Za-z0-9]", "_", package).upper()


def switch_on(package: str) -> bool:
    """False when the package's switch is set to an off value; unset or anything else means on."""
    return os.environ.get(env_var(package), "").strip().lower() not in OFF_VALUES


@functools.cache
def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (None if it is not installed).

    Cached: the fast paths ask per call (Opacus per optimiser step) and a metadata lookup walks
    ``sys.path``; an installation does not change under a running process.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _release(v: str) -> tuple[int, ...]:
    """The numeric release part of a version string, for when ``packaging`` is not installed."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", v)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def in_range(version: str | None, supported: tuple[str, str]) -> bool:
    """``lower <= version < upper`` for ``supported = (lower, upper)``; False for no version.

    Pre-releases and local versions (``2.13.0+cpu``) compare by their release number (a
    ``0.52.0rc1`` is not in ``("0.51", "0.52")``: it is a different line).
    """
    if not version:
        return False
    lower, upper = supported
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with pip / setuptools environments
        rel = _release(version)
        return bool(rel) and _release(lower) <= rel < _release(upper)
    try:
        v = Version(version)
    except InvalidVersion:
        return False
    return Version(lower) <= Version(v.base_version) < Version(upper)


def enabled(package: str, version: str | None, supported: tuple[str, str]) -> bool:
    """The switch is on and ``version`` is in the supported range."""
    return switch_on(package) and in_range(version, supported)
