"""The memory planner against hand arithmetic and vLLM 0.32's own rules."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from specdec_lib import memory
from specdec_lib.catalog import get_gpu, get_model, get_precision, model_from_hf_config
from specdec_lib.memory import (
    Overhead,
    kv_bytes_per_token,
    kv_capacity_tokens,
    kv_heads_per_rank,
    plan_memory,
    weight_bytes,
)

VLLM_SRC = Path("/tmp/venv-vllm/lib/python3.11/site-packages/vllm")
GIB = 1024**3

TINY = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048,
        "max_position_embeddings": 2048, "tie_word_embeddings": False}
FIXED_OVERHEAD = Overhead(activation_peak_bytes=2 * GIB, non_torch_bytes=GIB, cudagraph_bytes=GIB, source="test")


def tiny():
    return model_from_hf_config(TINY, name="tiny-llama")


# ---- KV bytes and vLLM's startup figure --------------------------------------------------------------


def test_kv_bytes_per_token_uses_kv_heads_not_hidden_size():
    m = get_model("meta-llama/Llama-3.1-70B")
    assert kv_bytes_per_token(m, 2) == 2 * 80 * 8 * 128 * 2 == 327_680  # not 2*80*8192*2 (GQA ignored)


def test_tiny_model_is_512_bytes_per_token():
    assert kv_bytes_per_token(tiny(), 2) == 2 * 2 * 2 * 32 * 2 == 512


def test_kv_capacity_matches_vllm_cpu_log_figure_by_hand():
    # VLLM_CPU_KVCACHE_SPACE=1 -> 1 GiB; CPU block_size 128; max_model_len 512.
    # 1 GiB / (128 tokens x 512 bytes) = 16,384 blocks; 16,384 / cdiv(512, 128) x 512 = 2,097,152 tokens.
    assert kv_capacity_tokens(GIB, [tiny()], 2, 128, max_model_len=512) == 2_097_152
    assert kv_capacity_tokens(GIB, [tiny()], 2, 128) == 2_097_152


def test_same_size_draft_halves_vllm_log_figure():
    # One block holds 128 tokens of all 4 layers (2 target + 2 draft): 1 GiB / (128 x 1024) = 8,192 blocks.
    assert kv_capacity_tokens(GIB, [tiny(), tiny()], 2, 128, max_model_len=512) == 1_048_576


def test_kv_capacity_log_figure_when_max_model_len_is_not_a_block_multiple():
    # cdiv(500, 128) = 4 blocks per request; 16,384 / 4 x 500 = 2,048,000 (vLLM logs this, not 2,097,152).
    assert kv_capacity_tokens(GIB, [tiny()], 2, 128, max_model_len=500) == 2_048_000


def test_kv_capacity_truncates_partial_blocks():
    budget = 3 * 128 * 512 + 511  # three whole blocks and a bit
    assert kv_capacity_tokens(budget, [tiny()], 2, 128) == 384


def test_fp8_kv_cache_halves_bytes_per_token():
    m = get_model("Llama-3.1-8B")
    assert kv_bytes_per_token(m, memory.kv_dtype_bytes("fp8")) * 2 == kv_bytes_per_token(m, 2)


def test_kv_heads_per_rank_replicate_when_fewer_than_tp():
    m = get_model("Qwen2.5-1.5B")  # 12 heads, 2 KV heads
    assert kv_heads_per_rank(m, 1) == 2
    assert kv_heads_per_rank(m, 4) == 1  # max(1, 2 // 4): each rank keeps a replica
    assert kv_bytes_per_token(m, 2, tp=4) == 2 * 28 * 1 * 128 * 2
    assert kv_heads_per_rank(get_model("Llama-3.1-70B"), 8) == 1


# ---- weights ---------------------------------------------------------------------------------------------


def test_int8_70b_keeps_embeddings_and_lm_head_16_bit():
    m, int8 = get_model("Llama-3.1-70B"), get_precision("int8")
    linear = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)
    unquantized = 161 * 8192 + 2 * 128256 * 8192
    assert linear + unquantized == 70_553_706_496
    assert weight_bytes(m, int8) == linear * 1 + unquantized * 2 == 72_656_371_712


def test_awq_70b_counts_group_scales():
    m, awq = get_model("Llama-3.1-70B"), get_precision("int4-awq")
    linear = 68_451_041_280
    expected = linear // 2 + (linear // 128) * 2.5 + (161 * 8192 + 2 * 128256 * 8192) * 2
    assert weight_bytes(m, awq) == expected == 39_767_785_472


def test_tp_shards_weights_but_replicates_norms():
    m, bf16 = get_model("Llama-3.1-70B"), get_precision("bf16")
    per_rank = (68_451_041_280 // 2 + 128256 * 8192) * 2 + 161 * 8192 * 2
    assert weight_bytes(m, bf16, tp=2) == per_rank


def test_kv_projection_replicated_when_kv_heads_fewer_than_tp():
    m, bf16 = get_model("Qwen2.5-1.5B"), get_precision("bf16")
    # at TP 4 each rank holds 1 KV head of k and v (replica), not 2/4 of one
    h, L = 1536, 28
    expected_linear = L * (2 * h * 1536 // 4 + 2 * h * 128 + 3 * h * 8960 // 4)
    expected_bias = L * (1536 // 4 + 2 * 128)
    expected = 2 * (expected_linear + expected_bias + (2 * L + 1) * h + 151936 * h // 4)
    assert weight_bytes(m, bf16, tp=4) == expected


# ---- the plan --------------------------------------------------------------------------------------------


def test_draft_kv_cache_is_taken_from_target_budget():
    kw = dict(gpu="H100-SXM", num_gpus=1, tp=1, context_len=4096, overhead=FIXED_OVERHEAD)
    alone = plan_memory("Llama-3.1-8B", None, **kw)
    with_draft = plan_memory("Llama-3.1-8B", "Llama-3.2-1B", **kw)
    budget = with_draft.kv_budget_bytes_per_gpu
    assert budget == alone.kv_budget_bytes_per_gpu - 1_235_814_400 * 2  # the draft's weights
    per_token = 2 * 32 * 8 * 128 * 2 + 2 * 16 * 8 * 64 * 2  # target + draft layers in every block
    assert with_draft.kv_capacity_tokens == budget // (16 * per_token) * 16
    assert with_draft.kv_capacity_tokens_without_draft == alone.kv_capacity_tokens
    assert with_draft.draft_kv_share == pytest.approx((2 * 16 * 8 * 64 * 2) / per_token)


def test_budget_is_utilization_times_driver_memory_minus_weights_and_reserve():
    p = plan_memory("Llama-3.1-8B", None, gpu="H200", num_gpus=1, tp=1, context_len=8192, overhead=FIXED_OVERHEAD)
    requested = math.ceil(150_109_880_320 * 0.92)
    assert p.kv_budget_bytes_per_gpu == requested - 8_030_261_248 * 2 - 4 * GIB
    blocks = p.kv_budget_bytes_per_gpu // (16 * 131_072)
    assert p.num_blocks == blocks
    assert p.max_concurrent_seqs == (blocks - 1) // 512  # one null block held back; 8192 / 16 = 512 per seq


def test_default_utilization_is_vllm_032s():
    assert memory.DEFAULT_GPU_MEMORY_UTILIZATION == 0.92
    src = VLLM_SRC / "config" / "cache.py"
    if src.exists():
        assert re.search(r"gpu_memory_utilization: float = Field\(default=0\.92", src.read_text())


def test_draft_tp_other_than_target_tp_is_reported_as_vllm_error():
    p = plan_memory("Llama-3.1-70B", "Llama-3.1-8B", gpu="H100-SXM", num_gpus=2, tp=2, draft_tp=1,
                    target_precision="int8", context_len=8192)
    assert any("draft_tensor_parallel_size=1" in e for e in p.vllm_errors)
    same = plan_memory("Llama-3.1-70B", "Llama-3.1-8B", gpu="H100-SXM", num_gpus=2, tp=2,
                       target_precision="int8", context_len=8192)
    assert same.draft_tp == 2 and not same.vllm_errors
    src = VLLM_SRC / "v1" / "spec_decode" / "draft_model.py"
    if src.exists():
        assert "_raise_if_draft_tp_mismatch" in src.read_text()


def test_qwen_small_draft_for_large_target_reports_vocab_mismatch():
    p = plan_memory("Qwen2.5-72B", "Qwen2.5-0.5B", gpu="H200", num_gpus=2, tp=2, context_len=8192)
    assert any("use_heterogeneous_vocab" in e for e in p.vllm_errors)


def test_rules_of_thumb_are_findings_with_numbers():
    p = plan_memory("Llama-3.1-70B", "Llama-3.1-8B", gpu="H100-SXM", num_gpus=2, tp=2, context_len=8192,
                    overhead=FIXED_OVERHEAD)
    assert p.target_weights_fraction_of_memory == pytest.approx(weight_bytes(
        get_model("Llama-3.1-70B"), get_precision("bf16"), 2) / 85_017_493_504)
    assert p.target_weights_fraction_of_memory > 0.70
    text = " ".join(p.findings)
    assert "70% rule" in text and "15% rule" in text and "%" in text
    assert not p.fits


def test_draft_share_rule_is_of_the_memory_vllm_may_use():
    # 8B BF16 draft at TP 2 next to a 70B INT8 target: 16.06 GB / 2 per GPU against 0.92 x 85,017,493,504 bytes.
    p = plan_memory("Llama-3.1-70B", "Llama-3.1-8B", gpu="H100-SXM", num_gpus=2, tp=2, context_len=8192,
                    target_precision="int8", draft_precision="bf16", overhead=FIXED_OVERHEAD)
    draft_per_gpu = weight_bytes(get_model("Llama-3.1-8B"), get_precision("bf16"), 2)
    assert p.draft_weights_fraction_of_usable == pytest.approx(draft_per_gpu / (0.92 * 85_017_493_504), rel=1e-6)
    assert 0.09 < p.draft_weights_fraction_of_usable < 0.12   # within the source's 15 % rule
    assert any("within the source's 15% rule" in f for f in p.findings)


def test_plan_to_dict_is_json():
    p = plan_memory("Qwen2.5-7B", "Qwen2.5-0.5B", gpu="L40S", num_gpus=1, tp=1, context_len=4096)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["kv_capacity_tokens"] == p.kv_capacity_tokens and isinstance(d["findings"], list)


def test_default_batch_limits_follow_vllm_arg_utils():
    assert memory.default_batch_limits(get_gpu("H100-SXM")) == (8192, 1024)
    assert memory.default_batch_limits(get_gpu("B200")) == (16384, 1024)
    assert memory.default_batch_limits(get_gpu("A100-80GB")) == (2048, 256)


# ---- bad input -------------------------------------------------------------------------------------------

BASE = dict(gpu="H100-SXM", num_gpus=2, tp=2, context_len=4096)


@pytest.mark.parametrize("util", [0, -0.1, 1.01, 2])
def test_utilization_outside_0_1_is_refused(util):
    with pytest.raises(ValueError, match=r"gpu_memory_utilization=.*\(0, 1\]"):
        plan_memory("Llama-3.1-8B", None, gpu_memory_utilization=util, **BASE)


def test_utilization_of_exactly_one_is_accepted():
    plan_memory("Llama-3.1-8B", None, gpu_memory_utilization=1.0, **BASE)


@pytest.mark.parametrize("field,value", [("num_gpus", 0), ("num_gpus", -2), ("tp", 0), ("context_len", 0),
                                         ("context_len", -5), ("block_size", 0)])
def test_zero_or_negative_sizes_are_refused(field, value):
    kw = {**BASE, field: value}
    with pytest.raises(ValueError, match=f"{field}={value}"):
        plan_memory("Llama-3.1-8B", None, **kw)


def test_tp_not_dividing_heads_names_accepted_values():
    with pytest.raises(ValueError, match=r"tp=3: .*64 attention heads; accepted: \[1, 2, 4, 8"):
        plan_memory("Llama-3.1-70B", None, gpu="H100-SXM", num_gpus=3, tp=3, context_len=4096)


def test_qwen_half_b_cannot_run_at_tp_4():
    with pytest.raises(ValueError, match=r"draft_tp=4: .*14 attention heads"):
        plan_memory("Qwen2.5-72B", "Qwen2.5-0.5B", gpu="H100-SXM", num_gpus=4, tp=4, context_len=4096)


def test_num_gpus_not_multiple_of_tp_is_refused():
    with pytest.raises(ValueError, match=r"num_gpus=3: expected a multiple of tp=2"):
        plan_memory("Llama-3.1-8B", None, gpu="H100-SXM", num_gpus=3, tp=2, context_len=4096)


def test_context_longer_than_model_maximum_is_refused():
    with pytest.raises(ValueError, match=r"context_len=16384: .*max_position_embeddings=8192.*1\.\.8192"):
        plan_memory("Llama-3-70B", None, gpu="H200", num_gpus=2, tp=2, context_len=16384)


def test_unknown_names_in_plan_suggest_close_names():
    with pytest.raises(ValueError, match=r"did you mean.*H200"):
        plan_memory("Llama-3.1-8B", None, gpu="H20", num_gpus=1, tp=1, context_len=4096)
    with pytest.raises(ValueError, match=r"did you mean.*Qwen2.5-7B"):
        plan_memory("Qwen2.5-6B", None, gpu="H200", num_gpus=1, tp=1, context_len=4096)


def test_bad_kv_cache_dtype_and_budget_are_refused():
    with pytest.raises(ValueError, match=r"kv_cache_dtype='int2'"):
        plan_memory("Llama-3.1-8B", None, kv_cache_dtype="int2", **BASE)
    with pytest.raises(ValueError, match=r"kv_budget_bytes=-1"):
        kv_capacity_tokens(-1, [tiny()], 2, 128)
    with pytest.raises(ValueError, match=r"block_size=0"):
        kv_capacity_tokens(GIB, [tiny()], 2, 0)


def test_precision_weight_bytes_refuses_negative():
    with pytest.raises(ValueError, match="n_params=-1"):
        get_precision("bf16").weight_bytes(-1)


# ---- against vLLM's own block arithmetic (its code, run in the vLLM virtual environment) -------------------

_VLLM_SIDE = r'''
import json, sys, types
import torch
from vllm.config.cache import _layout_from_name
from vllm.v1.core import kv_cache_utils as k
from vllm.v1.kv_cache_interface import FullAttentionSpec

def config(max_model_len, layout):
    cache = types.SimpleNamespace(num_gpu_blocks_override=None, prefix_cache_retention_interval=None,
                                  get_resolved_kv_cache_layout=lambda: _layout_from_name(layout))
    return types.SimpleNamespace(
        cache_config=cache, scheduler_config=types.SimpleNamespace(disable_hybrid_kv_cache_manager=False),
        attention_config=types.SimpleNamespace(hisparse_config=None), num_prefill_lookahead_tokens=0,
        model_config=types.SimpleNamespace(max_model_len=max_model_len, original_max_model_len=max_model_len),
        parallel_config=types.SimpleNamespace(tensor_parallel_size=1, decode_context_parallel_size=1),
        device_config=types.SimpleNamespace(device_type="cpu"), speculative_config=None)

out = []
for case in json.load(sys.stdin):
    specs = {}
    for i, (layers, kv_heads, head_dim) in enumerate(case["models"]):
        for layer in range(layers):
            specs[f"model{i}.layers.{layer}.attn"] = FullAttentionSpec(
                block_size=case["block_size"], num_kv_heads=kv_heads, head_size=head_dim, dtype=torch.bfloat16)
    cfg = config(case["max_model_len"], case["layout"])
    kv_config = k.get_kv_cache_configs(cfg, [specs], [case["budget"]])[0]
    out.append(k.get_kv_cache_capacity(cfg, kv_config)[0])
print(json.dumps(out))
'''


@pytest.mark.vllm
def test_kv_capacity_agrees_with_vllms_own_block_arithmetic(vllm_venv):
    """vLLM 0.32's get_kv_cache_configs + get_kv_cache_capacity (the code behind the startup line), fed the
    layer specs of target + draft, against kv_capacity_tokens: same figure for mixed shapes, block sizes,
    max_model_len not a block multiple, and both KV cache layouts."""
    import random
    import subprocess

    from specdec_lib import localserver

    rng = random.Random(20261125)
    cases, expected = [], []
    while len(cases) < 60:
        shapes = [(rng.choice([1, 2, 4, 32]), rng.choice([1, 2, 8]), rng.choice([32, 64, 128]))]
        if rng.random() < 0.7:
            shapes.append((rng.choice([1, 2, 3]), rng.choice([1, 2, 4]), rng.choice([32, 64, 128])))
        block_size, max_model_len = rng.choice([16, 32, 128]), rng.choice([100, 500, 512, 1000, 4096])
        models = [model_from_hf_config({**TINY, "num_hidden_layers": L, "num_attention_heads": 8,
                                        "num_key_value_heads": kv, "head_dim": hd}, name="t") for L, kv, hd in shapes]
        per_block = memory.bytes_per_block(models, 2, block_size)
        blocks_per_request = -(-max_model_len // block_size)
        budget = rng.randint((blocks_per_request + 2) * per_block, 2**31)  # room for one request (vLLM checks)
        cases.append({"models": shapes, "block_size": block_size, "max_model_len": max_model_len, "budget": budget,
                      "layout": rng.choice(["LBHNC", "BLHNC"])})
        expected.append(kv_capacity_tokens(budget, models, 2, block_size, max_model_len=max_model_len))
    result = subprocess.run([str(localserver.venv_python(vllm_venv)), "-c", _VLLM_SIDE], input=json.dumps(cases),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


# ---- display edges ------------------------------------------------------------------------------------------


def test_display_converts_at_the_edge_only():
    from specdec_lib import display

    assert display.format_gib(85_017_493_504) == "79.2 GiB"  # 85,017,493,504 / 2**30 = 79.18
    assert display.format_gb(85_017_493_504) == "85.0 GB"
    assert display.format_ms(0.0125) == "12.5 ms"
    assert display.format_count(2_097_152) == "2,097,152"
    assert display.format_params(70_553_706_496) == "70.55B"
    assert display.format_ratio(70_553_706_496 / 8_030_261_248) == "1:8.8"


def test_gpus_beyond_tp_are_independent_replicas():
    one = plan_memory("Llama-3.1-8B", "Llama-3.2-1B", gpu="H100-SXM", num_gpus=1, tp=1, context_len=8192)
    four = plan_memory("Llama-3.1-8B", "Llama-3.2-1B", gpu="H100-SXM", num_gpus=4, tp=1, context_len=8192)
    assert four.replicas == 4
    assert four.max_concurrent_seqs == one.max_concurrent_seqs  # per replica
    assert four.kv_budget_bytes_per_gpu == one.kv_budget_bytes_per_gpu


def test_awq_group_that_does_not_divide_the_tp_shard_is_reported():
    # Qwen2.5-72B: intermediate 29,568 / 8 = 3,696, not a multiple of 128 (the official AWQ release pads it).
    p = plan_memory("Qwen2.5-72B", None, gpu="H100-SXM", num_gpus=8, tp=8, target_precision="int4-awq",
                    context_len=8192)
    assert any("intermediate_size 29568 / TP 8" in e for e in p.vllm_errors)
    tp1 = plan_memory("Qwen2.5-72B", None, gpu="H200", num_gpus=1, tp=1, target_precision="int4-awq",
                      context_len=8192)
    assert not tp1.vllm_errors  # 29,568 = 231 x 128
    padded = model_from_hf_config({**TINY, "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 29696,
                                   "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
                                   "model_type": "qwen2"}, name="Qwen2.5-72B-Instruct-AWQ (padded)")
    p8 = plan_memory(padded, None, gpu="H100-SXM", num_gpus=8, tp=8, target_precision="int4-awq", context_len=2048)
    assert not p8.vllm_errors  # 29,696 / 8 = 3,712 = 29 x 128
