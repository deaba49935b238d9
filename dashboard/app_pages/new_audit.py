"""New audit: upload a model and data, choose target / positive label / sensitive features (or
upload a spec), optionally a causal graph and a DP claim, and submit the audit as a job.

The audit runs in a worker, not in this page: the page writes the uploads into a job folder,
queues the job in the store and follows it from there (``?job=<id>`` in the URL). Changing a
widget, reloading the page or closing the browser leaves the audit running; on this URL the page
picks it up again, and once it succeeded shows its findings from the store.
"""

from __future__ import annotations

import streamlit as st

from audit.exceptions import SpecError, StoreError, TrustAuditError
from audit.registry import families
from dashboard._intake import (
    MAX_TEXT_UPLOAD_BYTES,
    build_spec_mapping,
    display_name,
    missing_model_columns,
    parse_spec_upload,
)
from dashboard._jobs import POLL_SECONDS, show_job, submit_audit
from dashboard._state import (
    error_line,
    follow_job,
    followed_job,
    forget_job,
    get_job,
    get_settings,
    get_store,
    load_model_slot,
    load_table_slot,
    set_current_report,
    upload_slot,
)

FINDINGS_PAGE = "app_pages/findings.py"
JOBS_PAGE = "app_pages/jobs.py"
SENSITIVE_HINTS = ("sex", "gender", "race", "ethnicity", "age_group", "religion", "disability",
                   "marital_status", "nationality")
FAMILY_HELP = {f.name: f.help or f.title for f in families()}  # every registered family, plugins too
FAMILIES = tuple(FAMILY_HELP)

settings = get_settings()
st.title("New audit")
st.caption(
    "Upload the model and the rows to audit. Files are checked by their content, stored under "
    f"generated names, and limited to {settings.max_upload_mb} MB each. Models: skops, ONNX or "
    "TorchScript" + (" (pickle/joblib allowed on this server)." if settings.allow_unsafe_pickle
                     else "; pickle/joblib files are refused.")
)


# --- the audit this page follows (it runs in a worker) ---------------------------------------


@st.fragment(run_every=POLL_SECONDS)
def _live(job_id: str) -> None:
    """Re-reads the job every second on its own (a widget change elsewhere does not touch it);
    once the job has ended the whole page reruns to show the outcome."""
    try:
        job = get_job(get_store(settings), job_id)
    except StoreError as exc:
        st.warning(f"The audit's progress cannot be read right now: {exc.message}", icon=":material/sync_problem:")
        return
    if job is None or job.finished:
        st.rerun()
    if show_job(get_store(settings), job, key="new"):
        st.rerun()


def _follow(job_id: str) -> None:
    try:
        store = get_store(settings)
        job = get_job(store, job_id)
    except StoreError as exc:
        st.error(exc.message, icon=":material/block:")
        return
    if job is None or job.kind != "audit":
        forget_job("audit")
        if job is None:
            st.warning(f"No audit job {job_id[:12]} in the history store; start a new audit below.",
                       icon=":material/search_off:")
        return
    if job.state == "succeeded":
        try:
            report = store.get(job.audit_id)
        except TrustAuditError as exc:
            st.error(f"The audit finished but its report cannot be read: {exc.message}", icon=":material/block:")
            forget_job("audit")
            return
        forget_job("audit")
        set_current_report(report, "run")
        st.switch_page(FINDINGS_PAGE)
    if job.finished:
        with st.container(border=True):
            show_job(store, job, key="new_done")
            if job.state == "failed":
                st.error(job.error or "The audit failed.", icon=":material/block:")
            else:
                st.info(f"The audit was cancelled{': ' + job.error if job.error else '.'}", icon=":material/cancel:")
            if st.button("Dismiss", key="dismiss_job", type="tertiary"):
                forget_job("audit")
                st.rerun()
        return
    _live(job_id)
    st.caption("The audit runs on the server: you may change the form, reload the page or close it; the "
               "Jobs page lists it, and History will hold its report.")


# shown under the Run button when the form is there, else (a reload: no uploads yet) up here
following = followed_job("audit")
top = st.container()

# --- uploads ---------------------------------------------------------------------------------
c_model, c_data = st.columns(2)
model_up = upload_slot("model", "Model file", max_mb=settings.max_upload_mb, container=c_model,
                       help="skops (.skops), ONNX (.onnx) or TorchScript (.pt); recognised by content")
data_up = upload_slot("data", "Data to audit (CSV or Parquet)", max_mb=settings.max_upload_mb, container=c_data,
                      help="the rows the audit measures; must contain the target and the model's input columns")
with st.expander("More data (optional): training rows and holdout rows",
                 expanded=bool(st.session_state.get("trustaudit_slot_train") or
                               st.session_state.get("trustaudit_slot_holdout"))):
    st.caption("Membership inference compares the model on rows it was trained on with rows it never saw; "
               "mitigation refits on the training rows.")
    c_train, c_hold = st.columns(2)
    train_up = upload_slot("train", "Training rows", max_mb=settings.max_upload_mb, container=c_train,
                           help="CSV or Parquet with the same columns as the audited data")
    hold_up = upload_slot("holdout", "Holdout rows", max_mb=settings.max_upload_mb, container=c_hold,
                          help="CSV or Parquet with rows not used in training")
spec_up = upload_slot("spec", "Audit spec (optional, TOML)", max_mb=1,
                      help="target, positive label, sensitive features, checks, policy, causal graph, DP claim; "
                           "its model and data paths are ignored (the uploads are used)")

problems = 0
spec_base: dict = {}
# the form's widgets are keyed by the spec, so uploading another spec resets them to its values
form_id = spec_up.sha256[:10] if spec_up is not None else "nospec"
if spec_up is not None:
    try:
        if spec_up.size > MAX_TEXT_UPLOAD_BYTES:
            raise SpecError(f"uploaded spec '{spec_up.name}' is larger than 1 MB")
        spec_base, ignored = parse_spec_upload(spec_up.data, spec_up.name)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
        problems += 1
    else:
        note = f"Spec **{spec_up.name}** read." + (
            f" Ignored (the uploads are used instead): {', '.join(ignored)}." if ignored else "")
        st.info(note)

model = None
frames: dict = {}
na_values: tuple[str, ...] = tuple(map(str, spec_base.get("data", {}).get("na_values", ("?",))))

if model_up is not None:
    try:
        model = load_model_slot(model_up, settings)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
        problems += 1
    except Exception as exc:  # noqa: BLE001 - any library may fail on hostile bytes; show one line
        st.error(f"The model could not be loaded: {error_line(exc)}", icon=":material/block:")
        problems += 1
    else:
        info = model.info()
        feats = info.get("feature_names") or []
        st.success(f"Model **{info['path']}**: {info['format']}, {info['type']}, classes "
                   f"{', '.join(map(str, info['classes']))}; {len(feats)} input columns.",
                   icon=":material/check_circle:")
        if model.format == "pickle":
            st.warning("This model is a pickle: loading it ran whatever code it contains. The server allows "
                       "this because it was started with the unsafe-pickle option.")

for role, up in (("test", data_up), ("train", train_up), ("holdout", hold_up)):
    if up is None:
        continue
    try:
        frame, _stored = load_table_slot(up, settings, kind=role, na_values=na_values)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
        problems += 1
        continue
    except Exception as exc:  # noqa: BLE001
        st.error(f"The data file '{up.name}' could not be read: {error_line(exc)}", icon=":material/block:")
        problems += 1
        continue
    frames[role] = frame
    if model is not None:
        missing = missing_model_columns(model, frame.columns)
        if missing:
            st.error(f"The model expects columns the data '{up.name}' lacks: {', '.join(missing)}",
                     icon=":material/block:")
            problems += 1

if "test" in frames:
    test = frames["test"]
    with st.expander(f"Preview of **{data_up.name}**: {len(test):,} rows × {test.shape[1]} columns"):
        st.dataframe(test.head(50), hide_index=True)

if model is None or "test" not in frames:
    st.info("Upload a model and the data to audit to continue.", icon=":material/info:")
    if following:
        with top:
            _follow(following)
    st.stop()

# --- choices ---------------------------------------------------------------------------------
test = frames["test"]
columns = [str(c) for c in test.columns]
spec_data = dict(spec_base.get("data", {}))
feats = set(map(str, model.adapter.feature_names or ()))
not_inputs = [c for c in columns if c not in feats]
default_target: str = str(spec_data["target"]) if spec_data.get("target") in columns else (
    "approved" if "approved" in not_inputs else (not_inputs[-1] if not_inputs else columns[-1]))

st.subheader("What to audit")
c1, c2, c3 = st.columns(3)
target = str(c1.selectbox("Target column", columns, index=columns.index(default_target),
                          key=f"form_target_{form_id}", help="the outcome the model predicts"))
values = sorted(map(str, test[target].dropna().astype(str).unique()))
if len(values) > 50:
    positive = c2.text_input("Positive label", value=str(spec_data.get("positive_label", "")),
                             key=f"form_positive_text_{target}_{form_id}", help="the favourable outcome's value")
else:
    wanted = str(spec_data.get("positive_label", "")) if "positive_label" in spec_data else None
    idx = values.index(wanted) if wanted in values else (len(values) - 1 if values else 0)
    positive = c2.selectbox("Positive label", values, index=idx, key=f"form_positive_{target}_{form_id}",
                            help="the favourable outcome's value")
candidates = [c for c in columns if c != target]
default_sensitive = [c for c in spec_data.get("sensitive", ()) if c in candidates] if "sensitive" in spec_data else [
    c for c in candidates if c.lower() in SENSITIVE_HINTS]
sensitive = c3.multiselect("Sensitive features", candidates, default=default_sensitive, key=f"form_sensitive_{form_id}",
                           help="groups compared by the fairness checks (need not be model inputs)")
default_checks = list(spec_base.get("checks", FAMILIES))
check_options = list(dict.fromkeys([*FAMILIES, *default_checks]))  # families, and check ids a spec names
c4, c5 = st.columns([3, 1])
checks = c4.multiselect("Check families (or single checks)", check_options, default=default_checks,
                        key=f"form_checks_{form_id}",
                        help="; ".join(f"{k}: {v}" for k, v in FAMILY_HELP.items()))
seed = c5.number_input("Seed", min_value=0, max_value=2**32 - 1, value=int(spec_base.get("seed", 0)), step=1,
                       key=f"form_seed_{form_id}", help="every stochastic step (bootstrap, sampling) uses it")

causal_form: dict = {}
with st.expander("Causal graph (optional)", expanded="causal" in checks and not spec_base.get("causal")):
    st.caption("DOT (`digraph { sex -> income; income -> approved }`) or GML text; nodes are data columns. "
               "Used by the causal checks.")
    graph_file = st.file_uploader("Graph file (.dot, .gv, .gml)", key="upload_graph", max_upload_size=1)
    graph_text = st.text_area("…or paste the graph", key=f"form_graph_{form_id}", height=120)
    if graph_file is not None:
        raw = graph_file.getvalue()
        if len(raw) > MAX_TEXT_UPLOAD_BYTES:
            st.error(f"graph file '{display_name(graph_file.name)}' is larger than 1 MB")
            problems += 1
        else:
            try:
                graph_text = raw.decode("utf-8")
            except UnicodeDecodeError:
                st.error(f"graph file '{display_name(graph_file.name)}' is not UTF-8 text")
                problems += 1
    spec_causal = dict(spec_base.get("causal", {}))
    treat_options = ["(first sensitive feature)", *candidates]
    treat_default = spec_causal.get("treatment")
    treatment = st.selectbox("Treatment (the attribute whose effect is measured)", treat_options,
                             index=treat_options.index(treat_default) if treat_default in treat_options else 0,
                             key=f"form_treatment_{form_id}")
    mediators = st.multiselect("Mediators (paths to decompose)", candidates,
                               default=[m for m in spec_causal.get("mediators", ()) if m in candidates],
                               key=f"form_mediators_{form_id}")
    if graph_text.strip():
        causal_form["graph"] = graph_text
    if treatment != treat_options[0]:
        causal_form["treatment"] = treatment
    if mediators:
        causal_form["mediators"] = list(mediators)

dp_claim = None
with st.expander("Differential-privacy claim (optional)"):
    st.caption("If the model was trained with DP-SGD, state the claim and the audit recomputes ε with "
               "Opacus' accountants and compares it with the attack's empirical lower bound.")
    if st.checkbox("The model claims differential privacy", key="form_dp"):
        d1, d2, d3 = st.columns(3)
        eps = d1.number_input("ε (claimed)", min_value=0.0, value=1.0, step=0.1, format="%.4g", key="dp_eps")
        delta = d2.number_input("δ", min_value=0.0, max_value=0.999999, value=1e-5, format="%.2e", key="dp_delta")
        sigma = d3.number_input("Noise multiplier σ", min_value=0.0, value=1.0, step=0.1, key="dp_sigma")
        d4, d5, d6 = st.columns(3)
        q = d4.number_input("Sampling rate q", min_value=0.0, max_value=1.0, value=0.01, format="%.4g", key="dp_q")
        steps = d5.number_input("Steps", min_value=1, value=1000, step=100, key="dp_steps")
        accountant = d6.selectbox("Accountant of the claim", ["rdp", "prv", "gdp"], key="dp_accountant")
        dp_claim = {"epsilon": eps, "delta": delta, "noise_multiplier": sigma, "sample_rate": q,
                    "steps": int(steps), "accountant": accountant}

# --- run -------------------------------------------------------------------------------------
run = st.button("Run the audit", type="primary", icon=":material/play_arrow:", disabled=problems > 0 or not checks,
                key="run_audit")
if problems:
    st.caption("Fix the problems above to run the audit.")
if run:
    from audit.spec import spec_from_mapping

    try:
        mapping = build_spec_mapping(
            base=spec_base, target=target, positive_label=positive,
            sensitive=sensitive, checks=checks, seed=int(seed), causal=causal_form or None, dp_claim=dp_claim,
        )
        spec_from_mapping(mapping, source="the form")  # a bad choice is one line here, before anything is queued
        files = {role: (up.name, up.data) for role, up in (("model", model_up), ("data", data_up),
                                                           ("train", train_up), ("holdout", hold_up)) if up is not None}
        job_id = submit_audit(get_store(settings), settings, files, mapping, na_values=na_values)
    except TrustAuditError as exc:
        st.error(exc.message, icon=":material/block:")
    except Exception as exc:  # noqa: BLE001 - never a traceback: one line, the app stays usable
        st.error(f"The audit could not be submitted: {error_line(exc)}", icon=":material/block:")
    else:
        earlier = get_job(get_store(settings), following) if following else None
        if earlier is not None and not earlier.finished:
            st.toast(f"The earlier audit (job {following[:12]}) goes on; the Jobs page lists it.")
        st.toast(f"Audit submitted (job {job_id[:12]}); it runs on the server.", icon=":material/send:")
        follow_job("audit", job_id)
        st.rerun()
if following:
    _follow(following)
