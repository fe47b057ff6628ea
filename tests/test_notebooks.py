"""Every offline notebook runs headless on the built-in defaults, shows no error, and is committed clean."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
LIVE = ["04_live_acceptance_by_temperature", "05_load_test_with_and_without"]
OFFLINE = ["00_start_here", "01_draft_selection", "01b_predict_acceptance", "02_memory_budget",
           "03_break_even_and_load", "03b_methods_compared",
           "06_mixed_workload", "07_decision_memo",
           "08_production_watch"]  # 08's watch runs only behind its Start button
MESSAGE_CLASS = "specdec-message"


def execute_notebook(name: str, cwd: Path, timeout_s: int = 300) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel of this interpreter (the .venv's, via the python3 kernel spec)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3", allow_errors=False,
                            store_widget_state=True, resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def widget_states(nb: nbformat.NotebookNode) -> dict:
    saved = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return saved.get("state", {})


def page_messages(nb: nbformat.NotebookNode) -> list[str]:
    """The text of every page message widget (where widgets.py puts errors instead of tracebacks)."""
    return [s["state"].get("value", "") for s in widget_states(nb).values()
            if MESSAGE_CLASS in s["state"].get("_dom_classes", [])]


def test_every_notebook_is_generated_and_in_reading_order():
    names = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == sorted(OFFLINE + LIVE)
    prefixes = sorted({n[:2] for n in names})  # 01b sits beside 01, 03b beside 03
    assert prefixes == [f"{i:02d}" for i in range(len(prefixes))]


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_notebook_runs_headless_without_an_endpoint(name, tmp_path, monkeypatch):
    monkeypatch.delenv("SPECDEC_ENDPOINT", raising=False)
    monkeypatch.delenv("SPECDEC_AUTORUN", raising=False)
    nb = execute_notebook(name, tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr" and "Traceback" in o.text]
    # the page rendered as a widget view, and its message line holds no error
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    messages = page_messages(nb)
    assert messages, "the page has a message widget"
    assert all("#b00020" not in m for m in messages), messages
    # the "In code" section ran and ended in a pandas DataFrame
    last = nb.cells[-1]
    assert "In code" in nb.cells[-2].source
    assert any("dataframe" in o.get("data", {}).get("text/html", "") for o in last.outputs), last.outputs


def test_committed_notebooks_are_clean():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_notebooks_clean.py")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_clean_check_catches_outputs_and_execution_counts(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nb.cells[0].execution_count = 1
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_notebooks_clean.py"), str(dirty)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "has 1 output(s)" in result.stdout and "execution_count 1" in result.stdout
    assert json.loads(dirty.read_text())["cells"][0]["outputs"], "the checker never edits files"


def test_workbook_command_opens_the_start_page(tmp_path):
    """Run the README's ./workbook for real, with JupyterLab's own flags passed through, and ask the server for
    the start page. (Once, flags given to ./workbook leaked into the setup step and broke it.)"""
    import os
    import time

    import requests

    from specdec_lib.localserver import free_port, stop_process_group

    port = free_port()
    token = "workbook-test"
    log = tmp_path / "workbook.log"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(ROOT / "workbook"), "--no-browser", "--ip", "127.0.0.1", f"--port={port}",
                                 f"--ServerApp.token={token}"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        page = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                # Given a file, Jupyter Server serves that file's folder as its root.
                page = requests.get(f"http://127.0.0.1:{port}/api/contents/00_start_here.ipynb",
                                    params={"token": token, "content": 0}, timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(1)
        assert page is not None, f"./workbook never answered on port {port}; its log:\n{log.read_text()[-3000:]}"
        assert page.status_code == 200 and page.json()["name"] == "00_start_here.ipynb"
        listing = requests.get(f"http://127.0.0.1:{port}/api/contents", params={"token": token}, timeout=5).json()
        assert {c["name"] for c in listing["content"]} >= {"00_start_here.ipynb", "07_decision_memo.ipynb"}
    finally:
        assert not stop_process_group(proc, grace_s=20), "./workbook left processes behind"
