"""Federated: configure a Flower simulation and submit it as a job; a worker runs it (and audits
the final global model when asked) while this page charts the rounds it reports; the run's
per-round charts and the audit come from the store once it finished.

Like an audit, the simulation does not live in the page: widget changes, reloads and closed
browsers leave it running, and ``?job=<id>`` in the URL brings its progress or results back.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from audit.exceptions import StoreError, TrustAuditError
from audit.registry import family_names
from dashboard._intake import check_upload_size, display_name
from dashboard._jobs import POLL_SECONDS, show_job, submit_federated
from dashboard._state import (
    error_line,
    follow_job,
    followed_job,
    forget_job,
    get_job,
    get_settings,
    get_store,
    set_current_report,
)

FINDINGS_PAGE = "app_pages/findings.py"
RUN_KEY = "trustaudit_federated_run"  # (job id, the run as FederatedRun) of the last finished run shown
AUDIT_KEY = "trustaudit_federated_audit"
ROUNDS_KEY = "trustaudit_federated_rounds"  # job id -> {round: accuracy} seen while it ran
#: settings naming files on the server: never part of a job (an uploaded file goes in the job folder)
SERVER_PATHS = ("data", "output-dir")

settings = get_settings()
st.title("Federated simulation")
st.caption(
    "Simulate federated training with Flower: the clients' rows never leave them, the server aggregates "
    "their model updates. Then audit the final global model like any other. The simulation runs as a job "
    "on the server's workers; starting its engine takes a few seconds to minutes, depending on the machine."
)

try:
    from federated import PARTITIONS, STRATEGIES, FederatedConfig
except ImportError as exc:  # pragma: no cover - depends on the install
    st.error(f"Federated simulation is not available in this installation: {error_line(exc)}")
    st.stop()

with st.form("federated_form"):
    st.markdown("**Federation**")
    a1, a2, a3, a4 = st.columns(4)
    num_clients = a1.number_input("Clients", min_value=2, max_value=500, value=10, step=1)
    num_rounds = a2.number_input("Rounds", min_value=1, max_value=200, value=5, step=1)
    fraction = a3.slider("Fraction sampled per round", min_value=0.1, max_value=1.0, value=1.0, step=0.05)
    seed = a4.number_input("Seed", min_value=0, max_value=2**32 - 1, value=0, step=1)

    st.markdown("**Data**")
    b1, b2 = st.columns([1, 2])
    source = b1.radio("Rows", ["lending generator", "upload a CSV or Parquet file"], key="fed_source")
    n_rows = b2.number_input("Generated training rows (holdout and test: half as many each)", min_value=200,
                             max_value=200_000, value=4000, step=500)
    data_file = b2.file_uploader("Data file (used when 'upload' is chosen)", key="fed_data",
                                 max_upload_size=settings.max_upload_mb)
    t1, t2, t3 = st.columns(3)
    target = t1.text_input("Target column", value="approved")
    positive = t2.text_input("Positive label", value="1")
    sensitive = t3.text_input("Sensitive columns (comma-separated)", value="sex,age_group")

    st.markdown("**Partitions and training**")
    c1, c2, c3, c4 = st.columns(4)
    partition = c1.selectbox("Partition", list(PARTITIONS), help="iid, dirichlet (label skew), column, quantity")
    alpha = c2.number_input("Dirichlet α", min_value=0.0, value=0.5, step=0.1, format="%.3g",
                            help="smaller = more skewed clients (dirichlet and quantity partitions)")
    model = c3.selectbox("Model", ["logreg", "mlp"])
    local_epochs = c4.number_input("Local epochs", min_value=1, max_value=50, value=1)
    d1, d2, d3, d4 = st.columns(4)
    strategy = d1.selectbox("Strategy", list(STRATEGIES))
    lr = d2.number_input("Learning rate", min_value=0.0001, max_value=10.0, value=0.1, format="%.4g")
    batch = d3.number_input("Batch size", min_value=1, max_value=4096, value=32)
    mu = d4.number_input("FedProx μ", min_value=0.0, value=0.1, format="%.3g")

    st.markdown("**Privacy, security and faults**")
    e1, e2, e3, e4 = st.columns(4)
    central_dp = e1.checkbox("Central DP")
    noise = e2.number_input("Noise multiplier", min_value=0.01, value=1.0, step=0.1)
    clip = e3.number_input("Clipping norm", min_value=0.01, value=1.0, step=0.1)
    secagg = e4.checkbox("Secure aggregation (SecAgg+)")
    f1, f2, f3 = st.columns(3)
    dropout = f1.slider("Drop-out probability", 0.0, 0.9, 0.0, 0.05)
    malicious = f2.slider("Malicious clients (fraction)", 0.0, 0.9, 0.0, 0.05)
    attack = f3.selectbox("Attack", ["label-flip", "scale"])

    st.markdown("**Audit**")
    g1, g2 = st.columns([1, 3])
    do_audit = g1.checkbox("Audit the final model", value=True)
    audit_checks = g2.multiselect("Check families", list(family_names()), default=["fairness", "privacy"])
    submitted = st.form_submit_button("Run the simulation", type="primary", icon=":material/play_arrow:")




def _job_config() -> tuple[dict[str, Any], tuple[str, bytes] | None]:
    """The run's settings as the job carries them (validated here: a bad one is one line before
    anything is queued) and the uploaded data file, if any."""
    raw: dict[str, Any] = {
        "num-clients": int(num_clients), "num-rounds": int(num_rounds), "fraction-train": float(fraction),
        "seed": int(seed), "n-rows": int(n_rows), "partition": partition, "alpha": float(alpha),
        "model": model, "local-epochs": int(local_epochs), "strategy": strategy, "lr": float(lr),
        "batch-size": int(batch), "proximal-mu": float(mu), "central-dp": bool(central_dp),
        "noise-multiplier": float(noise), "clip-norm": float(clip), "secagg": bool(secagg),
        "dropout": float(dropout), "malicious": float(malicious), "attack": attack,
        "sensitive": sensitive, "target": target.strip(), "positive-label": positive.strip(),
        "audit": bool(do_audit), "checks": ",".join(audit_checks),
    }
    data = None
    if source.startswith("upload"):
        if data_file is None:
            raise TrustAuditError("choose a data file to upload, or use the lending generator")
        content = data_file.getvalue()
        check_upload_size("data file", data_file.name, len(content), settings.max_upload_mb)
        data = (display_name(data_file.name), content)
    config = FederatedConfig.from_mapping(raw).to_run_config()
    for key in SERVER_PATHS:
        config.pop(key, None)
    return config, data


def _run_from_result(result: dict[str, Any]) -> Any:
    """The finished run (``FederatedRun.to_dict()`` as the worker recorded it) for the charts."""
    from federated import FederatedRun

    d = result["run"]
    cfg = FederatedConfig.from_mapping({k: v for k, v in d["config"].items() if k not in SERVER_PATHS})
    return FederatedRun(config=cfg, data=d.get("data") or {}, partitions=tuple(d.get("partitions") or ()),
                        rounds=tuple(d.get("rounds") or ()), encoder=d.get("encoder") or {}, final_arrays=(),
                        privacy=d.get("privacy") or {}, timings=d.get("timings") or {}, engine=d.get("engine") or {})


def _seen_rounds(job: Any) -> dict[int, float | None]:
    """Accuracy of each round this session saw the job report (the progress holds the last one)."""
    seen = st.session_state.setdefault(ROUNDS_KEY, {}).setdefault(job.job_id, {})
    rnd = (job.progress or {}).get("round") or {}
    if rnd.get("round"):
        seen[int(rnd["round"])] = rnd.get("accuracy")
    return seen


@st.fragment(run_every=POLL_SECONDS)
def _live(job_id: str) -> None:
    try:
        job = get_job(get_store(settings), job_id)
    except StoreError as exc:
        st.warning(f"The simulation's progress cannot be read right now: {exc.message}",
                   icon=":material/sync_problem:")
        return
    if job is None or job.finished:
        st.rerun()
    if show_job(get_store(settings), job, key="fed"):
        st.rerun()
    seen = _seen_rounds(job)
    if seen:
        frame = pd.DataFrame({"round": list(seen), "accuracy": list(seen.values())}).sort_values("round")
        st.line_chart(frame.set_index("round"), x_label="round")


def _follow(job_id: str) -> None:
    try:
        store = get_store(settings)
        job = get_job(store, job_id)
    except StoreError as exc:
        st.error(exc.message, icon=":material/block:")
        return
    if job is None or job.kind != "federated":
        forget_job("federated")
        if job is None:
            st.warning(f"No federated job {job_id[:12]} in the history store.", icon=":material/search_off:")
        return
    if not job.finished:
        _live(job_id)
        st.caption("The simulation runs on the server: you may change the form, reload the page or close it; "
                   "the Jobs page lists it.")
        return
    if job.state != "succeeded":
        with st.container(border=True):
            show_job(store, job, key="fed_done")
            if job.state == "failed":
                st.error(f"The simulation failed: {job.error or 'no reason recorded'}", icon=":material/block:")
            else:
                st.info(f"The simulation was cancelled{': ' + job.error if job.error else '.'}",
                        icon=":material/cancel:")
            if st.button("Dismiss", key="fed_dismiss", type="tertiary"):
                forget_job("federated")
                st.rerun()
        return
    shown = st.session_state.get(RUN_KEY)
    if shown is not None and shown[0] == job_id:
        return
    try:
        run = _run_from_result(job.result or {})
        report = store.get(job.audit_id) if job.audit_id else None
    except TrustAuditError as exc:
        st.error(f"The simulation finished but its results cannot be read: {exc.message}", icon=":material/block:")
        return
    except (KeyError, TypeError, ValueError) as exc:
        st.error(f"The simulation finished but its results cannot be read: {error_line(exc)}",
                 icon=":material/block:")
        return
    st.session_state[RUN_KEY] = (job_id, run)
    st.session_state.pop(AUDIT_KEY, None)
    if report is not None:
        st.session_state[AUDIT_KEY] = report
        set_current_report(report, "federated")


if submitted:
    try:
        config, upload = _job_config()
        job_id = submit_federated(get_store(settings), settings, config, upload)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
    except Exception as exc:  # noqa: BLE001
        st.error(f"The simulation could not be submitted: {error_line(exc)}", icon=":material/block:")
    else:
        follow_job("federated", job_id)
        st.rerun()

following = followed_job("federated")
if following:
    _follow(following)

last = st.session_state.get(RUN_KEY)
if last is None:
    st.info("Configure the federation above and run it; the per-round charts appear here.", icon=":material/info:")
    st.stop()

run = last[1]

cfg = run.config
st.subheader("Last run")
st.caption(f"{cfg.strategy}, {cfg.num_clients} clients, {cfg.num_rounds} rounds, partition {cfg.partition}, "
           f"model {cfg.model}" + (", central DP" if cfg.central_dp else "") + (", SecAgg+" if cfg.secagg else ""))
rounds = run.rounds_frame()
trained = rounds[rounds["round"] > 0]
m1, m2, m3, m4 = st.columns(4)
final_acc = trained["global_accuracy"].iloc[-1] if "global_accuracy" in trained.columns and len(trained) else None
m1.metric("Final accuracy", "n/a" if final_acc is None or pd.isna(final_acc) else f"{float(final_acc):.3f}")
if "global_loss" in rounds.columns and len(trained) and pd.notna(trained["global_loss"].iloc[-1]):
    m2.metric("Final loss", f"{float(trained['global_loss'].iloc[-1]):.3f}")
if "clients_min" in rounds.columns and pd.notna(rounds["clients_min"].iloc[-1]):
    m3.metric("Worst client accuracy", f"{float(rounds['clients_min'].iloc[-1]):.3f}")
claim = run.dp_claim()
if claim is not None:
    m4.metric("ε (DP)", f"{claim['epsilon']:.3g}", help=f"at δ = {claim['delta']:g}")

st.markdown("#### Per round")
by_round = trained.set_index("round")
perf = {c: c.removeprefix("global_") for c in ("global_accuracy", "global_loss") if c in rounds.columns}
if perf:
    st.markdown("Global model on the test rows")
    st.line_chart(by_round[list(perf)].rename(columns=perf), x_label="round")
spread = {c: n for c, n in (("clients_min", "worst client"), ("clients_p10", "10th percentile"),
                            ("clients_mean", "mean"), ("clients_max", "best client")) if c in rounds.columns}
if spread and by_round[list(spread)].notna().any().any():
    st.markdown("Accuracy of the global model on each client's validation rows (spread across clients)")
    st.line_chart(by_round[list(spread)].rename(columns=spread), x_label="round")
gaps = [c for c in rounds.columns if c.endswith(("demographic_parity_difference", "equalized_odds_difference"))]
if gaps:
    st.markdown("Fairness gaps of the global model on the test rows")
    names = {c: c.replace("_demographic_parity_difference", ": demographic parity")
                .replace("_equalized_odds_difference", ": equalized odds") for c in gaps}
    st.line_chart(by_round[gaps].rename(columns=names), x_label="round")
if "epsilon" in rounds.columns and rounds["epsilon"].notna().any():
    st.markdown("Privacy loss ε spent so far")
    st.line_chart(by_round[["epsilon"]], x_label="round")
with st.expander("Round table"):
    st.dataframe(rounds, hide_index=True)
with st.expander("Partitions (rows and positive rate per client)"):
    st.dataframe(run.partitions_frame(), hide_index=True)
st.download_button("metrics.json", data=lambda: json.dumps(run.to_dict(), indent=2),
                   file_name="federated-metrics.json", mime="application/json", on_click="ignore",
                   icon=":material/download:", key="fed_metrics")

report = st.session_state.get(AUDIT_KEY)
if report is not None:
    st.markdown("#### Audit of the final model")
    st.markdown(f"Verdict **{report.verdict.value}** over {len(report.results)} checks.")
    st.page_link(FINDINGS_PAGE, label="Read the findings", icon=":material/fact_check:")
