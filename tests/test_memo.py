"""The HTML memo: self-contained, every section present, user text inert, measurements shown, no API key.

The browser checks (charts visible, no console errors, hostile names inert when run) are in
test_memo_browser.py; the end-to-end key test against a real vLLM server is at the bottom of this file.
"""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import plotly.offline
import pytest

from specdec_lib import localserver, memo, runs
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, RequestClass, save_scenario

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def hostile_scenario():
    return dataclasses.replace(
        DEFAULT_SCENARIO, title="Plan " + HOSTILE, notes="notes " + HOSTILE, endpoint_url="http://x/" + HOSTILE,
        workload=(RequestClass("chat" + HOSTILE, 1.0, 0.7, 512, 256),))


def test_default_memo_is_self_contained_and_complete():
    html = memo.render_memo(DEFAULT_SCENARIO)
    # offline: no external scripts, styles or fonts; plotly.js inlined exactly once
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=", html)
    plotly_js = plotly.offline.get_plotlyjs()
    assert html.count(plotly_js) == 1
    outside_plotly_js = html.replace(plotly_js, "")
    assert "cdn.plot.ly" not in outside_plotly_js and "https://" not in outside_plotly_js
    for section in ("scenario", "reasons", "memory", "speedup", "measurements", "risks", "command", "monitoring"):
        assert f'id="{section}"' in html
    assert "@media print" in html
    # verdict and every framework condition with its number and source
    assert 'id="verdict">leave off<' in html          # no acceptance monitoring in the default scenario
    for condition in ("temperature_low", "draft_memory_share", "monitoring_in_place", "draft_size_ratio",
                      "acceptance_band", "speedup_at_qps"):
        assert f"<code>{condition}</code>" in html
    # the command for today's vLLM and the legacy flags with their version range
    assert "vllm serve meta-llama/Llama-3.1-70B-Instruct" in html
    assert "--speculative-config" in html and "--speculative-draft-tensor-parallel-size" in html
    assert "vLLM 0.4.1 – 0.8.2" in html
    # monitoring: PromQL over vLLM's counters and the alpha 0.5 threshold converted to V1 at k = 5:
    # E = (1 - 0.5^6) / 0.5 = 1.96875, V1 = (E - 1) / 5 = 0.19375
    # (ratio of sums per deployment and served model: the rule file's expression, issue 15)
    assert ("sum by (job, model_name) (rate(vllm:spec_decode_num_accepted_tokens_total[5m])) / "
            "sum by (job, model_name) (rate(vllm:spec_decode_num_draft_tokens_total[5m]))") in html
    assert "0.194" in html and "&lt; 0.1938 for 15m" in html
    # figures: memory, break-even, load (no measurement figures without a run)
    assert html.count('class="plotly-graph-div"') == 3


def test_user_text_is_escaped():
    html = memo.render_memo(hostile_scenario())
    assert HOSTILE not in html
    assert "<script>window.__xss" not in html and "<img src=x" not in html
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html


def test_an_unplannable_scenario_still_renders_with_the_error_escaped():
    s = dataclasses.replace(DEFAULT_SCENARIO, target_model="<b>no-such-model</b>")
    html = memo.render_memo(s)
    assert "<b>no-such-model</b>" not in html
    assert "Memory plan unavailable" in html and "&lt;b&gt;no-such-model&lt;/b&gt;" in html


def _write_run(tmp_path: Path, served_model: str = "tiny-target") -> Path:
    """A run folder written with runs.RunWriter: two temperatures, counters and per-request records."""
    writer = runs.RunWriter.create(tmp_path / "runs", "sweep", {
        "endpoint": "http://127.0.0.1:8000", "served_model": served_model, "vllm_version": "0.32.0",
        "speculative": {"method": "draft_model", "num_speculative_tokens": 4}, "parameters": {"max_tokens": 64}})
    index = 0
    for temperature, accepted_per_step in ((0.0, 3.0), (0.7, 1.2)):
        label = f"T={temperature:g}"
        for i in range(4):
            writer.append_request({
                "index": index, "label": label, "prompt_set": "chat", "prompt_id": f"p{i}", "temperature": temperature,
                "max_tokens": 64, "concurrency": 1, "rate_qps": None, "sent_at_s": float(index),
                "ttft_s": 0.05 + i / 100,
                "tpot_s": 0.010 + i / 1000, "e2e_s": 0.7, "itl_s": [0.02, 0.03], "prompt_tokens": 20,
                "completion_tokens": 64, "chunks": 20, "accepted_tokens": 40, "draft_tokens": 80,
                "acceptance_rate": accepted_per_step / 4, "acceptance_source": "chunks", "spec_metrics": None,
                "finish_reason": "length", "error": None, "error_kind": None, "status": 200})
            index += 1
        writer.append_interval({"label": label, "temperature": temperature, "delta": {
            "available": True, "drafts": 100, "draft_tokens": 400, "accepted_tokens": round(100 * accepted_per_step),
            "num_speculative_tokens": 4, "per_position": []}})
    writer.finish("complete")
    return writer.path


def test_memo_with_a_run_shows_the_measurements_and_its_metadata(tmp_path):
    run_path = _write_run(tmp_path, served_model="tiny<script>x</script>")
    html = memo.render_memo(DEFAULT_SCENARIO, run=runs.load_run(run_path))
    assert run_path.name in html
    assert "tiny&lt;script&gt;x&lt;/script&gt;" in html and "tiny<script>x" not in html
    # T=0.7: V1 ratio 120/400 = 0.300 at k = 4; alpha solves (1 - a^5)/(1 - a) = 1 + 4 x 0.3 = 2.2
    assert "0.300" in html
    from specdec_lib.speculation import expected_tokens_per_step
    alpha = float(re.search(r"<td class=\"num\">0\.300</td><td class=\"num\">4</td><td class=\"num\">([0-9.]+)</td>",
                            html).group(1))
    assert expected_tokens_per_step(alpha, 4) == pytest.approx(2.2, abs=0.005)
    # The run was taken on another model at k = 4: shown, but not used as evidence for the 70B k = 5 scenario
    assert html.count('class="plotly-graph-div"') == 5   # + histogram, latency (no acceptance-by-T: not used)
    assert "not the scenario&#39;s target" in html
    assert '<p class="error run-not-used">Not evidence for this scenario' in html


def test_a_run_of_the_scenarios_own_model_and_k_is_the_measured_evidence(tmp_path):
    run = runs.load_run(_write_run(tmp_path, served_model="meta-llama/Llama-3.1-70B-Instruct"))
    at_k4 = dataclasses.replace(DEFAULT_SCENARIO, num_speculative_tokens=4)
    context = memo.build_context(evaluate(at_k4, run=run))
    assert context["decision"].reason("acceptance_band").source == "measured"
    assert context["workload_rows"][0]["source"] == "measured"
    assert context["figures"]["acceptance"] is not None
    # the same run at the scenario's k = 5 is set aside, with the k in the reason
    at_k5 = memo.build_context(evaluate(DEFAULT_SCENARIO, run=run))
    assert at_k5["workload_rows"][0]["source"] == "—"
    assert "k=4" in at_k5["decision"].reason("evidence_applies").detail


# ---------------------------------------------------------------------------------------------------------------
# end to end with a real server that requires an API key


SECRET = "sk-specdec-test-3f9a1c77e2"


@pytest.mark.vllm
def test_a_run_with_an_api_key_leaves_no_key_in_memo_logs_or_files(tiny_models, vllm_venv, test_output_dir):
    spec = localserver.draft_spec(str(tiny_models.path("draft_noise05")), "probabilistic", 4)
    server_log = test_output_dir / "server.log"
    with localserver.VLLMServer(tiny_models.target, speculative_config=spec, venv=vllm_venv, log_path=server_log,
                                served_model_name="tiny-target", env={"VLLM_API_KEY": SECRET}) as server:
        env = {k: v for k, v in __import__("os").environ.items() if k != "SPECDEC_TEST_KEY"}
        # without the key the server refuses: exit 4 (the endpoint answered, not as asked)
        refused = subprocess.run(
            [sys.executable, "-m", "specdec_lib.cli", "measure", "--url", server.base_url, "--temperatures", "0",
             "--requests", "1", "--max-tokens", "8", "--runs-dir", str(test_output_dir / "refused-runs"),
             "--no-progress"], capture_output=True, text=True, env=env, timeout=300)
        assert refused.returncode == 4, refused.stderr
        env["SPECDEC_TEST_KEY"] = SECRET
        measured = subprocess.run(
            [sys.executable, "-m", "specdec_lib.cli", "measure", "--url", server.base_url,
             "--api-key-env", "SPECDEC_TEST_KEY", "--sweep", "temps", "--temperatures", "0,0.7", "--requests", "6",
             "--concurrency", "2", "--max-tokens", "48", "--runs-dir", str(test_output_dir / "runs"), "--json",
             "--no-progress"], capture_output=True, text=True, env=env, timeout=600)
    (test_output_dir / "measure.stdout.log").write_text(measured.stdout)
    (test_output_dir / "measure.stderr.log").write_text(measured.stderr)
    assert measured.returncode == 0, measured.stderr
    run_path = Path(json.loads(measured.stdout)["run_path"])
    # A scenario of the server's own configuration (tiny target, k = 4): the run is this scenario's evidence.
    # (The default 70B k = 5 scenario would set it aside: tests/test_evaluate_gates.py.)
    tiny = dataclasses.replace(DEFAULT_SCENARIO, target_model="tiny-target", num_speculative_tokens=4)
    scenario_path = save_scenario(tiny, test_output_dir / "scenario.toml")
    memo_path = test_output_dir / "memo.html"
    made = subprocess.run([sys.executable, "-m", "specdec_lib.cli", "memo", "--scenario", str(scenario_path),
                           "--run", str(run_path), "-o", str(memo_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    (test_output_dir / "memo.stderr.log").write_text(made.stderr)
    assert made.returncode == 0, made.stderr
    html = memo_path.read_text()
    assert run_path.name in html and "acceptance-table" in html
    # the measured T=0.7 acceptance reaches the decision as "measured"
    assert re.search(r"<code>acceptance_band</code>.*?<span class=\"source\">measured</span>", html, re.S)
    # no key anywhere we wrote: the run folder, the memo, our logs (the server's own log is not ours, but check it)
    for path in [p for p in test_output_dir.rglob("*") if p.is_file()]:
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in measured.stdout + measured.stderr + made.stdout + made.stderr + refused.stderr


def test_memo_compares_latency_with_a_baseline_run(tmp_path):
    spec_run = runs.load_run(_write_run(tmp_path / "spec"))
    base_run = runs.load_run(_write_run(tmp_path / "base"))
    context = memo.build_context(evaluate(DEFAULT_SCENARIO, run=spec_run), baseline_run=base_run)
    assert [m["role"] for m in context["measurements"]] == ["Measurement run", "Baseline run (speculation off)"]
    html = memo.render_memo(DEFAULT_SCENARIO, run=spec_run, baseline_run=base_run)
    assert "Latency percentiles with and without speculation" in html
    assert '"name":"without"' in html and '"name":"with speculation"' in html
