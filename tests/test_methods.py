"""Every method planned alike: a published EAGLE-3 head's memory by hand arithmetic and by vLLM's own KV-cache code,
its cost model, the published priors as priors, and the comparison on the default 70B scenario."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest

from specdec_lib import catalog, load, localserver, memory, methods, methods_priors, speculation
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.scenario import DEFAULT_SCENARIO, RequestClass

EAGLE3_8B = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"
GIB, MIB = 2**30, 2**20


def test_eagle3_head_weights_per_gpu_by_hand():
    # yuhuili/EAGLE3-LLaMA3.1-Instruct-8B (config.json: hidden 4096, MLP 14336, 32 heads, 8 KV heads, head_dim 128,
    # draft vocabulary 32000 of 128256), in bf16, as vLLM 0.32's llama_eagle3.py builds it:
    #   TP 1: 424,689,664 parameters x 2 bytes            = 849,379,328
    #         + d2t: 32,000 int64 entries x 8 bytes        =     256,000   -> 849,635,328
    #   TP 2: qkv 2h x (q/2 + 2 kv/2) = 8192 x 3072        =  25,165,824
    #         o_proj q/2 x h = 2048 x 4096                  =   8,388,608
    #         MLP 3 x 4096 x 7168                           =  88,080,384
    #         norms 3 x 4096 (replicated) + final 4096      =      16,384
    #         fc 3h x h, ReplicatedLinear (whole per GPU)   =  50,331,648
    #         lm_head 32000 / 2 x 4096                      =  65,536,000
    #         sum 237,518,848 x 2 bytes + d2t 256,000       = 475,293,696
    assert methods.head_weight_bytes(EAGLE3_8B, 1) == 849_635_328
    assert methods.head_weight_bytes(EAGLE3_8B, 2) == 475_293_696
    # Its one layer's KV cache: 2 (K, V) x 1 layer x 8 KV heads x 128 x 2 bytes = 4,096 per token (TP 2: 2,048).
    assert methods.head_kv_bytes_per_token(EAGLE3_8B, 2, 1) == 4096
    assert methods.head_kv_bytes_per_token(EAGLE3_8B, 2, 2) == 2048


def _eagle3_on_8b():
    return methods.method_memory("eagle3", "meta-llama/Llama-3.1-8B", drafter=EAGLE3_8B, gpu="H100-SXM", num_gpus=1,
                                 tp=1, context_len=8192)


def test_eagle3_head_kv_capacity_by_hand():
    m = _eagle3_on_8b()
    base = memory.plan_memory("meta-llama/Llama-3.1-8B", None, gpu="H100-SXM", num_gpus=1, tp=1, context_len=8192)
    # Budget: the plan without speculation, minus the head's weights and one more CUDA-graph set (512 MiB).
    budget = base.kv_budget_bytes_per_gpu - 849_635_328 - 512 * MIB
    assert m.kv_budget_bytes_per_gpu == budget
    # One 16-token block holds every layer of both: target 2 x 32 x 8 x 128 x 2 = 131,072 B/token + head 4,096.
    blocks = budget // (16 * (131_072 + 4_096))
    assert m.kv_capacity_tokens == blocks * 16  # 8192 is a multiple of 16
    assert m.kv_capacity_tokens_without == base.kv_capacity_tokens
    assert m.kv_tokens_taken == base.kv_capacity_tokens - blocks * 16 > 0
    assert m.max_concurrent_seqs == (blocks - 1) // 512


_VLLM_KV_SPEC = r'''
import json, sys, torch
from vllm.engine.arg_utils import EngineArgs
from vllm.v1.attention.backends.utils import resolve_kv_cache_layout
from vllm.v1.core import kv_cache_utils as u
from vllm.v1.kv_cache_interface import FullAttentionSpec
case = json.loads(sys.stdin.read())
cfg = EngineArgs(model=case["target_dir"], max_model_len=case["max_model_len"], block_size=case["block_size"],
                 speculative_config={"method": "eagle3", "model": case["head_dir"], "num_speculative_tokens": 3}
                 ).create_engine_config()
def spec(n):
    return FullAttentionSpec(block_size=case["block_size"], num_kv_heads=n, head_size=case["head_dim"],
                             dtype=torch.bfloat16)
# The head's attention layer registers after the target's (llama_eagle3.py: start_layer_id = target layers).
layers = {f"model.layers.{i}.self_attn.attn": spec(case["kv_heads"]) for i in range(case["target_layers"])}
layers[f"model.layers.{case['target_layers']}.self_attn.attn"] = spec(case["head_kv_heads"])
resolve_kv_cache_layout(cfg, [["NHD"]], layers.values())
groups = u.get_kv_cache_groups(cfg, layers)
kc = u.get_kv_cache_config_from_groups(cfg, groups, case["available_memory"])
print("RESULT " + json.dumps({"groups": len(groups), "num_blocks": kc.num_blocks,
                              "tokens": u.get_kv_cache_capacity(cfg, kc)[0]}))
'''


def test_eagle3_head_kv_capacity_equals_vllms_own_kv_cache_code(tmp_path):
    """vLLM's grouping (get_kv_cache_groups), block count (get_kv_cache_config_from_groups) and startup figure
    (get_kv_cache_capacity) for Llama-3.1-8B's 32 layers + the head's one, on the same budget."""
    m = _eagle3_on_8b()
    target = catalog.get_model("meta-llama/Llama-3.1-8B")
    head = catalog.get_drafter(EAGLE3_8B)
    (tmp_path / "t").mkdir()
    (tmp_path / "h").mkdir()
    (tmp_path / "t" / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
        "max_position_embeddings": 131072, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5}))
    (tmp_path / "h" / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "draft_vocab_size": 32000, "torch_dtype": "bfloat16",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}))
    case = {"target_dir": str(tmp_path / "t"), "head_dir": str(tmp_path / "h"), "max_model_len": 8192,
            "block_size": 16, "target_layers": target.num_layers, "kv_heads": target.num_kv_heads,
            "head_kv_heads": head.num_kv_heads, "head_dim": head.head_dim,
            "available_memory": m.kv_budget_bytes_per_gpu}
    python = localserver.venv_python(localserver.default_venv_path())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
    proc = subprocess.run([str(python), "-c", _VLLM_KV_SPEC], input=json.dumps(case), capture_output=True, text=True,
                          timeout=300, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    vllm = json.loads(lines[-1][len("RESULT "):])
    assert vllm["groups"] == 1  # target and head share one KV-cache group
    assert vllm["tokens"] == m.kv_capacity_tokens
    assert vllm["num_blocks"] * 16 == m.kv_capacity_tokens


def test_head_cost_model_folds_fc_and_wide_qkv_exactly():
    head = catalog.get_drafter(EAGLE3_8B)
    cost = methods.head_cost_model(head)
    h, q, kv = 4096, 4096, 1024
    linear = h * q + 2 * h * kv + q * h + 3 * h * cost.intermediate_size  # what load.py counts for one layer
    assert cost.intermediate_size == 14336 + 4096 + (4096 + 2048) // 3 == 20480
    # = the head's layer (2h-wide qkv) + fc (3h x h), i.e. params - lm_head - norms:
    assert linear == head.params - 32000 * h - 4 * h
    assert cost.vocab_size == 32000
    step = methods.head_step_time(head, gpu="H100-SXM", batch_size=1, context_len=512)
    same = load.step_time_s(cost, catalog.get_precision("bf16"), catalog.get_gpu("H100-SXM"), 1, 1, 1, 512)
    assert step.total_s == same


def test_parallel_drafting_is_one_pass_instead_of_k():
    dep = methods.deployment("eagle3", "meta-llama/Llama-3.1-8B", gpu="H100-SXM", tp=1, drafter=EAGLE3_8B)
    k = 4
    sequential = methods.draft_round_s(dep, 1, k, 512)
    parallel = methods.draft_round_s(dep, 1, k, 512, parallel_drafting=True)
    one = methods.head_step_time(EAGLE3_8B, gpu="H100-SXM", batch_size=1, context_len=512).total_s
    assert sequential == pytest.approx(k * one)
    assert parallel == methods.head_step_time(EAGLE3_8B, gpu="H100-SXM", batch_size=1, context_len=512,
                                              tokens_per_seq=2 * k).total_s
    assert parallel < sequential


def test_published_priors_are_priors_with_their_conversion():
    rows = methods_priors.prior_rows()
    assert rows and all(r.estimate.source == "prior" and r.estimate.origin for r in rows)
    eagle3_k4 = [r for r in rows if r.estimate.method == "eagle3" and r.estimate.k == 4 and r.value == "3.08"]
    assert len(eagle3_k4) == 1
    e = eagle3_k4[0].estimate
    # AL 3.08 at k = 4 (vllm#20780): alpha with (1 - a^5) / (1 - a) = 3.08
    assert speculation.expected_tokens_per_step(e.alpha, 4) == pytest.approx(3.08, abs=1e-6)
    assert "vllm-project/vllm#20780" in e.origin and "mean acceptance length 3.08 at k = 4" in e.origin
    gemma = [r for r in rows if r.estimate.method == "gemma4_mtp"][0]
    assert gemma.mean_acceptance_length == pytest.approx(1 + 0.84 + 0.60 + 0.39 + 0.27)
    match = methods_priors.best_prior("draft_model", "meta-llama/Llama-3.1-70B-Instruct", temperature=0.7)
    assert match.estimate.temperature == 0.8 and match.estimate.alpha == 0.52  # nearest published temperature


def test_default_70b_scenario_compares_draft_eagle3_and_ngram_with_reasons():
    c = methods.compare_methods(DEFAULT_SCENARIO)
    f = c.frame()
    assert {"draft_model", "eagle3", "ngram", "suffix"} <= set(f["method"])
    eagle3 = c.row("eagle3")
    assert not eagle3.applies and "no EAGLE-3 head for meta-llama/Llama-3.1-70B-Instruct" in eagle3.why_not
    draft, ngram = c.row("draft_model"), c.row("ngram")
    assert draft.applies and ngram.applies
    # The draft model's KV cost is plan_memory's, independently recomputed here.
    plan = memory.plan_memory(DEFAULT_SCENARIO.target_model, DEFAULT_SCENARIO.draft_model, gpu="H100-SXM", num_gpus=2,
                              tp=2, draft_tp=2, target_precision="int8", context_len=8192)
    assert draft.kv_tokens_taken == plan.kv_capacity_tokens_without_draft - plan.kv_capacity_tokens > 0
    assert ngram.kv_tokens_taken == 0 and ngram.extra_weights_bytes_per_gpu == 0
    # Nothing here is measured: every acceptance says it is a published prior.
    assert all(r.acceptance.startswith("published prior") for r in c.rows if r.applies)
    # The speedup at QPS is load.py's, recomputed directly for the pick.
    best = c.row(c.best)
    dep = methods.deployment(best.method, DEFAULT_SCENARIO.target_model, gpu="H100-SXM", tp=2,
                             target_precision="int8", draft_model=best.drafter if best.method == "draft_model"
                             else None)
    direct = load.speedup_at_qps(dep, 1.0, load.Workload(512, 256), best.alpha, best.k, max_batch=best.max_batch)
    assert best.speedup_at_qps == pytest.approx(direct.speedup)
    assert best.speedup_at_qps == max(r.speedup_at_qps for r in c.rows if r.speedup_at_qps is not None) or \
        best.method in ("ngram", "suffix")
    text = "\n".join(c.reasons)
    assert c.best in text and "eagle3: no EAGLE-3 head" in text
    assert "measure it on your prompts" in text  # the pick rests on a borrowed prior


def test_measured_acceptance_beats_priors_and_changes_the_pick():
    measured = AcceptanceEstimate(alpha=0.95, source="measured", method="draft_model", temperature=0.7,
                                  target_model="meta-llama/Llama-3.1-70B-Instruct", origin="run test-1")
    poor_ngram = AcceptanceEstimate(alpha=0.05, source="predicted", method="ngram", temperature=0.7,
                                    origin="oracle on the user's prompts")
    c = methods.compare_methods(DEFAULT_SCENARIO, estimates=[measured, poor_ngram])
    assert c.row("draft_model").acceptance == "measured" and c.row("draft_model").alpha == 0.95
    assert c.row("ngram").acceptance == "predicted"
    assert c.best in ("draft_model", "suffix")
    assert c.row("draft_model").speedup_at_qps > methods.compare_methods(DEFAULT_SCENARIO).row(
        "draft_model").speedup_at_qps


def test_eagle3_applies_to_llama_8b_with_its_head_and_same_target_prior():
    s = dataclasses.replace(DEFAULT_SCENARIO, target_model="meta-llama/Llama-3.1-8B-Instruct", draft_model=None,
                            method="none", target_precision="bf16", num_gpus=1, tensor_parallel_size=1,
                            draft_tensor_parallel_size=1,
                            workload=(RequestClass("chat", 1.0, 0.0, 512, 256),))
    c = methods.compare_methods(s)
    row = c.row("eagle3")
    assert row.applies and row.drafter == EAGLE3_8B
    assert row.acceptance == "published prior (same target and drafter)"
    assert row.extra_weights_bytes_per_gpu == 849_635_328
    assert '"method":"eagle3"' in row.command and EAGLE3_8B in row.command
    assert c.row("draft_model").why_not == "no draft model named in the scenario"


def test_a_scenarios_own_head_from_its_config_json_is_compared(tmp_path):
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "config.json").write_text(json.dumps({  # the flat EAGLE-3 form of the same head
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 1, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "draft_vocab_size": 32000}))
    s = dataclasses.replace(DEFAULT_SCENARIO, target_model="meta-llama/Llama-3.1-8B-Instruct",
                            draft_model=str(tmp_path / "head"), method="eagle3", target_precision="bf16",
                            num_gpus=1, tensor_parallel_size=1, draft_tensor_parallel_size=1)
    c = methods.compare_methods(s)
    rows = [r for r in c.rows if r.method == "eagle3"]
    assert [r.drafter for r in rows] == [str(tmp_path / "head"), EAGLE3_8B]
    assert rows[0].extra_weights_bytes_per_gpu == rows[1].extra_weights_bytes_per_gpu == 849_635_328


def test_cli_methods_prints_the_comparison_as_json(capsys):
    from specdec_lib import cli

    assert cli.main(["methods", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    direct = methods.compare_methods(DEFAULT_SCENARIO)
    assert out["best"] == direct.best and out["reasons"] == list(direct.reasons)
    assert [r["method"] for r in out["rows"]] == [r.method for r in direct.rows]
    assert cli.main(["methods", "--scenario", "/no/such/scenario.toml"]) == 2


def test_a_method_the_planner_cannot_model_costs_only_its_row():
    # Qwama-0.5B has 14 attention heads: no TP 4 (vLLM refuses it; memory.check_tp says so).
    s = dataclasses.replace(DEFAULT_SCENARIO, draft_model="turboderp/Qwama-0.5B-Instruct", num_gpus=4,
                            tensor_parallel_size=4, draft_tensor_parallel_size=4)
    c = methods.compare_methods(s)
    draft = c.row("draft_model")
    assert not draft.applies and "not planned" in draft.why_not and "14 attention heads" in draft.why_not
    assert c.row("ngram").speedup_at_qps is not None
    assert any(line.startswith("draft_model: not planned") for line in c.reasons)
