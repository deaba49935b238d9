"""Benchmark of the audit service: 50 small audits through the HTTP API with 2 workers against the
same 50 run one after another with the CLI; status latency while the queue is full; memory.

Workload: UCI German credit (``german_credit.csv``: 1,000 applicants, target ``credit``, 1 = good),
the first 700 rows fit a ``Pipeline(ColumnTransformer(OneHotEncoder on the 13 categoricals,
passthrough numerics), LogisticRegression)`` saved as skops; the other 300 rows are audited with
``personal_status`` as the sensitive column; checks ``fairness`` and ``explain`` with small
policies (200 bootstrap draws, no mitigation refits, 100 rows explained). Audit ``i`` uses
seed ``i``.

Figures printed:

* **CLI**: the 50 audits run one after another as ``python -m audit.cli audit --spec ... --json ...``
  (each a fresh process, as a CI job or a shell loop runs them): total wall time, audits/min;
* **API**: ``trustaudit serve --workers 2`` (uvicorn + 2 local workers, SQLite store), started and
  warm (both workers have logged their start) before the clock starts; the 50 audits submitted by
  2 client threads (multipart upload of model, data and spec), the clock stopped when the last job
  has succeeded: total wall time, audits/min, the ratio to the CLI;
* **status latency**: ``GET /v1/jobs/{id}`` (token checked, job read from the store) sent in a loop
  by a third client while jobs are queued: p50, p99, max and the number of requests;
* **memory**: peak resident set (VmHWM) of the API server process and of each worker process.

Run from the repository root: ``python bench/bench_service.py`` (needs ../shared/data; ``--n``
changes the number of audits, ``--skip-cli`` leaves the CLI half out).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("TRUSTAUDIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

SPEC = """
checks = ["fairness", "explain"]
[data]
target = "credit"
positive_label = 1
sensitive = ["personal_status"]
[policy.fairness]
n_bootstrap = 200
mitigation = false
[policy.explain]
sample_size = 100
background_size = 50
lime_sample_size = 10
permutation_sample_size = 200
permutation_repeats = 3
n_bootstrap = 50
"""


def prepare(folder: Path) -> dict[str, Path]:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from audit.io import save_skops

    df = pd.read_csv(DATA / "german_credit.csv")
    X = df.drop(columns=["credit"])
    cat = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    num = [c for c in X.columns if c not in cat]
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), cat),
                                   ("num", StandardScaler(), num)])),
        ("clf", LogisticRegression(max_iter=2000)),
    ])
    train, test = df.iloc[:700], df.iloc[700:]
    pipe.fit(train.drop(columns=["credit"]), train["credit"])
    paths = {"model": folder / "model.skops", "data": folder / "test.csv", "spec": folder / "audit.toml"}
    save_skops(pipe, paths["model"])
    test.to_csv(paths["data"], index=False)
    paths["spec"].write_text(SPEC)
    return paths


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTAUDIT_")}
    e["PYTHONPATH"] = str(ROOT)
    return e


def run_cli(paths: dict[str, Path], n: int, out: Path) -> tuple[float, list[float]]:
    t0 = time.perf_counter()
    for i in range(n):
        r = subprocess.run([sys.executable, "-m", "audit.cli", "audit", "--spec", str(paths["spec"]), "--model",
                            str(paths["model"]), "--data", str(paths["data"]), "--seed", str(i), "--json",
                            str(out / f"cli-{i}.json"), "--no-store", "--quiet"], env=env(), cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode not in (0, 1):
            raise SystemExit(f"CLI audit {i} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    wall = time.perf_counter() - t0
    import json

    return wall, [json.loads((out / f"cli-{i}.json").read_text())["seconds"] for i in range(n)]


def vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def run_api(paths: dict[str, Path], n: int, folder: Path, clients: int, workers: int) -> dict[str, object]:
    from audit.service.client import Client
    from audit.store import open_store

    store = str(folder / "store.sqlite")
    token = open_store(store).create_token("bench", "bench")[1]
    log = folder / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "audit.service", "serve", "--port", "0", "--store", store,
                                 "--jobs-dir", str(folder / "jobs"), "--workers", str(workers), "--log-level",
                                 "warning"], env=env(), cwd=ROOT, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 600
        url = None
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            m = re.search(r"listening on (http://\S+)", text)
            url = m.group(1) if m else None
            if url and text.count(": started on store") >= workers:
                break
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {text[-2000:]}")
            time.sleep(0.2)
        else:
            raise SystemExit(f"serve did not start: {log.read_text()[-2000:]}")
        assert url is not None
        import tomllib

        base = tomllib.loads(SPEC)
        ids: list[str] = []
        lock = threading.Lock()
        latencies: list[float] = []
        stop = threading.Event()

        def submit(k: int) -> None:
            with Client(url, token) as c:
                for i in range(k, n, clients):
                    job_id = c.submit_audit(paths["model"], paths["data"], {**base, "seed": i})
                    with lock:
                        ids.append(job_id)

        def poll_status() -> None:
            import httpx

            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as h:
                while not stop.is_set():
                    with lock:
                        last = ids[-1] if ids else None
                    if last is None:
                        time.sleep(0.01)
                        continue
                    t = time.perf_counter()
                    r = h.get(f"/v1/jobs/{last}")
                    dt = time.perf_counter() - t
                    if r.status_code != 200:
                        raise SystemExit(f"status request answered {r.status_code}: {r.text}")
                    if r.json()["state"] == "queued":  # the newest job waits: the queue is not empty
                        latencies.append(dt)
                    time.sleep(0.05)  # ~20 requests/s: measuring, not loading the server

        t0 = time.perf_counter()
        poller = threading.Thread(target=poll_status, daemon=True)
        poller.start()
        threads = [threading.Thread(target=submit, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted = time.perf_counter() - t0
        db = open_store(store)
        while db.count_jobs(state="succeeded") + db.count_jobs(state="failed") < n:
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        stop.set()
        poller.join()
        failed = [(j.job_id, j.error) for j in db.list_jobs(state="failed", limit=n)]
        if failed:
            raise SystemExit(f"{len(failed)} jobs failed: {failed[:3]}")
        worker_pids = children(proc.pid)
        seconds = [r["seconds"] for r in db.list(limit=n)]
        return {"wall": wall, "submitted": submitted, "latencies": latencies, "audit_seconds": seconds,
                "server_rss": vm_hwm_mib(proc.pid), "worker_rss": [vm_hwm_mib(p) for p in worker_pids],
                "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="audits (default 50)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=2, help="client threads submitting")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    if not (DATA / "german_credit.csv").is_file():
        raise SystemExit(f"german_credit.csv not found in {DATA}")
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        folder = Path(tmp)
        paths = prepare(folder)
        (folder / "cli").mkdir()
        print(f"workload: {args.n} audits of German credit (300 rows; fairness + explain), {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        print(f"API phase: load average {os.getloadavg()[0]:.1f}", flush=True)
        api = run_api(paths, args.n, folder, args.clients, args.workers)
        wall = float(api["wall"])  # type: ignore[arg-type]
        lat = [x * 1000 for x in api["latencies"]]  # type: ignore[union-attr]
        print(f"API ({args.workers} workers, {args.clients} clients): {wall:.1f} s for {args.n} audits = "
              f"{60 * args.n / wall:.1f} audits/min (all submitted after {float(api['submitted']):.1f} s; "  # type: ignore[arg-type]
              f"an audit's own time in a worker: median {statistics.median(api['audit_seconds']):.1f} s)")  # type: ignore[arg-type]
        if lat:
            print(f"GET /v1/jobs/{{id}} while jobs are queued: p50 {statistics.median(lat):.1f} ms, "
                  f"p99 {pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms ({len(lat)} requests)")
        print(f"peak RSS: API server {float(api['server_rss']):.0f} MiB; workers "  # type: ignore[arg-type]
              + ", ".join(f"{x:.0f} MiB" for x in api["worker_rss"]))  # type: ignore[union-attr]
        if not args.skip_cli:
            print(f"CLI phase: load average {os.getloadavg()[0]:.1f}", flush=True)
            cli, cli_seconds = run_cli(paths, args.n, folder / "cli")
            print(f"CLI (one after another): {cli:.1f} s for {args.n} audits = {60 * args.n / cli:.1f} audits/min "
                  f"(an audit's own time: median {statistics.median(cli_seconds):.1f} s; the rest is each command's "
                  "start)")
            print(f"API / CLI throughput: {cli / wall:.2f}x")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
