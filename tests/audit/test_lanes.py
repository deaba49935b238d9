"""Declared intermediates and lanes: a shared value is computed once, even under threads; checks that
share one run in one group; independent groups run at once in forked lanes with the same results as
one after another; a lane that dies has its checks run here; a check's draws from the global
generators do not depend on what ran before it."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from audit.context import Intermediate
from audit.registry import get_check, register_check, unregister_family
from audit.results import CheckResult, Provenance, Verdict
from audit.runner import context_from_frames, run_checks
from tests.audit.helpers import lr_pipeline

FAMILY = "lanetest"
CALLS: dict[str, int] = {}
PARENT = os.getpid()


def _count(name: str) -> None:
    CALLS[name] = CALLS.get(name, 0) + 1


def _base(ctx):
    _count("base")
    time.sleep(0.05)  # long enough for racing threads to overlap
    return float(ctx.test.scores.mean())


BASE = Intermediate("lanetest.base", _base)
DERIVED = Intermediate("lanetest.derived", lambda ctx, k: ctx.get(BASE) * k, (BASE,))
OTHER = Intermediate("lanetest.other", lambda ctx: float(ctx.test.y.mean()))


def _result(cid: str, value: float, **params: object) -> CheckResult:
    return CheckResult(check_id=cid, verdict=Verdict.PASS, summary=f"{value:.6f}", metrics={"value": value},
                       provenance=Provenance(params={"pid": os.getpid(), **params}))


@pytest.fixture(scope="module")
def checks():
    def a(ctx):
        time.sleep(0.3)
        return _result("lanetest.a", ctx.get(BASE))

    def b(ctx):
        time.sleep(0.3)
        return _result("lanetest.b", ctx.get(DERIVED, 2.0))

    def c(ctx):
        time.sleep(0.3)
        return _result("lanetest.c", ctx.get(OTHER))

    def d(ctx):
        time.sleep(0.3)
        return _result("lanetest.d", float(np.random.random()), cores=ctx.cores)

    def dies(ctx):
        if os.environ.get("LANETEST_DIE") == "1" and os.getpid() != PARENT:
            os._exit(1)
        return _result("lanetest.dies", 1.0)

    register_check("lanetest.a", family=FAMILY, needs=(BASE,))(a)
    register_check("lanetest.b", family=FAMILY, needs=(DERIVED,))(b)
    register_check("lanetest.c", family=FAMILY, needs=(OTHER,), cost=5)(c)
    register_check("lanetest.d", family=FAMILY)(d)
    register_check("lanetest.dies", family=FAMILY, cost=9)(dies)
    yield ["lanetest.a", "lanetest.b", "lanetest.c", "lanetest.d", "lanetest.dies"]
    unregister_family(FAMILY)


@pytest.fixture(scope="module")
def ctx(lending, checks):
    return context_from_frames(lr_pipeline(lending), lending.test.head(800), target="approved", positive_label=1,
                               checks=checks, seed=3)


def test_checks_sharing_an_intermediate_form_one_group(checks) -> None:
    from audit._lanes import groups

    infos = [get_check(c) for c in checks]
    assert get_check("lanetest.b").shares() == ("lanetest.derived", "lanetest.base")  # through needs
    assert groups(infos) == [[0, 1], [2], [3], [4]]


def test_an_intermediate_is_computed_once_even_under_threads(ctx) -> None:
    fresh = ctx.for_lane(1)
    CALLS.clear()
    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: fresh.get(BASE), range(16)))
    assert CALLS == {"base": 1} and len(set(values)) == 1
    assert fresh.get(DERIVED, 2.0) == pytest.approx(2 * values[0]) and fresh.get(DERIVED, 3.0) == pytest.approx(
        3 * values[0])
    assert CALLS == {"base": 1}  # the derived values reused it
    assert set(fresh.computed()) == {"lanetest.base", "lanetest.derived"}


def test_lanes_give_the_serial_results_at_once(ctx, checks) -> None:
    t0 = time.perf_counter()
    serial = run_checks(ctx, checks, lanes=1)
    t_serial = time.perf_counter() - t0
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def progress(event: str, check_id: str, i: int, n: int) -> None:
        with lock:
            events.append((event, check_id))
        assert n == len(checks) and 0 <= i <= n

    t0 = time.perf_counter()
    laned = run_checks(ctx, checks, progress, lanes=2)
    t_laned = time.perf_counter() - t0
    assert [r.check_id for r in laned] == checks  # registry order, whatever lane ran them
    assert [r.metrics for r in laned] == [r.metrics for r in serial]
    assert len({r.provenance.params["pid"] for r in laned}) == 2  # two processes did the work
    assert {r.provenance.params["pid"] for r in serial} == {os.getpid()}
    assert sorted(events) == sorted([("start", c) for c in checks] + [("done", c) for c in checks])
    assert laned[3].provenance.params["cores"] == max(1, (os.cpu_count() or 1) // 2)
    assert t_laned < t_serial  # four 0.3 s sleeps in two lanes


def test_a_dead_lane_has_its_checks_run_here(ctx, checks, monkeypatch) -> None:
    monkeypatch.setenv("LANETEST_DIE", "1")
    serial = run_checks(ctx, checks, lanes=1)
    laned = run_checks(ctx, checks, lanes=2)
    assert [r.verdict for r in laned] == [Verdict.PASS] * len(checks)
    assert [r.metrics for r in laned] == [r.metrics for r in serial]
    assert laned[4].provenance.params["pid"] == os.getpid()


def test_global_draws_do_not_depend_on_what_ran_before(ctx) -> None:
    alone = run_checks(ctx, ["lanetest.d"], lanes=1)[0].metrics["value"]
    np.random.seed(12345)  # whatever state the caller's generator is in
    after = run_checks(ctx, ["lanetest.a", "lanetest.c", "lanetest.d"], lanes=1)[2].metrics["value"]
    assert alone == after
    state = np.random.get_state()[1].copy()
    run_checks(ctx, ["lanetest.d"], lanes=1)
    assert (np.random.get_state()[1] == state).all()  # the caller's state is restored
