"""audit._isolate: a crash, a hang or a memory blow-up in the child is one clear error in the parent."""

from __future__ import annotations

import ctypes
import os
import time

import numpy as np
import pytest

from audit._isolate import IsolatedError, decode_result, encode_result, run_isolated
from audit.exceptions import DataError, ModelError


def _segfault() -> None:
    ctypes.string_at(0)


def _sleep(seconds: float) -> int:
    time.sleep(seconds)
    return 1


def _arrays(n: int) -> dict:
    rng = np.random.default_rng(0)
    return {"proba": rng.random((n, 2)), "labels": np.array(["a", "bb"]), "k": np.int64(3),
            "nested": [1.5, None, True, {"x": np.arange(3, dtype=np.uint8)}]}


def _allocate(n_bytes: int) -> int:
    return int(np.ones(n_bytes, dtype=np.uint8).sum())


def _raise_data_error() -> None:
    raise DataError("column 'x' is bad")


def _raise_key_error() -> None:
    raise KeyError("nope")


def _return_object() -> object:
    return np.array([object()], dtype=object)


def _kill_self() -> None:
    os.kill(os.getpid(), 9)


def _exit_3() -> None:
    os._exit(3)


def test_segfault_in_child_is_a_model_error():
    with pytest.raises(ModelError) as exc:
        run_isolated(_segfault)
    assert str(exc.value) == "the model crashed the inference process (SIGSEGV)"


def test_sigkill_and_plain_exit_are_named():
    with pytest.raises(ModelError, match=r"^the model crashed the scoring process \(SIGKILL\)$"):
        run_isolated(_kill_self, what="scoring")
    with pytest.raises(ModelError, match=r"^the inference process exited with code 3 without a result$"):
        run_isolated(_exit_3)


def test_timeout_stops_the_child():
    t0 = time.monotonic()
    with pytest.raises(ModelError) as exc:
        run_isolated(_sleep, 30, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert str(exc.value) == "the inference process did not finish within 1 s and was stopped"
    assert run_isolated(_sleep, 0.01, timeout=20) == 1


def test_memory_limit_in_child():
    with pytest.raises(ModelError) as exc:
        run_isolated(_allocate, 2 * 1024**3, memory_bytes=256 * 1024**2)
    assert str(exc.value) == "the model ran out of memory in the inference process (limit: 256 MiB above its start)"
    assert run_isolated(_allocate, 1024, memory_bytes=256 * 1024**2) == 1024


def test_arrays_and_json_round_trip_exactly():
    out = run_isolated(_arrays, 1000)
    ref = _arrays(1000)
    np.testing.assert_array_equal(out["proba"], ref["proba"])
    assert out["proba"].dtype == np.float64 and out["proba"].flags.writeable
    assert out["labels"].tolist() == ["a", "bb"]
    assert out["k"] == 3
    assert out["nested"][:3] == [1.5, None, True]
    np.testing.assert_array_equal(out["nested"][3]["x"], np.arange(3, dtype=np.uint8))


def test_child_exceptions_come_back_without_pickle():
    with pytest.raises(DataError, match=r"^column 'x' is bad$"):
        run_isolated(_raise_data_error)
    with pytest.raises(IsolatedError, match=r"^KeyError: 'nope'$"):
        run_isolated(_raise_key_error)
    # objects cannot cross: only JSON and plain arrays
    with pytest.raises(IsolatedError, match="cannot send a numpy array of dtype object"):
        run_isolated(_return_object)


def test_decoder_refuses_object_dtypes_and_short_buffers():
    header, bufs = encode_result({"a": np.arange(4)})
    assert decode_result(header, bufs)["a"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="do not match"):
        decode_result(header, [bufs[0][:-1]])
    bad = header.replace(b'"<i8"', b'"|O"')
    with pytest.raises(ValueError, match="refused array dtype"):
        decode_result(bad, bufs)


# --- the CLI runs the whole audit in a child: a hostile model cannot take the auditor down ---------


class HostileModel:
    """A fitted-looking classifier whose predict_proba crashes, hangs or eats memory on demand."""

    classes_ = np.array([0, 1])
    feature_names_in_ = np.array(["x"])

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def predict_proba(self, X):
        if self.mode == "segfault":
            ctypes.string_at(0)
        elif self.mode == "hang":
            time.sleep(600)
        elif self.mode == "memory":
            np.ones(64 * 1024**3, dtype=np.uint8)
        s = np.clip(np.asarray(X["x"], dtype=float), 0, 1)
        return np.column_stack([1 - s, s])


def _hostile_audit(tmp_path, capsys, mode: str, *extra: str) -> tuple[int, str]:
    import pickle

    import pandas as pd

    from audit.cli import main

    model = tmp_path / "m.pkl"
    model.write_bytes(pickle.dumps(HostileModel(mode)))
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.random(200), "g": rng.choice(["a", "b"], 200), "y": rng.integers(0, 2, 200)}).to_csv(
        tmp_path / "d.csv", index=False)
    rc = main(["audit", "--model", str(model), "--unsafe-pickle", "--data", str(tmp_path / "d.csv"), "--target", "y",
               "--positive-label", "1", "--sensitive", "g", "--checks", "fairness.demographic_parity", "--no-store",
               "--quiet", "--out", str(tmp_path / "out"), *extra])
    return rc, capsys.readouterr().err.strip()


def test_cli_audit_survives_a_segfaulting_model(tmp_path, capsys):
    rc, err = _hostile_audit(tmp_path, capsys, "segfault")
    assert (rc, err) == (2, "trustaudit: error: the model crashed the audit process (SIGSEGV)")
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_audit_memory_limit(tmp_path, capsys):
    rc, err = _hostile_audit(tmp_path, capsys, "memory", "--memory-limit", "2048")
    assert (rc, err) == (2, "trustaudit: error: the model ran out of memory in the audit process "
                            "(limit: 2048 MiB above its start)")


def test_cli_audit_timeout(tmp_path, capsys):
    t0 = time.monotonic()
    rc, err = _hostile_audit(tmp_path, capsys, "hang", "--timeout", "8")
    assert (rc, err) == (2, "trustaudit: error: the audit process did not finish within 8 s and was stopped")
    assert time.monotonic() - t0 < 60


def test_cli_audit_in_child_gives_the_same_report(tmp_path, capsys):
    rc, err = _hostile_audit(tmp_path, capsys, "fine")
    assert rc in (0, 1), err
    import json

    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["check_id"] for r in rep["results"]] == ["fairness.demographic_parity"]


def test_progress_messages_reach_the_parent():
    from audit._isolate import send_message

    seen = []

    def work() -> int:
        for i in range(3):
            send_message(["start", f"c{i}", i, 3])
        return 7

    assert run_isolated(work, on_message=seen.append) == 7
    assert seen == [["start", "c0", 0, 3], ["start", "c1", 1, 3], ["start", "c2", 2, 3]]


def test_run_audit_isolated_as_the_dashboard_calls_it():
    """The dashboard's door: run_audit_isolated with an in-memory model and frames; a segfaulting model
    is a ModelError here and the calling process goes on; a good one gives the in-process report."""
    import pandas as pd

    from audit.runner import run_audit, run_audit_isolated

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.random(300), "g": rng.choice(["a", "b"], 300), "y": rng.integers(0, 2, 300)})
    spec = {"data": {"target": "y", "positive_label": 1, "sensitive": ["g"]},
            "checks": ["fairness.demographic_parity", "fairness.group_metrics"], "seed": 3}
    with pytest.raises(ModelError, match=r"^the model crashed the audit process \(SIGSEGV\)$"):
        run_audit_isolated(HostileModel("segfault"), frame, spec=spec)
    events = []
    iso = run_audit_isolated(HostileModel("fine"), frame, spec=spec, progress=lambda *e: events.append(e))
    direct = run_audit(HostileModel("fine"), frame, spec=spec)
    assert [r.metrics for r in iso.results] == [r.metrics for r in direct.results]
    assert [e[0] for e in events].count("start") == 2


def _torch_linear() -> float:
    import torch

    return float(torch.nn.Linear(300, 200)(torch.randn(500, 300)).detach().sum())


def test_child_of_a_process_with_torch_threads_does_not_hang():
    """torch carries its own OpenMP and MKL: once the parent has run a parallel matrix product, a
    forked child's product waits forever for the parent's pool unless torch is told one thread."""
    import torch

    from audit._isolate import fork_safe_native_threads

    x = torch.randn(1500, 1500)
    for _ in range(3):
        float((x @ x).sum())
    assert fork_safe_native_threads() == 1 or torch.get_num_threads() == 1
    assert np.isfinite(run_isolated(_torch_linear, timeout=60, native_threads=fork_safe_native_threads()))
