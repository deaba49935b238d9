"""``trustaudit worker --ray-address``: audits run as Ray tasks on a cluster, the worker still
claims, heartbeats, records progress and the report, and honours cancel.

The cluster is a local Ray head this module starts (``ray start --head --block`` on free ports,
two CPUs, no dashboard) and stops by signalling that one process, which takes down the
processes it started: ``ray stop`` would stop every Ray instance of this user on the machine.
Starting a head takes 10-30 s, so the module is ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.store import open_store
from tests.service.conftest import (
    TINY_SPEC,
    assert_store_consistent,
    children_of,
    start_worker,
    stop_process,
    submit_audit,
    wait_for,
)

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes_under(folder: str) -> list[int]:
    """Processes whose command line names ``folder`` (the head's temporary folder): this head's."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if folder.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("Ray is not installed (it comes with flwr[simulation])")
    tmp = tempfile.mkdtemp(prefix="ta-ray-")  # short: Ray's socket paths must fit in 107 bytes
    port, client, node, obj, metrics, agent, agent_grpc, runtime = _free_ports(8)
    cmd = [str(ray_bin), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
           "--disable-usage-stats", "--include-dashboard", "false", "--temp-dir", tmp,
           "--ray-client-server-port", str(client), "--node-manager-port", str(node),
           "--object-manager-port", str(obj), "--metrics-export-port", str(metrics),
           "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
           "--runtime-env-agent-port", str(runtime)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    with open(Path(tmp) / "head.log", "wb") as log:
        head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        def up() -> bool:
            if head.poll() is not None:
                raise AssertionError(f"ray start exited: {(Path(tmp) / 'head.log').read_text()[-2000:]}")
            return "will now block" in (Path(tmp) / "head.log").read_text()

        wait_for(up, 180, "the Ray head", interval=0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # ray start --block stops what it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # the session this fixture created
            head.wait()
        deadline = time.monotonic() + 30
        while (left := _processes_under(tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in _processes_under(tmp):  # still there: this head's own processes
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"Ray processes of the test head outlived it: {left}"


def _ray_task_processes() -> list[int]:
    """Ray worker processes running the audit task right now (Ray titles them ``ray::<function>``)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::ray_audit_task"):
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_ray_worker_runs_audits_on_the_cluster(ray_head, store_url, jobs_dir, audit_files, tmp_path):
    from audit import run_audit
    from audit.io import load_model

    store = open_store(store_url)
    ids = [submit_audit(store, jobs_dir, audit_files) for _ in range(3)]
    bad = submit_audit(store, jobs_dir, audit_files, model=("m.pkl", b"\x80\x04K\x01."))
    fed = store.submit_job("federated", {"num-clients": 2}, {}, project="p", submitted_by="local")
    log = tmp_path / "worker.log"
    t0 = time.monotonic()
    worker = start_worker(store_url, jobs_dir, log, "--ray-address", ray_head, "--once", "--heartbeat", "0.5",
                          "--heartbeat-timeout", "10")
    try:
        assert worker.wait(300) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:  # the test failed: no worker outlives it
            worker.kill()
            worker.wait()
    seconds = time.monotonic() - t0
    direct = run_audit(load_model(audit_files.model), str(audit_files.data), spec=TINY_SPEC)
    for job_id in ids:
        job = store.get_job(job_id)
        assert job.state == "succeeded", job.error
        report = store.get(job.audit_id)
        assert [(r.check_id, r.verdict, r.metrics) for r in report.results] == [
            (r.check_id, r.verdict, r.metrics) for r in direct.results]
        assert report.model["path"] == "credit model.skops"
        # per-check progress came back from the cluster through the Ray queue
        assert job.progress["checks"] == {"fairness.group_metrics": "done", "fairness.demographic_parity": "done"}
        assert job.progress["done"] == job.progress["total"] == 2
    job = store.get_job(bad)
    assert job.state == "failed" and job.error.startswith("model file m.pkl is a pickle/joblib file"), job.error
    assert store.get_job(fed).state == "queued"  # a Ray worker leaves federated jobs to plain workers
    assert "running audit jobs in Ray cluster" in log.read_text()
    assert_store_consistent(store)
    backend = "postgresql" if store_url.startswith("postgresql") else "sqlite"
    print(f"\nRay worker ({backend}): 4 jobs in {seconds:.1f} s including start-up")


def test_ray_worker_cancels_a_running_task(ray_head, tmp_path, jobs_dir, audit_files):
    url = str(tmp_path / "s.sqlite")
    store = open_store(url)
    job_id = submit_audit(store, jobs_dir, audit_files, slow=True)
    log = tmp_path / "worker.log"
    worker = start_worker(url, jobs_dir, log, "--ray-address", ray_head, "--heartbeat", "0.2",
                          "--heartbeat-timeout", "10", "--poll", "0.1")
    try:
        wait_for(lambda: store.get_job(job_id).progress.get("done", 0) >= 1, 300, "progress from the Ray task")
        # the audit runs in a Ray worker process, not under this worker
        tasks = _ray_task_processes()
        assert tasks, "no Ray process runs the audit task"
        assert not [c for c in children_of(worker.pid) if c not in tasks]
        store.cancel_job(job_id)
        job = wait_for(lambda: (j := store.get_job(job_id)).finished and j, 30, "the cancel")
        assert (job.state, job.audit_id) == ("cancelled", None)
        wait_for(lambda: not set(tasks) & set(_ray_task_processes()), 30, "the Ray task to stop")
        nxt = submit_audit(store, jobs_dir, audit_files)
        wait_for(lambda: store.get_job(nxt).finished, 120, "the next job")
        assert store.get_job(nxt).state == "succeeded"
    finally:
        assert stop_process(worker) == 0
    assert_store_consistent(store)


def test_unreachable_ray_cluster_is_one_line_exit_2(tmp_path):
    port = _free_ports(1)[0]
    out = subprocess.run([sys.executable, "-m", "audit.service", "worker", "--store", str(tmp_path / "s.sqlite"),
                          "--jobs-dir", str(tmp_path / "jobs"), "--ray-address", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == f"trustaudit: error: Ray cluster at 127.0.0.1:{port} cannot be reached: Connection refused"
