"""The source's tables (quantization rows for 70B + 8B, draft pairings), reproduced by the library."""

from __future__ import annotations

import math

import pytest

from specdec_lib import catalog, memory
from specdec_lib.memory import Overhead, source_quantization_table

GIB = 1024**3
RESERVE = Overhead(activation_peak_bytes=2 * GIB, non_torch_bytes=GIB, cudagraph_bytes=GIB, source="test")

# Written out by hand from the configs (see test_memory for the derivations):
LINEAR_70B = 80 * (2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672)  # 68,451,041,280 quantizable
REST_70B = 161 * 8192 + 2 * 128256 * 8192  # norms + embedding + lm_head: stay 16-bit
LINEAR_8B = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)  # 6,979,321,856
REST_8B = 65 * 4096 + 2 * 128256 * 4096
BYTES = {  # whole-model weight bytes per precision
    ("70B", "bf16"): (LINEAR_70B + REST_70B) * 2,
    ("70B", "int8"): LINEAR_70B + REST_70B * 2,
    ("70B", "int4-awq"): LINEAR_70B // 2 + LINEAR_70B // 128 * 5 // 2 + REST_70B * 2,
    ("8B", "bf16"): (LINEAR_8B + REST_8B) * 2,
    ("8B", "int8"): LINEAR_8B + REST_8B * 2,
    ("8B", "int4-awq"): LINEAR_8B // 2 + LINEAR_8B // 128 * 5 // 2 + REST_8B * 2,
}
ROWS = [("bf16", "bf16"), ("int8", "bf16"), ("int8", "int8"), ("int4-awq", "bf16"), ("int4-awq", "int4-awq")]


def per_gpu_bytes(linear, rest_sharded, norms, bits, tp, grouped):
    """Weights of one TP rank: linear and embeddings split over tp, norms replicated."""
    lin = linear // tp
    data = lin * bits // 8 + (lin // 128 * 5 // 2 if grouped else 0)
    return data + (rest_sharded // tp + norms) * 2


def expected_row(gpu_memory_bytes, tprec, dprec, tp=2, context_len=8192):
    bits = {"bf16": 16, "int8": 8, "int4-awq": 4}
    t = per_gpu_bytes(LINEAR_70B, 2 * 128256 * 8192, 161 * 8192, bits[tprec], tp, tprec == "int4-awq")
    d = per_gpu_bytes(LINEAR_8B, 2 * 128256 * 4096, 65 * 4096, bits[dprec], tp, dprec == "int4-awq")
    budget = math.ceil(gpu_memory_bytes * 0.92) - t - d - 4 * GIB
    per_token = 2 * 80 * (8 // tp) * 128 * 2 + 2 * 32 * (8 // tp) * 128 * 2
    blocks = max(0, budget) // (16 * per_token)
    seqs = max(0, blocks - 1) // (context_len // 16)
    return budget * tp, blocks * 16, seqs


def test_weights_column_by_hand():
    assert BYTES[("70B", "bf16")] == 141_107_412_992  # source: ~140 GB
    assert BYTES[("70B", "int8")] == 72_656_371_712  # source: ~70 GB (embeddings + lm_head stay 16-bit)
    assert BYTES[("70B", "int4-awq")] == 39_767_785_472  # source: ~35 GB
    assert BYTES[("8B", "bf16")] == 16_060_522_496  # source: ~16 GB
    for row in source_quantization_table("H100-SXM", 2, overhead=RESERVE):
        assert row.target_weights_bytes == BYTES[("70B", row.target_precision)]
        assert row.draft_weights_bytes == BYTES[("8B", row.draft_precision)]


@pytest.mark.parametrize("gpu,memory_bytes", [("H100-SXM", 85_017_493_504), ("H200", 150_109_880_320)])
def test_quantization_table_left_for_kv_cache_by_hand(gpu, memory_bytes):
    rows = source_quantization_table(gpu, 2, overhead=RESERVE)
    assert [(r.target_precision, r.draft_precision) for r in rows] == ROWS
    for r in rows:
        budget_total, tokens, seqs = expected_row(memory_bytes, r.target_precision, r.draft_precision)
        assert r.kv_budget_bytes == budget_total
        assert r.kv_capacity_tokens == tokens
        assert r.max_concurrent_seqs == seqs
        assert r.fits == (seqs >= 1)


def test_h100_fits_column_agrees_with_the_source():
    rows = source_quantization_table("H100-SXM", 2, overhead=RESERVE)
    assert [r.fits for r in rows] == [False, True, True, True, True]
    assert [r.source_fits for r in rows] == [False, True, True, True, True]


def test_source_naive_arithmetic_versus_library():
    bf16, int8 = source_quantization_table("H100-SXM", 2, overhead=RESERVE)[:2]
    # The source's method: 2 x 80 GB - weights. Its ~4 GB and ~74 GB become 2.8 GB and 71.3 GB with exact weights,
    assert bf16.naive_left_bytes == 160 * 10**9 - 141_107_412_992 - 16_060_522_496
    assert int8.naive_left_bytes == 160 * 10**9 - 72_656_371_712 - 16_060_522_496
    # and what vLLM can use for KV cache is less again: utilization, driver-reported memory, the reserve.
    assert int8.kv_budget_bytes < int8.naive_left_bytes - 10 * 10**9
    assert bf16.kv_budget_bytes < 0


def test_h200_bf16_headroom_is_less_than_the_source_says():
    row = source_quantization_table("H200", 2, overhead=RESERVE)[0]
    assert row.source_left_gb == 126
    budget_total, _, _ = expected_row(150_109_880_320, "bf16", "bf16")
    assert row.kv_budget_bytes == budget_total < 126 * 10**9


def test_pairing_table_reproduces_the_source_rows():
    rows = catalog.pairing_table()
    got = [(p.draft.split("/")[-1], p.target.split("/")[-1], round(p.ratio, 1), p.verdict) for p in rows]
    assert got == [
        ("Llama-3.1-8B", "Llama-3.1-70B", round(70_553_706_496 / 8_030_261_248, 1), "in the 1:8-1:12 band"),
        ("Qwen2.5-7B", "Qwen2.5-72B", round(72_706_203_648 / 7_615_616_512, 1), "in the 1:8-1:12 band"),
        ("Llama-3.2-1B", "Llama-3.1-70B", round(70_553_706_496 / 1_235_814_400, 1), "draft too small"),
        ("Llama-3.1-8B", "Llama-3.1-405B", round(405_853_388_800 / 8_030_261_248, 1), "draft too small"),
        ("Qwama-0.5B-Instruct", "Meta-Llama-3-70B", round(70_553_706_496 / 472_815_488, 1), "draft too small"),
    ]


def test_table_default_draft_tp_is_vllm_032s():
    rows = source_quantization_table("H100-SXM", 2)
    assert all(r.plan.draft_tp == 2 and not r.plan.vllm_errors for r in rows[1:])
    v0 = source_quantization_table("H100-SXM", 2, draft_tp=1)
    assert all(any("draft_tensor_parallel_size=1" in e for e in r.plan.vllm_errors) for r in v0)
    assert memory.SOURCE_GPU_MEMORY_UTILIZATION == 0.9
