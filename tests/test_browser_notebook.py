"""A real browser drives a notebook: JupyterLab on 127.0.0.1, headless Chromium via Playwright.

Opens a copy of notebooks/02_memory_budget.ipynb (a copy, so autosave never writes outputs into the committed
file), runs every cell, moves the gpu_memory_utilization slider with the keyboard, and checks that the plotly
chart's data in the page (the `.js-plotly-plot` element's `data`) changed. Screenshots go to the test's output
folder (test-output/<test name>/, the conftest's `test_output_dir`).
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from specdec_lib.localserver import free_port, stop_process_group

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTEBOOK = "02_memory_budget.ipynb"
SLIDER_LABEL = "gpu_memory_utilization"
SERVER_START_TIMEOUT_S = 90
PAGE_TIMEOUT_MS = 120_000
CHANGE_TIMEOUT_MS = 30_000

# Every trace's x and y as plain arrays: what the browser is drawing.
PLOT_DATA_JS = """() => {
  const el = document.querySelector('.js-plotly-plot');
  if (!el || !el.data || el.data.length === 0) return null;
  return JSON.stringify(el.data.map(t => [t.name || '', Array.from(t.x || []), Array.from(t.y || [])]));
}"""


def _wait_for_server(proc: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {SERVER_START_TIMEOUT_S} s")


@pytest.fixture
def jupyter_lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 with a random token, serving a copy of the notebook; always stopped."""
    work = tmp_path / "lab"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    env.pop("SPECDEC_AUTORUN", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyter-lab.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_for_server(proc, f"http://127.0.0.1:{port}/api/status?token={token}")
        yield f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}"
    finally:
        survivors = stop_process_group(proc, grace_s=30)
        log.close()
        assert not survivors, f"jupyter lab left processes {survivors}"


@pytest.mark.browser
def test_moving_a_slider_changes_the_chart_in_a_real_browser(jupyter_lab, test_output_dir):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: ./run-tests installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(jupyter_lab)
            page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')")
            page.wait_for_function("""() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return k && k.status === 'idle'; }""")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(PLOT_DATA_JS)
            before = page.evaluate(PLOT_DATA_JS)
            page.screenshot(path=str(test_output_dir / "02_memory_budget-before.png"), full_page=True)

            slider = page.locator(".widget-slider", has_text=SLIDER_LABEL).first
            value_before = slider.locator(".widget-readout").inner_text()
            slider.locator(".noUi-handle").focus()
            for _ in range(5):
                page.keyboard.press("ArrowLeft")
            page.wait_for_function(f"(b) => {{ const d = ({PLOT_DATA_JS})(); return d !== null && d !== b; }}",
                                   arg=before, timeout=CHANGE_TIMEOUT_MS)
            after = page.evaluate(PLOT_DATA_JS)
            value_after = slider.locator(".widget-readout").inner_text()
            page.screenshot(path=str(test_output_dir / "02_memory_budget-after.png"), full_page=True)
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        finally:
            browser.close()
    assert value_before != value_after
    assert after != before
