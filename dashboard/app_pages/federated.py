"""Federated: configure and run a Flower simulation on this machine, watch per-round charts while it
runs, then audit the final global model like any uploaded one."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from typing import Any

import pandas as pd
import streamlit as st

from audit.exceptions import TrustAuditError
from audit.registry import family_names
from dashboard._intake import check_upload_size, display_name, store_upload
from dashboard._state import error_line, get_settings, get_store, set_current_report

FINDINGS_PAGE = "app_pages/findings.py"
RUN_KEY = "trustaudit_federated_run"
OUT_KEY = "trustaudit_federated_out"
AUDIT_KEY = "trustaudit_federated_audit"
POLL_SECONDS = 0.25

settings = get_settings()
st.title("Federated simulation")
st.caption(
    "Simulate federated training with Flower on this machine: the clients' rows never leave them, the "
    "server aggregates their model updates. Then audit the final global model like any other. Starting "
    "the simulation engine takes a few seconds to minutes, depending on the machine."
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


def _config() -> Any:
    raw: dict[str, Any] = {
        "num-clients": int(num_clients), "num-rounds": int(num_rounds), "fraction-train": float(fraction),
        "seed": int(seed), "n-rows": int(n_rows), "partition": partition, "alpha": float(alpha),
        "model": model, "local-epochs": int(local_epochs), "strategy": strategy, "lr": float(lr),
        "batch-size": int(batch), "proximal-mu": float(mu), "central-dp": bool(central_dp),
        "noise-multiplier": float(noise), "clip-norm": float(clip), "secagg": bool(secagg),
        "dropout": float(dropout), "malicious": float(malicious), "attack": attack,
        "sensitive": sensitive, "target": target.strip(), "positive-label": positive.strip(),
    }
    if source.startswith("upload"):
        if data_file is None:
            raise TrustAuditError("choose a data file to upload, or use the lending generator")
        data = data_file.getvalue()
        check_upload_size("data file", data_file.name, len(data), settings.max_upload_mb)
        path = store_upload(data, settings.uploads_dir, "federated")
        raw["data"] = str(path)
        st.session_state["trustaudit_federated_data_name"] = display_name(data_file.name)
    return FederatedConfig.from_mapping(raw)


def _simulate(cfg: Any, events: queue.Queue) -> None:
    """Worker thread: the simulation reports rounds into the queue, then its result or error."""
    from federated import simulate

    try:
        run = simulate(cfg, progress=events.put, ray_cpus=None)
    except BaseException as exc:  # noqa: BLE001 - handed to the page, shown as one line
        events.put(("error", exc))
    else:
        events.put(("done", run))


def _label_run_inputs(report: Any, run_id: str) -> Any:
    """Name the audited model and rows after the run, not after server paths (visitors see these)."""
    import dataclasses

    roles = {"test": "test rows", "train": "training rows (all clients)", "holdout": "holdout rows"}
    inputs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in report.inputs.items()}
    data = {role: {**dict(info), "path": f"federated run {run_id[:12]}: {roles.get(role, role)}"}
            for role, info in dict(inputs.get("data", {})).items()}
    inputs["data"] = data
    model = {**dict(report.model), "path": f"federated run {run_id[:12]}: model.pt"}
    return dataclasses.replace(report, model=model, inputs=inputs)


def _round_chart(rows: list[dict[str, Any]]) -> Any:
    frame = pd.DataFrame(rows).set_index("round")
    return frame[[c for c in ("accuracy", "loss") if c in frame.columns]]


if submitted:
    try:
        cfg = _config()
        from federated._data import load_run_data

        load_run_data(cfg.data_setup_json())  # data and partition errors before the engine starts
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
    except Exception as exc:  # noqa: BLE001
        st.error(f"The simulation could not start: {error_line(exc)}", icon=":material/block:")
    else:
        events: queue.Queue = queue.Queue()
        worker = threading.Thread(target=_simulate, args=(cfg, events), name="trustaudit-federated", daemon=True)
        bar = st.progress(0.0, text="Starting the simulation engine …")
        live = st.empty()
        rows: list[dict[str, Any]] = []
        outcome: tuple[str, Any] | None = None
        t0 = time.perf_counter()
        worker.start()
        while outcome is None:
            try:
                ev = events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if not rows:
                    bar.progress(0.0, text=f"Starting the simulation engine … {time.perf_counter() - t0:.0f} s")
                continue
            if isinstance(ev, tuple):
                outcome = ev
                break
            rows.append({"round": ev.round, "accuracy": ev.accuracy, "loss": ev.loss,
                         "answered": ev.answered, "sampled": ev.sampled, "epsilon": ev.epsilon})
            bar.progress(min(1.0, ev.round / ev.num_rounds),
                         text=f"Round {ev.round}/{ev.num_rounds}: accuracy {ev.accuracy:.3f}, "
                              f"{ev.answered}/{ev.sampled} clients answered")
            live.line_chart(_round_chart(rows), x_label="round")
        kind, payload = outcome
        if kind == "error":
            if not rows:
                bar.empty()
            msg = payload.message if isinstance(payload, TrustAuditError) else error_line(payload)
            st.error(f"The simulation failed: {msg}", icon=":material/block:")
        else:
            run = payload
            live.empty()  # the per-round charts below show the whole run
            bar.progress(1.0, text=f"Finished in {time.perf_counter() - t0:.0f} s")
            st.session_state[RUN_KEY] = run
            st.session_state.pop(AUDIT_KEY, None)
            from federated import write_run_outputs

            out = settings.federated_dir / uuid.uuid4().hex
            try:
                written = write_run_outputs(run, out, audit=False)
                st.session_state[OUT_KEY] = {k: str(v) for k, v in written.items()}
            except TrustAuditError as exc:
                st.error(f"The run finished but its files could not be written: {exc.message}")
                written = {}
            if do_audit and "model" in written:
                from federated import audit_run

                abar = st.progress(0.0, text="Auditing the final model …")

                def _progress(event: str, check_id: str, i: int, n: int) -> None:
                    abar.progress(min(1.0, i / max(n, 1)), text=f"{check_id} ({i}/{n})")

                try:
                    report = audit_run(run, written["model"], checks=tuple(audit_checks), progress=_progress)
                except TrustAuditError as exc:
                    st.error(f"The audit could not run: {exc.message}", icon=":material/block:")
                except Exception as exc:  # noqa: BLE001
                    st.error(f"The audit could not run: {error_line(exc)}", icon=":material/block:")
                else:
                    report = _label_run_inputs(report, out.name)
                    abar.progress(1.0, text=f"Audit: {report.verdict.value}")
                    try:
                        get_store(settings).record(report, label=f"dashboard: federated {cfg.strategy}, "
                                                                 f"{cfg.num_clients} clients")
                    except TrustAuditError as exc:
                        st.warning(f"The audit could not be saved to the history: {exc.message}")
                    st.session_state[AUDIT_KEY] = report
                    set_current_report(report, "federated")

run = st.session_state.get(RUN_KEY)
if run is None:
    st.info("Configure the federation above and run it; the per-round charts appear here.", icon=":material/info:")
    st.stop()

cfg = run.config
st.subheader("Last run")
st.caption(f"{cfg.strategy}, {cfg.num_clients} clients, {cfg.num_rounds} rounds, partition {cfg.partition}, "
           f"model {cfg.model}" + (", central DP" if cfg.central_dp else "") + (", SecAgg+" if cfg.secagg else ""))
rounds = run.rounds_frame()
trained = rounds[rounds["round"] > 0]
m1, m2, m3, m4 = st.columns(4)
m1.metric("Final accuracy", f"{run.final_accuracy:.3f}")
if "global_loss" in rounds.columns:
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
run_files = st.session_state.get(OUT_KEY)
if run_files:
    st.caption(f"Metrics, report and model written under the server's data folder ({len(run_files)} files).")
    st.download_button("metrics.json", data=lambda: json.dumps(run.to_dict(), indent=2),
                       file_name="federated-metrics.json", mime="application/json", on_click="ignore",
                       icon=":material/download:")

report = st.session_state.get(AUDIT_KEY)
if report is not None:
    st.markdown("#### Audit of the final model")
    st.markdown(f"Verdict **{report.verdict.value}** over {len(report.results)} checks.")
    st.page_link(FINDINGS_PAGE, label="Read the findings", icon=":material/fact_check:")
