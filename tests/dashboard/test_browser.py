"""Real-browser runs: ``trustaudit dashboard`` (with its local worker) served on localhost, driven by
Debian's headless Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from dashboard.testing import chromium_path, launch_chromium, serve
from tests.dashboard.conftest import QUICK_SPEC

pytestmark = pytest.mark.browser

#: an audit that runs for a minute or so (LIME on 1000 rows, 2000 perturbations each; ~25 s on an idle
#: 2-core machine), so that the page can be touched, reloaded and closed while the worker runs it
SLOW_SPEC = b"""checks = ["fairness.group_metrics", "fairness.demographic_parity", "explain.lime"]
seed = 7

[data]
target = "approved"
positive_label = 1
sensitive = ["sex"]

[policy.explain]
lime_sample_size = 1000
lime_num_samples = 2000
"""


@pytest.fixture(scope="module")
def browser_available() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test drives it")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
    return path


def _serve(tmp_path):
    """The dashboard and its worker on a store, data folder and jobs folder of the test's own."""
    return serve(tmp_path / "server", extra_env={"TRUSTAUDIT_JOBS_DIR": str(tmp_path / "jobs")})


def _new_page(browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(90_000)
    expect.set_options(timeout=90_000)
    return page


def test_upload_audit_and_findings_in_chromium(browser_available, tmp_path, skops_model, test_csv, pickle_model):
    from playwright.sync_api import expect, sync_playwright

    files = {"model.skops": skops_model, "applicants.csv": test_csv, "quick.toml": QUICK_SPEC,
             "model.pkl": pickle_model}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with _serve(tmp_path) as server, sync_playwright() as p:
        browser = launch_chromium(p, browser_available)
        page = _new_page(browser)
        try:
            page.goto(server.url)
            expect(page.get_by_role("heading", name="New audit")).to_be_visible()

            # a pickle is refused by content, with one line; the page stays usable
            page.locator(".st-key-upload_model input[type=file]").set_input_files(tmp_path / "model.pkl")
            expect(page.get_by_text("model file model.pkl is a pickle/joblib file")).to_be_visible()

            # one file at a time, as a person would: each upload reruns the page before the next
            page.locator(".st-key-upload_spec input[type=file]").set_input_files(tmp_path / "quick.toml")
            expect(page.get_by_text("Spec quick.toml read")).to_be_visible()
            page.locator(".st-key-upload_model input[type=file]").set_input_files(tmp_path / "model.skops")
            expect(page.get_by_text("Model model.skops: skops")).to_be_visible()
            page.locator(".st-key-upload_data input[type=file]").set_input_files(tmp_path / "applicants.csv")
            expect(page.get_by_text("Preview of applicants.csv")).to_be_visible()
            run = page.get_by_role("button", name="Run the audit")
            expect(run).to_be_enabled()
            run.click()

            # the dashboard's worker runs the job; the page opens its findings when it succeeded
            expect(page.get_by_role("heading", name="Findings")).to_be_visible()
            expect(page.get_by_text("What needs attention")).to_be_visible()
            # the id also stands in the (canvas-drawn, hidden) cells of a data grid: look for a visible one
            expect(page.get_by_text("fairness.demographic_parity").filter(visible=True).first).to_be_visible()
            page.get_by_role("tab", name="Fairness").click()
            expect(page.get_by_text("By group and intersection")).to_be_visible()
            expect(page.locator(".vega-embed").first).to_be_visible()
            page.wait_for_timeout(1500)  # let Vega finish drawing before the picture
            shot = tmp_path / "findings.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert "Traceback" not in server.log()


def test_audit_survives_a_widget_change_a_reload_and_a_closed_tab(browser_available, tmp_path, skops_model,
                                                                 test_csv):
    """The issue's bug: touching a widget during an audit threw it away. Start an audit, change the
    seed, reload the page, close it and come back through the Jobs page: the audit finishes (run by
    the dashboard's own worker) and is in the history."""
    from playwright.sync_api import expect, sync_playwright

    from audit.store import open_store

    for name, data in {"model.skops": skops_model, "applicants.csv": test_csv, "slow.toml": SLOW_SPEC}.items():
        (tmp_path / name).write_bytes(data)
    with _serve(tmp_path) as server, sync_playwright() as p:
        store = open_store(tmp_path / "server" / "history.sqlite")
        browser = launch_chromium(p, browser_available)
        page = _new_page(browser)
        try:
            page.goto(server.url)
            page.locator(".st-key-upload_spec input[type=file]").set_input_files(tmp_path / "slow.toml")
            expect(page.get_by_text("Spec slow.toml read")).to_be_visible()
            page.locator(".st-key-upload_model input[type=file]").set_input_files(tmp_path / "model.skops")
            expect(page.get_by_text("Model model.skops: skops")).to_be_visible()
            page.locator(".st-key-upload_data input[type=file]").set_input_files(tmp_path / "applicants.csv")
            expect(page.get_by_text("Preview of applicants.csv")).to_be_visible()
            page.get_by_role("button", name="Run the audit").click()

            # the page follows the job: its id in the URL, its progress from the store
            page.wait_for_url("**job=*")
            job_id = parse_qs(urlparse(page.url).query)["job"][0]
            expect(page.get_by_text("Audit of model.skops on applicants.csv")).to_be_visible()
            expect(page.get_by_text("running explain.lime")).to_be_visible()  # the worker reached the slow check
            assert store.get_job(job_id).state == "running"

            # touch a widget: the page reruns, the audit goes on
            seed = page.locator("[class*='st-key-form_seed_'] input")
            seed.fill("123")
            seed.press("Enter")
            expect(seed).to_have_value("123")
            page.wait_for_timeout(1500)
            expect(page.get_by_text("running explain.lime")).to_be_visible()
            assert store.get_job(job_id).state == "running"
            assert [j.job_id for j in store.list_jobs()] == [job_id]  # nothing thrown away, nothing added
            workers = _worker_pids(server.process.pid)
            assert len(workers) == 1  # the dashboard's own local worker (nothing started by hand)

            # reload: a new session on the same URL follows the same job (the uploads are gone)
            page.reload()
            expect(page.get_by_role("heading", name="New audit")).to_be_visible()
            expect(page.get_by_text("running explain.lime")).to_be_visible()
            expect(page.get_by_text("Upload a model and the data to audit to continue.")).to_be_visible()
            assert store.get_job(job_id).state == "running"

            # close the tab; later, a new one lists the job with its progress and a Cancel button
            page.close()
            page = _new_page(browser)
            page.goto(server.url + "jobs")
            expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
            expect(page.get_by_text("Queued and running (1)")).to_be_visible()
            expect(page.get_by_role("button", name="Cancel")).to_be_visible()
            assert store.get_job(job_id).state == "running"
            page.get_by_role("link", name="Follow it on the New audit page").click()
            expect(page.get_by_text("Audit of model.skops on applicants.csv")).to_be_visible()

            # it finishes: the page opens the findings, and the report is in the history
            expect(page.get_by_role("heading", name="Findings")).to_be_visible(timeout=600_000)
            expect(page.get_by_text("What needs attention")).to_be_visible()
            job = store.get_job(job_id)
            assert job.state == "succeeded", job.error
            assert [r["audit_id"] for r in store.list()] == [job.audit_id]
            expect(page.get_by_role("heading", name=re.compile(f"^Audit {job.audit_id[:12]} "))).to_be_visible()
            assert job.spec["seed"] == 7  # the audit that was started, untouched by the later widget change
        except Exception:
            if not page.is_closed():
                page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
            store.close()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]  # the worker stopped with the dashboard
    log = server.log()
    assert f"job {job_id[:12]} succeeded in " in log  # the worker's own log line, in the dashboard's output
    assert "Traceback" not in log


def _worker_pids(parent: int) -> list[int]:
    """The ``trustaudit worker`` processes started by ``parent`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"audit.service" in cmd and b"worker" in cmd:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
