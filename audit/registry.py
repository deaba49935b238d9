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
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.context import AuditContext, Intermediate
    from audit.results import CheckResult

__all__ = [
    "ENTRY_POINT_GROUP",
    "CheckInfo",
    "FamilyInfo",
    "all_of",
    "discover_plugins",
    "families",
    "family_names",
    "get_check",
    "get_family",
    "iter_checks",
    "needs_holdout",
    "needs_sensitive_features",
    "needs_torch_model",
    "needs_train",
    "plugin_errors",
    "prepare_families",
    "register_check",
    "register_family",
    "unknown_selection",
    "unregister_check",
    "unregister_family",
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
    #: relative cost, roughly in tenths of a CPU second on the anchor workload (bench/bench_audit.py);
    #: a scheduling hint only: heavier groups of checks start first in the lanes
    cost: float = 1.0

    def shares(self) -> tuple[str, ...]:
        """Names of every intermediate the check reaches, directly or through ``needs``."""
        return tuple(dict.fromkeys(n for item in self.needs for n in item.closure()))

    def skip_reason(self, ctx: AuditContext) -> str | None:
        return None if self.applies is None else self.applies(ctx)


_REGISTRY: dict[str, CheckInfo] = {}


@dataclass(frozen=True)
class FamilyInfo:
    """A check family: its name, how people read it, and what it adds to the spec and the boundary.

    * ``policy``: the pydantic model of its thresholds (``[policy.<name>]`` in a spec);
    * ``section``: the pydantic model of its own top-level spec table (``[<name>]``), if any;
    * ``prepare(spec, test_split)``: validation at the boundary when one of its checks is selected
      (a bad input raises a ``TrustAuditError``: exit 2 before any check runs); what it returns is on
      ``ctx.prepared[<name>]``;
    * ``title`` and ``help``: what the dashboard and the reports call it and say about it.
    """

    name: str
    title: str
    help: str = ""
    policy: Any = None
    section: Any = None
    prepare: Callable[[Any, Any], Any] | None = None


_FAMILIES: dict[str, FamilyInfo] = {}
_IMPLIED: set[str] = set()  # families registered only because a check named them


def register_family(
    name: str,
    *,
    title: str | None = None,
    help: str = "",
    policy: Any = None,
    section: Any = None,
    prepare: Callable[[Any, Any], Any] | None = None,
) -> FamilyInfo:
    """Declare a check family (once; a second declaration of the same name is refused)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"family name {name!r} must be lowercase letters, digits and _")
    if name in _FAMILIES:
        raise ValueError(f"family {name!r} is already registered")
    if name in _RESERVED:
        raise ValueError(f"family name {name!r} is a spec key of its own")
    info = FamilyInfo(name, title or name.replace("_", " ").capitalize(), help, policy, section, prepare)
    _FAMILIES[name] = info
    _SPEC_MODEL_CACHE.clear()
    return info


#: top-level spec keys and policy keys a family may not take
_RESERVED = frozenset({"data", "checks", "seed", "policy", "model", "max_groups"})
#: cached spec models built from the registered families (``audit.spec``)
_SPEC_MODEL_CACHE: dict[str, Any] = {}


def families() -> tuple[FamilyInfo, ...]:
    """Registered families in registration order (built-ins first, then plugins)."""
    _load_builtin_checks()
    return tuple(_FAMILIES.values())


def family_names() -> tuple[str, ...]:
    return tuple(f.name for f in families())


def get_family(name: str) -> FamilyInfo:
    _load_builtin_checks()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"no check family registered as {name!r}") from None


def prepare_families(spec: Any, test: Any, selected: Iterable[str]) -> dict[str, Any]:
    """Run the ``prepare`` hook of every selected family that has one; {family: what it returned}."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(selected):
        info = _FAMILIES.get(name)
        if info is not None and info.prepare is not None:
            out[name] = info.prepare(spec, test)
    return out


def register_check(
    check_id: str,
    *,
    family: str,
    applies: Applies | None = None,
    description: str = "",
    needs: Iterable[Intermediate[Any]] = (),
    cost: float = 1.0,
) -> Callable[[Callable[[AuditContext], CheckResult]], Callable[[AuditContext], CheckResult]]:
    """Decorator registering a check; refuses bad names and duplicates (ValueError)."""
    if not _NAME.match(check_id):
        raise ValueError(
            f"check name {check_id!r} must be 'family.name' in lowercase letters, digits and _"
        )
    if check_id.split(".", 1)[0] != family:
        raise ValueError(f"check name {check_id!r} must start with its family {family!r}")
    if family not in _FAMILIES:
        register_family(family)  # a family nobody declared gets a plain one (no policy, no hook)
        _IMPLIED.add(family)

    def decorator(
        func: Callable[[AuditContext], CheckResult],
    ) -> Callable[[AuditContext], CheckResult]:
        if check_id in _REGISTRY:
            raise ValueError(f"check {check_id!r} is already registered")
        doc = description or (func.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[check_id] = CheckInfo(check_id, family, func, applies, doc, tuple(needs), float(cost))
        return func

    return decorator


def unregister_check(check_id: str) -> None:
    """Remove a check (tests that register temporary checks use this); a family that was only
    implied by its checks goes when its last check does."""
    info = _REGISTRY.pop(check_id, None)
    if info is not None and info.family in _IMPLIED and not any(c.family == info.family for c in _REGISTRY.values()):
        _FAMILIES.pop(info.family, None)
        _IMPLIED.discard(info.family)
        _SPEC_MODEL_CACHE.clear()


def unregister_family(name: str) -> None:
    """Remove a family and its checks (tests that install temporary plugins use this)."""
    for cid in [c.check_id for c in _REGISTRY.values() if c.family == name]:
        _REGISTRY.pop(cid, None)
    _FAMILIES.pop(name, None)
    _IMPLIED.discard(name)
    _SPEC_MODEL_CACHE.clear()


#: the entry-point group through which packages add check families (``[project.entry-points]``)
ENTRY_POINT_GROUP = "trustaudit.checks"
_LOADED = False
_LOAD_ERRORS: dict[str, str] = {}


def _load_builtin_checks() -> None:
    """Import the check modules once: the built-in ones, then every module named in the
    ``trustaudit.checks`` entry-point group (trustaudit's own causal family comes that way, and so
    does any third-party package's). A plugin that fails to import is reported once, as a warning,
    and kept out (``plugin_errors()``); the rest of the audit works."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from importlib.metadata import entry_points

    import audit.checks  # noqa: F401  (registers the spine's own families)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break every audit
            msg = " ".join(str(exc).split())[:300] or type(exc).__name__
            _LOAD_ERRORS[ep.name] = f"{type(exc).__name__}: {msg}"
            warnings.warn(f"trustaudit: check plugin {ep.name!r} ({ep.value}) could not be loaded: "
                          f"{_LOAD_ERRORS[ep.name]}", RuntimeWarning, stacklevel=2)


def discover_plugins() -> tuple[str, ...]:
    """Load entry points of the ``trustaudit.checks`` group that appeared since the registry was
    first loaded (a package installed into a running process, e.g. a notebook); returns the names
    loaded now."""
    from importlib.metadata import entry_points

    before = set(sys.modules)
    _load_builtin_checks()
    loaded = [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
              if ep.value.split(":", 1)[0] in sys.modules and ep.value.split(":", 1)[0] not in before]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        module = ep.value.split(":", 1)[0]
        if module in sys.modules or ep.name in _LOAD_ERRORS:
            continue
        try:
            ep.load()
            loaded.append(ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break every audit
            _LOAD_ERRORS[ep.name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return tuple(loaded)


def plugin_errors() -> dict[str, str]:
    """Check plugins that failed to load: {entry-point name: the error}."""
    _load_builtin_checks()
    return dict(_LOAD_ERRORS)


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
