"""A real vLLM CPU server with a tiny EAGLE-3 head beside the tiny target: its startup line
``KV cache size: N tokens`` equals hand arithmetic and the planner's figure, and the head really drafts.

The head (specdec_lib/tiny_heads.py) is built here with random weights, in the flat EAGLE-3 checkpoint form vLLM
0.32 loads; its proposals are random, so only drafting is checked, not acceptance.
"""
from __future__ import annotations

import os
import subprocess

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specdec_lib import catalog, localserver, memory, tiny_heads

GIB = 2**30


def _counter(base_url: str, name: str) -> float:
    for family in text_string_to_metric_families(requests.get(base_url + "/metrics", timeout=10).text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    raise AssertionError(f"{name} not on /metrics")


@pytest.mark.vllm
def test_kv_capacity_with_an_eagle3_head_equals_vllms_startup_line(tiny_models, vllm_venv, test_output_dir):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    built = subprocess.run([str(localserver.venv_python(vllm_venv)), tiny_heads.__file__, str(test_output_dir)],
                           capture_output=True, text=True, timeout=300, env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    head_dir = test_output_dir / tiny_heads.HEAD_NAME
    spec = {"method": "eagle3", "model": str(head_dir), "num_speculative_tokens": 2}
    with localserver.VLLMServer(tiny_models.target, speculative_config=spec, kv_cache_space_gib=1,
                                log_path=test_output_dir / "server.log", ready_timeout_s=600) as server:
        logged = localserver.kv_cache_tokens_from_log(server.log_text())
        # Hand arithmetic (bf16, CPU blocks of 128 tokens, budget VLLM_CPU_KVCACHE_SPACE = 1 GiB):
        #   target: 2 (K, V) x 2 layers x 2 KV heads x 32 x 2 bytes = 512 B/token
        #   head:   2 (K, V) x 1 layer  x 2 KV heads x 32 x 2 bytes = 256 B/token, in the same blocks
        #   1 GiB // ((512 + 256) x 128) = 1,073,741,824 // 98,304 = 10,922 blocks -> 1,398,016 tokens
        assert logged == 10_922 * 128 == 1_398_016
        target = catalog.model_from_hf_config(tiny_models.target / "config.json")
        head = catalog.drafter_from_hf_config(head_dir, targets=(target.name,))
        assert head.method == "eagle3" and head.draft_vocab_size == tiny_heads.DRAFT_VOCAB and head.has_d2t
        planned = memory.kv_capacity_tokens(1 * GIB, [target, head.kv_model()], 2, 128)
        assert planned == logged
        # The head drafts: vLLM counts the draft tokens it proposed.
        r = requests.post(server.base_url + "/v1/completions", timeout=120, json={
            "model": server.model_name, "prompt": "the", "max_tokens": 12, "temperature": 0})
        assert r.status_code == 200, r.text[:500]
        assert _counter(server.base_url, "vllm:spec_decode_num_draft_tokens") > 0
