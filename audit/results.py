"""Frozen result records: what a check returns and what an audit produces.

Results never print, plot or write themselves; they offer ``to_dict()`` (JSON-ready) and
``from_dict()`` (to read a stored report back). Renderers and the dashboard read them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "AuditReport",
    "CheckResult",
    "ErrorInfo",
    "EvidenceTable",
    "PlotSpec",
    "Provenance",
    "Verdict",
    "overall_verdict",
]

#: Version of the JSON report schema (docs/report-schema.md, audit/report/schema.json).
SCHEMA_VERSION = "2.0"


class Verdict(enum.StrEnum):
    """Outcome of one check. Order of severity: ERROR > FAIL > WARN > PASS > SKIPPED."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Verdict.SKIPPED: 0,
    Verdict.PASS: 1,
    Verdict.WARN: 2,
    Verdict.FAIL: 3,
    Verdict.ERROR: 4,
}


def overall_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict; PASS when there is none but SKIPPED ones."""
    worst = Verdict.PASS
    for v in verdicts:
        if v is not Verdict.SKIPPED and v.severity > worst.severity:
            worst = v
    return worst


def _freeze_mapping(m: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(m or {}))


#: How non-finite floats are written in the JSON report (strict JSON has no token for them):
#: +inf and -inf as these strings (the spelling of Python's and JavaScript's number parsers, so
#: ``float(s)`` reads them back), NaN as ``null`` ("not computed"). ``from_dict`` restores them.
JSON_POS_INF = "Infinity"
JSON_NEG_INF = "-Infinity"
_FROM_JSON = {JSON_POS_INF: math.inf, JSON_NEG_INF: -math.inf}


def _json_float(f: float) -> float | str | None:
    if math.isfinite(f):
        return f
    if math.isnan(f):
        return None
    return JSON_POS_INF if f > 0 else JSON_NEG_INF


def _from_json(v: Any) -> Any:
    """Inverse of the non-finite encoding of :func:`_json_value` (recursively): the strings
    "Infinity" / "-Infinity" become ±inf. ``null`` stays ``None`` (callers with numeric
    positions, such as metrics, read it as NaN)."""
    if isinstance(v, str):
        return _FROM_JSON.get(v, v)
    if isinstance(v, Mapping):
        return {k: _from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_from_json(x) for x in v]
    return v


def _json_value(v: Any) -> Any:
    """Convert numpy scalars and non-finite floats into JSON-safe values (NaN → null,
    ±inf → "Infinity" / "-Infinity"; see :data:`JSON_POS_INF`)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return int(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        if isinstance(v, Mapping):
            return {str(k): _json_value(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [_json_value(x) for x in v]
        return str(v)
    if hasattr(v, "dtype") and getattr(v.dtype, "kind", "f") in "iub":
        return int(v) if v.dtype.kind != "b" else bool(v)
    return _json_float(f)


@dataclass(frozen=True)
class PlotSpec:
    """How a renderer may draw an evidence table. Renderers never compute statistics.

    kind:
      ``bar``      x = category, y = value (optional ``lo``/``hi`` columns give an interval,
                   optional ``group`` column gives side-by-side bars)
      ``line``     x, y numeric (optional ``group`` column gives one line per group)
      ``heatmap``  x, y categories, ``value`` the cell value
      ``scatter``  x, y numeric, optional ``group`` (colour)
      ``graph``    the table has one record with a ``dot`` field (a DOT graph)
    """

    kind: str
    x: str = ""
    y: str = ""
    value: str = ""
    lo: str = ""
    hi: str = ""
    group: str = ""
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    reference: float | None = None  # a horizontal policy line, e.g. the 0.8 four-fifths line

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PlotSpec:
        return cls(**dict(d))


@dataclass(frozen=True)
class EvidenceTable:
    """A table of records (list of flat dicts), ready for plotting, with an optional plot hint."""

    name: str
    records: tuple[Mapping[str, Any], ...]
    plot: PlotSpec | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "records", tuple(MappingProxyType(dict(r)) for r in self.records)
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "records": [{str(k): _json_value(v) for k, v in r.items()} for r in self.records],
        }
        if self.plot is not None:
            d["plot"] = self.plot.to_dict()
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvidenceTable:
        plot = d.get("plot")
        return cls(
            name=d["name"],
            records=tuple(_from_json(dict(r)) for r in d.get("records", ())),
            plot=PlotSpec.from_dict(plot) if plot else None,
            description=d.get("description", ""),
        )

    @classmethod
    def from_frame(
        cls, name: str, frame: Any, plot: PlotSpec | None = None, description: str = ""
    ) -> EvidenceTable:
        """Build from a pandas DataFrame (index dropped: put what matters in columns)."""
        return cls(name, tuple(frame.to_dict(orient="records")), plot, description)


@dataclass(frozen=True)
class Provenance:
    """How a result came to be: parameters, seed, library versions, seconds."""

    params: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _freeze_mapping(self.params))
        object.__setattr__(self, "versions", _freeze_mapping(self.versions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {k: _json_value(v) for k, v in self.params.items()},
            "seed": self.seed,
            "versions": dict(self.versions),
            "seconds": round(float(self.seconds), 4),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Provenance:
        return cls(
            params=_from_json(dict(d.get("params", {}))),
            seed=d.get("seed"),
            versions=d.get("versions", {}),
            seconds=float(d.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class ErrorInfo:
    """The exception a check raised, kept (summarised) on its ERROR result."""

    type: str
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ErrorInfo:
        return cls(d["type"], d["message"], d.get("traceback", ""))


@dataclass(frozen=True)
class CheckResult:
    """The one frozen result a check returns (the check contract)."""

    check_id: str
    verdict: Verdict
    summary: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[EvidenceTable, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)
    family: str = ""
    error: ErrorInfo | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.verdict, Verdict):
            object.__setattr__(self, "verdict", Verdict(self.verdict))
        metrics = {}
        for k, v in (self.metrics or {}).items():
            try:
                metrics[str(k)] = float(v)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metric {k!r} must be a number, got {v!r}") from exc
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        object.__setattr__(self, "policy", _freeze_mapping(self.policy))
        object.__setattr__(self, "evidence", tuple(self.evidence))
        if not self.summary or "\n" in self.summary:
            raise ValueError("summary must be one non-empty line")

    def table(self, name: str) -> EvidenceTable:
        for t in self.evidence:
            if t.name == name:
                return t
        raise KeyError(f"no evidence table {name!r} in {self.check_id}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "family": self.family,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "metrics": {k: _json_value(v) for k, v in self.metrics.items()},
            "policy": {k: _json_value(v) for k, v in self.policy.items()},
            "evidence": [t.to_dict() for t in self.evidence],
            "provenance": self.provenance.to_dict(),
            "error": self.error.to_dict() if self.error else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckResult:
        return cls(
            check_id=d["check_id"],
            verdict=Verdict(d["verdict"]),
            summary=d["summary"],
            metrics={k: (math.nan if v is None else _from_json(v)) for k, v in d.get("metrics", {}).items()},
            policy=_from_json(dict(d.get("policy", {}))),
            evidence=tuple(EvidenceTable.from_dict(t) for t in d.get("evidence", ())),
            provenance=Provenance.from_dict(d.get("provenance", {})),
            family=d.get("family", ""),
            error=ErrorInfo.from_dict(d["error"]) if d.get("error") else None,
        )


@dataclass(frozen=True)
class AuditReport:
    """Everything one audit produced. ``to_dict()`` is the JSON report (the source of truth)."""

    audit_id: str
    created_at: str
    results: tuple[CheckResult, ...]
    spec: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    environment: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "spec", _freeze_mapping(self.spec))
        object.__setattr__(self, "inputs", _freeze_mapping(self.inputs))
        object.__setattr__(self, "model", _freeze_mapping(self.model))
        object.__setattr__(self, "environment", _freeze_mapping(self.environment))

    @property
    def verdict(self) -> Verdict:
        return overall_verdict(r.verdict for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {v.value: 0 for v in Verdict}
        for r in self.results:
            out[r.verdict.value] += 1
        return out

    def exit_code(self, *, strict: bool = False) -> int:
        """0 when every check that ran passed, 1 when one FAILed or ERRORed, 2 when nothing was
        audited (no result, or every check SKIPPED: a gate that ran nothing must not pass).

        With ``strict``, WARN counts as a failure too.
        """
        if all(r.verdict is Verdict.SKIPPED for r in self.results):
            return 2
        bad = {Verdict.FAIL, Verdict.ERROR} | ({Verdict.WARN} if strict else set())
        return 1 if any(r.verdict in bad for r in self.results) else 0

    def result(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.check_id == check_id:
                return r
        raise KeyError(f"no result for check {check_id!r}")

    def to_frame(self) -> pd.DataFrame:
        """The findings as a pandas DataFrame: one row per check (id, family, verdict, summary,
        seconds), in the report's order."""
        import pandas as pd

        return pd.DataFrame(
            [{"check_id": r.check_id, "family": r.family, "verdict": r.verdict.value, "summary": r.summary,
              "seconds": float(r.provenance.seconds)} for r in self.results],
            columns=["check_id", "family", "verdict", "summary", "seconds"],
        )

    def metrics_frame(self) -> pd.DataFrame:
        """Every check's metrics in long form: one row per (check_id, metric, value)."""
        import pandas as pd

        return pd.DataFrame(
            [{"check_id": r.check_id, "metric": k, "value": float(v)} for r in self.results for k, v in r.metrics.items()],
            columns=["check_id", "metric", "value"],
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        """The JSON report (``to_dict()`` as text; the schema is ``audit/report/schema.json``)."""
        import json

        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def to_html(self) -> str:
        """The self-contained HTML report (rendered by ``audit.report``)."""
        from audit.report import render_html

        return render_html(self)

    def _repr_html_(self) -> str:
        """What a notebook shows: the overall verdict, the counts and one row per check."""
        import html

        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items() if n)
        rows = "".join(
            f"<tr><td>{html.escape(r.check_id)}</td><td><b>{r.verdict.value}</b></td>"
            f"<td>{html.escape(r.summary)}</td></tr>" for r in self.results
        )
        return (
            f"<div><p><b>trustaudit {html.escape(self.audit_id[:12])}: {self.verdict.value}</b> "
            f"({html.escape(counts)}; {self.seconds:.1f} s)</p><table><thead><tr><th>check</th><th>verdict</th>"
            f"<th>summary</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "audit_id": self.audit_id,
            "created_at": self.created_at,
            "verdict": self.verdict.value,
            "counts": self.counts(),
            "seconds": round(float(self.seconds), 4),
            "spec": _json_value(dict(self.spec)),
            "inputs": _json_value(dict(self.inputs)),
            "model": _json_value(dict(self.model)),
            "environment": _json_value(dict(self.environment)),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditReport:
        return cls(
            audit_id=d["audit_id"],
            created_at=d["created_at"],
            results=tuple(CheckResult.from_dict(r) for r in d.get("results", ())),
            spec=d.get("spec", {}),
            inputs=d.get("inputs", {}),
            model=d.get("model", {}),
            environment=d.get("environment", {}),
            seconds=float(d.get("seconds", 0.0)),
            schema_version=d.get("schema_version", SCHEMA_VERSION),
        )
