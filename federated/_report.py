"""The run report: one self-contained HTML page, plots as inlined PNGs (matplotlib, Agg).

It draws the numbers the run recorded and computes none of its own: global loss and accuracy,
per-client accuracy (fairness across clients), per-group accuracy and selection rate (fairness
across groups), participation (who answered), privacy loss per round, and the partitions.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import pandas as pd

from federated._run import FederatedRun

__all__ = ["render_run_report"]


def _png(fig: Any) -> str:
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
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode("ascii") + '">'


def _table(df: pd.DataFrame, max_rows: int = 60) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    shown = df.head(max_rows)
    note = f"<p><em>first {max_rows} of {len(df)} rows</em></p>" if len(df) > max_rows else ""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
                   for row in shown.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


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


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}h2{border-bottom:1px solid #ddd;padding-bottom:2px}img{max-width:100%}"""


def render_run_report(run: FederatedRun) -> str:
    """The HTML run report (self-contained)."""
    cfg = run.config
    final = run.final
    head = (
        f"<p>{cfg.num_clients} clients ({cfg.clients_per_round} per round), {cfg.num_rounds} rounds, "
        f"model <b>{html.escape(cfg.model)}</b>, strategy <b>{html.escape(cfg.strategy)}</b>"
        f"{', SecAgg+' if cfg.secagg else ''}{', central DP' if cfg.central_dp else ''}"
        f"{', local DP' if cfg.local_dp else ''}"
        + (f" (Krum f = {cfg.krum_f_used}, {html.escape(cfg.krum_f_source)})"
           if cfg.strategy in ("krum", "multikrum") else "")
        + f"; partition <b>{html.escape(cfg.partition)}</b>; data "
        f"{html.escape(str(run.data.get('source')))}. Final test accuracy "
        f"<b>{final['global'].get('accuracy', float('nan')):.4f}</b>.</p>"
    )
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Federated run</title>"
             f"<style>{_CSS}</style></head><body><h1>Federated run</h1>{head}"]
    for title, img in _plots(run):
        parts.append(f"<h2>{html.escape(title)}</h2>{img}")
    parts.append("<h2>Rounds</h2>" + _table(run.rounds_frame()))
    gf = run.groups_frame()
    if not gf.empty:
        parts.append("<h2>Final model by group</h2>" + _table(gf[gf["round"] == final["round"]].drop(columns="round")))
    parts.append("<h2>Partitions</h2>" + _table(run.partitions_frame()))
    if run.privacy:
        rows = []
        for kind, block in run.privacy.items():
            for k, v in block.items():
                if not isinstance(v, (dict, list)):
                    rows.append({"mechanism": kind, "field": k, "value": v})
        parts.append("<h2>Privacy</h2>" + _table(pd.DataFrame(rows)))
        cond = run.dp_conditions()
        if cond:
            parts.append(
                f"<p>Noise: {html.escape(str(cond['noise_source']))}. Sampling: "
                f"{html.escape(str(cond['sampling_source']))}.</p>"
                "<h3>Not covered by the ε</h3><ul>"
                + "".join(f"<li>{html.escape(x)}</li>" for x in cond["not_covered"]) + "</ul>"
            )
    cfg_rows = pd.DataFrame([{"setting": k, "value": v} for k, v in cfg.to_run_config().items()])
    parts.append("<h2>Settings</h2>" + _table(cfg_rows, max_rows=200))
    parts.append("</body></html>")
    return "\n".join(parts)
