"""DP guarantees that hold: secret privacy randomness, Opacus' schedule, claims whose assumptions the
run broke, what an ε does not cover, and infinite ε in the JSON report.

* Same seed, two DP-SGD runs, in every grad-sample mode: the weights differ (noise and Poisson
  batches come from OS entropy). The non-private path reproduces exactly from the seed.
* A claim's (q, steps) from (N, B, epochs) equal what Opacus' own DPDataLoader and accountant record.
* ``privacy.dp_claim`` FAILs a claim that uses amplification by subsampling when the run sampled a
  fixed-size or seeded sample, or seeded its noise, and lists what the ε does not cover.
* A report with an infinite ε round-trips through JSON and the schema.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from audit.datasets import make_lending_data
from audit.privacy.accounting import (
    ClaimConditions,
    broken_assumptions,
    opacus_schedule,
    recompute_claim,
)
from audit.privacy.train_dp import GRAD_SAMPLE_MODES, DPTrainConfig, train_mlp
from audit.registry import get_check
from audit.results import AuditReport, CheckResult, EvidenceTable, Provenance, Verdict
from audit.runner import context_from_frames, run_check
from audit.spec import DPClaim


@pytest.fixture(scope="module")
def small():
    return make_lending_data(n_train=200, n_holdout=100, n_test=200, seed=4)


@pytest.fixture(scope="module")
def encoded(small):
    from audit.model import TabularEncoder

    X = small.train[list(small.features)]
    return TabularEncoder.fit(X).transform(X), small.train[small.target].to_numpy()


def _weights(t) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for p in t.module.parameters()])


@pytest.mark.parametrize("mode", GRAD_SAMPLE_MODES)
def test_same_seed_dp_runs_differ_in_every_mode(encoded, mode):
    Z, y = encoded
    cfg = DPTrainConfig(epochs=1, batch_size=32, hidden=(8,), accountant="rdp", seed=3, grad_sample_mode=mode)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = train_mlp(Z, y, target_epsilon=float("inf"), config=cfg, noise_multiplier=1.0)
        # target_epsilon inf is non-private whatever noise_multiplier says: same seed, same weights
        b = train_mlp(Z, y, target_epsilon=float("inf"), config=cfg, noise_multiplier=1.0)
        p = train_mlp(Z, y, target_epsilon=5.0, config=cfg, noise_multiplier=1.0)
        q = train_mlp(Z, y, target_epsilon=5.0, config=cfg, noise_multiplier=1.0)
    assert np.array_equal(_weights(a), _weights(b))
    assert a.dp_claim is None and a.dp_conditions is None
    diff = float(np.abs(_weights(p) - _weights(q)).max())
    assert diff > 1e-3, (mode, diff)
    # Opacus' warning that its own secure RNG is off reaches the user
    assert any("Secure RNG turned off" in str(w.message) for w in caught)
    # the claim is the same accountant arithmetic for both runs; nothing in it reproduces the noise
    assert p.dp_claim == q.dp_claim
    assert not any("seed" in k for k in p.dp_claim) and not any("seed" in k for k in p.dp_conditions)
    cond = ClaimConditions.from_mapping(p.dp_conditions)
    assert cond.sampling == "poisson" and cond.sampling_secret is True and cond.noise_secret is True
    assert "os.urandom" in cond.noise_source and broken_assumptions(p.dp_claim["sample_rate"], cond) == []


def test_exported_private_model_lists_what_its_epsilon_does_not_cover(encoded, small, tmp_path):
    from audit.io import load_model
    from audit.model import TabularEncoder
    from audit.privacy.train_dp import export_model

    Z, y = encoded
    t = train_mlp(Z, y, target_epsilon=5.0, config=DPTrainConfig(epochs=1, batch_size=32, hidden=(8,)),
                  noise_multiplier=1.0)
    enc = TabularEncoder.fit(small.train[list(small.features)])
    meta = load_model(export_model(t, enc, [0, 1], tmp_path / "m.pt")).adapter.metadata
    assert meta["dp_claim"] == t.dp_claim
    nc = meta["dp_conditions"]["not_covered"]
    assert any("encoder" in x for x in nc) and any("dataset_size" in x for x in nc)


@pytest.mark.parametrize(("n", "batch", "epochs"), [(50, 7, 3), (100, 30, 2), (33, 32, 4), (64, 64, 1)])
def test_claim_schedule_from_epochs_is_opacus_own(n, batch, epochs):
    """q = 1/ceil(N/B) and steps = E·ceil(N/B): what Opacus' DPDataLoader and accountant record
    for a real run over N rows with batch size B for E epochs."""
    import torch
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 2), torch.randn(n, 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, opt, dl = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                             data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0)
        for _ in range(epochs):
            for xb, yb in dl:
                opt.zero_grad()
                if len(xb):
                    torch.nn.functional.mse_loss(model(xb), yb).backward()
                else:  # an empty Poisson batch still takes a (noise-only) step
                    for p in model.parameters():
                        p.grad_sample = torch.zeros((0, *p.shape))
                opt.step()
    (_sigma, q_opacus, steps_opacus), = engine.accountant.history
    claim = DPClaim(epsilon=1.0, delta=1e-5, noise_multiplier=1.0, batch_size=batch, dataset_size=n, epochs=epochs)
    q, steps = opacus_schedule(claim)
    assert q == pytest.approx(q_opacus, rel=1e-12) and q == 1 / math.ceil(n / batch)
    assert steps == steps_opacus == epochs * math.ceil(n / batch)
    # and the recomputed ε is the accountant's for that history
    assert recompute_claim(claim)["rdp"].epsilon == pytest.approx(engine.accountant.get_epsilon(1e-5), rel=1e-9)


# --- privacy.dp_claim and the run's conditions ------------------------------------------------------


def _adapter(small, claim: dict, conditions: dict | None):
    import torch

    from audit.model import TabularEncoder, TorchAdapter

    enc = TabularEncoder.fit(small.train[list(small.features)])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(enc.width, 2)))
    meta = {"encoder": enc.to_dict(), "classes": [0, 1], "dp_claim": claim}
    if conditions is not None:
        meta["dp_conditions"] = conditions
    return TorchAdapter(net, meta)


def _check(small, claim: dict, conditions: dict | None):
    ctx = context_from_frames(_adapter(small, claim, conditions), small.test, target=small.target,
                              positive_label=1, sensitive=["sex"])
    return run_check(get_check("privacy.dp_claim"), ctx)


BASE = {"delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 0.5, "steps": 5, "accountant": "rdp"}
GOOD = {"sampling": "poisson", "sampling_secret": True, "noise_secret": True, "unit": "client",
        "not_covered": ["the encoder statistics", "the per-client label counts sent at setup"]}


def _eps(**kw) -> float:
    return recompute_claim(DPClaim(epsilon=1.0, **{**BASE, **kw}))["rdp"].epsilon


def test_dp_claim_fails_an_amplified_claim_on_a_fixed_size_seeded_sample(small):
    """The issue's central-DP example as the old run shipped it: ε 8.23 at q = m/N = 0.5 while the
    clients were a fixed-size sample reproducible from the seed. The arithmetic holds; the claim
    does not."""
    claim = {**BASE, "epsilon": _eps()}
    assert claim["epsilon"] == pytest.approx(8.23, abs=0.05)
    ok = _check(small, claim, GOOD)
    assert ok.verdict is Verdict.PASS, ok.summary
    broken = {**GOOD, "sampling": "fixed-size", "sampling_secret": False}
    r = _check(small, claim, broken)
    assert r.verdict is Verdict.FAIL
    assert r.summary.startswith("The claimed ε = 8.23 does not hold for this run")
    assert "sampled fixed-size" in r.summary and "seeded (reproducible)" in r.summary
    assert r.metrics["assumptions_broken"] == 2.0
    # the same run accounted without amplification (q = 1, ε 12.30) is a valid claim
    honest = {**BASE, "sample_rate": 1.0, "epsilon": _eps(sample_rate=1.0)}
    assert honest["epsilon"] == pytest.approx(12.30, abs=0.01)
    assert _check(small, honest, broken).verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"sampling_secret": False}, "sampling was seeded"),
     ({"sampling": "shuffle"}, "sampled shuffle"),
     ({"noise_secret": False}, "noise was drawn from a seeded generator")],
)
def test_dp_claim_fails_each_broken_assumption(small, change, needle):
    claim = {**BASE, "epsilon": _eps()}
    r = _check(small, claim, {**GOOD, **change})
    assert r.verdict is Verdict.FAIL and needle in r.summary, r.summary


def test_seeded_noise_fails_even_without_amplification(small):
    claim = {**BASE, "sample_rate": 1.0, "epsilon": _eps(sample_rate=1.0)}
    assert _check(small, claim, {**GOOD, "noise_secret": False}).verdict is Verdict.FAIL


def test_dp_claim_shows_what_the_epsilon_does_not_cover(small):
    r = _check(small, {**BASE, "epsilon": _eps()}, GOOD)
    assert r.provenance.params["not_covered"] == GOOD["not_covered"]
    table = next(t for t in r.evidence if t.name == "not_covered")
    assert [row["item"] for row in table.records] == GOOD["not_covered"]
    assert "Not covered by this ε: the encoder statistics; the per-client label counts sent at setup." in r.summary
    assert r.metrics["not_covered_items"] == 2.0


def test_dp_claim_without_recorded_conditions_states_its_assumption(small):
    r = _check(small, {**BASE, "epsilon": _eps()}, None)
    assert r.verdict is Verdict.PASS
    assert "not recorded" in r.summary and "secret Poisson sampling" in r.summary


def test_conditions_are_validated():
    with pytest.raises(ValueError, match="sampling must be one of poisson, fixed-size, shuffle, all"):
        ClaimConditions.from_mapping({"sampling": "random"})
    with pytest.raises(ValueError, match="unknown key"):
        ClaimConditions.from_mapping({"seed": 3})
    with pytest.raises(ValueError, match="noise_secret must be true or false"):
        ClaimConditions.from_mapping({"noise_secret": "yes"})


# --- non-finite numbers in the JSON report --------------------------------------------------------


def test_infinite_epsilon_round_trips_through_json_and_the_schema():
    from audit.report import validate_report_dict

    res = CheckResult(
        check_id="privacy.membership_inference", verdict=Verdict.FAIL, summary="ε ≥ inf.",
        metrics={"epsilon_lower_bound": math.inf, "floor": -math.inf, "auc": 0.9, "undefined": math.nan},
        policy={"empirical_epsilon_max": math.inf},
        evidence=(EvidenceTable("epsilon_bound", ({"attack": "loss", "epsilon_lower_bound": math.inf,
                                                  "fpr": math.nan},)),),
        provenance=Provenance(params={"bound": math.inf}, seed=1),
        family="privacy",
    )
    report = AuditReport(audit_id="0" * 32, created_at="2025-01-01T00:00:00Z", results=(res,),
                         model={"path": "m", "sha256": None})
    text = json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: no bare Infinity / NaN tokens
    d = json.loads(text)
    validate_report_dict(d)
    m = d["results"][0]["metrics"]
    assert m["epsilon_lower_bound"] == "Infinity" and m["floor"] == "-Infinity" and m["undefined"] is None
    back = AuditReport.from_dict(d).results[0]
    assert back.metrics["epsilon_lower_bound"] == math.inf and back.metrics["floor"] == -math.inf
    assert math.isnan(back.metrics["undefined"]) and back.metrics["auc"] == 0.9
    assert back.policy["empirical_epsilon_max"] == math.inf
    assert back.evidence[0].records[0]["epsilon_lower_bound"] == math.inf
    assert back.provenance.params["bound"] == math.inf
    assert AuditReport.from_dict(d).to_dict() == d
    bad = json.loads(text)
    bad["results"][0]["metrics"]["auc"] = "Inf"  # only the two documented spellings
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        validate_report_dict(bad)


def test_malformed_dp_conditions_in_model_metadata_is_bad_input():
    """The runner validates a shipped claim's conditions at the boundary: exit 2, not an ERROR result."""
    from types import SimpleNamespace

    from audit.exceptions import ConfigError
    from audit.runner import _resolve_dp_claim
    from audit.spec import spec_from_mapping

    spec = spec_from_mapping({"data": {"target": "y", "positive_label": 1}})

    def _validate_model_metadata(adapter):
        return _resolve_dp_claim(spec, adapter)

    claim = {"epsilon": 3.0, "delta": 1e-5, "noise_multiplier": 1.1, "batch_size": 30, "dataset_size": 100,
             "epochs": 2}
    _validate_model_metadata(SimpleNamespace(metadata={"dp_claim": claim, "dp_conditions": {"sampling": "poisson"}}))
    with pytest.raises(ConfigError, match="model metadata dp_conditions: dp_conditions: sampling must be one of"):
        _validate_model_metadata(SimpleNamespace(metadata={"dp_claim": claim, "dp_conditions": {"sampling": "x"}}))
    with pytest.raises(ConfigError) as err:
        _validate_model_metadata(SimpleNamespace(metadata={"dp_claim": claim, "dp_conditions": "{not json"}))
    assert err.value.exit_code == 2
    # an ONNX model's metadata holds the claim as JSON text: parsed, not refused
    import json

    resolved = _validate_model_metadata(SimpleNamespace(metadata={"dp_claim": json.dumps(claim)}))
    assert resolved.source == "model metadata" and resolved.claim.epsilon == 3.0
    assert resolved.conditions.recorded is False
    # resolved once, at the boundary, with the conditions the run recorded; a claim in the spec wins
    resolved = _validate_model_metadata(SimpleNamespace(metadata={"dp_claim": claim,
                                                                   "dp_conditions": {"sampling": "poisson"}}))
    assert resolved.conditions.sampling == "poisson"
    stated = spec_from_mapping({"data": {"target": "y", "positive_label": 1},
                                "privacy": {"dp_claim": {**claim, "epsilon": 5.0}}})
    won = _resolve_dp_claim(stated, SimpleNamespace(metadata={"dp_claim": claim}))
    assert won.source == "spec" and won.claim.epsilon == 5.0
    assert _resolve_dp_claim(spec, SimpleNamespace(metadata={})) is None


def test_claim_schedule_follows_opacus_from_the_spec_model():
    from audit.spec import DPClaim

    c = DPClaim(epsilon=3.0, delta=1e-5, noise_multiplier=1.1, batch_size=30, dataset_size=100, epochs=2.5)
    assert c.effective_sample_rate == 0.25  # 1 / ceil(100 / 30), not 0.3
    assert c.effective_steps == 10  # ceil(2.5 * 4)
    c = DPClaim(epsilon=3.0, delta=1e-5, noise_multiplier=1.1, sample_rate=0.3, epochs=2)
    assert c.effective_steps == 7  # ceil(2 / 0.3)
