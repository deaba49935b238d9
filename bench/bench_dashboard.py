"""Dashboard benchmark in a real browser: a ~10 MB CSV upload to findings, and page switching.

Serves the dashboard with ``trustaudit dashboard`` (and its one local worker) on a free localhost
port and drives the system's headless Chromium with Playwright (``dashboard.testing``). For each
repeat a fresh browser session uploads a spec, a skops model and the CSV, submits the audit and
waits for the findings: the page writes the uploads into a job folder and queues a job, the
dashboard's worker claims it and runs the audit in a child process, the page follows the job in
the store and opens the report the worker recorded. The same audit run directly (``load_table``
+ ``run_audit``, no browser, no server, no worker) is the baseline, so the dashboard's own cost
is the difference; the store's timestamps split the job's part into the wait for a worker and
the worker's run. Then it switches pages through the sidebar and times each switch until the
page's content is on screen. Prints medians.

    python bench/bench_dashboard.py [--repeats 3] [--mb 10] [--sensitive sex] [--switches 4]

The spec runs the fairness checks except mitigation (default policy: 1000 bootstrap replicates)
with the sensitive column(s) given. The audit's own cost is reported separately (the bare run);
with more than one sensitive column ``fairness.group_metrics`` currently spends minutes on 200k
rows building group keys row by row, which is the fairness check's cost, not the dashboard's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKS = ["fairness.group_metrics", "fairness.demographic_parity", "fairness.equalized_odds",
          "fairness.equal_opportunity", "fairness.disparate_impact"]
FEATURES = ["age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]
BYTES_PER_ROW = 52.0  # generator rows written as CSV, measured


def build_inputs(work: Path, mb: float, sensitive: list[str]) -> dict[str, Path]:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from audit.datasets import make_lending_data
    from audit.io import save_skops, write_text_atomic

    rows = int(mb * 1024 * 1024 / BYTES_PER_ROW)
    data = make_lending_data(4000, 0, rows, seed=1)
    text = data.test.to_csv(index=False)
    while len(text.encode()) < mb * 1024 * 1024:  # top up to the size asked for
        rows = int(rows * 1.05)
        data = make_lending_data(4000, 0, rows, seed=1)
        text = data.test.to_csv(index=False)
    model = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["age_group", "region"]),
                                    ("num", StandardScaler(), [c for c in FEATURES if c not in ("age_group", "region")])])),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(data.train[FEATURES], data.train[data.target])
    paths = {"csv": work / "applicants.csv", "model": work / "model.skops", "spec": work / "bench.toml"}
    write_text_atomic(paths["csv"], text)
    save_skops(model, paths["model"])
    checks = ", ".join(f'"{c}"' for c in CHECKS)
    cols = ", ".join(f'"{c}"' for c in sensitive)
    write_text_atomic(paths["spec"], f"""checks = [{checks}]
seed = 0
[data]
target = "approved"
positive_label = 1
sensitive = [{cols}]
""")
    return paths


def bare_audit(paths: dict[str, Path]) -> float:
    """The same work without the dashboard: read the CSV, load the model, run the audit."""
    from audit.io import load_model, load_table
    from audit.runner import run_audit
    from dashboard._intake import parse_spec_upload

    t0 = time.perf_counter()
    frame = load_table(paths["csv"])
    model = load_model(paths["model"])
    spec, _ = parse_spec_upload(paths["spec"].read_bytes(), "bench.toml")
    run_audit(model, frame, spec=spec)
    return time.perf_counter() - t0


def one_session(browser, url: str, paths: dict[str, Path]) -> tuple[float, float, object]:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(600_000)
    expect.set_options(timeout=600_000)
    page.goto(url)
    expect(page.get_by_role("heading", name="New audit")).to_be_visible()
    page.locator(".st-key-upload_spec input[type=file]").set_input_files(paths["spec"])
    expect(page.get_by_text("Spec bench.toml read")).to_be_visible()
    page.locator(".st-key-upload_model input[type=file]").set_input_files(paths["model"])
    expect(page.get_by_text("Model model.skops: skops")).to_be_visible()
    t0 = time.perf_counter()
    page.locator(".st-key-upload_data input[type=file]").set_input_files(paths["csv"])
    run = page.get_by_role("button", name="Run the audit")
    expect(run).to_be_enabled()
    expect(page.get_by_text("Preview of applicants.csv")).to_be_visible()
    t_ready = time.perf_counter() - t0
    run.click()
    expect(page.get_by_role("heading", name="Findings")).to_be_visible()
    expect(page.get_by_text("What needs attention")).to_be_visible()
    return t_ready, time.perf_counter() - t0, page


def job_times(store_path: Path) -> tuple[float, float]:
    """The newest job's wait for a worker and its time in the worker, from the store's timestamps."""
    from datetime import datetime

    from audit.store import open_store

    with open_store(store_path) as store:
        job = store.list_jobs(limit=1)[0]
    created, started, finished = (datetime.fromisoformat(t) for t in (job.created_at, job.started_at, job.finished_at))
    return (started - created).total_seconds(), (finished - started).total_seconds()


def switch_pages(page, rounds: int) -> dict[str, list[float]]:
    """Click through the sidebar; time until each page's own content is visible."""
    from playwright.sync_api import expect

    targets = [
        ("Jobs", page.get_by_text("Recently finished")),
        ("History", page.get_by_role("button", name="Open in Findings")),
        ("Findings", page.get_by_text("What needs attention")),
        ("Federated", page.get_by_role("button", name="Run the simulation")),
        ("New audit", page.get_by_role("button", name="Run the audit")),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in targets}
    for _ in range(rounds):
        for name, ready in targets:
            t0 = time.perf_counter()
            page.get_by_role("link", name=name, exact=True).click()
            expect(page.get_by_role("heading", name=name if name != "Federated" else "Federated simulation")).to_be_visible()
            expect(ready).to_be_visible()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--sensitive", default="sex", help="sensitive column(s), comma-separated")
    ap.add_argument("--switches", type=int, default=4, help="rounds through the five pages")
    args = ap.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server and browser on kill, too

    from playwright.sync_api import sync_playwright

    from dashboard.testing import chromium_path, launch_chromium, serve

    if chromium_path() is None:
        print("Chromium is not installed (Debian: apt-get install chromium); nothing measured")
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        work = Path(tmp)
        sensitive = [c.strip() for c in args.sensitive.split(",") if c.strip()]
        paths = build_inputs(work, args.mb, sensitive)
        size = paths["csv"].stat().st_size
        rows = sum(1 for _ in open(paths["csv"], "rb")) - 1
        print(f"CSV {size / 1024 / 1024:.1f} MB, {rows:,} rows; checks {', '.join(CHECKS)}; sensitive "
              f"{', '.join(sensitive)}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        bare = [bare_audit(paths) for _ in range(args.repeats)]
        print(f"bare audit (read CSV + load model + run_audit): median {statistics.median(bare):.1f} s "
              f"({', '.join(f'{b:.1f}' for b in bare)})")
        ready, total, waits, runs = [], [], [], []
        with serve(work / "server", max_upload_mb=max(200, int(args.mb) + 10),
                   extra_env={"TRUSTAUDIT_JOBS_DIR": str(work / "jobs")}) as server, sync_playwright() as p:
            browser = launch_chromium(p)
            page = None
            lines = paths["csv"].read_bytes().splitlines(keepends=True)
            for i in range(args.repeats):
                # a different file each time (i rows fewer), so every session parses cold
                fresh = work / f"r{i}" / "applicants.csv"
                fresh.parent.mkdir()
                fresh.write_bytes(b"".join(lines[: len(lines) - i]))
                t_ready, t_total, page = one_session(browser, server.url, {**paths, "csv": fresh})
                ready.append(t_ready)
                total.append(t_total)
                wait, ran = job_times(work / "server" / "history.sqlite")
                waits.append(wait)
                runs.append(ran)
                print(f"  session {i + 1}: upload+parse {t_ready:.1f} s, upload to findings {t_total:.1f} s "
                      f"(job: {wait:.2f} s queued, {ran:.1f} s in the worker)", flush=True)
            switches = switch_pages(page, args.switches)
            browser.close()
        med_total = statistics.median(total)
        print(f"upload of {size / 1024 / 1024:.1f} MB to findings: median {med_total:.1f} s "
              f"(upload + parse {statistics.median(ready):.1f} s); dashboard overhead over the bare audit "
              f"{med_total - statistics.median(bare):+.1f} s (ratio {med_total / statistics.median(bare):.2f}); "
              f"target <= 25 s")
        print(f"the job: median {statistics.median(waits):.2f} s queued until the worker took it, "
              f"{statistics.median(runs):.1f} s in the worker (load, audit in a child, record)")
        all_switches = [t for v in switches.values() for t in v]
        for name, v in switches.items():
            print(f"  switch to {name:<10} median {statistics.median(v):.2f} s (max {max(v):.2f})")
        print(f"page switching: median {statistics.median(all_switches):.2f} s, max {max(all_switches):.2f} s "
              f"over {len(all_switches)} switches; target <= 2 s")
        print(f"load average at the end {os.getloadavg()[0]:.1f} (other work on this machine slows everything)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
