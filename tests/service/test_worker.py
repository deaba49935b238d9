"""``trustaudit worker``: jobs claimed from the store, run in a child process, recorded whole.

Ground truth: a job's recorded report is compared with the same audit run directly (same model,
rows and spec: the same verdicts and metrics); states are read back from the store and the tables
directly (``assert_store_consistent``); processes are watched through /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from audit.service import LocalWorkers, Worker, WorkerOptions, stage_inputs
from audit.store import open_store
from tests.service.conftest import (
    ROOT,
    TINY_SPEC,
    assert_store_consistent,
    children_of,
    start_worker,
    stop_process,
    submit_audit,
    wait_for,
)


def _worker(store, jobs_dir: Path, **kw) -> Worker:
    opts = {"jobs_dir": jobs_dir, "once": True, "poll": 0.05, "heartbeat": 0.2, "heartbeat_timeout": 2.0, "quiet": True,
            **kw}
    return Worker(store, WorkerOptions(**opts))


def _outcome(report) -> list[tuple[str, str, dict]]:
    return [(r.check_id, r.verdict.value, dict(r.metrics)) for r in report.results]


# --- running jobs --------------------------------------------------------------------------------


def test_jobs_run_and_record_the_same_report_as_a_direct_audit(store_url, jobs_dir, audit_files):
    from audit import run_audit
    from audit.io import load_model

    store = open_store(store_url)
    ids = [submit_audit(store, jobs_dir, audit_files) for _ in range(2)]
    worker = _worker(store, jobs_dir)
    assert worker.run() == 0
    assert worker.counts == {"succeeded": 2}
    direct = run_audit(load_model(audit_files.model), str(audit_files.data), spec=TINY_SPEC)
    for job_id in ids:
        job = store.get_job(job_id)
        assert (job.state, job.attempts, job.error, job.worker_id) == ("succeeded", 1, None, worker.worker_id)
        assert job.started_at <= job.finished_at
        # progress of each check, written as the child reported it; the last one complete
        assert job.progress == {"done": 2, "total": 2, "current": None,
                                "checks": {"fairness.group_metrics": "done", "fairness.demographic_parity": "done"}}
        report = store.get(job.audit_id)
        assert _outcome(report) == _outcome(direct)
        assert report.verdict == direct.verdict
        # the report names the client's files, never the server's job folder; hashes are the files'
        assert report.model["path"] == "credit model.skops"
        assert report.model["sha256"] == direct.model["sha256"]
        assert report.inputs["data"]["test"]["path"] == "applicants.csv"
        assert report.inputs["data"]["test"]["sha256"] == direct.inputs["data"]["test"]["sha256"]
        assert str(jobs_dir) not in json.dumps(report.to_dict())
        assert [f["check_id"] for f in store.findings(job.audit_id)] == [r.check_id for r in direct.results]
    listed = {r["audit_id"]: r for r in store.list()}
    assert {store.get_job(i).audit_id for i in ids} == set(listed)
    assert all(r["project"] == "p" and r["model_path"] == "credit model.skops" for r in listed.values())
    assert list(jobs_dir.iterdir()) == []  # job folders removed once the jobs ended
    assert assert_store_consistent(store) == {"audits": 2, "findings": 4, "jobs": 2}


def _bad_jobs(store, jobs_dir: Path, files) -> dict[str, tuple[str, list[str]]]:
    """job id -> (what is wrong, fragments its one-line error must hold)."""
    out: dict[str, tuple[str, list[str]]] = {}

    def add(what: str, fragments: list[str], *, spec=None, model=None, data=None, edit=None) -> None:
        inputs = stage_inputs(jobs_dir, {"model": model or ("credit model.skops", files.model),
                                         "data": data or ("applicants.csv", files.data)})
        if edit is not None:
            edit(inputs)
        out[store.submit_job("audit", spec or TINY_SPEC, inputs, project="p", submitted_by="local")] = (what, fragments)

    add("pickle model", ["model file m.pkl is a pickle/joblib file", "refused"], model=("m.pkl", b"\x80\x04K\x01."))
    add("not a model", ["model file junk.bin"], model=("junk.bin", b"this is not a model" * 10))
    add("unknown column", ["sensitive", "nope"], spec={**TINY_SPEC, "data": {**TINY_SPEC["data"], "sensitive": ["nope"]}})
    add("unknown check", ["unknown check 'fairness.nope'"], spec={**TINY_SPEC, "checks": ["fairness.nope"]})
    add("empty data", ["data file applicants.csv is empty"], data=("applicants.csv", b""))
    add("no target", ["job spec: missing required field 'data.target'"], spec={"checks": ["fairness.group_metrics"], "data": {"sensitive": ["sex"]}})

    def traversal(inputs):
        inputs["model"]["stored"] = "../../etc/passwd"

    add("path in the inputs", ["model file '../../etc/passwd' is not a generated file name"], edit=traversal)

    def removed(inputs):
        os.remove(jobs_dir / inputs["folder"] / inputs["data"]["stored"])

    add("missing file", ["data file applicants.csv of this job is missing"], edit=removed)

    def tampered(inputs):
        with open(jobs_dir / inputs["folder"] / inputs["data"]["stored"], "ab") as f:
            f.write(b"1,2,3\n")

    add("changed after upload", ["data file applicants.csv of this job does not match its recorded sha256"],
        edit=tampered)
    return out


def test_bad_input_fails_the_job_with_one_line(tmp_path, jobs_dir, audit_files):
    store = open_store(tmp_path / "s.sqlite")
    bad = _bad_jobs(store, jobs_dir, audit_files)
    worker = _worker(store, jobs_dir)
    assert worker.run() == 0
    assert worker.counts == {"failed": len(bad)}
    for job_id, (what, fragments) in bad.items():
        job = store.get_job(job_id)
        assert job.state == "failed", what
        assert job.error and "\n" not in job.error and len(job.error) < 1000, (what, job.error)
        for fragment in fragments:
            assert fragment in job.error, (what, job.error)
        assert str(jobs_dir) not in job.error and "Traceback" not in job.error, (what, job.error)
        assert not job.error.startswith("internal error"), (what, job.error)
        print(f"{what}: {job.error}")
        assert job.attempts == 1 and job.audit_id is None
    assert store.count() == 0
    assert list(jobs_dir.iterdir()) == []
    assert_store_consistent(store)


def test_job_folders_are_removed_whole(tmp_path, jobs_dir, audit_files):
    """A folder is renamed out of the way before it is deleted: a worker killed while deleting leaves
    a .trash-* folder (swept by the next worker to start), never a job folder missing some inputs."""
    from audit.service import remove_job_folder

    inputs = stage_inputs(jobs_dir, {"model": ("m.skops", audit_files.model), "data": ("d.csv", audit_files.data)})
    assert remove_job_folder(jobs_dir, "any", inputs) and list(jobs_dir.iterdir()) == []
    assert not remove_job_folder(jobs_dir, "any", inputs)  # gone already
    assert not remove_job_folder(jobs_dir, "any", {"folder": "../x"})  # not a plain name: nothing touched
    (jobs_dir / ".trash-abc-1234").mkdir()
    (jobs_dir / ".trash-abc-1234" / "data-1.upload").write_text("x")
    assert _worker(open_store(tmp_path / "s.sqlite"), jobs_dir).run() == 0
    assert list(jobs_dir.iterdir()) == []


def test_time_and_memory_limits_fail_the_job(tmp_path, jobs_dir, audit_files):
    store = open_store(tmp_path / "s.sqlite")
    slow = submit_audit(store, jobs_dir, audit_files, slow=True)
    t0 = time.monotonic()
    assert _worker(store, jobs_dir, timeout=0.5, max_jobs=1).run() == 0
    assert time.monotonic() - t0 < 10
    job = store.get_job(slow)
    assert job.state == "failed" and job.error == "the audit process did not finish within 0.5 s and was stopped"
    hungry = submit_audit(store, jobs_dir, audit_files, slow=True)
    assert _worker(store, jobs_dir, memory_limit_mib=8, max_jobs=1).run() == 0
    job = store.get_job(hungry)
    assert job.state == "failed" and "out of memory" in job.error and "8 MiB" in job.error, job.error
    assert store.count() == 0
    assert_store_consistent(store)


def test_cancel_stops_a_running_job(store_url, jobs_dir, audit_files):
    store = open_store(store_url)
    job_id = submit_audit(store, jobs_dir, audit_files, slow=True)
    # the worker's loop on a thread of this process (its audits still run in child processes)
    worker = Worker(open_store(store_url), WorkerOptions(jobs_dir=jobs_dir, poll=0.1, heartbeat=0.2,
                                                         heartbeat_timeout=5, quiet=True))
    loop = threading.Thread(target=worker.run)
    loop.start()
    try:
        # progress is written while the child runs: the first check done, the job not yet finished
        job = wait_for(lambda: (j := store.get_job(job_id)).progress.get("done", 0) >= 1 and j, 60, "progress")
        assert job.state == "running" and job.progress["total"] == 5
        children = children_of(os.getpid())
        assert children, "the audit runs in a child process"
        t0 = time.monotonic()
        assert store.cancel_job(job_id).cancel_requested
        job = wait_for(lambda: (j := store.get_job(job_id)).finished and j, 10, "the cancel")
        seconds = time.monotonic() - t0
        assert (job.state, job.audit_id, job.error) == ("cancelled", None, "cancelled while running")
        assert seconds < 3, seconds  # a heartbeat (0.2 s) sees it; the audit alone takes several seconds
        wait_for(lambda: all(_state(c) in ("gone", "Z") for c in children), 5, "the audit's child to be gone")
        assert loop.is_alive()  # the worker goes on ...
        nxt = submit_audit(store, jobs_dir, audit_files)  # ... and runs the next job
        assert wait_for(lambda: store.get_job(nxt).finished, 60, "the next job") and store.get_job(nxt).state == "succeeded"
    finally:
        worker.request_stop()
        loop.join(60)
    assert worker.counts == {"cancelled": 1, "succeeded": 1}
    assert store.count() == 1
    assert_store_consistent(store)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


@pytest.mark.parametrize(("sig", "grace"), [(signal.SIGTERM, 0.0), (signal.SIGINT, 0.0), (signal.SIGTERM, 120.0)])
def test_sigterm_gives_back_or_finishes_the_job_and_exits_0(tmp_path, jobs_dir, audit_files, sig, grace):
    """--grace 0: the job is given back at once and runs to the end on the next worker; a long
    grace: the job finishes on this worker. Either way exit 0, and nothing half recorded."""
    url = str(tmp_path / "s.sqlite")
    store = open_store(url)
    job_id = submit_audit(store, jobs_dir, audit_files, slow=True)
    log = tmp_path / "worker.log"
    proc = start_worker(url, jobs_dir, log, "--heartbeat", "0.2", "--heartbeat-timeout", "1", "--poll", "0.1",
                        "--grace", str(grace))
    try:
        wait_for(lambda: store.get_job(job_id).progress.get("done", 0) >= 1, 180, "progress")
        proc.send_signal(sig)
        assert proc.wait(300) == 0  # with a long grace: once the audit finished (seconds; more on a busy machine)
    finally:
        if proc.poll() is None:  # the test failed: no worker outlives it
            proc.kill()
            proc.wait()
    job = store.get_job(job_id)
    if grace:
        assert job.state == "succeeded" and job.attempts == 1
    else:
        assert job.state in ("queued", "running") and job.audit_id is None and store.count() == 0
        assert "given back to the queue" in log.read_text()
        # another worker takes it over (at once if the store takes jobs back, else once its heartbeat lapsed)
        time.sleep(1.2)
        assert _worker(store, jobs_dir, heartbeat=0.2, heartbeat_timeout=1.0).run() == 0
        job = store.get_job(job_id)
        assert job.state == "succeeded"
    assert store.count() == 1
    assert_store_consistent(store)


def test_a_stale_job_is_requeued_once_then_failed(tmp_path, jobs_dir, audit_files):
    """What a worker's loop does for a dead worker's job: re-queue it once, then fail it with the reason."""
    store = open_store(tmp_path / "s.sqlite")
    job_id = submit_audit(store, jobs_dir, audit_files)
    assert store.claim_job("dead-1").job_id == job_id  # a worker that will never heartbeat
    time.sleep(0.3)
    w = _worker(store, jobs_dir, heartbeat=0.1, heartbeat_timeout=0.2, max_jobs=1)
    assert w.run() == 0  # re-queues the job, claims it, runs it
    assert store.get_job(job_id).state == "succeeded" and store.get_job(job_id).attempts == 2
    lost = submit_audit(store, jobs_dir, audit_files)
    folder = jobs_dir / store.get_job(lost).inputs["folder"]
    store.claim_job("dead-2")
    time.sleep(0.3)
    store.requeue_stale(0.2)
    store.claim_job("dead-3")
    time.sleep(0.3)
    assert _worker(store, jobs_dir, heartbeat=0.1, heartbeat_timeout=0.2).run() == 0
    job = store.get_job(lost)
    assert job.state == "failed" and job.error.startswith("worker lost twice (heartbeat lapsed")
    assert "dead-3" in job.error
    assert not folder.exists()  # the worker that failed it removed its inputs
    assert_store_consistent(store)


# --- federated jobs ------------------------------------------------------------------------------


def test_a_bad_federated_job_fails_before_the_engine_starts(tmp_path, jobs_dir, audit_files):
    store = open_store(tmp_path / "s.sqlite")
    bad = {
        store.submit_job("federated", {"num-clients": 0}, {}, project="p", submitted_by="local"):
            "num-clients must be",
        store.submit_job("federated", {"strategy": "fedbest"}, {}, project="p", submitted_by="local"):
            "strategy must be one of",
        store.submit_job("federated", {"output-dir": "/etc"}, {}, project="p", submitted_by="local"):
            "'output-dir' cannot be set in a job",
        store.submit_job("federated", {"data": "/etc/passwd"}, {}, project="p", submitted_by="local"):
            "'data' cannot be set in a job",
        store.submit_job("federated", {}, stage_inputs(jobs_dir, {"model": ("m.skops", audit_files.model)}),
                         project="p", submitted_by="local"): "a model file is not used by this kind of job",
    }
    t0 = time.monotonic()
    assert _worker(store, jobs_dir).run() == 0
    assert time.monotonic() - t0 < 60
    for job_id, fragment in bad.items():
        job = store.get_job(job_id)
        assert job.state == "failed" and fragment in job.error and "\n" not in job.error, job.error
    assert_store_consistent(store)


@pytest.mark.slow
def test_a_federated_job_simulates_and_records_its_audit(tmp_path, jobs_dir, audit_files):
    """``trustaudit federated simulate --audit`` as a job, on an uploaded CSV: the run's metrics are
    the job's result, its audit is recorded with the job (model and rows named after the job)."""
    import pandas as pd

    rows = pd.concat([pd.read_csv(p) for p in (audit_files.train, audit_files.holdout, audit_files.data)])
    csv = tmp_path / "clients.csv"
    rows.to_csv(csv, index=False)
    store = open_store(tmp_path / "s.sqlite")
    config = {"num-clients": 2, "num-rounds": 2, "target": "approved", "positive-label": "1", "sensitive": "sex",
              "audit": True, "checks": "fairness.group_metrics,fairness.demographic_parity"}
    job_id = store.submit_job("federated", config, stage_inputs(jobs_dir, {"data": ("clients.csv", csv)}),
                              project="p", submitted_by="local")
    t0 = time.monotonic()
    assert _worker(store, jobs_dir, federated_cpus=1, heartbeat=0.5, heartbeat_timeout=10).run() == 0
    seconds = time.monotonic() - t0
    job = store.get_job(job_id)
    assert job.state == "succeeded", job.error
    run = job.result["run"]
    assert job.result["trained"] is True
    assert run["config"]["num-clients"] == 2 and len([r for r in run["rounds"] if r["round"] > 0]) == 2
    assert (run["config"]["data"], run["config"]["output-dir"]) == ("clients.csv", "")  # no server path recorded
    assert str(jobs_dir) not in json.dumps(job.result) and "trustaudit-federated-" not in json.dumps(job.result)
    assert sum(run["data"][f"{split}_rows"] for split in ("train", "holdout", "test")) == len(rows)
    report = store.get(job.audit_id)
    assert [r.check_id for r in report.results] == ["fairness.group_metrics", "fairness.demographic_parity"]
    assert report.model["path"] == f"federated job {job_id[:12]}: model.pt"
    assert report.inputs["data"]["test"]["path"] == f"federated job {job_id[:12]}: test rows"
    assert job.progress["stage"] == "audit" and job.progress["done"] == job.progress["total"] == 2
    assert list(jobs_dir.iterdir()) == [] and children_of(os.getpid()) == []
    assert_store_consistent(store)
    print(f"\nfederated job (2 clients, 2 rounds, audit): {seconds:.1f} s")


def _descendants(pid: int) -> set[int]:
    out, stack = set(), children_of(pid)
    while stack:
        p = stack.pop()
        if p not in out:
            out.add(p)
            stack += children_of(p)
    return out


@pytest.mark.slow
def test_a_stopped_federated_job_leaves_no_ray_process(tmp_path, jobs_dir):
    """A federated simulation stopped by the time limit: its child and every process its Ray engine
    started (raylet, GCS, agents) are stopped with it (the child leads its own process group)."""
    store = open_store(tmp_path / "s.sqlite")
    job_id = store.submit_job("federated", {"num-clients": 2, "num-rounds": 50, "n-rows": 300}, {}, project="p",
                              submitted_by="local")
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_descendants(os.getpid()))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert _worker(store, jobs_dir, timeout=15, federated_cpus=1).run() == 0
    finally:
        done.set()
        watcher.join()
    job = store.get_job(job_id)
    assert (job.state, job.error) == ("failed", "the federated simulation process did not finish within 15 s and was stopped")
    assert len(seen) > 3, "the simulation started its engine's processes"
    wait_for(lambda: not any(_state(p) not in ("gone", "Z") for p in seen), 10, "every process of the job to stop")


# --- the command line ----------------------------------------------------------------------------


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "audit.service", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["--heartbeat", "0"], "worker: --heartbeat must be a positive number of seconds, got 0.0"),
    (["--heartbeat", "5", "--heartbeat-timeout", "6"], "must be at least twice --heartbeat"),
    (["--memory-limit", "-1"], "--memory-limit must be 0 (no limit) or a number of MiB"),
    (["--max-jobs", "0"], "--max-jobs must be at least 1"),
    (["--poll", "abc"], "argument --poll: invalid float value: 'abc'"),
    (["--store", "mysql://u@h/db"], "unknown scheme 'mysql'"),
    (["--store", "postgresql+psycopg://nobody@127.0.0.1:1/nothing"], "cannot be reached (host 127.0.0.1, database nothing)"),
])
def test_bad_worker_flags_are_one_line_exit_2(tmp_path, args, message):
    out = _run_cli("worker", "--jobs-dir", str(tmp_path / "jobs"), "--once", *args,
                   env={"TRUSTAUDIT_STORE": str(tmp_path / "s.sqlite")})
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustaudit: error: ") and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_worker_once_on_an_empty_queue_exits_0(tmp_path):
    out = _run_cli("worker", "--store", str(tmp_path / "s.sqlite"), "--jobs-dir", str(tmp_path / "jobs"), "--once")
    assert out.returncode == 0, out.stderr
    assert "stopped (no jobs)" in out.stderr


def test_the_worker_command_is_a_trustaudit_subcommand():
    """Declared in pyproject's trustaudit.commands table; the installed CLI shows it once the
    package metadata is current (an editable install made before the entry was added lacks it)."""
    import argparse
    import tomllib
    from importlib.metadata import entry_points

    from audit.service.cli_commands import add_commands

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["trustaudit.commands"]["service"] == "audit.service.cli_commands:add_commands"
    parser = argparse.ArgumentParser(prog="trustaudit")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["worker", "--once", "--max-jobs", "3", "--ray-address", "127.0.0.1:6379"])
    assert (args.once, args.max_jobs, args.ray_address, args.heartbeat, args.heartbeat_timeout) == (
        True, 3, "127.0.0.1:6379", 5.0, 30.0)
    if any(ep.name == "service" for ep in entry_points(group="trustaudit.commands")):
        from audit.cli import build_parser

        assert build_parser().parse_args(["worker", "--once"]).func.__module__ == "audit.service.cli_commands"


# --- local workers -------------------------------------------------------------------------------


def test_local_workers_run_jobs_and_stop_cleanly(tmp_path, jobs_dir, audit_files):
    url = str(tmp_path / "s.sqlite")
    store = open_store(url)
    ids = [submit_audit(store, jobs_dir, audit_files) for _ in range(4)]
    log = tmp_path / "workers.log"
    with LocalWorkers(url, 2, jobs_dir=jobs_dir, poll=0.1, heartbeat=0.5, heartbeat_timeout=5, log_file=log) as workers:
        assert len(workers.alive()) == 2
        wait_for(lambda: all(store.get_job(i).finished for i in ids), 120, "4 jobs")
        pids = workers.pids
    assert [p.returncode for p in workers.procs] == [0, 0]
    assert not any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in pids)
    assert {store.get_job(i).state for i in ids} == {"succeeded"}
    assert len({store.get_job(i).worker_id for i in ids}) in (1, 2)
    assert log.read_text().count(" succeeded in ") == 4


_PARENT = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, {root!r})
    from audit.service import LocalWorkers
    def start():
        return LocalWorkers({url!r}, 2, jobs_dir={jobs!r}, poll=0.1, quiet=True).start()
    if {on_thread!r}:  # started from a thread that has ended by the time the parent dies
        box = []
        t = threading.Thread(target=lambda: box.append(start()))
        t.start()
        t.join()
        workers = box[0]
    else:
        workers = start()
    print(" ".join(map(str, workers.pids)), flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("on_thread", [False, True])
def test_local_workers_die_with_their_parent(tmp_path, jobs_dir, on_thread):
    """kill -9 of the process that started them: the workers notice (a pipe, and PR_SET_PDEATHSIG
    when started from the main thread) and exit; started from another thread, the pipe alone tells them."""
    code = _PARENT.format(root=str(ROOT), url=str(tmp_path / "s.sqlite"), jobs=str(jobs_dir), on_thread=on_thread)
    log = tmp_path / "workers.log"
    code = code.replace("quiet=True", f"log_file={str(log)!r}")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    # both up and polling (a worker imports the audit stack before its first job)
    wait_for(lambda: log.exists() and log.read_text().count("started on store") == 2, 120, "the workers to start")
    parent.kill()
    parent.wait()
    t0 = time.monotonic()
    wait_for(lambda: all(_state(p) in ("gone", "Z") for p in pids), 20, "the workers to exit with their parent")
    assert time.monotonic() - t0 < 5
    # most exit cleanly on the pipe's end ("stopped (no jobs)"); under load the kernel's parent-death
    # signal can win the race for one of them: either way none is left running
    assert 1 <= log.read_text().count("stopped (no jobs)") <= 2


# --- many clients, two workers --------------------------------------------------------------------


def _many_clients(store_url: str, jobs_dir: Path, audit_files, tmp_path: Path, per_client: int,
                  forked: bool) -> dict[str, float]:
    """4 clients submit ``per_client`` jobs each at once while 2 worker processes run them: every
    job run once, none lost, none made up. ``forked``: workers forked from this process (started
    at once) instead of ``LocalWorkers``' ``python -m audit.service worker`` processes."""
    from tests.service.conftest import ForkedWorker

    n = 4 * per_client
    store = open_store(store_url)
    inputs = [stage_inputs(jobs_dir, {"model": ("m.skops", audit_files.model), "data": ("d.csv", audit_files.data)})
              for _ in range(n)]
    submitted: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(5)

    def client(k: int) -> None:
        mine = open_store(store_url)
        start.wait()
        try:
            for i in range(per_client):
                submitted[k].append(mine.submit_job("audit", TINY_SPEC, inputs[k * per_client + i],
                                                    project=f"client{k}", submitted_by=f"token{k}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    t0 = time.monotonic()
    log = tmp_path / "workers.log"
    if forked:
        workers = [ForkedWorker(store_url, jobs_dir, log, poll=0.1, heartbeat=1, heartbeat_timeout=10) for _ in range(2)]
    else:
        local = LocalWorkers(store_url, 2, jobs_dir=jobs_dir, poll=0.1, heartbeat=1, heartbeat_timeout=10,
                             log_file=log).start()
        workers = local.procs
    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        start.wait()
        for t in threads:
            t.join()
        assert not errors, errors
        ids = [j for s in submitted for j in s]
        assert len(ids) == n and len(set(ids)) == n
        wait_for(lambda: store.count_jobs(state="succeeded") == n or store.count_jobs(state="failed"), 900,
                 f"{n} jobs")
        assert [p.poll() for p in workers] == [None, None]
    finally:
        codes = local.stop() if not forked else [stop_process(p) for p in workers]
    assert codes == [0, 0]
    seconds = time.monotonic() - t0
    jobs = {j.job_id: j for j in store.list_jobs(limit=1000)}
    assert set(jobs) == set(ids)  # none lost, none made up
    assert {j.state for j in jobs.values()} == {"succeeded"}, {j.error for j in jobs.values()}
    assert all(j.attempts == 1 for j in jobs.values())  # none run twice
    assert len({j.audit_id for j in jobs.values()}) == n and store.count() == n
    for k in range(4):
        assert {j.project for j in jobs.values() if j.job_id in submitted[k]} == {f"client{k}"}
        assert {j.submitted_by for j in jobs.values() if j.job_id in submitted[k]} == {f"token{k}"}
        assert store.count(project=f"client{k}") == per_client
    assert len({j.worker_id for j in jobs.values()}) == 2  # both workers took jobs
    assert log.read_text().count(" succeeded in ") == n  # each job recorded by exactly one worker
    counts = assert_store_consistent(store)
    assert counts == {"audits": n, "findings": 2 * n, "jobs": n}
    assert list(jobs_dir.iterdir()) == []
    return {"seconds": seconds, **counts}


def test_20_submissions_from_4_clients_with_2_workers(store_url, jobs_dir, audit_files, tmp_path):
    figures = _many_clients(store_url, jobs_dir, audit_files, tmp_path, per_client=5, forked=True)
    assert figures["jobs"] == figures["audits"] == 20


@pytest.mark.slow
def test_100_submissions_from_4_clients_with_2_workers(store_url, jobs_dir, audit_files, tmp_path):
    figures = _many_clients(store_url, jobs_dir, audit_files, tmp_path, per_client=25, forked=False)
    assert figures["jobs"] == figures["audits"] == 100
    backend = "postgresql" if store_url.startswith("postgresql") else "sqlite"
    print(f"\n100 jobs from 4 clients, 2 local workers, {backend}: {figures['seconds']:.1f} s")
