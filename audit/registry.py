"""The check registry: checks are plain functions registered under a dotted name.

    @register_check("fairness.group_metrics", family="fairness", applies=needs_sensitive_features)
    def group_metrics(ctx: AuditContext) -> CheckResult: ...

Names are ``family.name`` (lowercase, digits, underscores); a name registered twice is refused.
``applies`` is a predicate on the context that returns ``None`` when the check applies, or a
sentence saying what to provide for it to run (the check is then SKIPPED with that sentence).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from audit.context import AuditContext
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

    def skip_reason(self, ctx: AuditContext) -> str | None:
        return None if self.applies is None else self.applies(ctx)


_REGISTRY: dict[str, CheckInfo] = {}


def register_check(
    check_id: str, *, family: str, applies: Applies | None = None, description: str = ""
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
        _REGISTRY[check_id] = CheckInfo(check_id, family, func, applies, doc)
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
