"""Mutation fuzzing of every loader: models (skops, ONNX, TorchScript), data (CSV, Parquet), specs (TOML).

Each case is a valid file mutated by a seeded generator (byte flips, truncation, inserted, deleted
and duplicated chunks, zip member edits, numbers in a skops schema replaced by extreme ones).

A model case runs as ``trustaudit audit`` runs it: loaded and predicted in a child process
(``audit._isolate.run_isolated``, 2 GiB address space above the child's start, 60 s), the
output checked as the runner checks it. It passes when it loads and predicts, when it is refused
with one of trustaudit's errors, or when the child dies (a signal, out of memory, stopped): the
CLI then prints one line and exits 2. Data and spec files are loaded in this process and must
load or be refused. Any other exception, here or in the child, is a traceback: a failure. This
process's peak RSS is bounded (no case may raise it by 256 MB; the slow run also checks the
absolute bound). A sample goes through the console script in subprocesses: exit codes 0, 1 or 2
only, never a traceback, one line on stderr for exit 2, and a bounded peak RSS.

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

from audit._isolate import fork_safe_native_threads, run_isolated
from audit.exceptions import ModelError, TrustAuditError
from audit.io import load_model_bytes, load_table
from tests.audit.intake_builders import FEATURES3, audit_cli_args, run_cli, skops_bytes, small_frame

RSS_BOUND = 1024**3  # this test process, with torch, onnxruntime and scikit-learn loaded
#: peak RSS of the console script and its audit child for a data file (the table bounds hold it);
#: a model file's child may grow to the --memory-limit before it is stopped (a damaged TorchScript
#: archive of a few KB took 1.3 GB in torch before it was refused), so model cases are bounded by
#: CLI_RSS_BOUND + CLI_MEMORY_MIB
CLI_RSS_BOUND = 700 * 1024**2
#: the CLI sample's --memory-limit. It caps the audit child's address space, not its RSS: a valid
#: 200-row audit adds about 1.7 GB of address space (torch is imported, thread arenas) for under
#: 500 MB of RSS, and is refused at 2048; the control run checks that this value lets it through
CLI_MEMORY_MIB = 4096
CLI_TIMEOUT = 120


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

MODEL_KINDS = ("skops", "onnx", "torchscript")
#: what a model case's child may add to its address space, and how long it may run
CHILD_MEMORY = 2 * 1024**3
CHILD_TIMEOUT = 60.0
#: the one-line ModelErrors that say the isolated child died (signal, exit), ran out of memory or
#: was stopped: the CLI prints the line and exits 2, the test process is untouched
_CHILD_DIED = re.compile(r"^the model crashed the |^the .* process exited with code |ran out of memory in the |"
                         r" process did not finish within ")


def _load_and_predict(data: bytes, name: str, frame: pd.DataFrame) -> int:
    """In the isolated child, what the CLI's audit child does with a model file: load it from its
    bytes, select the columns it names (``runner._feature_frame``), predict, check the output
    (``runner._make_split``). Returns the number of classes."""
    from types import SimpleNamespace

    from audit.exceptions import DataError, ModelOutputError
    from audit.model import check_proba
    from audit.runner import _feature_frame

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adapter = load_model_bytes(data, name=name, format="auto").adapter
        spec = SimpleNamespace(data=SimpleNamespace(target="y", features=[]))
        X = _feature_frame(frame, adapter, spec, "the fuzz frame")
        try:
            proba = adapter.predict_proba(X)
        except (ModelOutputError, DataError):
            raise
        except Exception as exc:  # noqa: BLE001 - as the runner: a model may raise anything on bad input
            msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelOutputError(f"model failed to predict on the test data: {msg}") from None
        check_proba(proba, len(X), len(adapter.classes_))
    return len(adapter.classes_)


class Stats:
    """Outcomes per kind: ``loaded`` (a model also predicted valid probabilities), ``refused`` (one
    of trustaudit's errors: exit 2), ``died`` (a model case's isolated child crashed, ran out of
    memory or was stopped: also a one-line exit 2, counted apart), and ``tracebacks`` (any other
    exception, in this process or the child: a bug)."""

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[str, int]] = {}
        self.tracebacks: list[str] = []
        self.died: list[str] = []
        self.memory_jumps: list[str] = []  # cases after which this process's peak RSS rose by > 256 MB

    def count(self, kind: str, outcome: str) -> None:
        row = self.by_kind.setdefault(kind, {"cases": 0, "loaded": 0, "refused": 0, "died": 0, "tracebacks": 0})
        row["cases"] += 1
        row[outcome] += 1

    def total(self, outcome: str) -> int:
        return sum(row[outcome] for row in self.by_kind.values())

    @property
    def cases(self) -> int:
        return self.total("cases")

    def summary(self) -> str:
        return "\n".join(f"  {k:12s} " + ", ".join(f"{n} {what}" for what, n in row.items())
                         for k, row in sorted(self.by_kind.items()))


def run_case(kind: str, data: bytes, tmp: Path, frame: pd.DataFrame, stats: Stats, seed: int) -> None:
    try:
        if kind in MODEL_KINDS:
            # load and predict in a child, as `trustaudit audit` does: a TorchScript archive that
            # makes torch.jit.load allocate gigabytes, or a model that segfaults on predict, ends
            # the child only
            run_isolated(_load_and_predict, data, f"case{seed}", frame, what="audit", timeout=CHILD_TIMEOUT,
                         memory_bytes=CHILD_MEMORY, native_threads=fork_safe_native_threads())
        else:
            # data and spec loaders run in this process: they are public functions a caller runs
            # in its own process (the Python API), so they must be safe in-process
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind in ("csv", "parquet"):
                    p = tmp / f"case.{kind}"
                    p.write_bytes(data)
                    load_table(p)
                else:
                    from audit.spec import load_spec

                    p = tmp / "audit.toml"
                    p.write_bytes(data)
                    load_spec(p)
        stats.count(kind, "loaded")
    except ModelError as exc:
        if kind in MODEL_KINDS and _CHILD_DIED.search(str(exc)):
            stats.died.append(f"{kind} case {seed}: {exc}")
            stats.count(kind, "died")
        else:
            stats.count(kind, "refused")
    except TrustAuditError:
        stats.count(kind, "refused")
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a traceback (IsolatedError from the child)
        stats.tracebacks.append(f"{kind} case {seed}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        stats.count(kind, "tracebacks")


def fuzz(n_cases: int, tmp: Path, seed: int = 0, corpus: Path | None = None, report_every: int = 0) -> Stats:
    """``n_cases`` mutated files, the kinds in turn. With ``corpus``, each case that gave a
    traceback or killed its child is saved there (kind, case number) to reproduce it."""
    seeds = _seeds(tmp)
    kinds = sorted(seeds)
    rng = random.Random(seed)
    frame = small_frame(64, seed=1)
    stats = Stats()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for i in range(n_cases):
        kind = kinds[i % len(kinds)]
        data = mutate(kind, rng.choice(seeds[kind]), rng)
        before = (len(stats.tracebacks), len(stats.died))
        run_case(kind, data, tmp, frame, stats, i)
        if corpus is not None and (len(stats.tracebacks), len(stats.died)) != before:
            corpus.mkdir(parents=True, exist_ok=True)
            (corpus / f"{kind}-case{i}.bin").write_bytes(data)
        now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if now - peak > 256 * 1024:
            stats.memory_jumps.append(f"{kind} case {i}: peak RSS {peak >> 10} -> {now >> 10} MB")
        peak = now
        if report_every and (i + 1) % report_every == 0:
            print(f"fuzz: {i + 1} cases, {stats.total('loaded')} loaded, {stats.total('refused')} refused, "
                  f"{stats.total('died')} died, {len(stats.tracebacks)} tracebacks, peak RSS {now >> 10} MB",
                  flush=True)
    return stats


def cli_sample(n: int, tmp: Path, seed: int = 1) -> tuple[list[str], dict[str, int], int]:
    """n mutated model/data files through the console script (``--memory-limit`` CLI_MEMORY_MIB,
    ``--timeout`` CLI_TIMEOUT), after a control run of the unmutated files (exit 0 or 1). Returns
    the problems found, the count of each exit code and the largest peak RSS (bytes) of a run.

    A problem: an exit code other than 0, 1 or 2, a traceback on stderr, more than one line on
    stderr with exit 2, or a peak RSS above CLI_RSS_BOUND (plus the audit child's memory limit
    for a model file)."""
    seeds = _seeds(tmp)
    rng = random.Random(seed)
    good_model = tmp / "good.skops"
    good_model.write_bytes(seeds["skops"][3])
    good_data = tmp / "good.csv"
    good_data.write_bytes(seeds["csv"][0])
    problems: list[str] = []
    flags = ("--memory-limit", str(CLI_MEMORY_MIB), "--timeout", str(CLI_TIMEOUT))
    rc, _out, err, _rss = run_cli(audit_cli_args(good_model, good_data, *flags), timeout=300)
    if rc not in (0, 1):  # the control: unmutated files are audited under the same flags
        problems.append(f"control (unmutated files): exit {rc}, stderr {err[-300:]!r}")
    exits: dict[str, int] = {}
    max_rss = 0
    for i in range(n):
        kind = ["skops", "onnx", "torchscript", "csv", "parquet"][i % 5]
        data = mutate(kind, rng.choice(seeds[kind]), rng)
        f = tmp / f"cli{i}.{kind}"
        f.write_bytes(data)
        model, table = (good_model, f) if kind in ("csv", "parquet") else (f, good_data)
        rc, _out, err, rss = run_cli(audit_cli_args(model, table, *flags), timeout=300)
        exits[str(rc)] = exits.get(str(rc), 0) + 1
        max_rss = max(max_rss, rss)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        bound = CLI_RSS_BOUND + (CLI_MEMORY_MIB * 1024**2 if kind in MODEL_KINDS else 0)
        if rc not in (0, 1, 2) or rss < 0 or "Traceback" in err or (rc == 2 and len(lines) != 1) or rss > bound:
            problems.append(f"{kind} #{i}: exit {rc}, rss {rss >> 20} MB, stderr {err[-300:]!r}")
    return problems, exits, max_rss


def test_fuzz_loaders_few_hundred_cases(tmp_path):
    stats = fuzz(240, tmp_path, seed=12)
    assert stats.cases == 240
    assert stats.tracebacks == []
    # the mutations reach both outcomes for every kind
    for kind, row in stats.by_kind.items():
        assert row["cases"] == 40, kind
        assert row["loaded"] + row["refused"] + row["died"] == 40, kind
        assert row["refused"] >= 5, (kind, row)
    assert stats.total("loaded") > 20
    # peak RSS is monotonic and other tests in this process may have raised it: no case may raise it
    # by more than 256 MB (the slow run, alone in its process, also checks the absolute bound)
    assert stats.memory_jumps == []


def test_fuzz_model_case_that_kills_its_child_is_one_line(tmp_path, monkeypatch):
    """The harness itself: a model whose loading ends the child by a signal, or exhausts the
    child's memory, is counted as died (the CLI's exit 2), not as a traceback or a refusal."""
    import os
    import signal

    import tests.audit.test_fuzz_loaders as mod

    frame = small_frame(8)

    def segfault(data, name, frame):
        os.kill(os.getpid(), signal.SIGSEGV)

    def hog(data, name, frame):
        return bytearray(4 * 1024**3)

    def bug(data, name, frame):
        raise KeyError("not a trustaudit error")

    stats = Stats()
    for i, fn in enumerate((segfault, hog, bug)):
        monkeypatch.setattr(mod, "_load_and_predict", fn)
        run_case("torchscript", b"", tmp_path, frame, stats, i)
    assert stats.by_kind["torchscript"] == {"cases": 3, "loaded": 0, "refused": 0, "died": 2, "tracebacks": 1}
    assert stats.died == ["torchscript case 0: the model crashed the audit process (SIGSEGV)",
                          "torchscript case 1: the model ran out of memory in the audit process (limit: 2048 MiB "
                          "above its start)"]
    assert stats.tracebacks == ["torchscript case 2: IsolatedError: KeyError: 'not a trustaudit error'"]


def test_fuzz_cli_sample_small(tmp_path):
    problems, exits, _rss = cli_sample(3, tmp_path)
    assert problems == []
    assert sum(exits.values()) == 3


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_loaders_ten_thousand_cases(tmp_path):
    t0 = time.perf_counter()
    stats = fuzz(10_002, tmp_path, seed=2024, corpus=tmp_path / "corpus", report_every=500)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\nfuzz: {stats.cases} cases in {seconds:.0f} s: {stats.total('loaded')} loaded, "
          f"{stats.total('refused')} refused, {stats.total('died')} died in the isolated child, "
          f"{len(stats.tracebacks)} tracebacks; peak RSS of this process {rss >> 20} MB")
    print(stats.summary())
    print("\n".join(stats.died[:40]))
    print("\n".join(stats.memory_jumps[:20]))
    print("\n".join(stats.tracebacks[:20]))
    t0 = time.perf_counter()
    problems, exits, cli_rss = cli_sample(60, tmp_path)
    print(f"fuzz CLI sample: 60 subprocesses in {time.perf_counter() - t0:.0f} s, exit codes {exits}, "
          f"largest peak RSS {cli_rss >> 20} MB, {len(problems)} problems")
    print("\n".join(problems))
    assert stats.cases >= 10_000
    assert stats.tracebacks == []
    assert stats.memory_jumps == []
    assert rss < RSS_BOUND
    assert problems == []


def test_parquet_with_damaged_pandas_metadata_is_refused(tmp_path):
    """Found by the fuzz suite (a byte flip in the footer's JSON): a column entry of the 'pandas'
    schema metadata without its "name" key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from audit.exceptions import DataFileError

    table = pa.Table.from_pandas(small_frame(50))
    meta = json.loads(table.schema.metadata[b"pandas"])
    del meta["columns"][2]["name"]
    p = tmp_path / "damaged.parquet"
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}), p)
    with pytest.raises(DataFileError, match=r"could not be read as Parquet"):
        load_table(p)


def test_parquet_reader_abort_is_one_line_on_the_cli(tmp_path):
    """Found by the fuzz suite: 3 bytes of a footer overwritten make pyarrow throw a C++
    exception where it cannot be caught (SIGABRT in the isolated Parquet reader). The refusal is
    right; the console script must still print only its one line."""
    from audit.exceptions import DataFileError

    buf = io.BytesIO()
    small_frame(200).to_parquet(buf)
    good = buf.getvalue()
    p = tmp_path / "abort.parquet"
    p.write_bytes(good[:6407] + b"\xef\xbb\xbf" + good[6410:])
    try:
        load_table(p)
        crashed = False
    except DataFileError as exc:
        crashed = "the Parquet reader crashed (SIGABRT)" in str(exc)
    if not crashed:
        pytest.skip("this pyarrow does not abort on the damaged footer (the bytes depend on its writer)")
    model = tmp_path / "m.skops"
    from sklearn.linear_model import LogisticRegression

    df = small_frame(200)
    model.write_bytes(skops_bytes(LogisticRegression().fit(df[FEATURES3], df["y"])))
    rc, _out, err, _rss = run_cli(audit_cli_args(model, p))
    assert rc == 2
    assert err.strip() == (f"trustaudit: error: data file {p} could not be read as Parquet: the Parquet reader "
                           "crashed (SIGABRT)")
