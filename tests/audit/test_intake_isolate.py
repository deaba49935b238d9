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
