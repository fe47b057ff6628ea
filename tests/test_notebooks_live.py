"""The live notebooks (04, 05) run headless against real vLLM servers (CPU build) from the test harness.

The notebooks read their endpoint from SPECDEC_ENDPOINT (and SPECDEC_BASELINE_ENDPOINT), press their own run
button when SPECDEC_AUTORUN=1, and send SPECDEC_REQUESTS requests per group. Their printed summary is checked
against the servers' own Prometheus counters, scraped here with prometheus_client (not the workbook's parser).
"""
from __future__ import annotations

import re

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from test_notebooks import execute_notebook, page_messages

REQUESTS = 4


def counter(base_url: str, name: str) -> float:
    """Sum over every label set of a vLLM counter (`name` without the _total suffix)."""
    text = requests.get(f"{base_url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == name:
            total += sum(s.value for s in family.samples if s.name == f"{name}_total")
    return total


def stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


@pytest.mark.vllm
def test_live_acceptance_notebook_measures_a_real_server(vllm_servers, tmp_path, monkeypatch):
    server = vllm_servers.get_named("draft_copy_prob")
    monkeypatch.setenv("SPECDEC_ENDPOINT", server.base_url)
    monkeypatch.setenv("SPECDEC_AUTORUN", "1")
    monkeypatch.setenv("SPECDEC_REQUESTS", str(REQUESTS))
    accepted_before = counter(server.base_url, "vllm:spec_decode_num_accepted_tokens")
    drafted_before = counter(server.base_url, "vllm:spec_decode_num_draft_tokens")

    nb = execute_notebook("04_live_acceptance_by_temperature", tmp_path, timeout_s=600)

    assert all("#b00020" not in m for m in page_messages(nb)), page_messages(nb)
    lines = re.findall(r"^T=([\d.]+): ok (\d+)/(\d+), accepted (\d+) of (\d+) draft tokens, vLLM rate ([\d.]+), "
                       r"alpha ([\d.]+)", stdout(nb), flags=re.M)
    assert [float(t) for t, *_ in lines] == [0.0, 0.4, 0.8, 1.0]
    assert all(int(ok) == int(n) == REQUESTS for _, ok, n, *_ in lines)
    # the notebook's per-temperature counts add up to what the server itself counted over the run
    assert sum(int(a) for _, _, _, a, *_ in lines) == counter(server.base_url,
                                                              "vllm:spec_decode_num_accepted_tokens") - accepted_before
    assert sum(int(d) for _, _, _, _, d, *_ in lines) == counter(server.base_url,
                                                                 "vllm:spec_decode_num_draft_tokens") - drafted_before
    # an exact copy of the target as draft, probabilistic draft sampling: nearly every draft token is accepted
    for _, _, _, accepted, drafted, rate, _ in lines:
        assert float(rate) == pytest.approx(int(accepted) / int(drafted), abs=1e-3)
        assert float(rate) > 0.9
    assert list((tmp_path / "runs").iterdir()), "the sweep's run folder is written beside the notebook"


@pytest.mark.vllm
def test_load_test_notebook_compares_with_and_without(vllm_servers, tmp_path, monkeypatch):
    spec = vllm_servers.get_named("draft_copy_prob")
    base = vllm_servers.get_named("baseline")
    monkeypatch.setenv("SPECDEC_ENDPOINT", spec.base_url)
    monkeypatch.setenv("SPECDEC_BASELINE_ENDPOINT", base.base_url)
    monkeypatch.setenv("SPECDEC_AUTORUN", "1")
    monkeypatch.setenv("SPECDEC_REQUESTS", str(REQUESTS))
    spec_before = counter(spec.base_url, "vllm:request_success")
    base_before = counter(base.base_url, "vllm:request_success")

    nb = execute_notebook("05_load_test_with_and_without", tmp_path, timeout_s=600)

    assert all("#b00020" not in m for m in page_messages(nb)), page_messages(nb)
    out = stdout(nb)
    for name in ("with speculation", "baseline"):
        for level in ("concurrency=1", "concurrency=4"):
            assert re.search(rf"^{name} {level}: ok {REQUESTS}/{REQUESTS}, TPOT p50 [\d.]+ s", out, flags=re.M), out
    # two levels of REQUESTS requests each reached each server, as the servers count them
    assert counter(spec.base_url, "vllm:request_success") - spec_before == 2 * REQUESTS
    assert counter(base.base_url, "vllm:request_success") - base_before == 2 * REQUESTS
