"""Mutation fuzzing of every loader: models (skops, ONNX, TorchScript), data (CSV, Parquet), specs (TOML).

Each case is a valid file mutated by a seeded generator (byte flips, truncation, inserted, deleted
and duplicated chunks, zip member edits, numbers in a skops schema replaced by extreme ones). A
case passes when the loader returns or raises one of trustaudit's errors (the CLI's exit 2); a
loaded model then predicts in an isolated child (audit._isolate), where any Python exception is
allowed (the runner reports it as a model error) but a signal, a hang or running out of memory is
a crash. A sample goes through the console script in subprocesses: exit codes 0, 1 or 2 only, one
line on stderr for exit 2, and the child's peak RSS under the bound.

(hypothesis is not installed in this environment; this is a plain seeded mutation fuzzer.)
"""

from __future__ import annotations

import io
import json
import random
import re
import resource
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit._isolate import IsolatedError, run_isolated
from audit.exceptions import ModelError, TrustAuditError
from audit.io import load_model_bytes, load_table
from tests.audit.intake_builders import FEATURES3, audit_cli_args, run_cli, skops_bytes, small_frame

RSS_BOUND = 1500 * 1024**2  # this test process, torch and onnxruntime loaded
CLI_RSS_BOUND = 700 * 1024**2
_ALLOWED_CRASH = re.compile(r"^the model crashed|did not finish within|ran out of memory")


def _seeds(tmp: Path) -> dict[str, list[bytes]]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    df = small_frame(200)
    X, y = df[FEATURES3], df["y"]
    models = [DecisionTreeClassifier(max_depth=3, random_state=0), RandomForestClassifier(3, max_depth=3, random_state=0),
              HistGradientBoostingClassifier(max_iter=3, random_state=0), LogisticRegression()]
    out: dict[str, list[bytes]] = {"skops": [skops_bytes(m.fit(X, y)) for m in models]}
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    lr = LogisticRegression().fit(X, y)
    onx = to_onnx(lr, initial_types=[("X", FloatTensorType([None, 3]))], options={id(lr): {"zipmap": False}})
    onx.metadata_props.add(key="feature_names", value=json.dumps(FEATURES3))
    out["onnx"] = [onx.SerializeToString()]
    import torch

    from audit.io import save_torchscript

    torch.manual_seed(0)
    p = tmp / "seed.pt"
    save_torchscript(torch.nn.Linear(3, 1), p, {"classes": [0, 1], "output": "logits", "feature_names": FEATURES3})
    out["torchscript"] = [p.read_bytes()]
    out["csv"] = [df.to_csv(index=False).encode()]
    buf = io.BytesIO()
    df.to_parquet(buf)
    out["parquet"] = [buf.getvalue()]
    out["toml"] = [(
        b'[model]\npath = "model.skops"\n[data]\ntest = "data.csv"\ntarget = "y"\npositive_label = 1\n'
        b'sensitive = ["sex"]\n[policy.fairness]\ndisparate_impact_ratio_min = 0.8\n')]
    return out


# --- mutations -----------------------------------------------------------------------------------

_INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"-1", b"1e309", b"NaN", b"99999999999999999999",
                b'"', b",", b"\n", b"\r\n", b"[", b"{", b"\xef\xbb\xbf", b"\xff\xfe"]


def _mutate_bytes(b: bytes, rng: random.Random) -> bytes:
    b = bytearray(b)
    op = rng.randrange(6)
    if not b:
        return bytes(rng.choice(_INTERESTING))
    if op == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:  # truncate
        del b[rng.randrange(len(b)):]
    elif op == 2:  # insert a chunk
        chunk = rng.choice(_INTERESTING) * rng.randint(1, 64) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 256))
        i = rng.randrange(len(b) + 1)
        b[i:i] = chunk
    elif op == 3:  # delete a chunk
        i = rng.randrange(len(b))
        del b[i:i + rng.randint(1, 256)]
    elif op == 4:  # duplicate a chunk
        i = rng.randrange(len(b))
        chunk = b[i:i + rng.randint(1, 512)]
        j = rng.randrange(len(b) + 1)
        b[j:j] = chunk
    else:  # overwrite with an interesting token
        tok = rng.choice(_INTERESTING)
        i = rng.randrange(len(b))
        b[i:i + len(tok)] = tok
    return bytes(b)


def _mutate_schema(text: bytes, rng: random.Random) -> bytes:
    """Replace numbers in a skops schema (shapes, counts, ids) with extreme ones."""
    s = text.decode("utf-8", "replace")
    nums = list(re.finditer(r'"content": "(-?\d+)"', s))
    if not nums:
        return text
    for m in rng.sample(nums, min(len(nums), rng.randint(1, 3))):
        new = rng.choice(["0", "-1", "1", "2", "3", "1000000000", "-1000000000000", "4294967296"])
        s = s[:m.start(1)] + new + s[m.end(1):]
        nums = list(re.finditer(r'"content": "(-?\d+)"', s))
        if not nums:
            break
    return s.encode()


def _mutate_npy(b: bytes, rng: random.Random) -> bytes:
    """Overwrite values inside an .npy payload (after its header): node indices, features, sizes."""
    try:
        arr = np.load(io.BytesIO(b), allow_pickle=False)
    except Exception:  # noqa: BLE001
        return _mutate_bytes(b, rng)
    raw = bytearray(b)
    header_len = len(b) - arr.nbytes
    if arr.nbytes == 0:
        return _mutate_bytes(b, rng)
    for _ in range(rng.randint(1, 4)):
        i = header_len + rng.randrange(arr.nbytes)
        width = rng.choice([1, 4, 8])
        val = rng.choice([0, 0xFF, 0x7F, 0x80]).to_bytes(1, "little") * width
        raw[i:i + width] = val[: max(0, len(raw) - i)]
    return bytes(raw)


def _mutate_zip(b: bytes, rng: random.Random) -> bytes:
    try:
        z = zipfile.ZipFile(io.BytesIO(b))
        infos = z.infolist()
    except Exception:  # noqa: BLE001
        return _mutate_bytes(b, rng)
    if not infos:
        return _mutate_bytes(b, rng)
    target = rng.choice(infos)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as w:
        for info in infos:
            data = z.read(info.filename)
            if info is target:
                if info.filename == "schema.json" and rng.random() < 0.6:
                    data = _mutate_schema(data, rng)
                elif info.filename.endswith(".npy") and rng.random() < 0.7:
                    data = _mutate_npy(data, rng)
                else:
                    data = _mutate_bytes(data, rng)
            w.writestr(info.filename, data)
    return out.getvalue()


def mutate(kind: str, seed_bytes: bytes, rng: random.Random) -> bytes:
    b = seed_bytes
    for _ in range(rng.choice([1, 1, 2, 3])):
        if kind in ("skops", "torchscript") and rng.random() < 0.75:
            try:
                b = _mutate_zip(b, rng)
            except Exception:  # noqa: BLE001 - an earlier mutation broke the archive
                b = _mutate_bytes(b, rng)
        else:
            b = _mutate_bytes(b, rng)
    return b


# --- running one case ----------------------------------------------------------------------------


def _predict(adapter, X):
    return np.asarray(adapter.predict_proba(X), dtype=np.float64)


class Stats:
    def __init__(self) -> None:
        self.cases = 0
        self.ok = 0
        self.refused = 0
        self.crashes: list[str] = []
        self.contained: list[str] = []  # the isolated inference child died; the caller got a ModelError
        self.memory_jumps: list[str] = []  # cases after which this process's peak RSS rose by > 256 MB

    def crash(self, kind: str, seed: int, what: str) -> None:
        self.crashes.append(f"{kind} case {seed}: {what}")


def run_case(kind: str, data: bytes, tmp: Path, X: pd.DataFrame, stats: Stats, seed: int) -> None:
    stats.cases += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind in ("skops", "onnx", "torchscript"):
                loaded = load_model_bytes(data, name=f"case{seed}", format="auto")
                try:
                    run_isolated(_predict, loaded.adapter, X, timeout=60, memory_bytes=1024**3)
                except IsolatedError:
                    pass  # a Python exception in prediction: the runner reports it (exit 2)
                except ModelError as exc:
                    if _ALLOWED_CRASH.search(str(exc)):
                        # e.g. a mutated TorchScript archive that loads and then segfaults torch
                        # itself: only the isolated child died, which is what the isolation is for
                        stats.contained.append(f"{kind} case {seed}: {exc}")
                        stats.refused += 1
                        return
            elif kind in ("csv", "parquet"):
                p = tmp / f"case.{kind}"
                p.write_bytes(data)
                load_table(p)
            else:
                from audit.spec import load_spec

                p = tmp / "audit.toml"
                p.write_bytes(data)
                load_spec(p)
        stats.ok += 1
    except TrustAuditError:
        stats.refused += 1
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a traceback
        stats.crash(kind, seed, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")


def fuzz(n_cases: int, tmp: Path, seed: int = 0) -> Stats:
    seeds = _seeds(tmp)
    kinds = sorted(seeds)
    rng = random.Random(seed)
    X = small_frame(64, seed=1)
    stats = Stats()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        data = mutate(kind, rng.choice(seeds[kind]), rng)
        run_case(kind, data, tmp, X, stats, i)
        now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if now - peak > 256 * 1024:
            stats.memory_jumps.append(f"{kind} case {i}: peak RSS {peak >> 10} -> {now >> 10} MB")
        peak = now
    return stats


def cli_sample(n: int, tmp: Path, seed: int = 1) -> list[str]:
    """n mutated model/data files through the console script; returns the problems found."""
    seeds = _seeds(tmp)
    rng = random.Random(seed)
    good_model = tmp / "good.skops"
    good_model.write_bytes(seeds["skops"][3])
    good_data = tmp / "good.csv"
    good_data.write_bytes(seeds["csv"][0])
    problems = []
    for i in range(n):
        kind = ["skops", "onnx", "torchscript", "csv", "parquet"][i % 5]
        data = mutate(kind, rng.choice(seeds[kind]), rng)
        f = tmp / f"cli{i}.{kind}"
        f.write_bytes(data)
        model, table = (good_model, f) if kind in ("csv", "parquet") else (f, good_data)
        rc, _out, err, rss = run_cli(audit_cli_args(model, table), timeout=300)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        if rc not in (0, 1, 2) or rss < 0 or "Traceback" in err or (rc == 2 and len(lines) != 1) or rss > CLI_RSS_BOUND:
            problems.append(f"{kind} #{i}: exit {rc}, rss {rss >> 20} MB, stderr {err[-300:]!r}")
    return problems


def test_fuzz_loaders_few_hundred_cases(tmp_path):
    stats = fuzz(300, tmp_path, seed=12)
    assert stats.cases == 300
    assert stats.crashes == []
    assert stats.refused > 50 and stats.ok > 20  # the mutations reach both outcomes
    # peak RSS is monotonic and other tests in this process may have raised it: no case may raise it
    # by more than 256 MB (the slow run, alone in its process, also checks the absolute bound)
    assert stats.memory_jumps == []


def test_fuzz_cli_sample_small(tmp_path):
    assert cli_sample(3, tmp_path) == []


@pytest.mark.slow
def test_fuzz_loaders_ten_thousand_cases(tmp_path):
    t0 = time.perf_counter()
    stats = fuzz(10_000, tmp_path, seed=2024)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\nfuzz: {stats.cases} cases, {stats.ok} loaded, {stats.refused} refused, "
          f"{len(stats.crashes)} crashes, {len(stats.contained)} contained inference crashes, "
          f"{seconds:.0f} s, peak RSS {rss >> 20} MB")
    print("\n".join(stats.contained[:20]))
    print("\n".join(stats.memory_jumps[:20]))
    print("\n".join(stats.crashes[:20]))
    assert stats.cases >= 10_000
    assert stats.crashes == []
    assert stats.memory_jumps == []
    assert rss < RSS_BOUND
    t0 = time.perf_counter()
    problems = cli_sample(60, tmp_path)
    print(f"fuzz CLI sample: 60 subprocesses, {len(problems)} problems, {time.perf_counter() - t0:.0f} s")
    assert problems == []
