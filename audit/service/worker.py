"""``trustaudit worker``: claim jobs from the store, run each in a child process, record the outcome.

The loop: re-queue jobs whose worker stopped heartbeating (``store.requeue_stale``; every worker
does it, so a dead worker's job is found by the living), claim the oldest queued job atomically
(``store.claim_job``), run it, record it. One job at a time per worker; run more workers for
more parallelism (:class:`LocalWorkers` starts n of them on this machine).

A job runs in a forked child process (``audit._isolate.run_isolated``) with a wall-time limit
(``--timeout``) and an address-space limit (``--memory-limit``), so a model that crashes, hangs or
exhausts memory ends the child, not the worker: the job is failed with that one line. While the
child runs, a thread of the worker heartbeats every ``--heartbeat`` seconds and writes the job's
progress as the child reports each check (``store.set_progress``); a heartbeat answered "no"
means a cancel was requested (the child is killed, the job marked cancelled) or the job is no
longer this worker's (its heartbeat lapsed and another worker re-queued it: the child is killed
and nothing is recorded). The report and the job's success are written in one transaction
(``store.finish_job``): a report is never half visible, and a worker killed at any moment leaves
either the whole record or none. Bad input (a spec, a model or a data file the safe intake
refuses) fails the job with the intake's one-line reason.

A worker killed mid-job (``kill -9``, a lost machine) stops heartbeating; after
``--heartbeat-timeout`` seconds another worker's ``requeue_stale`` re-queues the job once, and
fails it ("worker lost twice ...") if it is lost again. The job's child dies with the worker
(``PR_SET_PDEATHSIG``).

SIGTERM or SIGINT: no new job is claimed; the current job may finish within ``--grace`` seconds,
else its child is stopped and the job is given back to the queue (``store.release_job``); the
worker exits 0. A second signal gives the job back at once.

With ``--ray-address`` the audit of a claimed job runs as a Ray task on that cluster instead of a
local child (:mod:`audit.service._jobs`, ``ray_audit_task``): the input bytes travel with the task,
so cluster machines need no shared filesystem, only the same trustaudit installed. The task runs
the audit in a child process of the Ray worker with the same time and memory limits; per-check
progress comes back through a Ray queue (an actor) that this worker drains while it waits. The
worker still claims, heartbeats, honours cancel (``ray.cancel``) and records. Federated jobs run
their own Flower/Ray simulation engine, so a Ray worker claims audit jobs only: run at least one
plain worker for federated jobs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from audit.exceptions import ConfigError, MissingExtraError, StoreError, TrustAuditError, UsageError

__all__ = [
    "OUTCOMES",
    "LocalWorkers",
    "Worker",
    "WorkerOptions",
    "default_jobs_dir",
]

#: what ``Worker.run_job`` returns: the job's end as far as this worker is concerned
OUTCOMES = ("succeeded", "failed", "cancelled", "released", "lost")

ENV_JOBS_DIR = "TRUSTAUDIT_JOBS_DIR"
_ENV_PARENT_FD = "TRUSTAUDIT_WORKER_PARENT_FD"
_ENV_PARENT_PID = "TRUSTAUDIT_WORKER_PARENT_PID"
_ENV_PDEATHSIG = "TRUSTAUDIT_WORKER_PDEATHSIG"
_TICK = 0.1  # seconds between the heartbeat thread's looks at cancel, shutdown and progress
_PROGRESS_EVERY = 0.2  # at most this often a progress write (each is also a heartbeat)


def default_jobs_dir() -> Path:
    """Where job folders live: ``$TRUSTAUDIT_JOBS_DIR``, else ``jobs`` beside the default history
    file (``~/.local/share/trustaudit/jobs``). The API and the workers of one machine share it."""
    env = os.environ.get(ENV_JOBS_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustaudit" / "jobs"


@dataclass(frozen=True)
class WorkerOptions:
    """A worker's settings (the ``trustaudit worker`` flags). :meth:`validated` checks them."""

    jobs_dir: Path = field(default_factory=default_jobs_dir)
    poll: float = 0.5  # seconds between looks at an empty queue
    heartbeat: float = 5.0  # seconds between heartbeats while a job runs
    heartbeat_timeout: float = 30.0  # a running job silent this long is re-queued (by any worker)
    timeout: float | None = None  # wall-time limit of one job, seconds
    memory_limit_mib: int | None = None  # None: 60 % of this machine's memory; 0: no limit
    once: bool = False  # exit when the queue is empty
    max_jobs: int | None = None  # exit after this many jobs
    ray_address: str | None = None
    grace: float = 5.0  # on SIGTERM: seconds the current job may take to finish before it is given back
    keep_inputs: bool = False  # keep job folders after the job ends
    unsafe_pickle: bool = False  # allow pickle/joblib models (runs any code in the file)
    federated_cpus: int | None = None  # CPUs a federated simulation's Ray engine may use
    quiet: bool = False

    def validated(self) -> WorkerOptions:
        def positive(name: str, value: float | None, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if value is None or not value > 0 or value != value or value == float("inf"):
                raise UsageError(f"worker: --{name} must be a positive number of seconds, got {value}")

        positive("poll", self.poll)
        positive("heartbeat", self.heartbeat)
        positive("heartbeat-timeout", self.heartbeat_timeout)
        positive("timeout", self.timeout, allow_none=True)
        if self.heartbeat_timeout < 2 * self.heartbeat:
            raise UsageError(f"worker: --heartbeat-timeout ({self.heartbeat_timeout:g} s) must be at least twice "
                             f"--heartbeat ({self.heartbeat:g} s), or live jobs would be re-queued")
        if self.memory_limit_mib is not None and self.memory_limit_mib < 0:
            raise UsageError(f"worker: --memory-limit must be 0 (no limit) or a number of MiB, got {self.memory_limit_mib}")
        if self.max_jobs is not None and self.max_jobs < 1:
            raise UsageError(f"worker: --max-jobs must be at least 1, got {self.max_jobs}")
        if not self.grace >= 0:
            raise UsageError(f"worker: --grace must be 0 or a positive number of seconds, got {self.grace}")
        if self.federated_cpus is not None and self.federated_cpus < 1:
            raise UsageError(f"worker: --federated-cpus must be at least 1, got {self.federated_cpus}")
        if self.ray_address is not None and not self.ray_address.strip():
            raise UsageError("worker: --ray-address is empty; give HOST:PORT of the Ray head (or 'auto')")
        return replace(self, jobs_dir=Path(self.jobs_dir).expanduser())

    def memory_bytes(self) -> int | None:
        from audit._isolate import default_memory_limit

        if self.memory_limit_mib == 0:
            return None
        if self.memory_limit_mib is None:
            return default_memory_limit()
        return int(self.memory_limit_mib) * 1024**2


class _Running:
    """The job in progress: its child, its progress, and why it must stop (if it must).

    The main thread runs the child (and handles its messages); a heartbeat thread, started once
    the child exists, beats, writes progress, and stops the child on cancel, loss or shutdown.
    """

    def __init__(self, worker: Worker, job: Any, *, remote: bool) -> None:
        self.worker = worker
        self.job = job
        self.remote = remote  # a Ray task: nothing local to kill, the main thread cancels it
        self.pid: int | None = None
        self.group = False  # the child leads a process group of its own (federated jobs)
        self.child_done = False
        self.reason: str | None = None  # "cancelled" | "lost" | "released"
        self.lock = threading.Lock()
        self.progress: dict[str, Any] = {"done": 0, "total": 0, "current": None, "checks": {}}
        self.version = 0
        self.written = 0  # the progress version last stored
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    # --- main thread ---

    def on_message(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        if "pid" in msg:
            if not self.remote:
                self.pid = int(msg["pid"])
                self.group = bool(msg.get("group"))
            self.start()
            return
        self.start()
        with self.lock:
            p = self.progress
            event = msg.get("event")
            if event == "round":
                p["stage"] = "simulation"
                p["round"] = {k: msg.get(k) for k in ("round", "rounds", "accuracy", "answered", "sampled")}
                p["done"], p["total"] = int(msg.get("round") or 0), int(msg.get("rounds") or 0)
                p["current"] = f"round {p['done']}/{p['total']}"
            elif event in ("start", "done"):
                if msg.get("stage") == "audit" and p.get("stage") != "audit":
                    p["stage"] = "audit"
                    p["checks"] = {}
                check = str(msg.get("check"))
                p["checks"][check] = "running" if event == "start" else "done"
                p["done"], p["total"] = int(msg.get("done") or 0), int(msg.get("total") or 0)
                p["current"] = check if event == "start" else p["current"]
                if p["done"] == p["total"] and p["total"]:
                    p["current"] = None
            else:
                return
            self.version += 1
        self.wake.set()

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._beat, name="trustaudit-heartbeat", daemon=True)
            self.thread.start()

    def finish(self) -> None:
        """Stop the heartbeat thread; then store the last progress it had not written yet."""
        self.stop.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        with self.lock:
            version, snapshot = self.version, _copy_progress(self.progress)
        if version != self.written and self.reason != "lost":
            with contextlib.suppress(StoreError):
                self.worker.store.set_progress(self.job.job_id, self.worker.worker_id, snapshot)
            self.written = version

    # --- heartbeat thread ---

    def _beat(self) -> None:
        w, job = self.worker, self.job
        store, wid = w.store, w.worker_id
        next_beat = time.monotonic()
        last_write = 0.0
        complained = False
        while not self.stop.is_set():
            now = time.monotonic()
            self.wake.wait(max(0.0, min(_TICK, next_beat - now)))
            self.wake.clear()
            if self.stop.is_set():
                break
            now = time.monotonic()
            if w.stop_requested or w.parent_gone():
                w.request_stop()
                if self.reason is None and (w.hard_stop or now - (w.stop_at or now) >= w.options.grace):
                    self.interrupt("released")
            try:
                with self.lock:
                    version, snapshot = self.version, _copy_progress(self.progress)
                if version != self.written and now - last_write >= _PROGRESS_EVERY:
                    if not store.set_progress(job.job_id, wid, snapshot):
                        self._not_ours()
                    self.written, last_write = version, now
                if now >= next_beat:
                    next_beat = now + w.options.heartbeat
                    if not store.heartbeat(job.job_id, wid):
                        self._not_ours()
                complained = False
            except StoreError as exc:  # the database is away: keep beating, say it once
                if not complained:
                    w.log(f"job {job.job_id[:12]}: heartbeat failed, retrying: {exc.message}")
                    complained = True
                next_beat = time.monotonic() + min(1.0, w.options.heartbeat)

    def _not_ours(self) -> None:
        w = self.worker
        try:
            now = w.store.get_job(self.job.job_id)
        except StoreError:
            return
        if now.state == "running" and now.worker_id == w.worker_id:
            if now.cancel_requested:
                self.interrupt("cancelled")
        else:
            self.interrupt("lost")

    def interrupt(self, reason: str) -> None:
        """Stop the job's child (once): a cancel, a lost job, a shutdown."""
        if self.reason is not None:
            return
        self.reason = reason
        if not self.remote:
            self._kill_child()

    def stop_group(self) -> None:
        """After a child that led its own process group ended: stop what it left (a stopped
        simulation's Ray processes). The group id stays reserved while any member lives."""
        if self.group and self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def _kill_child(self) -> None:
        pid = self.pid
        if pid is None or self.child_done:
            return
        if sys.platform.startswith("linux"):
            # only our own child: the pid is ours until the main thread reaps it
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return
            if ppid != os.getpid():
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _copy_progress(p: dict[str, Any]) -> dict[str, Any]:
    out = dict(p)
    out["checks"] = dict(p.get("checks") or {})
    if isinstance(p.get("round"), dict):
        out["round"] = dict(p["round"])
    return out


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line ``ConfigError`` at once when nothing listens at the Ray head's HOST:PORT
    (``auto``, a local cluster found by Ray itself, is not checked)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"worker: --ray-address must be HOST:PORT of the Ray head (or ray://HOST:PORT, or auto); "
                         f"got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"Ray cluster at {address} cannot be reached: {reason}") from None


class _Ray:
    """The worker's connection to a Ray cluster: submit a job's audit, wait, cancel, read progress."""

    def __init__(self, address: str) -> None:
        _reachable(address)  # ray.init would retry an unreachable address for minutes
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - Ray comes with flwr[simulation]
            raise MissingExtraError(f"--ray-address needs Ray: pip install 'flwr[simulation]' ({exc})") from None
        from audit.service._jobs import ray_audit_task

        self.ray = ray
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, namespace="trustaudit",
                     configure_logging=True)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            reason = " ".join(str(exc).split())[:300]
            raise ConfigError(f"Ray cluster at {address} cannot be reached: {reason}") from None
        self.task = ray.remote(max_retries=0, num_cpus=1)(ray_audit_task)
        self.queue: Any = None
        try:
            from ray.util.queue import Queue

            self.queue = Queue(actor_options={"num_cpus": 0})
        except Exception:  # noqa: BLE001 - no per-check progress then: reported at the end
            self.queue = None

    def submit(self, job_id: str, spec: dict[str, Any], payloads: list[dict[str, Any]], options: dict[str, Any]) -> Any:
        return self.task.remote(job_id, spec, payloads, options, self.queue)

    def done(self, ref: Any, timeout: float) -> bool:
        ready, _ = self.ray.wait([ref], timeout=timeout)
        return bool(ready)

    def messages(self, job_id: str) -> list[Any]:
        if self.queue is None:
            return []
        try:
            n = self.queue.size()
            items = self.queue.get_nowait_batch(n) if n else []
        except Exception:  # noqa: BLE001 - progress is best effort
            return []
        return [msg for jid, msg in items if jid == job_id]

    def cancel(self, ref: Any) -> None:
        with contextlib.suppress(Exception):
            self.ray.cancel(ref, force=True)

    def result(self, ref: Any) -> dict[str, Any]:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            return {"error": "TaskCancelledError", "message": "the Ray task was cancelled", "trustaudit": False}
        except self.ray.exceptions.RayError as exc:
            reason = " ".join(str(exc).split())[:300]
            return {"error": type(exc).__name__, "message": f"the Ray task failed: {reason}", "trustaudit": False}

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.ray.shutdown()


class Worker:
    """One worker: ``Worker(store, options).run()`` is ``trustaudit worker``; :meth:`run_job` runs one
    claimed job (tests, embedding)."""

    def __init__(self, store: Any = None, options: WorkerOptions | None = None, *, worker_id: str | None = None) -> None:
        from audit.store import Store, open_store

        self.options = (options or WorkerOptions()).validated()
        self.store = store if isinstance(store, Store) else open_store(store)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.counts: Counter[str] = Counter()
        self.stop_requested = False
        self.hard_stop = False
        self.stop_at: float | None = None
        self._ray: _Ray | None = None
        self._parent_fd: int | None = None
        self._parent_dead = False

    # --- logging, stopping -----------------------------------------------------------------

    def log(self, message: str) -> None:
        if not self.options.quiet:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} trustaudit worker {self.worker_id}: {message}",
                  file=sys.stderr, flush=True)

    def request_stop(self, hard: bool = False) -> None:
        """Claim no new job; the current one finishes within the grace period or is given back.
        Only sets flags: safe from a signal handler."""
        if self.stop_requested:
            self.hard_stop = self.hard_stop or hard
            return
        self.stop_requested = True
        self.hard_stop = hard
        self.stop_at = time.monotonic()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.request_stop(hard=self.stop_requested)

    def parent_gone(self) -> bool:
        """True once the process that started this worker (``LocalWorkers``) has exited."""
        if self._parent_dead:
            return True
        fd = self._parent_fd
        if fd is None:
            return False
        try:
            readable, _, _ = select.select([fd], [], [], 0)
            if readable and os.read(fd, 1) == b"":
                self._parent_dead = True
        except OSError:
            self._parent_dead = True
        return self._parent_dead

    def _wait(self, seconds: float) -> None:
        """Sleep between looks at the queue; wakes early when the parent exits."""
        end = time.monotonic() + seconds
        while not self.stop_requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self._parent_fd is not None:
                try:
                    select.select([self._parent_fd], [], [], left)
                except OSError:
                    pass
                if self.parent_gone():
                    self.request_stop()
                    return
            else:
                time.sleep(min(left, 0.1))

    def _adopt_parent(self) -> None:
        """Started by LocalWorkers: exit with it (a pipe it holds open; and PR_SET_PDEATHSIG when it
        started us from its main thread, the thread whose death the kernel reports)."""
        fd = os.environ.pop(_ENV_PARENT_FD, None)
        parent = os.environ.pop(_ENV_PARENT_PID, None)
        pdeath = os.environ.pop(_ENV_PDEATHSIG, None)
        if fd is not None and fd.isdigit():
            self._parent_fd = int(fd)
        if pdeath == "1" and sys.platform.startswith("linux"):
            try:
                import ctypes

                ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
            except (OSError, AttributeError):  # pragma: no cover - the pipe still tells
                pass
        if parent is not None and parent.isdigit() and os.getppid() != int(parent):
            self.request_stop()  # the parent died before we could tie ourselves to it

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped (a signal, ``--once`` with an empty queue, ``--max-jobs``); returns 0."""
        opts = self.options
        self._adopt_parent()
        try:
            opts.jobs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"worker: jobs folder {opts.jobs_dir} cannot be created: {exc.strerror}") from None
        from audit.service._jobs import sweep_trash

        sweep_trash(opts.jobs_dir)  # folders a killed worker was removing
        handlers = {}
        main = threading.current_thread() is threading.main_thread()
        if main:
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            if opts.ray_address:
                self._ray = _Ray(opts.ray_address)
                if main:  # a Ray driver sets its own SIGTERM handler (exit at once): ours again
                    for sig in handlers:
                        signal.signal(sig, self._on_signal)
            else:
                _preload()
            kinds = ("audit",) if self._ray is not None else ("audit", "federated")
            where = f"Ray cluster {opts.ray_address}" if self._ray is not None else "local child processes"
            self.log(f"started on store {self.store}, jobs folder {opts.jobs_dir}, running {', '.join(kinds)} "
                     f"jobs in {where}")
            jobs = 0
            backoff = opts.poll
            while not self.stop_requested:
                if opts.max_jobs is not None and jobs >= opts.max_jobs:
                    break
                try:
                    self._requeue_stale()
                    job = None if self.stop_requested else self.store.claim_job(self.worker_id, kinds=kinds)
                    backoff = opts.poll
                except StoreError as exc:
                    from audit.store import StoreUnavailableError

                    if not isinstance(exc, StoreUnavailableError):
                        raise
                    self.log(f"store unavailable, retrying in {backoff:g} s: {exc.message}")
                    self._wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                if job is None:
                    if opts.once or self.stop_requested:
                        break
                    self._wait(opts.poll)
                    continue
                self.run_job(job)
                jobs += 1
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            if self._ray is not None:
                self._ray.shutdown()
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "no jobs"
        self.log(f"stopped ({summary})")
        return 0

    def _requeue_stale(self) -> None:
        from audit.service._jobs import remove_job_folder

        for job_id in self.store.requeue_stale(self.options.heartbeat_timeout):
            try:
                job = self.store.get_job(job_id)
            except StoreError:
                continue
            self.log(f"job {job_id[:12]}: its worker stopped heartbeating; now {job.state}"
                     + (f" ({job.error})" if job.error else ""))
            if job.finished and not self.options.keep_inputs:
                remove_job_folder(self.options.jobs_dir, job.job_id, job.inputs)

    # --- one job -------------------------------------------------------------------------------

    def run_job(self, job: Any) -> str:
        """Run a job this worker has claimed and record its end; returns one of :data:`OUTCOMES`."""
        t0 = time.perf_counter()
        self.log(f"job {job.job_id[:12]} ({job.kind}, attempt {job.attempts}) claimed")
        running = _Running(self, job, remote=self._ray is not None and job.kind == "audit")
        work_dir: str | None = None
        out: dict[str, Any] | None = None
        error: str | None = None
        try:
            try:
                if running.remote:
                    out = self._run_on_ray(job, running)
                else:
                    if job.kind == "federated":
                        work_dir = tempfile.mkdtemp(prefix="trustaudit-federated-")
                    out = self._run_here(job, running, work_dir)
            except TrustAuditError as exc:
                error = exc.message
            except Exception as exc:  # noqa: BLE001 - an IsolatedError (a bug in the child) or ours
                from audit._isolate import IsolatedError

                if isinstance(exc, IsolatedError):
                    text = f"{exc.type_name}: {exc.message}"
                else:
                    text = f"{type(exc).__name__}: {exc}"
                error = "internal error: " + " ".join(text.split())[:500]
            finally:
                running.child_done = True
                running.stop_group()
            if isinstance(out, dict) and "error" in out:  # from a Ray task: plain data
                msg = " ".join(str(out.get("message", "")).split())
                error = msg if out.get("trustaudit") else f"internal error: {out.get('error')}: {msg}"
                out = None
            for msg in (self._ray.messages(job.job_id) if running.remote and self._ray is not None else ()):
                running.on_message(msg)
            running.finish()
            outcome = self._record(job, running, out, error)
        finally:
            running.finish()
            if work_dir is not None:
                import shutil

                shutil.rmtree(work_dir, ignore_errors=True)
        self.counts[outcome] += 1
        if outcome in ("succeeded", "failed", "cancelled") and not self.options.keep_inputs:
            from audit.service._jobs import remove_job_folder

            remove_job_folder(self.options.jobs_dir, job.job_id, job.inputs)
        seconds = time.perf_counter() - t0
        detail = {"failed": f": {error}", "released": ": given back to the queue (worker stopping)",
                  "lost": ": no longer this worker's (its heartbeat lapsed); nothing recorded"}.get(outcome, "")
        self.log(f"job {job.job_id[:12]} {outcome} in {seconds:.1f} s{detail}")
        return outcome

    def _run_here(self, job: Any, running: _Running, work_dir: str | None) -> dict[str, Any]:
        from audit._isolate import fork_safe_native_threads, run_isolated
        from audit.service._jobs import _na_values, audit_in_child, federated_job, resolve_inputs

        opts = self.options
        if job.kind == "federated":
            files = resolve_inputs(opts.jobs_dir, job.job_id, job.inputs, roles=("data",))
            # no address-space limit: the simulation's Ray engine maps large shared memory
            return run_isolated(federated_job, job.job_id, files, job.spec, work_dir, what="federated simulation",
                                timeout=opts.timeout, memory_bytes=None, native_threads=fork_safe_native_threads(),
                                on_message=running.on_message, ray_cpus=opts.federated_cpus)
        files = resolve_inputs(opts.jobs_dir, job.job_id, job.inputs)
        return run_isolated(audit_in_child, files, job.spec, _na_values(job.inputs), opts.unsafe_pickle,
                            what="audit", timeout=opts.timeout, memory_bytes=opts.memory_bytes(),
                            native_threads=fork_safe_native_threads(), on_message=running.on_message)

    def _run_on_ray(self, job: Any, running: _Running) -> dict[str, Any]:
        from audit.service._jobs import _na_values, resolve_inputs

        assert self._ray is not None
        opts = self.options
        files = resolve_inputs(opts.jobs_dir, job.job_id, job.inputs)
        payloads = [f.payload() for f in files.values()]
        memory: int | str | None = (None if opts.memory_limit_mib == 0 else "default" if opts.memory_limit_mib is None
                                    else int(opts.memory_limit_mib) * 1024**2)
        options = {"timeout": opts.timeout, "memory_bytes": memory, "na_values": list(_na_values(job.inputs)),
                   "allow_unsafe_pickle": opts.unsafe_pickle}
        ref = self._ray.submit(job.job_id, dict(job.spec), payloads, options)
        running.start()
        cancelled = False
        while not self._ray.done(ref, 0.2):
            for msg in self._ray.messages(job.job_id):
                running.on_message(msg)
            if running.reason is not None and not cancelled:
                self._ray.cancel(ref)
                cancelled = True
        result = self._ray.result(ref)
        return result["ok"] if "ok" in result else result  # else {"error": ..., "message": ...}

    def _record(self, job: Any, running: _Running, out: dict[str, Any] | None, error: str | None) -> str:
        """Write the job's end: succeeded with its report (one transaction), failed, cancelled,
        given back; nothing when the job is no longer ours."""
        from audit.results import AuditReport

        store, wid = self.store, self.worker_id
        if running.reason == "lost":
            return "lost"
        if out is not None and error is None:
            try:
                report = AuditReport.from_dict(out["report"]) if out.get("report") else None
            except Exception as exc:  # noqa: BLE001 - a malformed report is a bug: fail the job, say why
                error = f"internal error: the job's report could not be read: {type(exc).__name__}: {exc}"
            else:
                if report is None and job.kind == "audit":
                    error = "internal error: the audit returned no report"
                else:
                    return self._finish(job, running, report, out.get("result"))
        if running.reason == "cancelled":
            return "cancelled" if self._retry(lambda: store.mark_cancelled(job.job_id, wid)) else "lost"
        if running.reason == "released":
            return self._release(job)
        if self.stop_requested and error is not None and running.reason is None and _interrupted(error):
            return self._release(job)  # Ctrl-C reached the child too: not the job's fault
        assert error is not None
        return "failed" if self._retry(lambda: store.fail_job(job.job_id, wid, error)) else "lost"

    def _finish(self, job: Any, running: _Running, report: Any, result: Any) -> str:
        from audit.store import NotFoundError, StoreUnavailableError

        deadline = time.monotonic() + max(self.options.heartbeat_timeout / 2, 1.0)
        while True:
            try:
                self.store.finish_job(job.job_id, self.worker_id, report, result=result)
                return "succeeded"
            except StoreUnavailableError as exc:
                if time.monotonic() > deadline:
                    self.log(f"job {job.job_id[:12]}: the report could not be recorded: {exc.message}")
                    return "lost"
                time.sleep(0.5)
            except (NotFoundError, StoreError) as exc:  # no longer running on this worker ...
                with contextlib.suppress(StoreError):
                    now = self.store.get_job(job.job_id)
                    if report is not None and now.state == "succeeded" and now.audit_id == report.audit_id:
                        return "succeeded"  # ... because an earlier try committed before its answer was lost
                self.log(f"job {job.job_id[:12]}: {exc.message}")
                return "lost"

    def _retry(self, write: Any) -> bool:
        from audit.store import StoreUnavailableError

        deadline = time.monotonic() + max(self.options.heartbeat_timeout / 2, 1.0)
        while True:
            try:
                return bool(write())
            except StoreUnavailableError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.5)

    def _release(self, job: Any) -> str:
        release = getattr(self.store, "release_job", None)
        if release is None:
            # this store cannot give a job back: stop heartbeating it; requeue_stale re-queues it
            # after --heartbeat-timeout (the attempt counts)
            self.log(f"job {job.job_id[:12]}: left to be re-queued after the heartbeat timeout")
            return "released"
        self._retry(lambda: release(job.job_id, self.worker_id))
        return "released"


def _interrupted(error: str) -> bool:
    return "KeyboardInterrupt" in error or "SIGTERM" in error or "SIGINT" in error


def _preload() -> None:
    """Import what every audit needs before the first fork: each job's child then starts warm."""
    import audit.runner  # noqa: F401
    from audit.registry import family_names

    family_names()
    with contextlib.suppress(ImportError):
        import skops.io  # noqa: F401


# --- n workers on this machine ----------------------------------------------------------------


class LocalWorkers:
    """n ``trustaudit worker`` processes on this machine, tied to this process's life.

        with LocalWorkers(store_url, 2, jobs_dir=jobs) as workers:
            ...  # submit jobs; they are run

    Each worker is ``python -m audit.service worker`` with the given options (the store URL goes
    through the environment, so a password never shows in the process list). The workers exit
    with this process: they watch a pipe this object holds open (whichever thread started them),
    and on Linux the kernel also sends them SIGTERM when the starting thread is the main thread
    and dies (``PR_SET_PDEATHSIG``). :meth:`stop` (also on context exit and at interpreter exit)
    sends SIGTERM, waits for them to give back or finish their jobs, and kills stragglers.
    """

    def __init__(
        self,
        store_url: str | os.PathLike[str] | None = None,
        n: int = 1,
        *,
        jobs_dir: str | os.PathLike[str] | None = None,
        poll: float | None = None,
        heartbeat: float | None = None,
        heartbeat_timeout: float | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
        ray_address: str | None = None,
        grace: float | None = None,
        allow_unsafe_pickle: bool = False,
        quiet: bool = False,
        log_file: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if n < 1:
            raise UsageError(f"LocalWorkers needs at least 1 worker, got {n}")
        self.n = int(n)
        self.store_url = None if store_url is None else os.fspath(store_url)
        args: list[str] = []
        for flag, value in (("--jobs-dir", jobs_dir), ("--poll", poll), ("--heartbeat", heartbeat),
                            ("--heartbeat-timeout", heartbeat_timeout), ("--timeout", timeout),
                            ("--memory-limit", memory_limit), ("--ray-address", ray_address), ("--grace", grace)):
            if value is not None:
                args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
        if allow_unsafe_pickle:
            args.append("--unsafe-pickle")
        if quiet:
            args.append("--quiet")
        self.args = args
        self.grace = 5.0 if grace is None else float(grace)
        self.log_file = None if log_file is None else Path(log_file)
        self.env = dict(env or {})
        self.procs: list[subprocess.Popen[bytes]] = []
        self._pipes: dict[int, int] = {}
        self._log: Any = None
        self._registered = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "audit.service", "worker", *self.args]

    def start(self) -> LocalWorkers:
        if self.log_file is not None and self._log is None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "ab")  # closed by stop()
        for _ in range(self.n - len(self.alive())):
            self._spawn()
        if not self._registered:
            atexit.register(self.stop)
            self._registered = True
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        read_end, write_end = os.pipe()  # both non-inheritable: only the worker gets the read end
        env = {**os.environ, **self.env, _ENV_PARENT_FD: str(read_end), _ENV_PARENT_PID: str(os.getpid())}
        if self.store_url is not None:
            env["TRUSTAUDIT_STORE"] = self.store_url
        if threading.current_thread() is threading.main_thread():
            env[_ENV_PDEATHSIG] = "1"
        try:
            proc = subprocess.Popen(self.command(), env=env, pass_fds=(read_end,), stdin=subprocess.DEVNULL,
                                    stdout=self._log if self._log is not None else None,
                                    stderr=self._log if self._log is not None else None)
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._pipes[proc.pid] = write_end
        self.procs.append(proc)
        return proc

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def restart_dead(self) -> int:
        """Start a new worker for each one that exited; returns how many were started."""
        dead = [p for p in self.procs if p.poll() is not None]
        for p in dead:
            self.procs.remove(p)
            fd = self._pipes.pop(p.pid, None)
            if fd is not None:
                os.close(fd)
        for _ in dead:
            self._spawn()
        return len(dead)

    def stop(self, timeout: float | None = None) -> list[int | None]:
        """SIGTERM every worker, wait (``grace`` + 15 s by default), SIGKILL the rest; their exit codes."""
        wait = self.grace + 15.0 if timeout is None else float(timeout)
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        codes: list[int | None] = []
        for p in self.procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            codes.append(p.returncode)
        for fd in self._pipes.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipes.clear()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._registered:
            atexit.unregister(self.stop)
            self._registered = False
        return codes

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

