"""Captum attributions for a TorchScript model loaded through the safe loader."""

from __future__ import annotations

import numpy as np
import pytest

from audit.checks._explain_methods import outcome
from audit.datasets import make_lending_data
from audit.io import load_model, save_torchscript
from audit.model import TabularEncoder
from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_check

torch = pytest.importorskip("torch")

FEATS = ["region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def torch_case(tmp_path_factory):
    """A small MLP on the lending features (one categorical column), trained briefly, saved as
    TorchScript with its encoder, and loaded back through audit.io.load_model."""
    data = make_lending_data(3000, 0, 800, seed=31)
    enc = TabularEncoder.fit(data.train[FEATS])
    Z = torch.as_tensor(enc.transform(data.train[FEATS]))
    y = torch.as_tensor(data.train["approved"].to_numpy(), dtype=torch.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(enc.width, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(Z)[:, 0], y)
        loss.backward()
        opt.step()
    path = tmp_path_factory.mktemp("torch") / "mlp.pt"
    save_torchscript(net.eval(), path,
                     metadata={"encoder": enc.to_dict(), "classes": [0, 1], "output": "logits"})
    return data, load_model(path)


def ctx_for(torch_case, **policy):
    data, loaded = torch_case
    return context_from_frames(
        loaded, data.test, target="approved", positive_label=1, sensitive=["sex"], train=data.train, seed=4,
        policy={"explain": {"sample_size": 200, "gradient_sample_size": 60, "background_size": 40,
                            "blackbox_sample_size": 15, "blackbox_permutations": 2, "lime_sample_size": 8,
                            "lime_num_samples": 300, "permutation_sample_size": 400,
                            "permutation_repeats": 3, "n_bootstrap": 100, **policy}},
    )


def test_integrated_gradients_converge_per_input_column(torch_case):
    ctx = ctx_for(torch_case)
    res = run_check(get_check("explain.gradients"), ctx)
    assert res.verdict is Verdict.PASS, res.summary
    assert res.metrics["convergence_delta_max_abs"] < 0.05  # the stated tolerance (policy default)
    assert res.policy["ig_max_convergence_delta"] == 0.05
    ig = outcome(ctx, "gradients").get()["integrated_gradients"]
    assert ig.features == tuple(FEATS)  # the region one-hot block is summed back into "region"
    assert ig.local.shape == (60, len(FEATS))
    # completeness, per row: attributions sum to f(x) - f(baseline) up to the convergence delta
    assert res.metrics["convergence_delta_relative"] < 0.05
    assert res.metrics["infidelity_mean"] >= 0 and res.metrics["sensitivity_max_mean"] > 0
    top = [r["feature"] for r in res.table("global_importance").records
           if r["method"] == "Integrated Gradients"]
    imp = {r["feature"]: r["importance"] for r in res.table("global_importance").records
           if r["method"] == "Integrated Gradients"}
    assert set(top) == set(FEATS)
    assert max(imp, key=imp.get) == "income"
    assert res.table("global_importance").plot.group == "method"


def test_too_strict_tolerance_fails_after_refining_steps(torch_case):
    ctx = ctx_for(torch_case, ig_max_convergence_delta=0.0, ig_n_steps=4)
    res = run_check(get_check("explain.gradients"), ctx)
    assert res.verdict is Verdict.FAIL
    attempts = res.table("convergence").records
    assert [a["n_steps"] for a in attempts] == [4, 16, 64]
    assert attempts[-1]["max_abs_delta"] < attempts[0]["max_abs_delta"]


def test_torch_model_gets_every_method_and_agreement(torch_case):
    ctx = ctx_for(torch_case)
    shap_res = run_check(get_check("explain.shap"), ctx)
    assert shap_res.verdict is Verdict.PASS, shap_res.summary
    assert shap_res.provenance.params["explainer"] == "PermutationExplainer"
    agree = run_check(get_check("explain.agreement"), ctx)
    assert agree.verdict is not Verdict.ERROR
    assert agree.provenance.params["methods"] == [
        "SHAP", "LIME", "permutation importance", "Integrated Gradients", "GradientSHAP"]
    assert len(agree.table("agreement_matrix").records) == 25
    assert agree.metrics["spearman.integrated_gradients~gradient_shap"] > 0.8
    assert np.isfinite(agree.metrics["min_spearman"])
