"""Notebook page 08: Start/Stop write a run folder that loads back (test_notebooks.py runs the page headless).

The endpoint here is a closed port on 127.0.0.1 (a real connection refused): every read fails, each failure is one
record and a message on the page, and Stop ends the watch with the folder marked "interrupted". The live chart
against a real vLLM server is exercised in test_prometheus_live.py.
"""

import time

from specdec_lib import localserver, watch
from specdec_lib.pages import production_watch as watch_page


def test_start_stop_against_a_closed_port_keeps_every_record(tmp_path):
    page = watch_page.production_watch_page(k=5)
    c = page.controls
    c["url"].value = f"http://127.0.0.1:{localserver.free_port()}"
    c["interval_s"].value, c["window_s"].value, c["runs_dir"].value = 0.2, 1.0, str(tmp_path)
    c["start"].click()
    assert c["start"].disabled and not c["stop"].disabled
    deadline = time.monotonic() + 30
    while page.state["records"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "connection refused" in page.message.value
    c["stop"].click()
    page.state["thread"].join(timeout=30)
    assert not page.state["thread"].is_alive() and not c["start"].disabled
    meta, df = watch.load_watch(page.state["run_path"])
    assert meta["status"] == "interrupted" and meta["plan"]["num_speculative_tokens"] == 5
    assert len(df) == page.state["records"] >= 3 and set(df["kind"]) == {"error"}
    assert str(page.state["run_path"]) in page.message.value


def test_bad_input_is_a_message_not_a_traceback():
    page = watch_page.production_watch_page()
    page.controls["url"].value = "localhost:8000"  # no scheme
    page.start()
    assert "expected http(s)://" in page.message.value and page.state["thread"] is None
