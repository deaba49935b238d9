"""The run report: one self-contained HTML page, plots as inlined PNGs (matplotlib, Agg).

It draws the numbers the run recorded and computes none of its own: global loss and accuracy,
per-client accuracy (fairness across clients), per-group accuracy and selection rate (fairness
across groups), participation (who answered), privacy loss per round, and the partitions.
The page's markup lives in ``templates/run_report.html.j2``, rendered with autoescape on, so
every value from the run is escaped; this module prepares the values (tables, numbers, plots).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import jinja2
import markupsafe
import pandas as pd

from federated._run import FederatedRun

__all__ = ["render_run_report"]


def _png(fig: Any) -> str:
    """The figure as a PNG data URI (marked safe for the template: base64 text holds no character
    HTML escapes)."""
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # every x axis here is a round or a client id
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # fixed margins (sized for these 10-inch-wide panels): one draw per figure, where a
    # constrained or "tight" layout draws everything twice
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.88, wspace=0.22, hspace=0.5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return markupsafe.Markup("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))


def _cell(v: Any) -> str:
    """How one value reads in a table cell: floats to 4 significant digits, NaN as blank."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(df: pd.DataFrame, max_rows: int = 60) -> dict[str, Any]:
    """The frame's columns and its first ``max_rows`` rows as text, with the total row count."""
    shown = df.head(max_rows)
    return {
        "empty": df.empty,
        "columns": [str(c) for c in shown.columns],
        "rows": [[_cell(v) for v in row] for row in shown.itertuples(index=False)],
        "shown": len(shown),
        "total": len(df),
    }


def _plots(run: FederatedRun) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out: list[tuple[str, str]] = []
    rf = run.rounds_frame()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    ax[0].plot(rf["round"], rf["global_accuracy"], marker="o")
    ax[0].set(xlabel="round", ylabel="accuracy", title="Global model, test rows")
    ax[1].plot(rf["round"], rf["global_loss"], marker="o", color="tab:red")
    ax[1].set(xlabel="round", ylabel="logistic loss", title="Global loss")
    out.append(("Global model per round", _png(fig)))

    cf = run.clients_frame()
    if "accuracy" in cf.columns and cf["accuracy"].notna().any():
        fig, ax = plt.subplots(figsize=(10, 3.2))
        ok = cf[cf["accuracy"].notna()]
        ax.scatter(ok["round"], ok["accuracy"], s=10, alpha=0.5, label="one client")
        if "clients_min" in rf.columns:
            ax.fill_between(rf["round"], rf["clients_min"], rf["clients_max"], alpha=0.15, label="min-max")
            ax.plot(rf["round"], rf["clients_mean"], color="k", label="mean")
        ax.set(xlabel="round", ylabel="accuracy on local rows", title="Fairness across clients")
        ax.legend(loc="lower right", fontsize=8)
        out.append(("Per-client accuracy of the global model", _png(fig)))

    gf = run.groups_frame()
    if not gf.empty:
        attrs = sorted(gf["attribute"].unique())
        fig, axes = plt.subplots(len(attrs), 2, figsize=(10, 3 * len(attrs)), squeeze=False)
        for i, attr in enumerate(attrs):
            sub = gf[gf["attribute"] == attr]
            for g, part in sub.groupby("group"):
                axes[i][0].plot(part["round"], part["accuracy"], marker=".", label=str(g))
                axes[i][1].plot(part["round"], part["selection_rate"], marker=".", label=str(g))
            axes[i][0].set(xlabel="round", ylabel="accuracy", title=f"Accuracy by {attr}")
            axes[i][1].set(xlabel="round", ylabel="selection rate", title=f"Selection rate by {attr}")
            axes[i][0].legend(fontsize=7)
        out.append(("Fairness across groups (global model, test rows)", _png(fig)))

    fig, ax = plt.subplots(figsize=(10, 3))
    tr = rf[rf["round"] > 0]
    ax.bar(tr["round"], tr["answered"], label="answered")
    ax.bar(tr["round"], tr["dropped"], bottom=tr["answered"], label="dropped out")
    ax.bar(tr["round"], tr["timed_out"], bottom=tr["answered"] + tr["dropped"], label="timed out")
    ax.set(xlabel="round", ylabel="clients", title="Participation")
    ax.legend(fontsize=8)
    out.append(("Who answered", _png(fig)))

    if rf["epsilon"].notna().any() or rf["epsilon_local_max"].notna().any():
        fig, ax = plt.subplots(figsize=(10, 3))
        if rf["epsilon"].notna().any():
            ax.plot(rf["round"], rf["epsilon"], marker="o", label="central (client-level), no amplification")
        if rf["epsilon_local_max"].notna().any():
            ax.plot(rf["round"], rf["epsilon_local_max"], marker="s", label="local DP-SGD, worst client")
        ax.set(xlabel="round", ylabel="epsilon", title="Privacy loss")
        ax.legend(fontsize=8)
        out.append(("Privacy loss per round", _png(fig)))

    pf = run.partitions_frame()
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.bar(pf["partition_id"], pf["rows"] - pf["positives"], label="negative")
    ax.bar(pf["partition_id"], pf["positives"], bottom=pf["rows"] - pf["positives"], label="positive")
    ax.set(xlabel="client (partition id)", ylabel="rows", title=f"Partitions ({run.config.partition})")
    ax.legend(fontsize=8)
    out.append(("Partitions", _png(fig)))
    return out


def _environment() -> jinja2.Environment:
    from audit.report._html import template_environment  # one set of template rules for both reports

    return template_environment("federated")


def _context(run: FederatedRun) -> dict[str, Any]:
    cfg = run.config
    final = run.final
    gf = run.groups_frame()
    privacy = None
    if run.privacy:
        rows = [{"mechanism": kind, "field": k, "value": v}
                for kind, block in run.privacy.items() for k, v in block.items()
                if not isinstance(v, (dict, list))]
        privacy = _table(pd.DataFrame(rows))
    cond = run.dp_conditions() if run.privacy else None
    return {
        "cfg": cfg,
        "krum": ({"f": cfg.krum_f_used, "source": cfg.krum_f_source}
                 if cfg.strategy in ("krum", "multikrum") else None),
        "data_source": str(run.data.get("source")),
        "final_accuracy": f"{final['global'].get('accuracy', float('nan')):.4f}",
        "plots": _plots(run),
        "rounds": _table(run.rounds_frame()),
        "final_groups": None if gf.empty else _table(gf[gf["round"] == final["round"]].drop(columns="round")),
        "partitions": _table(run.partitions_frame()),
        "privacy": privacy,
        "dp_conditions": cond or None,
        "settings": _table(pd.DataFrame([{"setting": k, "value": v} for k, v in cfg.to_run_config().items()]),
                           max_rows=200),
    }


def render_run_report(run: FederatedRun) -> str:
    """The HTML run report (self-contained)."""
    return _environment().get_template("run_report.html.j2").render(_context(run))
