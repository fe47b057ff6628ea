"""Issue 10's "Why" 1-4: the workbook was confidently wrong. Each test reproduces one case through the command
line (`specdec plan` / `specdec memo`, as a planner runs it), so it ran against the code before the single
evaluation path too, and failed there:

1. a measurement of another server (the tiny demo model, k = 4) counted as measured acceptance for a
   Llama-3.1-70B k = 5 scenario (tests/test_cli.py::test_a_run_of_another_server_is_not_evidence_for_the_scenario);
2. a configuration vLLM refuses (Qwen2.5-72B INT4-AWQ at TP 4) reached "use" and the memo printed its command;
3. the memo's title kept the default "Llama-3.1-70B ... 2x H100" over a Qwen 4x H100 body;
4. at 1 QPS of 30k-token requests the deployment saturates, yet the speedup condition passed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSING = ROOT / "scenarios" / "structured-extraction.toml"


def specdec(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECDEC_")}
    return subprocess.run([sys.executable, "-m", "specdec_lib.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _edited(tmp_path, source: Path, name: str, replacements: dict[str, str]) -> Path:
    """`source` with whole lines starting with each key replaced (the rest of such a line, a comment, is kept)."""
    text = source.read_text()
    for old, new in replacements.items():
        text, count = re.subn(rf"^{re.escape(old)}", lambda _m: new, text, flags=re.M)
        assert count == 1, old
    path = tmp_path / name
    path.write_text(text)
    return path


QWEN_AWQ_TP4 = {
    'target_model = "meta-llama/Llama-3.1-70B-Instruct"': 'target_model = "Qwen/Qwen2.5-72B-Instruct"',
    'draft_model = "meta-llama/Llama-3.1-8B-Instruct"': 'draft_model = "Qwen/Qwen2.5-7B-Instruct"',
    'target_precision = "int8"': 'target_precision = "int4-awq"',
    "num_gpus = 2": "num_gpus = 4",
    "tensor_parallel_size = 2": "tensor_parallel_size = 4",
    "draft_tensor_parallel_size = 2": "draft_tensor_parallel_size = 4",
}


def _plan(path) -> dict:
    done = specdec("plan", "--json", "--scenario", path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _reasons(plan: dict) -> dict:
    return {r["condition"]: r for r in plan["reasons"]}


def test_a_configuration_vllm_refuses_cannot_be_used_and_its_command_is_said_not_to_start(tmp_path):
    # The passing JSON-extraction scenario moved to Qwen2.5-72B INT4-AWQ on 4 GPUs: intermediate_size 29568 / 4
    # = 7392 is not a multiple of AWQ's group size 128 (7392 / 128 = 57.75), so vLLM cannot shard the checkpoint.
    assert 29568 / 4 % 128 != 0
    path = _edited(tmp_path, PASSING, "qwen.toml", QWEN_AWQ_TP4)
    plan = _plan(path)
    assert plan["verdict"] != "use"
    refused = _reasons(plan)["vllm_accepts"]
    assert refused["status"] == "failed" and "group size 128" in refused["detail"]
    assert plan["command"]["will_start"] is False
    memo_path = tmp_path / "memo.html"
    assert specdec("memo", "--scenario", path, "-o", memo_path).returncode == 0
    html = memo_path.read_text()
    assert 'id="command-will-not-start"' in html and "This command will not start" in html


def test_a_draft_vllm_refuses_is_a_failing_reason_too(tmp_path):
    # vLLM 0.32 refuses a draft TP other than the target's for method draft_model (draft_model.py), and draft
    # and target vocabularies of different sizes (Qwen2.5's 152,064 vs Llama 3's 128,256).
    tp1 = _plan(_edited(tmp_path, PASSING, "tp1.toml",
                        {"draft_tensor_parallel_size = 2": "draft_tensor_parallel_size = 1"}))
    assert _reasons(tp1)["vllm_accepts"]["status"] == "failed" and tp1["verdict"] == "leave off"
    vocab = _plan(_edited(tmp_path, PASSING, "vocab.toml", {
        'draft_model = "meta-llama/Llama-3.1-8B-Instruct"': 'draft_model = "Qwen/Qwen2.5-7B-Instruct"'}))
    assert _reasons(vocab)["vllm_accepts"]["status"] == "failed" and vocab["verdict"] == "leave off"


def test_the_memo_title_describes_the_scenario_it_is_about(tmp_path):
    # `specdec scenario` writes the default; the planner edits the models and GPUs but not the title line.
    written = tmp_path / "default.toml"
    assert specdec("scenario", "-o", written).returncode == 0
    path = _edited(tmp_path, written, "qwen.toml", QWEN_AWQ_TP4)
    memo_path = tmp_path / "memo.html"
    assert specdec("memo", "--scenario", path, "-o", memo_path).returncode == 0
    h1 = re.search(r"<h1>(.*?)</h1>", memo_path.read_text(), re.S).group(1)
    assert "Qwen2.5-72B" in h1 and "4x" in h1 and "Llama" not in h1
    # a title the user wrote is kept as written
    titled = _edited(tmp_path, path, "titled.toml", {"qps = ": 'title = "Our extraction API"\nqps = '})
    assert specdec("memo", "--scenario", titled, "-o", memo_path).returncode == 0
    assert "<h1>Speculative decoding: Our extraction API</h1>" in memo_path.read_text()


def test_a_saturated_deployment_is_said_saturated_not_a_speedup(tmp_path):
    # 30,000-token prompts at 1 request/s on one replica: the prefill alone of a 70B model takes a large share of
    # a second, and the KV cache holds few such requests at once; the replica cannot keep up.
    path = _edited(tmp_path, PASSING, "long.toml", {
        "context_len = 8192": "context_len = 32768", "prompt_tokens = 1024": "prompt_tokens = 30000"})
    plan = _plan(path)
    reasons = _reasons(plan)
    assert reasons["speedup_at_qps"]["status"] != "passed" and reasons["speedup_at_qps"]["value"] == "saturated"
    assert reasons["within_capacity"]["status"] == "failed"
    assert plan["load"]["saturated"] is True and plan["load"]["capacity_qps"] < 1.0
    assert plan["verdict"] == "leave off"
    assert plan["load"]["replicas_needed"] >= 1 / plan["load"]["capacity_qps"]


def test_the_computed_break_even_decides_when_it_is_stricter_than_the_sources_band(tmp_path):
    # Llama-3.1-70B INT8 + 8B BF16 on 2x H100 at k = 5: the draft costs c = 0.29 of a target step (load model),
    # so speculation breaks even only at alpha 0.62 (Leviathan: (1 - a^6) / ((1 - a)(5c + 1)) = 1). At alpha 0.60
    # the source's band says "near break-even, measure" (0.5-0.65); the arithmetic says it loses: leave off.
    plan = _plan(_edited(tmp_path, PASSING, "a60.toml", {"alpha = 0.80": "alpha = 0.60"}))
    band = _reasons(plan)["acceptance_band"]
    c, k, alpha = plan["load"]["cost_ratio"], 5, 0.60
    assert (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1)) < 1      # hand arithmetic: a loss at batch 1
    assert band["status"] == "failed" and band["effect"] == "leave off"
    assert "break-even" in band["detail"] and f"{plan['load']['break_even_alpha']:.2f}" in band["detail"]
    assert plan["verdict"] == "leave off"
