"""The planner's KV-cache capacity equals what a real vLLM server allocates, alone and with a draft model.

Three independent numbers per case: vLLM's own startup line (``KV cache size: N tokens``), arithmetic written out
here, and ``memory.kv_capacity_tokens`` fed with models read from the served folders' config.json. The block size
comes from the server itself (``vllm:cache_config_info{block_size=...}`` on /metrics); the budget is
``VLLM_CPU_KVCACHE_SPACE`` GiB, which the CPU backend uses as the KV cache size.
"""
from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from specdec_lib import catalog, localserver, memory

GIB = 2**30
BF16_BYTES = 2

# Hand arithmetic. KV bytes per token = 2 (K and V) x layers x KV heads x head_dim x 2 bytes (bf16):
#   target      2 layers, 2 KV heads, head_dim 32: 2 x 2 x 2 x 32 x 2 = 512
#   draft_small 1 layer,  2 KV heads, head_dim 32: 2 x 1 x 2 x 32 x 2 = 256
# The draft's layers share the target's blocks, so the budget is divided by the sum. CPU blocks hold 128 tokens:
#   target alone:       1 GiB / (512 x 128)          = 16,384 blocks -> 2,097,152 tokens
#   + draft_copy:       1 GiB / ((512+512) x 128)    =  8,192 blocks -> 1,048,576 tokens
#   + draft_small:      1 GiB // ((512+256) x 128)   = 1,073,741,824 // 98,304 = 10,922 blocks -> 1,398,016
#                       (not 1 GiB / 768 = 1,398,101: only whole blocks are allocated)
CASES = {
    "target_alone": (None, 2_097_152),
    "with_draft_copy": ("draft_copy", 1_048_576),
    "with_draft_small": ("draft_small", 1_398_016),
}


def _block_size_from_metrics(base_url: str) -> int:
    text = requests.get(base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:cache_config_info":
            (sample,) = family.samples
            return int(sample.labels["block_size"])
    raise AssertionError("vllm:cache_config_info not found on /metrics")


@pytest.mark.vllm
@pytest.mark.parametrize("case", list(CASES))
def test_planner_kv_capacity_equals_vllm_startup_log(case, vllm_servers, tiny_models):
    draft, hand_tokens = CASES[case]
    if draft is None:
        server = vllm_servers.get_named("baseline")
    elif draft == "draft_copy":
        server = vllm_servers.get_named("draft_copy_prob")  # the sampling method does not change the allocation
    else:
        server = vllm_servers.get("draft_small_greedy", "target", localserver.draft_spec(draft, "greedy"))

    logged_tokens = localserver.kv_cache_tokens_from_log(server.log_text())
    assert logged_tokens == hand_tokens

    block_size = _block_size_from_metrics(server.base_url)
    assert block_size == 128
    models = [catalog.model_from_hf_config(tiny_models.target / "config.json")]
    if draft is not None:
        models.append(catalog.model_from_hf_config(tiny_models.path(draft) / "config.json"))
    kv_budget_bytes = server.kv_cache_space_gib * GIB
    assert memory.kv_capacity_tokens(kv_budget_bytes, models, BF16_BYTES, block_size) == logged_tokens
