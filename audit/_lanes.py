"""Lanes: checks that share nothing run at the same time, each lane on its share of the cores.

Checks declare the shared intermediates they read (``register_check(..., needs=...)``); checks that
reach a common intermediate form one *group* (they must run where that value is computed once).
Groups are independent, so they can run concurrently. Much of an audit's work holds the GIL
(TreeSHAP's C loop, pandas, DoWhy's Python), so a lane is a forked process, not a thread: this
process is one lane, and ``lanes - 1`` forked children are the others. Lanes take groups from one
queue, heaviest first (``cost`` declared at registration), so a lane that finishes early takes the
next group. A child sends each result back as JSON (nothing is unpickled) and each progress event
as it happens; a child that dies has its unfinished groups run here, one after another.

Every lane runs with native thread pools limited to its share of the cores (OpenMP and BLAS pools
do not survive fork, and two lanes of two threads each on two cores only fight), and each check's
context says how many cores it may use (``ctx.cores``: TreeSHAP's forked split reads it).
Results do not depend on the lanes: every stochastic step draws from its own seeded generator, and
each group's intermediates are computed in one lane only. ``TRUSTAUDIT_LANES=1`` (or
``run_audit(..., lanes=1)``) runs everything here, one check after another.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from audit.registry import CheckInfo
from audit.results import CheckResult

__all__ = ["default_lanes", "groups", "run_in_lanes"]

ProgressCallback = Callable[[str, str, int, int], None]


def groups(checks: Sequence[CheckInfo]) -> list[list[int]]:
    """Indices of ``checks`` grouped so that checks reaching a common intermediate share a group
    (union-find over intermediate names); each group in registry order, groups by first member."""
    parent = list(range(len(checks)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, info in enumerate(checks):
        for name in info.shares():
            if name in owner:
                parent[find(i)] = find(owner[name])
            else:
                owner[name] = i
    out: dict[int, list[int]] = {}
    for i in range(len(checks)):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values(), key=lambda g: g[0])


def default_lanes() -> int:
    """Lanes worth running: ``TRUSTAUDIT_LANES`` when set, else one per core, at most 2 per core
    budget of this process's CPU affinity."""
    env = os.environ.get("TRUSTAUDIT_LANES", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _limits(n: int) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, n))


def run_in_lanes(
    checks: Sequence[CheckInfo],
    ctx: Any,
    run_check: Callable[[CheckInfo, Any], CheckResult],
    *,
    progress: ProgressCallback | None = None,
    lanes: int | None = None,
) -> list[CheckResult]:
    """Run ``checks`` on ``ctx`` (``run_check(info, ctx)`` each) in up to ``lanes`` lanes; results
    in the order of ``checks``. Progress: ("start" | "done", check_id, i, total) per check."""
    total = len(checks)
    parts = groups(checks)
    n_lanes = min(default_lanes() if lanes is None else max(1, lanes), len(parts))
    lock = threading.Lock()
    done = [0]

    def report(event: str, check_id: str) -> None:
        if progress is None:
            return
        with lock:  # a child's events arrive on a reader thread
            if event == "done":
                done[0] += 1
            progress(event, check_id, done[0], total)

    results: dict[int, CheckResult] = {}
    if n_lanes <= 1 or not hasattr(os, "fork"):
        for i, info in enumerate(checks):
            report("start", info.check_id)
            results[i] = run_check(info, ctx)
            report("done", info.check_id)
        return [results[i] for i in range(total)]
    return _run_forked(checks, ctx, run_check, parts, n_lanes, report)


def _cost(checks: Sequence[CheckInfo], group: list[int]) -> float:
    return sum(float(getattr(checks[i], "cost", 1.0)) for i in group)


def _run_forked(
    checks: Sequence[CheckInfo],
    ctx: Any,
    run_check: Callable[[CheckInfo, Any], CheckResult],
    parts: list[list[int]],
    n_lanes: int,
    report: Callable[[str, str], None],
) -> list[CheckResult]:
    import multiprocessing as mp

    from audit._isolate import _die_with_parent, fork_safe_native_threads

    cores = max(1, int(getattr(ctx, "cores", 1) or 1))
    per_lane = max(1, cores // n_lanes)
    # a child forked after this process started OpenMP workers must stay on one native thread
    # (libgomp's pool does not survive fork: a parallel region would wait forever)
    child_threads = per_lane if fork_safe_native_threads() is None else 1
    order = sorted(range(len(parts)), key=lambda g: -_cost(checks, parts[g]))
    fork = mp.get_context("fork")
    todo = fork.Queue()
    for g in order:
        todo.put(g)
    results: dict[int, CheckResult] = {}
    claimed: dict[int, set[int]] = {}  # lane -> groups it took (a dead child's are rerun here)
    children = []

    def work(lane_ctx: Any, send: Callable[[tuple[Any, ...]], None]) -> None:
        while True:
            try:
                g = todo.get(timeout=0.05)
            except queue.Empty:
                return
            send(("group", g))
            for i in parts[g]:
                send(("start", i))
                res = run_check(checks[i], lane_ctx)
                send(("result", i, res))

    for lane in range(1, n_lanes):
        recv, snd = fork.Pipe(duplex=False)

        def child_main(snd: Any = snd) -> None:
            _die_with_parent()
            with _limits(child_threads):
                def send(msg: tuple[Any, ...]) -> None:
                    if msg[0] == "result":
                        msg = ("result", msg[1], msg[2].to_dict())
                    snd.send(msg)

                try:
                    work(ctx.for_lane(per_lane), send)
                finally:
                    snd.send(("end",))
                    snd.close()

        proc = fork.Process(target=child_main, daemon=True)
        proc.start()
        snd.close()
        children.append((lane, proc, recv))
        claimed[lane] = set()

    def reader(lane: int, recv: Any) -> None:
        while True:
            try:
                msg = recv.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "end":
                return
            if msg[0] == "group":
                claimed[lane].add(msg[1])
            elif msg[0] == "start":
                report("start", checks[msg[1]].check_id)
            elif msg[0] == "result":
                results[msg[1]] = CheckResult.from_dict(msg[2])
                report("done", checks[msg[1]].check_id)

    threads = [threading.Thread(target=reader, args=(lane, recv), daemon=True) for lane, _, recv in children]
    for t in threads:
        t.start()

    def here(msg: tuple[Any, ...]) -> None:
        if msg[0] == "start":
            report("start", checks[msg[1]].check_id)
        elif msg[0] == "result":
            results[msg[1]] = msg[2]
            report("done", checks[msg[1]].check_id)

    with _limits(per_lane):
        work(ctx.for_lane(per_lane), here)
    for t in threads:
        t.join()
    for _, proc, recv in children:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        with contextlib.suppress(OSError):
            recv.close()
    todo.close()
    # a child that died: every check it did not report (its groups, and any left queued) runs here
    missing = [i for i in range(len(checks)) if i not in results]
    for i in missing:
        report("start", checks[i].check_id)
        results[i] = run_check(checks[i], ctx)
        report("done", checks[i].check_id)
    return [results[i] for i in range(len(checks))]
