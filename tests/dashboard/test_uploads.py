"""Upload safety: limits, content checks, generated names, pickle only when the server allows it.

Each bad upload shows one clear line and leaves the app usable (the next good upload works).
"""

from __future__ import annotations

import pytest

from audit.exceptions import DataFileError, ModelLoadError, SpecError
from dashboard._intake import (
    build_spec_mapping,
    check_upload_size,
    display_name,
    parse_spec_upload,
    read_table_upload,
    store_upload,
)
from tests.dashboard.conftest import csv_bytes, errors, jobs_in_store, new_app, run_jobs, uploader

PICKLE_REFUSED = (
    "model file model.pkl is a pickle/joblib file: loading it can run arbitrary code; refused. Save the model "
    "with skops (or ONNX/TorchScript), or pass --unsafe-pickle only if you trust its source"
)


def _run_enabled(at) -> bool:
    return not at.button(key="run_audit").disabled


def test_pickle_refused_unless_the_server_allows_it(dash_env, monkeypatch, pickle_model, skops_model, test_csv):
    at = new_app().run()
    uploader(at, "upload_model").set_value(("model.pkl", pickle_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at.run()
    assert not at.exception
    assert errors(at) == [PICKLE_REFUSED]
    assert at.info[-1].value == "Upload a model and the data to audit to continue."
    # still usable: a skops model replaces it
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    at.run()
    assert not errors(at) and _run_enabled(at)

    monkeypatch.setenv("TRUSTAUDIT_DASHBOARD_UNSAFE_PICKLE", "1")
    at2 = new_app().run()
    assert "pickle/joblib allowed on this server" in at2.caption[0].value
    uploader(at2, "upload_model").set_value(("model.pkl", pickle_model, "application/octet-stream"))
    uploader(at2, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at2.run()
    assert not errors(at2)
    assert at2.success[0].value.startswith("Model **model.pkl**: pickle,")
    assert at2.warning[0].value.startswith("This model is a pickle: loading it ran whatever code it contains.")

    # the audit job carries the server's consent; a worker runs a pickle only when it allows them too
    at2.button(key="run_audit").click().run()
    (job,) = jobs_in_store()
    assert job.inputs["model"]["allow_unsafe_pickle"] is True
    assert run_jobs(unsafe_pickle=False) == {"failed": 1}
    assert jobs_in_store()[0].error.startswith("model file model.pkl is a pickle/joblib file")
    at2.run()
    assert errors(at2)[0].startswith("model file model.pkl is a pickle/joblib file")
    at2.button(key="dismiss_job").click().run()
    at2.button(key="run_audit").click().run()
    assert run_jobs(unsafe_pickle=True) == {"succeeded": 1}
    at2.run()
    assert [t.value for t in at2.title] == ["Findings"]
    assert at2.session_state["trustaudit_report"].model["format"] == "pickle"


def test_a_pickle_submitted_by_a_server_that_refuses_them_never_runs(dash_env, skops_model, pickle_model, test_csv):
    """Without the server's consent the job says so, even to a worker started with --unsafe-pickle."""
    from audit.store import open_store
    from dashboard._jobs import submit_audit
    from dashboard._settings import DashboardSettings

    settings = DashboardSettings.from_env()
    assert not settings.allow_unsafe_pickle
    spec = {"data": {"target": "approved", "positive_label": 1}, "checks": ["fairness.group_metrics"]}
    with open_store(None) as store:
        submit_audit(store, settings, {"model": ("model.pkl", pickle_model), "data": ("test.csv", test_csv)}, spec)
    assert run_jobs(unsafe_pickle=True) == {"failed": 1}
    assert jobs_in_store()[0].error.startswith("model file model.pkl is a pickle/joblib file")


def test_oversized_upload_refused(dash_env, monkeypatch, small_lending, skops_model, test_csv):
    monkeypatch.setenv("TRUSTAUDIT_DASHBOARD_MAX_UPLOAD_MB", "1")
    big = csv_bytes(small_lending.train.sample(n=20_000, replace=True, random_state=0))
    assert len(big) > 1024 * 1024
    at = new_app().run()
    assert "limited to 1 MB each" in at.caption[0].value
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("big.csv", big, "text/csv"))
    at.run()
    assert not at.exception
    assert errors(at) == [f"data file 'big.csv' is {len(big) / 1024 / 1024:.1f} MB; the upload limit is 1 MB"]
    uploader(at, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at.run()
    assert not errors(at) and _run_enabled(at)


def test_binary_file_renamed_csv_refused(dash_env, skops_model, test_csv):
    at = new_app().run()
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("data.csv", skops_model, "text/csv"))  # a zip, named .csv
    at.run()
    assert not at.exception
    assert errors(at) == ["data file 'data.csv' is zip-compressed; decompress it first (CSV or Parquet)"]
    uploader(at, "upload_data").set_value(("data.csv", test_csv, "text/csv"))
    at.run()
    assert not errors(at) and _run_enabled(at)


def test_model_data_column_mismatch(dash_env, small_lending, skops_model, test_csv):
    at = new_app().run()
    lacking = csv_bytes(small_lending.test.drop(columns=["income", "debt_ratio"]))
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("test.csv", lacking, "text/csv"))
    at.run()
    assert not at.exception
    assert errors(at) == ["The model expects columns the data 'test.csv' lacks: income, debt_ratio"]
    assert not _run_enabled(at)
    uploader(at, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at.run()
    assert not errors(at) and _run_enabled(at)


def test_errors_at_run_time_are_one_line(dash_env, skops_model, test_csv):
    at = new_app().run()
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at.run()
    target = next(s for s in at.selectbox if s.key.startswith("form_target"))
    target.set_value("region").run()
    positive = next(s for s in at.selectbox if s.key.startswith("form_positive_region"))
    assert positive.value == "south"  # the last value in sorted order
    at.button(key="run_audit").click().run()
    assert not at.exception and not errors(at)
    assert run_jobs() == {"failed": 1}  # the worker's audit refuses it, with the runner's one line
    (job,) = jobs_in_store()
    assert job.error == "positive label 'south' is not among the model's classes (0, 1)"
    at.run()
    assert not at.exception
    assert errors(at) == ["positive label 'south' is not among the model's classes (0, 1)"]
    assert [t.value for t in at.title] == ["New audit"]  # still here, still usable
    assert not at.button(key="run_audit").disabled


@pytest.mark.parametrize("text, message", [
    (b"checks = [", "uploaded spec 'spec.toml' is not valid TOML: "),
    (b'checks = ["bogus"]\n', "uploaded spec 'spec.toml': field 'checks' unknown check family 'bogus'"),
    (b'[causal]\ngraph = "/etc/graph.dot"\n',
     "causal graph: give DOT text ('digraph { a -> b }'), GML text or an edge list; file paths are not accepted "
     "by the dashboard (got '/etc/graph.dot')"),
    (b"\xff\xfe\x00", "uploaded spec 'spec.toml' is not UTF-8 text"),
])
def test_bad_spec_uploads(dash_env, skops_model, test_csv, text, message):
    at = new_app().run()
    uploader(at, "upload_spec").set_value(("spec.toml", text, "application/toml"))
    uploader(at, "upload_model").set_value(("model.skops", skops_model, "application/octet-stream"))
    uploader(at, "upload_data").set_value(("test.csv", test_csv, "text/csv"))
    at.run()
    assert not at.exception
    assert len(errors(at)) == 1 and errors(at)[0].startswith(message)
    assert not _run_enabled(at)


# --- the intake functions ---------------------------------------------------------------------


def test_uploaded_names_are_never_paths(tmp_path):
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\x\\model.skops") == "model.skops"
    assert display_name("a`b*[c](d)<e>.csv") == "abc(d)e.csv"
    assert display_name("") == "upload"
    p = store_upload(b"x,y\n1,2\n", tmp_path, "../data")
    assert p.parent == tmp_path and p.name.startswith("data-") and p.name.endswith(".upload")
    frame, path = read_table_upload(b"x,y\n1,2\n", "../../evil.csv", tmp_path)
    assert path.parent == tmp_path and list(frame.columns) == ["x", "y"]
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted([p.name, path.name])


def test_size_limits_and_empty_files():
    check_upload_size("data file", "a.csv", 1024 * 1024, 1)  # exactly the limit is fine
    with pytest.raises(DataFileError, match=r"^data file 'a.csv' is 1.0 MB; the upload limit is 1 MB$"):
        check_upload_size("data file", "a.csv", 1024 * 1024 + 1, 1)
    with pytest.raises(ModelLoadError, match=r"^model file 'm.onnx' is empty$"):
        check_upload_size("model file", "m.onnx", 0, 1)


def test_spec_upload_keeps_only_what_the_dashboard_uses():
    used, ignored = parse_spec_upload(
        b'seed = 3\nchecks = ["fairness"]\n[model]\npath = "m.skops"\ntrusted_types = ["os.system"]\n'
        b'[data]\ntest = "/etc/passwd"\ntrain = "t.csv"\ntarget = "y"\npositive_label = "yes"\n'
        b'[causal]\nedges = [["a", "y"]]\n', "s.toml")
    assert used == {"seed": 3, "checks": ["fairness"], "data": {"target": "y", "positive_label": "yes"},
                    "causal": {"edges": [["a", "y"]]}}
    assert ignored == ["model", "data.test", "data.train"]
    mapping = build_spec_mapping(base=used, target="y", positive_label="yes",
                                 sensitive=["s"], checks=["fairness"], seed=4,
                                 causal={"graph": "digraph { s -> y }", "treatment": "s"},
                                 dp_claim={"epsilon": 1.0})
    assert "model" not in mapping  # the model and data are handed to the runner as objects: no paths
    assert mapping["data"] == {"target": "y", "positive_label": "yes", "sensitive": ["s"]}
    assert mapping["causal"] == {"graph": "digraph { s -> y }", "treatment": "s"}  # the form's graph wins
    assert mapping["privacy"] == {"dp_claim": {"epsilon": 1.0}}
    assert mapping["seed"] == 4
    with pytest.raises(SpecError, match="file paths are not accepted"):
        build_spec_mapping(base={}, target="y", positive_label=1, sensitive=[], checks=["causal"],
                           seed=0, causal={"graph": "graph.gml"})


class _CrashOnLoad:
    """Unpickling this calls ctypes.string_at(0): a segfault in whatever process loads it."""

    def __reduce__(self):
        import ctypes

        return (ctypes.string_at, (0,))


def test_model_upload_is_trial_loaded_in_a_child(dash_env):
    """A file that crashes its loader ends a child process: one line, and the server goes on."""
    import pickle

    from audit.exceptions import ModelError
    from dashboard._intake import load_model_upload

    with pytest.raises(ModelError, match=r"^the model crashed the model loading process \(SIGSEGV\)$"):
        load_model_upload(pickle.dumps(_CrashOnLoad()), "evil.pkl", allow_unsafe_pickle=True)
