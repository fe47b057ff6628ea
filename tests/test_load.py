"""The step-time model, speculation under load, Little's law and calibration: hand arithmetic, limits and
consistency, plus the committed H100 calibration data."""

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from specdec_lib import catalog, load, load_qps, speculation

ROOT = Path(__file__).resolve().parents[1]

TOY = catalog.ModelSpec(name="toy", family="toy", tokenizer="toy", num_layers=2, hidden_size=4, intermediate_size=8,
                        num_attention_heads=2, num_kv_heads=1, head_dim=2, vocab_size=10, tie_word_embeddings=False,
                        max_position_embeddings=64, params=0)
TOY_GPU = catalog.GPU(name="toy-gpu", memory_bytes=10 ** 9, bandwidth_bytes_per_s=1000.0, bf16_flops_per_s=1000.0,
                      fp8_flops_per_s=2000.0, int8_ops_per_s=2000.0, interconnect_bytes_per_s=100.0)
HALF = load.StepFactors(memory_efficiency=0.5, compute_efficiency=0.5, overhead_s=1.0, overhead_s_per_layer=0.0,
                        interconnect_efficiency=0.5, allreduce_latency_s=0.25, source="test")

H100 = catalog.get_gpu("H100-SXM")
BF16 = catalog.get_precision("bf16")
L70 = catalog.get_model("meta-llama/Meta-Llama-3-70B")
L8 = catalog.get_model("meta-llama/Llama-3.1-8B")
QWAMA = catalog.get_model("turboderp/Qwama-0.5B-Instruct")


def draft_deployment(**kw):
    args = dict(target=L70, target_precision=BF16, gpu=H100, tp=4, method="draft_model", draft=QWAMA,
                draft_precision=BF16, draft_tp=1)
    args.update(kw)
    return load.Deployment(**args)


# --- one step, by hand -------------------------------------------------------------------------------------------

def test_toy_step_by_hand():
    # linear per layer: q 4*4 + k,v 2*4*2 + o 4*4 + mlp 3*4*8 = 144; 2 layers = 288; lm_head 10*4 = 40
    # weight bytes (bf16): 2*288 + 2*40 + norms 2*(2*2+1)*4 = 576 + 80 + 40 = 696
    # KV: 2 layers * (K,V) * 1 head * 2 dims * 2 bytes = 16 B/token; 3 seqs * (9 + 1) tokens -> 480 B
    # FLOP: 2 * 3 tokens * (288 + 40) = 1968; attention 4 * 2 dims * 2 heads * 2 layers * 3 * 10 = 960
    st = load.step_time_breakdown(TOY, BF16, TOY_GPU, 1, 3, 1, 9, HALF)
    assert st.weight_bytes == 696
    assert st.kv_bytes == 480
    assert st.flops == 1968 + 960
    assert st.memory_s == pytest.approx((696 + 480) / (1000 * 0.5))
    assert st.compute_s == pytest.approx((1968 + 960) / (1000 * 0.5))
    assert st.bound == "compute"
    assert st.communication_s == 0
    assert st.total_s == pytest.approx(5.856 + 1.0)
    assert any("toy" in a for a in st.assumptions)


def test_toy_tensor_parallel_communication_by_hand():
    # tp 2: 3 tokens * 4 hidden * 2 bytes = 24 B per all-reduce; ring 2*(1/2)*24 / (100*0.5) = 0.48 s + 0.25 s latency
    # 2 per layer * 2 layers = 4 * 0.73 = 2.92; logits gather (1/2)*3*10*2 / 50 = 0.6; one more latency 0.25
    st = load.step_time_breakdown(TOY, BF16, TOY_GPU, 2, 3, 1, 9, HALF)
    assert st.communication_s == pytest.approx(4 * (0.48 + 0.25) + 0.6 + 0.25)
    # per GPU: half the linear weights and the lm_head, norms replicated: 576/2 + 80/2 + 40
    assert st.weight_bytes == 288 + 40 + 40
    # the single KV head cannot be split: each GPU keeps it (vLLM replicates KV heads when tp > kv heads)
    assert st.kv_bytes == 480
    no_comm = load.step_time_breakdown(TOY, BF16, TOY_GPU, 2, 3, 1, 9, HALF, include_communication=False)
    assert no_comm.communication_s == 0


def test_weights_read_per_step_are_the_published_parameters_minus_the_input_embedding():
    # Llama-3.1-8B: 8,030,261,248 parameters (safetensors); the input embedding (128256 x 4096) is gathered, not
    # streamed, so a decode step reads 2 bytes x (params - embedding).
    st = load.step_time_breakdown(L8, BF16, H100, 1, 1, 1, 0)
    assert st.weight_bytes == 2 * (8_030_261_248 - 128256 * 4096)


def test_a_single_sequence_on_h100_is_memory_bound_and_near_weights_over_bandwidth():
    st = load.step_time_breakdown(L8, BF16, H100, 1, 1, 1, 1024)
    f = load.DEFAULT_FACTORS
    assert st.bound == "memory"
    assert st.total_s == pytest.approx((st.weight_bytes + st.kv_bytes) / (3.35e12 * f.memory_efficiency)
                                       + f.overhead_s + 32 * f.overhead_s_per_layer)


def test_fp8_uses_the_fp8_tensor_core_rate():
    fp8 = catalog.get_precision("fp8")
    a = load.step_time_breakdown(L8, BF16, H100, 1, 512, 6, 512)
    b = load.step_time_breakdown(L8, fp8, H100, 1, 512, 6, 512)
    assert b.compute_s < a.compute_s and b.weight_bytes < a.weight_bytes


def test_step_time_validates_inputs():
    with pytest.raises(ValueError, match="tp=3"):
        load.step_time_s(L8, BF16, H100, 3, 1, 1, 128)
    with pytest.raises(ValueError, match="batch_size=-1"):
        load.step_time_s(L8, BF16, H100, 1, -1, 1, 128)
    with pytest.raises(ValueError, match="tokens_per_seq=0"):
        load.step_time_s(L8, BF16, H100, 1, 1, 0, 128)
    with pytest.raises(ValueError, match="memory_efficiency=1.5"):
        load.StepFactors(memory_efficiency=1.5, compute_efficiency=0.5, overhead_s=0, overhead_s_per_layer=0)
    with pytest.raises(ValueError, match="draft=None"):
        load.Deployment(target=L70, target_precision=BF16, gpu=H100, tp=4, method="draft_model")


# --- speculation under load --------------------------------------------------------------------------------------

def test_speedup_vs_batch_is_leviathans_formula_with_the_verify_cost_kept():
    dep = draft_deployment()
    r = load.speedup_vs_batch(dep, 0.7, 5, 8, 512)
    e = speculation.expected_tokens_per_step(0.7, 5)
    assert r.expected_tokens == pytest.approx(e)
    # speedup = E / (k c + T_verify / T_target)
    assert r.speedup == pytest.approx(e / (5 * r.c + r.verify_step_s / r.baseline_step_s))
    assert r.c == pytest.approx(load.cost_ratio(dep, 8, 512))
    # a memory-bound verify costs about one ordinary step, so Theorem 3.8 with this c is close
    assert r.speedup == pytest.approx(speculation.speedup(0.7, 5, r.c), rel=0.05)


def test_nothing_accepted_never_pays():
    for dep in (draft_deployment(), draft_deployment(method="ngram", draft=None, draft_precision=None),
                draft_deployment(method="eagle", draft=None, draft_precision=None)):
        for b in (1, 32, 256):
            assert load.speedup_vs_batch(dep, 0.0, 4, b, 512).speedup <= 1.0


def test_free_drafts_all_accepted_at_batch_one_approach_k_plus_one():
    # n-gram with zero proposal cost, alpha = 1: E = k + 1, limited only by the verify step costing a bit more
    dep = draft_deployment(method="ngram", draft=None, draft_precision=None)
    r = load.speedup_vs_batch(dep, 1.0, 4, 1, 512)
    assert r.speedup == pytest.approx(5 * r.baseline_step_s / r.verify_step_s)
    assert 4.5 < r.speedup <= 5.0


def test_speedup_falls_as_the_batch_grows_once_compute_bound():
    dep = draft_deployment()
    batches = [32, 64, 96, 128, 192, 256, 384, 512]
    s = [load.speedup_vs_batch(dep, 0.7, 4, b, 512).speedup for b in batches]
    assert all(a >= b for a, b in zip(s, s[1:]))
    assert s[0] > 1 > s[-1]


def test_crossover_batch_is_where_the_speedup_reaches_one():
    dep = draft_deployment()
    b = load.crossover_batch(dep, 0.7, 4, 512)
    assert b is not None and b > 1
    assert load.speedup_vs_batch(dep, 0.7, 4, b, 512).speedup <= 1 < load.speedup_vs_batch(dep, 0.7, 4, b - 1,
                                                                                             512).speedup
    assert load.crossover_batch(dep, 0.0, 4, 512) == 1


# --- load ---------------------------------------------------------------------------------------------------------

WL = load.Workload(prompt_tokens=256, output_tokens=256)


@pytest.mark.parametrize("speculative", [False, True])
@pytest.mark.parametrize("qps", [0.2, 1.0, 5.0])
def test_littles_law_holds_at_the_solution(qps, speculative):
    dep = draft_deployment()
    r = load.batch_from_qps(dep, qps, WL, speculative=speculative, alpha=0.7, k=4)
    assert not r.saturated
    assert r.batch_size == pytest.approx(qps * r.e2e_s, rel=1e-6)
    pre = load.prefill_time_s(dep, 256)
    assert r.e2e_s == pytest.approx(pre + 256 * r.tpot_s)
    # TPOT is the step time at that batch (stretched by prefill's share of the GPU), per token emitted
    ctx = WL.mean_context_len
    if speculative:
        step = load.spec_step_time(dep, r.batch_size, 4, ctx).total_s / speculation.expected_tokens_per_step(0.7, 4)
    else:
        step = load.step_time_s(L70, BF16, H100, 4, r.batch_size, 1, ctx)
    assert r.tpot_s == pytest.approx(step / (1 - qps * pre))


def test_batch_grows_with_qps_and_saturates_past_capacity():
    dep = draft_deployment()
    batches = [load.batch_from_qps(dep, q, WL, speculative=False).batch_size for q in (0.5, 1, 2, 4, 8)]
    assert batches == sorted(batches)
    cap = load.capacity_qps(dep, WL, speculative=False)
    below = load.batch_from_qps(dep, cap * 0.999, WL, speculative=False)
    above = load.batch_from_qps(dep, cap * 1.01, WL, speculative=False)
    assert not below.saturated and below.batch_size == pytest.approx(256, rel=0.02)
    assert above.saturated and math.isinf(above.e2e_s)


def test_speculation_wins_at_low_qps_and_loses_at_saturation():
    dep = draft_deployment()
    low = load.speedup_at_qps(dep, 1.0, WL, 0.7, 4)
    assert low.speedup > 1
    cap = load.capacity_qps(dep, WL, speculative=False)
    high = load.speedup_at_qps(dep, 1.2 * cap, WL, 0.7, 4)
    assert high.speculative.saturated and high.baseline.saturated
    assert high.speedup == pytest.approx(high.speculative.capacity_qps / high.baseline.capacity_qps)
    assert high.speedup < 1


def test_crossover_qps_brackets_the_sign_change():
    dep = draft_deployment()
    q = load.crossover_qps(dep, WL, 0.7, 4)
    assert q is not None
    assert load.speedup_at_qps(dep, q * 0.98, WL, 0.7, 4).speedup > 1
    assert load.speedup_at_qps(dep, q * 1.02, WL, 0.7, 4).speedup <= 1


# --- sensitivity --------------------------------------------------------------------------------------------------

def test_sensitivity_matches_analytic_elasticities():
    # k = 1: S = (1 + a) / (1 + c); d ln S / d ln a = a / (1 + a); d ln S / d ln c = -c / (1 + c)
    s = load.sensitivity(lambda alpha, c: speculation.speedup(alpha, 1, c), dict(alpha=0.5, c=0.2),
                         integer_inputs=())
    assert s.elasticities["alpha"] == pytest.approx(0.5 / 1.5, rel=1e-3)
    assert s.elasticities["c"] == pytest.approx(-0.2 / 1.2, rel=1e-3)
    assert s.most_sensitive == "alpha"
    assert s.value == pytest.approx(1.5 / 1.2)


def test_sensitivity_under_load_names_the_batch_when_compute_bound():
    dep = draft_deployment()
    s = load.sensitivity(lambda alpha, k, batch_size: load.speedup_vs_batch(dep, alpha, k, batch_size, 512).speedup,
                         dict(alpha=0.7, k=4, batch_size=256.0))
    assert set(s.elasticities) == {"alpha", "k", "batch_size"}
    assert s.elasticities["batch_size"] < 0
    assert s.most_sensitive in s.elasticities


# --- calibration -------------------------------------------------------------------------------------------------

def _synthetic_sweep(model, factors, concurrencies, prompt=512, completion=256):
    ctx = prompt + completion // 2
    recs = []
    for c in concurrencies:
        t = load.step_time_s(model, BF16, H100, 1, c, 1, ctx, factors)
        for i in range(3):
            recs.append({"index": len(recs), "concurrency": c, "tpot_s": t, "prompt_tokens": prompt,
                         "completion_tokens": completion, "error": None})
    recs.append({"index": len(recs), "concurrency": 8, "tpot_s": None, "error": "timeout"})  # skipped
    return recs


def test_fit_from_latency_sweep_recovers_known_factors():
    truth = load.StepFactors(memory_efficiency=0.72, compute_efficiency=0.52, overhead_s=0.003,
                             overhead_s_per_layer=0.0, source="truth")
    # short requests so the largest batches are compute-bound (otherwise eta_compute is invisible)
    recs = _synthetic_sweep(L8, truth, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], prompt=64, completion=64)
    assert load.step_time_breakdown(L8, BF16, H100, 1, 1024, 1, 96, truth).bound == "compute"
    fit = load.fit_from_latency_sweep(recs, model=L8, precision=BF16, gpu=H100, tp=1)
    f = fit.factors
    assert f.memory_efficiency == pytest.approx(0.72, abs=0.005)
    assert f.compute_efficiency == pytest.approx(0.52, abs=0.005)
    assert f.overhead_s == pytest.approx(0.003, rel=0.05)
    assert fit.median_abs_pct_error < 0.01
    assert "overhead_s_per_layer" not in fit.fitted


def test_fit_keeps_the_prior_compute_efficiency_when_no_step_is_compute_bound():
    truth = load.StepFactors(memory_efficiency=0.7, compute_efficiency=0.3, overhead_s=0.002,
                             overhead_s_per_layer=0.0, source="truth")
    recs = _synthetic_sweep(L8, truth, [1, 2, 4, 8, 16], prompt=2048, completion=256)
    prior = replace(load.DEFAULT_FACTORS, compute_efficiency=0.55)
    fit = load.fit_from_latency_sweep(recs, model=L8, precision=BF16, gpu=H100, tp=1, prior=prior)
    assert fit.factors.memory_efficiency == pytest.approx(0.7, abs=0.005)
    assert fit.factors.compute_efficiency == pytest.approx(0.55, abs=0.005)


def test_fit_tells_fixed_from_per_layer_overhead_with_two_depths():
    truth = load.StepFactors(memory_efficiency=0.8, compute_efficiency=0.5, overhead_s=0.001,
                             overhead_s_per_layer=50e-6, source="truth")
    obs = [load.StepObservation(model=m, precision=BF16, gpu=H100, tp=1, batch_size=b, tokens_per_seq=q,
                                context_len=512, measured_s=load.step_time_s(m, BF16, H100, 1, b, q, 512, truth))
           for m in (L8, QWAMA) for b in (1, 16, 128, 512) for q in (1, 5)]
    fit = load.fit_step_factors(obs)
    assert fit.factors.overhead_s_per_layer == pytest.approx(50e-6, rel=0.05)
    assert fit.factors.overhead_s == pytest.approx(0.001, rel=0.1)
    assert fit.factors.memory_efficiency == pytest.approx(0.8, abs=0.01)


def test_fit_needs_data():
    with pytest.raises(ValueError, match="records"):
        load.fit_from_latency_sweep([{"concurrency": 1, "tpot_s": 0.01}], model=L8, precision=BF16, gpu=H100, tp=1)


def test_default_factors_are_the_committed_h100_fit():
    d = json.loads((ROOT / "data" / "calibration" / "h100_fitted_factors.json").read_text())
    f = load.StepFactors.from_dict(d["factors"])
    dflt = load.DEFAULT_FACTORS
    for name in ("memory_efficiency", "compute_efficiency", "overhead_s", "overhead_s_per_layer",
                 "interconnect_efficiency", "allreduce_latency_s"):
        assert getattr(dflt, name) == pytest.approx(getattr(f, name), rel=1e-3), name
    assert "H100" in d["measured_on"]["gpu_name"]


def test_committed_h100_timings_are_complete_and_say_where_they_came_from():
    d = json.loads((ROOT / "data" / "calibration" / "h100_step_timings.json").read_text())
    env = d["environment"]
    assert "H100" in env["gpu_name"] and env["torch"] and env["torch_cuda"] and "driver_version" in env["nvidia_smi"]
    assert len(d["records"]) >= 100
    r = d["records"][0]
    assert {"model", "batch_size", "tokens_per_seq", "context_len", "median_s"} <= set(r)
    # every architecture timed is one the catalog knows (the shard is Llama-3-70B cut for TP 4)
    for name in d["architectures"]:
        catalog.get_model(name.split("@")[0])
    # memory-bound physics: a bf16 8B step at batch 1 cannot beat its weights over the H100's peak bandwidth
    one = next(x for x in d["records"] if x["model"] == "meta-llama/Llama-3.1-8B" and x["batch_size"] == 1)
    assert one["median_s"] > 2 * (8_030_261_248 - 128256 * 4096) / 3.35e12


def test_step_model_tracks_the_measured_h100_steps():
    # Predictions with DEFAULT_FACTORS against the committed measurements (not a timing test: the times are data).
    # The "@tp4-shard" model is Llama-3-70B's per-GPU quarter at TP 4 without all-reduces.
    d = json.loads((ROOT / "data" / "calibration" / "h100_step_timings.json").read_text())
    errs = {"fit": [], "holdout_short": []}
    for r in d["records"]:
        name, tp, comm = r["model"], 1, True
        if name.endswith("@tp4-shard"):
            name, tp, comm = name.split("@")[0], 4, False
        pred = load.step_time_s(catalog.get_model(name), BF16, H100, tp, r["batch_size"], r["tokens_per_seq"],
                                r["context_len"], include_communication=comm)
        err = abs(pred - r["median_s"]) / r["median_s"]
        if r.get("set", "fit") == "fit":
            errs["fit"].append(err)
        elif r["context_len"] <= 2048:
            errs["holdout_short"].append(err)
    med = {k: sorted(v)[len(v) // 2] for k, v in errs.items()}
    assert len(errs["fit"]) == 138 and len(errs["holdout_short"]) == 32
    assert med["fit"] < 0.10, med
    assert med["holdout_short"] < 0.15, med


# --- the hot path is the same arithmetic ------------------------------------------------------------------------
# The load model evaluates its step through `load._step_at`, which computes what does not depend on the batch once
# per bisection. The step below is the model's formula written out straight (as step_time_breakdown was before
# that split); the fast path must give the very same floats, not merely close ones.

def _straight_step_s(model, precision, gpu, tp, b, q, ctx, f, kvb=2):
    layers, h, d = model.num_layers, model.hidden_size, model.head_dim
    linear = layers * (h * model.num_attention_heads * d + 2 * h * model.num_kv_heads * d
                       + model.num_attention_heads * d * h + 3 * h * model.intermediate_size)
    lm_head = model.vocab_size * h
    weight_bytes = precision.weight_bytes(linear) // tp + 2 * lm_head // tp + 2 * (2 * layers + 1) * h
    kv_bytes = int(b * (ctx + q) * (layers * 2 * max(1, model.num_kv_heads // tp) * d * kvb))
    tokens = b * q
    rate = {"fp8": gpu.fp8_flops_per_s, "int8": gpu.int8_ops_per_s}.get(precision.compute) or gpu.bf16_flops_per_s
    linear_flops = 2.0 * tokens * (linear + lm_head) / tp
    attn_flops = 4.0 * d * (model.num_attention_heads / tp) * layers * tokens * (ctx + q)
    compute_s = (linear_flops / rate + attn_flops / gpu.bf16_flops_per_s) / f.compute_efficiency
    memory_s = (weight_bytes + kv_bytes) / (gpu.bandwidth_bytes_per_s * f.memory_efficiency)
    comm_s = 0.0
    if tp > 1:
        message = tokens * h * 2
        per_allreduce = 2 * (tp - 1) / tp * message / (gpu.interconnect_bytes_per_s * f.interconnect_efficiency)
        gather = (tp - 1) / tp * tokens * model.vocab_size * 2 / (gpu.interconnect_bytes_per_s *
                                                                 f.interconnect_efficiency)
        comm_s = 2 * layers * (per_allreduce + f.allreduce_latency_s) + gather + f.allreduce_latency_s
    return max(memory_s, compute_s) + comm_s + (f.overhead_s + layers * f.overhead_s_per_layer)


def _straight_tpot(dep, b, ctx, speculative, alpha, k):
    def step(model, precision, tp, q):
        return _straight_step_s(model, precision, dep.gpu, tp, float(b), q, ctx, dep.factors, dep.kv_dtype_bytes)

    target = step(dep.target, dep.target_precision, dep.tp, k + 1 if speculative else 1)
    if not speculative:
        return target
    if dep.method == "ngram":
        draft = dep.ngram_step_s
    elif dep.method == "eagle":
        draft = k * step(replace(dep.target, num_layers=1), dep.target_precision, dep.tp, 1)
    else:
        draft = k * step(dep.draft, dep.draft_precision, dep.draft_tp, 1)
    return (draft + target) / speculation.expected_tokens_per_step(alpha, k)


@pytest.mark.parametrize("dep", [
    draft_deployment(), draft_deployment(tp=1, target=L8, draft_precision=catalog.get_precision("fp8")),
    draft_deployment(method="eagle", draft=None, draft_precision=None, tp=8),
    draft_deployment(method="ngram", draft=None, draft_precision=None, ngram_step_s=2e-4, tp=2)],
    ids=["draft-tp4", "draft-tp1-fp8", "eagle-tp8", "ngram-tp2"])
def test_the_load_models_fast_step_is_the_straight_formula_to_the_last_bit(dep):
    wl = load.Workload(1500, 300)
    for b in (0.0, 0.37, 1, 7.5, 64.0, 255.9999):
        for speculative, alpha, k in ((False, 0.0, 1), (True, 0.7, 4), (True, 0.35, 2)):
            want = _straight_tpot(dep, b, wl.mean_context_len, speculative, alpha, k)
            assert load_qps._tpot_at(dep, wl, speculative, alpha, k)(b) == want, (b, speculative, k)
        for q in (1, 5):
            want = _straight_step_s(dep.target, dep.target_precision, dep.gpu, dep.tp, float(b), q, 900, dep.factors)
            assert load.step_time_s(dep.target, dep.target_precision, dep.gpu, dep.tp, b, q, 900, dep.factors) == want
            assert load.target_step_time(dep, b, q, 900).total_s == want
    # and the bisection on top of it: the same running batch as Little's law solved with the straight step
    res = load.batch_from_qps(dep, 0.5, wl, speculative=True, alpha=0.7, k=4)
    pre = _straight_step_s(dep.target, dep.target_precision, dep.gpu, dep.tp, 1.0, wl.prompt_tokens, 0, dep.factors)
    if dep.method == "draft_model":
        pre += _straight_step_s(dep.draft, dep.draft_precision, dep.gpu, dep.draft_tp, 1.0, wl.prompt_tokens, 0,
                                dep.factors)
    elif dep.method == "eagle":
        pre += _straight_step_s(replace(dep.target, num_layers=1), dep.target_precision, dep.gpu, dep.tp, 1.0,
                                wl.prompt_tokens, 0, dep.factors)
    rho = 0.5 * pre
    lo, hi = 0.0, 256.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if 0.5 * (pre + wl.output_tokens * _straight_tpot(dep, mid, wl.mean_context_len, True, 0.7, 4) / (1 - rho)) \
                - mid > 0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * max(1.0, hi):
            break
    assert not res.saturated and res.batch_size == hi


@pytest.mark.parametrize("alpha", [0.3, 0.7, 0.9])
def test_crossover_qps_scan_is_speedup_at_qps_scanned_point_by_point(alpha):
    # crossover_qps computes the prefill, the capacities and the TPOT functions once for its whole scan; scanning
    # with the public speedup_at_qps (everything recomputed per rate) must land on the very same float.
    dep, wl, k = draft_deployment(), load.Workload(1024, 256), 4
    qps_max = load.batch_from_qps(dep, 1e-6, wl, speculative=False).capacity_qps

    def s(q):
        return load.speedup_at_qps(dep, q, wl, alpha, k).speedup

    grid = [qps_max * i / 64 for i in range(1, 65)]
    bracket = next(((lo, hi) for lo, hi in zip(grid, grid[1:]) if s(hi) <= 1), None)
    if s(grid[0]) <= 1:
        bracket = (1e-9 * qps_max, grid[0])
        if s(1e-9 * qps_max) <= 1:  # it never pays
            assert load.crossover_qps(dep, wl, alpha, k) == 0.0
            return
    if bracket is None:
        assert load.crossover_qps(dep, wl, alpha, k) is None
        return
    lo, hi = bracket
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if s(mid) <= 1 else (mid, hi)
    assert load.crossover_qps(dep, wl, alpha, k) == hi
