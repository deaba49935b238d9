"""scikit-learn: which input columns each transformer of a fitted ColumnTransformer reads.

What it bypasses: the fitted ColumnTransformer's private ``_transformer_to_input_indices``
(``{name: [input column indices]}``, with ``"remainder"``), the resolution scikit-learn itself
used while fitting. The public fallback computes the same dictionary from ``transformers_``, whose
column specifications are the resolved ones (callables and ``make_column_selector`` already
applied): column names (against ``feature_names_in_``), integers (negative ones counted from the
end), slices (label slices include their stop, integer slices do not), boolean masks; the
remainder is every input column no other transformer reads. The two agree on every specification
tested; the private dictionary is kept, when the scikit-learn line is the tested one, for
exactness on specifications the public resolution does not recognise (it then raises
``ValueError``), not for speed (both take microseconds).

Off switch: ``TRUSTAUDIT_COMPAT_SKLEARN=0`` (or ``false``/``off``/``no``) — the public
computation is used, as it is when the installed scikit-learn is outside ``SUPPORTED``.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np

from audit._compat import _gate

__all__ = ["SUPPORTED", "enabled", "installed_version", "transformer_input_indices"]

#: scikit-learn versions the private attribute was checked against: lower <= version < upper
SUPPORTED = ("1.9", "1.10")


def installed_version() -> str | None:
    return _gate.installed_version("scikit-learn")


def enabled() -> bool:
    """The private dictionary is read: the switch is on and scikit-learn is in ``SUPPORTED``."""
    return _gate.enabled("sklearn", installed_version(), SUPPORTED)


def transformer_input_indices(ct: Any) -> dict[str, list[int]]:
    """``{transformer name: input column indices}`` of a fitted ColumnTransformer, ``"remainder"``
    included (empty when no column is left). Raises ``ValueError`` when a column specification
    cannot be resolved (the public path) or the transformer is not fitted."""
    if enabled():
        private = getattr(ct, "_transformer_to_input_indices", None)
        if isinstance(private, dict):
            return {str(k): [int(i) for i in v] for k, v in private.items()}
    return _public_indices(ct)


def _public_indices(ct: Any) -> dict[str, list[int]]:
    fitted = getattr(ct, "transformers_", None)
    n = getattr(ct, "n_features_in_", None)
    if fitted is None or n is None:
        raise ValueError("the ColumnTransformer is not fitted")
    raw_names = getattr(ct, "feature_names_in_", None)
    names = None if raw_names is None else [str(c) for c in raw_names]
    out: dict[str, list[int]] = {}
    for name, _trans, cols in fitted:
        out[str(name)] = _resolve(cols, int(n), names, str(name))
    used = {i for k, v in out.items() if k != "remainder" for i in v}
    out["remainder"] = sorted(set(range(int(n))) - used)
    return out


def _kind(value: Any) -> str | None:
    """'str', 'int' or 'bool' for one column key element (None for None)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, str):
        return "str"
    raise ValueError(f"unsupported column key element {value!r}")


def _resolve(cols: Any, n: int, names: list[str] | None, owner: str) -> list[int]:
    """Input column indices selected by one resolved column specification."""

    def by_name(keys: list[Any]) -> list[int]:
        if names is None:
            raise ValueError(f"transformer {owner!r} selects columns by name but no input names are known")
        try:
            return [names.index(str(k)) for k in keys]
        except ValueError:
            raise ValueError(f"transformer {owner!r} selects a column that is not an input: {keys}") from None

    def positional(key: Any) -> list[int]:
        try:
            return np.atleast_1d(np.arange(n)[key]).astype(int).tolist()
        except IndexError:
            raise ValueError(f"transformer {owner!r} selects a column outside [0, {n})") from None

    if callable(cols):
        raise ValueError(f"transformer {owner!r} has an unresolved callable column selector")
    if isinstance(cols, slice):
        if cols.step not in (1, None):
            raise ValueError(f"transformer {owner!r} uses a slice with a step")
        kinds = {_kind(cols.start), _kind(cols.stop)} - {None}
        if kinds == {"str"}:
            start = None if cols.start is None else by_name([cols.start])[0]
            stop = n + 1 if cols.stop is None else by_name([cols.stop])[0] + 1  # label slices include the stop
            return list(islice(range(n), start, stop))
        if kinds <= {"int"}:
            return list(range(n))[cols]
        raise ValueError(f"transformer {owner!r} uses a slice mixing names and positions")
    if isinstance(cols, (str, int, np.integer, np.str_)) and not isinstance(cols, (bool, np.bool_)):
        return by_name([cols]) if _kind(cols) == "str" else positional(int(cols))
    if hasattr(cols, "dtype") and not isinstance(cols, (list, tuple)):
        arr = np.asarray(cols)
        if arr.ndim != 1:
            raise ValueError(f"transformer {owner!r} has a column specification that is not one-dimensional")
        if arr.dtype.kind == "b":
            if len(arr) != n:
                raise ValueError(f"transformer {owner!r} has a boolean mask of {len(arr)} for {n} columns")
            return np.flatnonzero(arr).astype(int).tolist()
        if arr.dtype.kind in "iu":
            return positional(arr)
        if arr.dtype.kind in "OUS":
            return by_name(arr.tolist()) if len(arr) else []
        raise ValueError(f"transformer {owner!r} has a column specification of dtype {arr.dtype}")
    if isinstance(cols, (list, tuple)):
        if not cols:
            return []
        kinds = {_kind(c) for c in cols}
        if kinds == {"str"}:
            return by_name(list(cols))
        if kinds == {"int"}:
            return positional(np.asarray([int(c) for c in cols]))
        if kinds == {"bool"}:
            if len(cols) != n:
                raise ValueError(f"transformer {owner!r} has a boolean mask of {len(cols)} for {n} columns")
            return [i for i, b in enumerate(cols) if b]
        raise ValueError(f"transformer {owner!r} mixes column names, positions and flags")
    raise ValueError(f"transformer {owner!r} has an unsupported column specification {type(cols).__name__}")
