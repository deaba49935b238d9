"""Benchmark of the privacy family (a script, not a test): DP-SGD cost and membership-audit time.

1. DP-SGD epoch time against the non-private epoch on the same MLP and data: UCI Adult (train +
   test files, 70 % for training = 34,189 rows, one-hot encoded), two hidden layers of 64, batch
   256, Adam. Modes: bk (book-keeping clipping, one backward pass, with Opacus' noise calibration,
   noise and accountant) and Opacus' hooks, ew (expanded weights), functorch, ghost (ghost clipping).
   Two data pipelines: the stock ``TensorDataset`` loader (one Python call per row) and a batched
   loader (``__getitems__``: one indexing call per batch), at 1 and 2 torch threads, and a larger
   batch. Each figure is the median of the epochs after a warm-up epoch, over repeated runs.
2. The membership-inference audit (``privacy.membership_inference``) on Adult for a non-private
   MLP and a DP one (ε = 3): wall time of the check, AUC and TPR at low FPR per attack, and the
   empirical ε lower bound.

3. The anchor workload of ``bench_audit.py`` (HistGradientBoosting Pipeline, train and holdout
   rows, default policy): the seconds (wall and CPU) of ``privacy.membership_inference`` against
   the bare TreeSHAP call on the audited rows in the same process, and what the shorter clone
   reference models (``REFERENCE_MAX_ITER`` boosting iterations, iterations × rate kept;
   preprocessing fitted once per holdout fold) change in the calibrated attack against full-length
   reference refits, over several audit seeds.

The DP noise and Poisson batches come from OS-entropy generators (never the seed), so the DP
figures vary slightly from run to run; the non-private ones are reproducible.

Run: ``python bench/bench_privacy.py [--quick] [--only-references]``. Needs the shared Adult files
next to the repo.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit.model import TabularEncoder, TorchAdapter  # noqa: E402
from audit.privacy.train_dp import DPTrainConfig, train_mlp  # noqa: E402

DATA = Path(os.environ.get("TRUSTAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
MODES = ("bk", "hooks", "ew", "functorch", "ghost")


def load_adult(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = [pd.read_csv(DATA / n, na_values=["?"], skipinitialspace=True)
              for n in ("adult_train.csv", "adult_test.csv")]
    df = pd.concat(frames, ignore_index=True)
    perm = np.random.default_rng(seed).permutation(len(df))
    n_train = int(0.7 * len(df))
    return df.iloc[perm[:n_train]].reset_index(drop=True), df.iloc[perm[n_train:]].reset_index(drop=True)


def bench_epochs(Z: np.ndarray, y: np.ndarray, quick: bool, settings: list[tuple[int, int, bool]],
                 modes: tuple[str, ...] = MODES) -> None:
    """Per setting, the runs of all modes are interleaved (non-private, mode 1, mode 2, ...,
    repeated), so that a drift in the machine's speed hits every mode alike; each figure is the
    median over the epochs after each run's warm-up epoch."""
    epochs, repeats = (3, 1) if quick else (4, 5)
    print(f"\n## DP-SGD epoch time, Adult {Z.shape[0]} rows x {Z.shape[1]} inputs, MLP 64-64, Adam")
    print("wall s / CPU s per epoch (ratio to non-private on CPU time)\n")
    print("| batch | threads | loader | non-private | " + " | ".join(modes) + " |")
    print("|---|---|---|---|" + "---|" * len(modes))
    for batch, threads, batched in settings:
        wall: dict[str | None, list[float]] = {m: [] for m in (None, *modes)}
        cpu: dict[str | None, list[float]] = {m: [] for m in (None, *modes)}
        for r in range(repeats):
            for m in (None, *modes):
                cfg = DPTrainConfig(epochs=epochs, batch_size=batch, threads=threads, seed=r,
                                    grad_sample_mode=m or "bk", accountant="rdp")
                t = train_mlp(Z, y, target_epsilon=math.inf if m is None else 3.0, config=cfg,
                              noise_multiplier=None if m is None else 1.0, batched_loader=batched)
                wall[m].extend(t.epoch_seconds[1:])
                cpu[m].extend(t.epoch_cpu_seconds[1:])
        med = statistics.median
        bw, bc = med(wall[None]), med(cpu[None])
        cells = [f"{med(wall[m]):.3f} / {med(cpu[m]):.3f} ({med(cpu[m]) / bc:.2f}x)" for m in modes]
        loader = "batched" if batched else "TensorDataset"
        print(f"| {batch} | {threads} | {loader} | {bw:.3f} / {bc:.3f} | " + " | ".join(cells) + " |",
              flush=True)


def bench_membership(train: pd.DataFrame, hold: pd.DataFrame, quick: bool) -> None:
    from audit.registry import get_check
    from audit.runner import context_from_frames, run_check

    target, pos = "income", ">50K"
    feats = [c for c in train.columns if c != target]
    enc = TabularEncoder.fit(train[feats])
    Z = enc.transform(train[feats])
    y = (train[target] == pos).to_numpy().astype(int)
    print("\n## Membership-inference audit on Adult (members: training rows, non-members: holdout)")
    print("| model | check s | context s | attack | AUC [95% CI] | TPR@0.1%FPR | TPR@1%FPR | ε lower bound |")
    print("|---|---|---|---|---|---|---|---|")
    epochs = 5 if quick else 20
    models: list[tuple[str, object]] = []
    for label, eps in (("MLP non-private", math.inf), ("MLP DP-SGD ε=3", 3.0)):
        cfg = DPTrainConfig(epochs=epochs, batch_size=256, accountant="rdp", seed=0)
        trained = train_mlp(Z, y, target_epsilon=eps, config=cfg)
        import torch

        meta = {"encoder": enc.to_dict(), "classes": ["<=50K", ">50K"], "output": "logits"}
        if trained.dp_claim:
            from audit.privacy.train_dp import exported_conditions

            meta["dp_claim"] = trained.dp_claim
            meta["dp_conditions"] = exported_conditions(trained)
        models.append((label, TorchAdapter(torch.jit.script(trained.module), meta)))
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    cats = [c for c in feats if train[c].dtype == object or str(train[c].dtype).startswith("str")]
    hgb = make_pipeline(
        make_column_transformer((OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                                encoded_missing_value=-1), cats), remainder="passthrough"),
        HistGradientBoostingClassifier(max_iter=200, random_state=0),
    ).fit(train[feats], train[target])
    models.append(("HistGradientBoosting (sklearn)", hgb))
    for label, adapter in models:
        t0 = time.perf_counter()
        ctx = context_from_frames(adapter, hold.head(2000), target=target, positive_label=pos,
                                  sensitive=["sex", "race"], train=train, holdout=hold, seed=0,
                                  checks=["privacy"])
        t_ctx = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = run_check(get_check("privacy.membership_inference"), ctx)
        t_check = time.perf_counter() - t0
        for rec in r.table("attacks").records:
            lb = rec["epsilon_lower_bound"]
            print(f"| {label} | {t_check:.2f} | {t_ctx:.2f} | {rec['attack']} | {rec['auc']:.3f} "
                  f"[{rec['auc_lo']:.3f}, {rec['auc_hi']:.3f}] | {rec['tpr_at_0.1pct_fpr']:.4f} | "
                  f"{rec['tpr_at_1pct_fpr']:.4f} | {'' if math.isnan(lb) else f'{lb:.3f}'} |", flush=True)
        print(f"  -> {r.verdict.value}: {r.summary} (reference: {r.provenance.params.get('reference')})")
        for kind in ("nn", "rf"):
            art_row(label, adapter, train, hold, target, pos, kind)


def art_row(label: str, adapter: object, train: pd.DataFrame, hold: pd.DataFrame, target: str, pos: str,
            kind: str) -> None:
    """The Adversarial Robustness Toolbox's black-box membership attack on the same model and rows.

    Members are training rows, non-members holdout rows, balanced; ART's attack model (``kind``:
    its default neural network, or a random forest) is fitted on one half of each and scored on
    the other half, as our attacks' operating points are. Skipped when ART is not installed
    (``pip install adversarial-robustness-toolbox``; not a dependency of the project).
    """
    try:
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import BlackBoxClassifier
    except ImportError:
        print(f"| {label} | | | ART ({kind}) | not installed | | | |")
        return
    from sklearn.metrics import roc_auc_score, roc_curve

    feats = [c for c in train.columns if c != target]
    rng = np.random.default_rng(0)
    n = min(len(train), len(hold))
    mem = train.iloc[rng.permutation(len(train))[:n]]
    non = hold.iloc[rng.permutation(len(hold))[:n]]
    half = n // 2

    def pred_y(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(adapter.predict_proba(frame[feats]), dtype=np.float32)  # type: ignore[attr-defined]
        return p, (frame[target] == pos).to_numpy().astype(int)

    pm_fit, ym_fit = pred_y(mem.iloc[:half])
    pn_fit, yn_fit = pred_y(non.iloc[:half])
    pm_ev, ym_ev = pred_y(mem.iloc[half:])
    pn_ev, yn_ev = pred_y(non.iloc[half:])
    clf = BlackBoxClassifier(lambda x: np.zeros((len(x), 2), dtype=np.float32), input_shape=(1,), nb_classes=2)
    t0 = time.perf_counter()
    attack = MembershipInferenceBlackBox(clf, attack_model_type=kind)
    dummy = np.zeros((half, 1), dtype=np.float32)
    attack.fit(dummy, ym_fit, dummy, yn_fit, pred=pm_fit, test_pred=pn_fit)
    sm = attack.infer(np.zeros((len(ym_ev), 1), dtype=np.float32), ym_ev, pred=pm_ev, probabilities=True)
    sn = attack.infer(np.zeros((len(yn_ev), 1), dtype=np.float32), yn_ev, pred=pn_ev, probabilities=True)
    seconds = time.perf_counter() - t0
    score = np.concatenate([np.asarray(sm).reshape(len(ym_ev), -1)[:, -1], np.asarray(sn).reshape(len(yn_ev), -1)[:, -1]])
    truth = np.concatenate([np.ones(len(ym_ev)), np.zeros(len(yn_ev))])
    fpr, tpr, _ = roc_curve(truth, score)
    at = {f: float(tpr[np.searchsorted(fpr, f, side="right") - 1]) for f in (0.001, 0.01)}
    print(f"| {label} | {seconds:.2f} | | ART black-box ({kind}) | {roc_auc_score(truth, score):.3f} | "
          f"{at[0.001]:.4f} | {at[0.01]:.4f} | |", flush=True)


def bench_references(repeats: int, seeds: int) -> None:
    import dataclasses
    import tempfile
    import warnings

    import shap

    sys.path.insert(0, str(ROOT / "bench"))
    import bench_audit

    from audit.io import load_model
    from audit.privacy import reference
    from audit.registry import get_check
    from audit.runner import build_context, run_check
    from audit.spec import load_spec_file

    warnings.simplefilter("ignore")
    med = statistics.median
    info = get_check("privacy.membership_inference")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_audit.build(folder)
        sf = load_spec_file(folder / "audit.toml")
        loaded = load_model(sf.sources.model.path)
        data = {"test": sf.sources.data.test, "train": sf.sources.data.train, "holdout": sf.sources.data.holdout}
        ctx, _ = build_context(sf.spec, loaded, data, na_values=sf.sources.data.na_values)
        pipe = loaded.adapter.estimator
        Z = pipe[:-1].transform(ctx.test.X)
        load0 = os.getloadavg()[0]
        bare, runs = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            shap.TreeExplainer(pipe[-1]).shap_values(Z)
            bare.append((time.perf_counter() - t, time.process_time() - c))
            t, c = time.perf_counter(), time.process_time()
            run_check(info, ctx.for_lane(1))
            runs.append((time.perf_counter() - t, time.process_time() - c))
        b_cpu = med(c for _, c in bare)
        w, c = med(x for x, _ in runs), med(x for _, x in runs)
        print(f"\n## Anchor workload (bench_audit.py): privacy.membership_inference, {repeats} repeats, load "
              f"average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        print(f"bare TreeSHAP on the {ctx.test.n:,} audited rows: {med(x for x, _ in bare):.2f} s wall, {b_cpu:.2f} s CPU")
        print(f"membership inference: {w:.2f} s wall, {c:.2f} s CPU = {c / b_cpu:.2f} x the bare TreeSHAP CPU "
              f"(budget 0.25 x: 1.5 s of a 6 s TreeSHAP)")
        short = reference.REFERENCE_MAX_ITER
        print(f"\n## Calibrated attack: references of {short} boosting iterations vs full-length refits")
        print("| audit seed | references | calibrated AUC [95% CI] | TPR@0.1%FPR | TPR@1%FPR | CPU s | verdict |")
        print("|---|---|---|---|---|---|---|")
        for seed in range(seeds):
            for label, cap in (("full length", 10**6), (f"{short} iterations", short)):
                reference.REFERENCE_MAX_ITER = cap
                c0 = time.process_time()
                r = run_check(info, dataclasses.replace(ctx, seed=seed).for_lane(1))
                cpu = time.process_time() - c0
                m = r.metrics
                print(f"| {seed} | {label} | {m['calibrated.auc']:.4f} [{m['calibrated.auc_lo']:.4f}, "
                      f"{m['calibrated.auc_hi']:.4f}] | {m['calibrated.tpr_at_0.1pct_fpr']:.4f} | "
                      f"{m['calibrated.tpr_at_1pct_fpr']:.4f} | {cpu:.2f} | {r.verdict.value} |", flush=True)
            reference.REFERENCE_MAX_ITER = short


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--skip-epochs", action="store_true")
    ap.add_argument("--skip-membership", action="store_true")
    ap.add_argument("--skip-references", action="store_true", help="skip the anchor-workload section")
    ap.add_argument("--only-references", action="store_true", help="only the anchor-workload section")
    ap.add_argument("--reference-seeds", type=int, default=5, help="audit seeds for the reference comparison")
    ap.add_argument("--batch", type=int, action="append", help="only these batch sizes (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads with --batch")
    ap.add_argument("--stock-loader", action="store_true", help="TensorDataset loader with --batch")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    args = ap.parse_args()
    if not (DATA / "adult_train.csv").is_file():
        sys.exit(f"Adult files not found in {DATA}")
    if args.only_references:
        bench_references(1 if args.quick else 3, args.reference_seeds)
        return
    train, hold = load_adult()
    target = "income"
    feats = [c for c in train.columns if c != target]
    enc = TabularEncoder.fit(train[feats])
    Z = enc.transform(train[feats])
    y = (train[target] == ">50K").to_numpy().astype(int)
    print(f"Adult: {len(train)} training rows, {len(hold)} holdout rows, {enc.width} encoded inputs; "
          f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    if not args.skip_epochs:
        settings = [(256, 1, False), (256, 1, True), (256, 2, True), (1024, 1, True), (4096, 1, True)]
        if args.batch:
            settings = [(b, args.threads, not args.stock_loader) for b in args.batch]
        modes = tuple(m for m in args.modes.split(",") if m)
        if unknown := set(modes) - set(MODES):
            sys.exit(f"unknown modes: {sorted(unknown)}")
        bench_epochs(Z, y, args.quick, settings, modes)
    if not args.skip_membership:
        bench_membership(train, hold, args.quick)
    if not args.skip_references:
        bench_references(1 if args.quick else 3, args.reference_seeds)


if __name__ == "__main__":
    main()
