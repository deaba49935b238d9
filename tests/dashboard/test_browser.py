"""One real-browser run: the dashboard served on localhost, driven by Debian's headless Chromium."""

from __future__ import annotations

import pytest

from dashboard.testing import chromium_path, launch_chromium, serve
from tests.dashboard.conftest import QUICK_SPEC

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser_available() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser test drives it")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)")
    return path


def test_upload_audit_and_findings_in_chromium(browser_available, tmp_path, skops_model, test_csv, pickle_model):
    from playwright.sync_api import expect, sync_playwright

    files = {"model.skops": skops_model, "applicants.csv": test_csv, "quick.toml": QUICK_SPEC,
             "model.pkl": pickle_model}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with serve(tmp_path / "server") as server, sync_playwright() as p:
        browser = launch_chromium(p, browser_available)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(90_000)
            expect.set_options(timeout=90_000)
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
