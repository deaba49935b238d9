"""The check registry: checks are plain functions registered under a dotted name.

    @register_check("fairness.group_metrics", family="fairness", applies=needs_sensitive_features)
    def group_metrics(ctx: AuditContext) -> CheckResult: ...

Names are ``family.name`` (lowercase, digits, underscores); a name registered twice is refused.
``applies`` is a predicate on the context that returns ``None`` when the check applies, or a
sentence saying what to provide for it to run (the check is then SKIPPED with that sentence).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.context import AuditContext, Intermediate
    from audit.results import CheckResult

__all__ = [
    "CheckInfo",
    "all_of",
    "get_check",
    "iter_checks",
    "needs_holdout",
    "needs_sensitive_features",
    "needs_torch_model",
    "needs_train",
    "register_check",
    "unknown_selection",
    "unregister_check",
]

CheckFunc = "Callable[[AuditContext], CheckResult]"
Applies = Callable[["AuditContext"], "str | None"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")


@dataclass(frozen=True)
class CheckInfo:
    check_id: str
    family: str
    func: Callable[[AuditContext], CheckResult]
    applies: Applies | None
    description: str
    #: shared intermediates the check reads (``ctx.get``): checks sharing one run in one lane
    needs: tuple[Intermediate[Any], ...] = ()

    def shares(self) -> tuple[str, ...]:
        """Names of every intermediate the check reaches, directly or through ``needs``."""
        return tuple(dict.fromkeys(n for item in self.needs for n in item.closure()))

    def skip_reason(self, ctx: AuditContext) -> str | None:
        return None if self.applies is None else self.applies(ctx)


_REGISTRY: dict[str, CheckInfo] = {}


def register_check(
    check_id: str,
    *,
    family: str,
    applies: Applies | None = None,
    description: str = "",
    needs: Iterable[Intermediate[Any]] = (),
) -> Callable[[Callable[[AuditContext], CheckResult]], Callable[[AuditContext], CheckResult]]:
    """Decorator registering a check; refuses bad names and duplicates (ValueError)."""
    if not _NAME.match(check_id):
        raise ValueError(
            f"check name {check_id!r} must be 'family.name' in lowercase letters, digits and _"
        )
    if check_id.split(".", 1)[0] != family:
        raise ValueError(f"check name {check_id!r} must start with its family {family!r}")

    def decorator(
        func: Callable[[AuditContext], CheckResult],
    ) -> Callable[[AuditContext], CheckResult]:
        if check_id in _REGISTRY:
            raise ValueError(f"check {check_id!r} is already registered")
        doc = description or (func.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[check_id] = CheckInfo(check_id, family, func, applies, doc, tuple(needs))
        return func

    return decorator


def unregister_check(check_id: str) -> None:
    """Remove a check (tests that register temporary checks use this)."""
    _REGISTRY.pop(check_id, None)


def _load_builtin_checks() -> None:
    import audit.checks  # noqa: F401  (registers the built-in checks)


def iter_checks(selection: Iterable[str] | None = None) -> list[CheckInfo]:
    """Registered checks in registration order; ``selection`` holds families or check ids."""
    _load_builtin_checks()
    checks = list(_REGISTRY.values())
    if selection is None:
        return checks
    wanted = tuple(selection)
    return [c for c in checks if c.family in wanted or c.check_id in wanted]


def unknown_selection(selection: Iterable[str], families: Iterable[str] = ()) -> str | None:
    """``None`` when every name in ``selection`` is a registered check id or a family (registered,
    or listed in ``families``); otherwise one line naming each unknown name and the closest
    registered ids and families (``difflib.get_close_matches``; a dotted name is compared with the
    check ids first, a plain one with the families; an unknown check of a known family lists that
    family's checks when none is close). The spec validates its ``checks``
    with this once, at the boundary: a name that selects nothing is bad input, not an empty audit.
    """
    _load_builtin_checks()
    ids = list(_REGISTRY)
    fams = list(dict.fromkeys([*families, *(c.family for c in _REGISTRY.values())]))
    known = set(ids) | set(fams)
    parts = []
    for name in dict.fromkeys(selection):
        if name in known:
            continue
        dotted = "." in name
        kind = "check" if dotted else "check family"
        # a dotted name is compared with check ids, a plain one with families, then the other set
        first, second = (ids, fams) if dotted else (fams, ids)
        close = (difflib.get_close_matches(name, first, n=3, cutoff=0.6)
                 or difflib.get_close_matches(name, second, n=3, cutoff=0.6))
        fam = name.split(".", 1)[0]
        if dotted and fam in fams and not any(c.startswith(fam + ".") for c in close):
            close = [i for i in ids if i.startswith(fam + ".")]  # a known family: its own checks
        hint = f"closest: {', '.join(close)}" if close else f"no close match; families: {', '.join(fams)}"
        parts.append(f"unknown {kind} {name!r}; {hint}")
    return "; ".join(parts) or None


def get_check(check_id: str) -> CheckInfo:
    _load_builtin_checks()
    try:
        return _REGISTRY[check_id]
    except KeyError:
        raise KeyError(f"no check registered as {check_id!r}") from None


# --- applicability predicates ---------------------------------------------------------------


def needs_sensitive_features(ctx: AuditContext) -> str | None:
    if not ctx.sensitive_features:
        return "no sensitive features given: name them with --sensitive or data.sensitive"
    return None


def needs_train(ctx: AuditContext) -> str | None:
    if ctx.train is None:
        return "needs training data: give it with --train or data.train"
    return None


def needs_holdout(ctx: AuditContext) -> str | None:
    if ctx.holdout is None:
        return "needs holdout data (rows not used in training): give it with --holdout or data.holdout"
    return None


def needs_torch_model(ctx: AuditContext) -> str | None:
    if getattr(ctx.model, "torch_module", None) is None:
        return "needs a torch model (TorchScript); this model is not one"
    return None


def all_of(*preds: Applies) -> Applies:
    def pred(ctx: AuditContext) -> str | None:
        for p in preds:
            reason = p(ctx)
            if reason:
                return reason
        return None

    return pred
