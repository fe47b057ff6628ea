"""Page 01b and cancellation, driven against the DELIBERATELY simple fake of tests/oracle_fakes.py (page mechanics
only: the numbers are checked against real servers in test_oracle_live.py)."""

from __future__ import annotations

import threading

from oracle_fakes import FakeOracleServer
from test_notebooks import execute_notebook, page_messages

from specdec_lib import oracle_client
from specdec_lib.endpoint import EndpointClient
from specdec_lib.pages import predict_acceptance as predict_page


def test_a_stop_event_ends_the_run_between_requests_and_resume_finishes_it(tmp_path):
    stop = threading.Event()
    seen = []

    def after_record(done: int, total: int) -> None:
        seen.append((done, total))
        stop.set()  # as the Cancel button does, while the first request's record is being written

    with FakeOracleServer("ok") as fake:
        client = EndpointClient(fake.url)
        kw = dict(prompts=["code"], n_prompts=2, temperatures=(0.0, 0.5), ks=(2,), max_tokens=5, runs_dir=tmp_path,
                  progress=False)
        first = oracle_client.run_prediction(client, [client], stop_event=stop, on_progress=after_record, **kw)
        assert first.metadata["status"] == "interrupted" and len(first.records) == 1 and seen == [(1, 4)]
        resumed = oracle_client.run_prediction(client, [client], resume=first.path, **kw)
    assert resumed.metadata["status"] == "complete" and len(resumed.records) == 4


def test_the_page_predicts_in_the_background_and_shows_the_ranking(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPECDEC_AUTORUN", raising=False)
    with FakeOracleServer("ok") as fake:
        page = predict_page.predict_page()
        page.controls["target_url"].value = fake.url
        page.controls["draft_urls"].value = fake.url
        page.controls["n_prompts"].value = 2
        page.controls["temperatures"].value = "0, 1"
        page.controls["ks"].value = "2, 4"
        page.controls["max_tokens"].value = 4
        page.outputs["predict"].click()
        assert page.outputs["cancel"].disabled is False or page.state["prediction"] is not None
        page.state["thread"].join(timeout=60)
    assert page.state["error"] is None and page.state["prediction"] is not None
    assert "<table" in page.outputs["table"].value and "fake-oracle-model" in page.outputs["table"].value
    assert page.outputs["progress"].value == page.outputs["progress"].max == 4
    assert page.outputs["predict"].disabled is False and page.outputs["cancel"].disabled is True


def test_a_bad_control_is_said_on_the_page_not_raised(monkeypatch):
    monkeypatch.delenv("SPECDEC_AUTORUN", raising=False)
    page = predict_page.predict_page()
    page.controls["temperatures"].value = "zero"
    page.outputs["predict"].click()
    assert "temperatures" in page.outputs["status"].value and "#b00020" in page.outputs["status"].value


def test_notebook_01b_runs_headless_and_prints_the_ranking(tmp_path, monkeypatch):
    with FakeOracleServer("ok") as fake:
        monkeypatch.setenv("SPECDEC_ENDPOINT", fake.url)
        monkeypatch.setenv("SPECDEC_DRAFT_ENDPOINT", fake.url)
        monkeypatch.setenv("SPECDEC_AUTORUN", "1")
        monkeypatch.setenv("SPECDEC_REQUESTS", "2")
        nb = execute_notebook("01b_predict_acceptance", tmp_path, timeout_s=300)
    assert all("#b00020" not in m for m in page_messages(nb)), page_messages(nb)
    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "stream")
    assert "T=0 #1 fake-oracle-model" in out and "alpha 1.000" in out
    assert list((tmp_path / "runs").iterdir())
