"""The read-only dashboard at `/`: served HTML with every task, the accuracy-matrix heatmap and the
growth curve inlined as PNG, and the registry's latest audit as `cadapt audit` recorded it; checked
as HTML, then in a real headless Chromium driven by Selenium (skipped, with the reason printed,
where no browser can run)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from continual_adapters.cli import cli
from continual_adapters.registry import Registry
from continual_adapters.stream.audit_record import latest_audit
from tests.support.cli import cli_ok
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
    audit = page.split("<h2>Audit</h2>")[1]
    assert "<p id='audit' data-ok=''>No audit recorded in the registry" in audit
    assert "unchanged" in audit and "<b>gamma</b>" in audit


def audit_rows(page: str) -> dict[str, str]:
    """Each task of the audit table and its data-ok."""
    return dict(re.findall(r"<tr data-audit-task='([^']+)' data-ok='(true|false)'>", page))


def test_the_page_shows_the_latest_audit_passed_or_failed_when_and_per_task(own_registry):
    cli_ok("--registry", own_registry, "audit")
    at = latest_audit(Registry(own_registry)).at
    with RunningServer(own_registry) as running:
        page = running.call("GET", "/").body.decode()
    assert "<p id='audit' data-ok='true'>Latest audit: <span class='ok'>passed</span>" in page
    assert f"<time datetime='{at.isoformat()}'>{at:%Y-%m-%d %H:%M:%S} UTC</time>" in page
    assert f"after task {len(TASKS)}: {len(TASKS)} of {len(TASKS)} task(s) passed" in page
    assert audit_rows(page) == dict.fromkeys(TASKS, "true")

    with sqlite3.connect(own_registry) as db:  # alpha's recorded score edited: its next audit fails
        db.execute(
            "UPDATE evaluations SET value = value + 0.01 WHERE kind = 'registration' "
            "AND task_id = (SELECT id FROM tasks WHERE name = 'alpha')"
        )
    assert CliRunner().invoke(cli, ["--registry", str(own_registry), "audit"]).exit_code == 1
    with RunningServer(own_registry) as running:
        page = running.call("GET", "/").body.decode()
    assert "<p id='audit' data-ok='false'>Latest audit: <span class='bad'>failed</span>" in page
    assert audit_rows(page) == {"alpha": "false", "beta": "true", "gamma": "true"}
    alpha = re.search(r"<tr data-audit-task='alpha'.*?</tr>", page)
    assert alpha is not None and re.search(r"failed: [1-9]\d* problem\(s\)", alpha.group(0))


def _browser_problem() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")) or not shutil.which("chromedriver"):
        return "no chromium and chromedriver on PATH (apt-get install chromium chromium-driver)"
    return None


def test_the_dashboard_renders_in_a_headless_browser(own_registry, tmp_path):
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
    cli_ok("--registry", own_registry, "audit")
    try:
        with RunningServer(own_registry) as running:
            driver.get(running.base + "/")
            rows = driver.find_elements(By.CSS_SELECTOR, "tr[data-task]")
            shown = [row.get_attribute("data-task") for row in rows]
            heatmap = driver.find_element(By.ID, "heatmap")
            width = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", heatmap)
            growth = driver.find_element(By.ID, "growth")
            grown = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", growth)
            verdict = driver.find_element(By.ID, "audit")
            audit = (verdict.get_attribute("data-ok"), verdict.text, verdict.is_displayed())
            audited = [
                (row.get_attribute("data-audit-task"), row.text, row.is_displayed())
                for row in driver.find_elements(By.CSS_SELECTOR, "tr[data-audit-task]")
            ]
            title = driver.title
            shot = Path(os.environ.get("CADAPT_DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert driver.save_screenshot(str(shot))
    finally:
        driver.quit()
    assert title == "cadapt registry"
    assert shown == list(TASKS)
    assert width and width > 100 and grown and grown > 100
    assert audit[0] == "true" and audit[1].startswith("Latest audit: passed") and audit[2]
    assert [name for name, _, _ in audited] == list(TASKS)
    assert all(text.startswith(f"{name} passed full") and shown for name, text, shown in audited)
    assert shot.read_bytes().startswith(PNG)
