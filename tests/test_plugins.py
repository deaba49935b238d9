"""A third-party check family, installed with pip from tests/plugins/, runs end to end with no edit
to trustaudit: in the CLI (its policy read from a spec, its result in the JSON and HTML reports)
and in the dashboard (offered on the new-audit page, run there, shown under its own title).

The package (``trustaudit-quality``) declares one entry point in the ``trustaudit.checks`` group;
its one module registers the ``quality`` family, its policy model and ``quality.brier_score``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dashboard.conftest import dash_env  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "tests" / "plugins" / "trustaudit_quality"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed by pip into a fresh folder (the source copied first: the build writes
    into the tree it builds)."""
    work = tmp_path_factory.mktemp("plugin")
    src = work / "src"
    shutil.copytree(PLUGIN, src)
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(target), str(src)],
                   check=True, capture_output=True, timeout=300)
    assert list(target.glob("trustaudit_quality-0.1.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, lending) -> dict[str, Path]:
    from audit.io import save_skops
    from tests.audit.helpers import lr_pipeline

    d = tmp_path_factory.mktemp("quality")
    model = lr_pipeline(lending)
    save_skops(model, d / "model.skops")
    lending.test.to_csv(d / "test.csv", index=False)
    (d / "audit.toml").write_text(
        'checks = ["quality", "fairness.group_metrics"]\nseed = 5\n[model]\npath = "model.skops"\n'
        '[data]\ntest = "test.csv"\ntarget = "approved"\npositive_label = 1\nsensitive = ["sex"]\n'
        '[policy.quality]\nbrier_max = 0.3\nn_bootstrap = 300\n'
    )
    return {"dir": d, "model": d / "model.skops", "test": d / "test.csv", "spec": d / "audit.toml"}


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "audit.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_the_plugin_runs_in_the_cli_and_its_report(site, files, lending) -> None:
    out = files["dir"] / "out"
    proc = _cli(site, "audit", "--spec", str(files["spec"]), "--out", str(out), "--no-store", "--quiet")
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads((out / "report.json").read_text())
    res = {r["check_id"]: r for r in report["results"]}
    assert set(res) == {"quality.brier_score", "fairness.group_metrics"}
    brier = res["quality.brier_score"]
    assert brier["family"] == "quality" and brier["verdict"] in {"PASS", "WARN", "FAIL"}
    # ground truth: the Brier score of the model's probability, as scikit-learn computes it
    from sklearn.metrics import brier_score_loss

    from audit.io import load_model

    model = load_model(files["model"]).adapter
    proba = model.predict_proba(lending.test.drop(columns=["approved"]))[:, 1]
    truth = brier_score_loss(lending.test["approved"] == 1, proba)
    m = brier["metrics"]
    assert m["brier_score"] == pytest.approx(truth, rel=1e-9)
    assert m["brier_score.ci_low"] < truth < m["brier_score.ci_high"]
    assert brier["policy"] == {"brier_max": 0.3}  # the spec's [policy.quality] reached the plugin's model
    assert report["spec"]["policy"]["quality"] == {"brier_max": 0.3, "n_bootstrap": 300, "confidence_level": 0.95}
    html = (out / "report.html").read_text()
    assert "quality.brier_score" in html and "Brier score" in html
    # a typo in the plugin's policy is refused like any other: one line, exit 2
    bad = files["dir"] / "bad.toml"
    bad.write_text(files["spec"].read_text().replace("brier_max", "brier_maxx"))
    proc = _cli(site, "audit", "--spec", str(bad), "--json", str(out / "x.json"), "--no-store", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "trustaudit: error: spec bad.toml: unknown key 'policy.quality.brier_maxx'"
    # without the package installed, the family is unknown (nothing in trustaudit names it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "audit", "--spec", str(files["spec"]), "--json",
                           str(out / "y.json"), "--no-store", "--quiet"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 2 and "unknown check family 'quality'" in proc.stderr


@pytest.fixture
def plugin_loaded(site):
    """The plugin discovered by this process (as a notebook would after installing it)."""
    from audit.registry import discover_plugins, unregister_family

    sys.path.insert(0, str(site))
    try:
        assert "quality" in discover_plugins()
        yield
    finally:
        unregister_family("quality")
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.startswith("trustaudit_quality")]:
            del sys.modules[name]


@pytest.mark.usefixtures("dash_env")
def test_the_plugin_runs_in_the_python_api_and_the_dashboard(plugin_loaded, files, lending) -> None:
    from audit import run_audit
    from audit.io import load_model
    from tests.dashboard.conftest import errors, new_app, run_jobs, uploader

    report = run_audit(load_model(files["model"]), lending.test, target="approved", positive_label=1,
                       checks=["quality"], policy={"quality": {"brier_max": 0.01}})
    r = report.result("quality.brier_score")
    assert r.verdict.value == "FAIL" and r.metrics["brier_score.ci_low"] > 0.01  # wholly beyond the limit
    at = new_app().run()
    uploader(at, "upload_model").set_value(("model.skops", files["model"].read_bytes(), "application/octet-stream"))
    uploader(at, "upload_data").set_value(("test.csv", files["test"].read_bytes(), "text/csv"))
    at.run()
    assert not at.exception and not errors(at)
    boxes = [m for m in at.multiselect if m.key and m.key.startswith("form_checks_")]
    assert boxes and "quality" in boxes[0].options  # offered like a built-in family
    boxes[0].set_value(["quality"])
    target = [s for s in at.selectbox if s.key and s.key.startswith("form_target_")]
    if target:
        target[0].set_value("approved")
    at.run()
    at.button(key="run_audit").click().run()
    assert not at.exception and not errors(at), errors(at)
    assert run_jobs() == {"succeeded": 1}  # a worker takes the job the page submitted
    at.run()
    assert not at.exception and not errors(at), errors(at)
    shown = at.session_state["trustaudit_report"]  # the report the page holds, from the audit it ran
    assert [x.check_id for x in shown.results] == ["quality.brier_score"]
    assert shown.result("quality.brier_score").metrics["brier_score"] == pytest.approx(r.metrics["brier_score"])
    assert [t.label for t in at.tabs] == ["Overview", "Model quality"]  # the title it registered with
    at.session_state["findings_tab"] = "Model quality"
    at.run()
    assert not at.exception and not errors(at)
    md = " ".join(m.value for m in at.markdown)
    assert "quality.brier_score" in md and "Brier score" in md
