"""The read-only dashboard at `/`: served HTML with every task, the accuracy-matrix heatmap and the
growth curve inlined as PNG, and the audit evidence; checked as HTML, then in a real headless
Chromium driven by Selenium (skipped, with the reason printed, where no browser can run)."""

from __future__ import annotations

import base64
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.serving import TASKS, RunningServer

PNG = b"\x89PNG\r\n\x1a\n"


def test_the_page_lists_every_task_and_inlines_both_figures(served_registry):
    with RunningServer(served_registry) as running:
        reply = running.call("GET", "/")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    page = reply.body.decode()
    assert re.findall(r"<tr data-task='([^']+)'>", page) == list(TASKS)
    assert page.count("<span class='ok'>served</span>") == len(TASKS)
    for element in ("heatmap", "growth"):
        data = re.search(rf"<img id='{element}' alt='[^']*' src='data:image/png;base64,([^']+)'>", page)
        assert data is not None and base64.b64decode(data.group(1)).startswith(PNG)
    assert "<script" not in page
    assert "unchanged" in page and "gamma" in page.split("id='audit'")[1]


def _browser_problem() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        return "no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
    return None


def test_the_dashboard_renders_in_a_headless_browser(served_registry, tmp_path):
    problem = _browser_problem()
    if problem:
        print(f"SKIPPED browser test of the dashboard: {problem}")
        pytest.skip(problem)
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    except WebDriverException as exc:
        reason = f"chromium could not start here: {exc.msg or exc}"
        print(f"SKIPPED browser test of the dashboard: {reason}")
        pytest.skip(reason)
    try:
        with RunningServer(served_registry) as running:
            driver.get(running.base + "/")
            rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-task]")
            shown = [row.get_attribute("data-task") for row in rows]
            heatmap = driver.find_element(By.ID, "heatmap")
            width = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", heatmap)
            growth = driver.find_element(By.ID, "growth")
            grown = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", growth)
            title = driver.title
            shot = Path(os.environ.get("CADAPT_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert title == "cadapt registry"
    assert shown == list(TASKS)
    assert width and width > 100 and grown and grown > 100
    assert shot.read_bytes().startswith(PNG)
