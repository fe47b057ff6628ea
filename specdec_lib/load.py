"""Step time versus batch size, speculation's speedup under load, and request rate <-> running batch (pure).

The model of one vLLM decode step on one GPU of a tensor-parallel group (every number per GPU, in bytes,
FLOP and seconds):

    step = max(bytes read / (bandwidth · η_mem), FLOP / (peak · η_compute))      roofline
         + TP communication: 2 all-reduces per layer, ring: 2(tp−1)/tp · message / (link · η_link) + latency
         + overhead_s + num_layers · overhead_s_per_layer                          launches, small kernels, CPU

bytes read = the GPU's share of the weights (linear layers at the precision, lm_head in 16 bit) + the KV cache
of B sequences at context L; FLOP = 2 · params · B·q tokens + attention 4 · head_dim · heads · B·q·(L+q). A batch of
B sequences each processing q tokens: q = 1 for ordinary decoding, q = k + 1 when the target verifies k drafts.

Speculation (one verification step): the draft runs k sequential single-token steps for the whole batch at its
own TP (0 s for n-gram), then the target runs one step with q = k + 1; it yields E(α, k) tokens per sequence
(speculation.expected_tokens_per_step). The baseline runs one q = 1 step per token. So

    speedup(B) = T_target(B, 1) · E / (k · T_draft(B, 1) + T_target(B, k + 1))

which is Leviathan et al.'s Theorem 3.8 with c = T_draft/T_target and the verification's own cost kept.

Load (Little's law): the running batch B = QPS × E2E(B), E2E = prefill + output_tokens · TPOT(B), solved
consistently by bisection; that part lives in ``load_qps.py`` and its names are re-exported here. The efficiency
factors come from calibration (data/calibration/); see ``benchmarks/validate_calibration.py`` for how well they
predict measured steps.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping

from . import speculation

# Request rate <-> running batch (Little's law) lives in load_qps.py, which imports this module's step model; its
# public names stay reachable here (`load.crossover_qps`, ...) through __getattr__ at the bottom (PEP 562).
_MOVED_TO_LOAD_QPS = ("Workload", "BatchAtLoad", "QpsResult", "prefill_time_s", "batch_from_qps", "capacity_qps",
                      "speedup_at_qps", "crossover_qps")

__all__ = [
    "StepFactors", "DEFAULT_FACTORS", "StepTime", "Deployment", "SpeculativeStep", "SpeedupResult", "Sensitivity",
    "step_time_breakdown", "step_time_s", "target_step_time", "draft_step_time_s", "cost_ratio", "spec_step_time",
    "speedup_vs_batch", "crossover_batch", "sensitivity", *_MOVED_TO_LOAD_QPS,
]


# ----------------------------------------------------------------------------------------------------------------
# factors
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepFactors:
    """How far real kernels fall short of the hardware's peaks, and the fixed costs of a step."""

    memory_efficiency: float  # η_mem: achieved / peak HBM bandwidth while streaming weights and KV
    compute_efficiency: float  # η_compute: achieved / dense peak tensor-core rate
    overhead_s: float  # fixed cost per step (launch of the step, sampling, scheduler share)
    overhead_s_per_layer: float  # per decoder layer per step (small kernels: norms, rotary, cache writes)
    interconnect_efficiency: float = 0.7  # achieved / peak per-direction link bandwidth in all-reduce
    allreduce_latency_s: float = 15e-6  # fixed cost of one all-reduce (small messages)
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("memory_efficiency", "compute_efficiency", "interconnect_efficiency"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, numbers.Real) and 0 < v <= 1):
                raise ValueError(f"{name}={v!r}: expected a fraction in (0, 1]")
        for name in ("overhead_s", "overhead_s_per_layer", "allreduce_latency_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r}: expected seconds >= 0")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StepFactors":
        names = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"factors: unknown fields {sorted(unknown)}; expected some of {sorted(names)}")
        return cls(**d)

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


# Fitted by benchmarks/validate_calibration.py --write (fit_step_factors over the 138 "fit" steps in
# data/calibration/h100_step_timings.json; written to data/calibration/h100_fitted_factors.json, and a test
# checks the two agree). Median |error| 8.5 % in sample, 13.5 % on 60 held-out steps (worst: verification at
# context 8192, where PyTorch's masked attention kernel, unlike vLLM's split-KV kernels, is far from bandwidth).
# Measured with plain PyTorch kernels in CUDA graphs on one H100 SXM: vLLM's fused kernels have less per-layer
# overhead, so these factors err towards slower small-batch steps. The two interconnect values are assumptions
# (one GPU cannot measure an all-reduce): NVLink 4 at 70 % of 450 GB/s per direction and 15 µs per all-reduce.
DEFAULT_FACTORS = StepFactors(
    memory_efficiency=0.791,
    compute_efficiency=0.437,
    overhead_s=6.146e-05,
    overhead_s_per_layer=8.510e-05,
    interconnect_efficiency=0.7,
    allreduce_latency_s=15e-6,
    source="H100 SXM calibration (data/calibration/h100_fitted_factors.json); interconnect values assumed",
)


# ----------------------------------------------------------------------------------------------------------------
# one step
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepTime:
    """One forward step on one GPU of the group, with its parts (seconds) and what it moved and computed."""

    total_s: float
    memory_s: float  # bytes / (bandwidth · η_mem)
    compute_s: float  # FLOP / (peak · η_compute)
    communication_s: float
    overhead_s: float
    weight_bytes: int  # per GPU
    kv_bytes: int  # per GPU, read this step
    flops: float  # per GPU
    bound: str  # "memory" | "compute"
    assumptions: tuple[str, ...]


def _positive_int(name: str, v: Any, minimum: int = 1) -> int:
    if type(v) is int and v >= minimum:  # the common case, without the abstract-class checks below (hot path)
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ValueError(f"{name}={v!r}: expected an integer >= {minimum}")
    return int(v)


def positive_number(name: str, v: Any, minimum: float = 0.0, strict: bool = True) -> float:
    if type(v) is float and math.isfinite(v) and (v > minimum if strict else v >= minimum):
        return v  # the common case, without the abstract-class checks below (hot path)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
            or (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name}={v!r}: expected a finite number {'>' if strict else '>='} {minimum}")
    return float(v)


def _linear_params_per_layer(m: Any) -> int:
    h, q_size, kv_size = m.hidden_size, m.num_attention_heads * m.head_dim, m.num_kv_heads * m.head_dim
    return h * q_size + 2 * h * kv_size + q_size * h + 3 * h * m.intermediate_size


def _matmul_rate(gpu: Any, precision: Any) -> tuple[float, str]:
    compute = getattr(precision, "compute", "bf16")
    if compute == "fp8" and getattr(gpu, "fp8_flops_per_s", None):
        return gpu.fp8_flops_per_s, "fp8"
    if compute == "int8":
        return gpu.int8_ops_per_s, "int8"
    return gpu.bf16_flops_per_s, "bf16"


def _step_at(model: Any, precision: Any, gpu: Any, tp: int, tokens_per_seq: int, context_len: int,
             f: StepFactors, kvb: int, include_communication: bool) -> tuple:
    """``step_time_breakdown``'s arithmetic split in two: what does not depend on the batch size, validated and
    computed once here, and ``at(b)`` for the rest, so that the load model's bisections (millions of steps per
    page) redo only the batch-dependent part. Returns ``(at, parts)``: ``at(b)`` -> (total, memory, compute,
    communication, KV bytes, FLOP) in seconds/bytes/FLOP; ``parts`` -> (overhead, weight bytes, KV heads per GPU,
    KV bytes per token, matmul rate, its kind)."""
    tp = _positive_int("tp", tp)
    q = _positive_int("tokens_per_seq", tokens_per_seq)
    ctx = _positive_int("context_len", context_len, minimum=0)
    kvb = _positive_int("kv_dtype_bytes", kvb)
    if model.num_attention_heads % tp:
        raise ValueError(f"tp={tp}: {model.name} has {model.num_attention_heads} attention heads, which tp must "
                         "divide (vLLM refuses otherwise)")
    layers, h, d = model.num_layers, model.hidden_size, model.head_dim
    linear = layers * _linear_params_per_layer(model)
    lm_head = model.vocab_size * h
    weight_bytes = precision.weight_bytes(linear) // tp + 2 * lm_head // tp + 2 * (2 * layers + 1) * h
    kv_heads_per_gpu = max(1, model.num_kv_heads // tp)
    kv_bytes_per_token = layers * 2 * kv_heads_per_gpu * d * kvb
    rate, rate_kind = _matmul_rate(gpu, precision)
    # Constant factors, grouped exactly as the left-to-right products they replace (same floats).
    ctx_q, params, vocab = ctx + q, linear + lm_head, model.vocab_size
    attn_per_token = 4.0 * d * (model.num_attention_heads / tp) * layers
    attn_rate, efficiency = gpu.bf16_flops_per_s, f.compute_efficiency
    bandwidth = gpu.bandwidth_bytes_per_s * f.memory_efficiency
    communicates = include_communication and tp > 1
    link = gpu.interconnect_bytes_per_s * f.interconnect_efficiency
    ring, share, latency = 2 * (tp - 1) / tp, (tp - 1) / tp, f.allreduce_latency_s
    overhead = f.overhead_s + layers * f.overhead_s_per_layer

    def at(batch_size: float) -> tuple:
        b = positive_number("batch_size", batch_size, strict=False)
        kv_bytes = int(b * ctx_q * kv_bytes_per_token)
        tokens = b * q
        linear_flops = 2.0 * tokens * params / tp
        attn_flops = attn_per_token * tokens * ctx_q
        compute_s = (linear_flops / rate + attn_flops / attn_rate) / efficiency
        memory_s = (weight_bytes + kv_bytes) / bandwidth
        comm_s = 0.0
        if communicates:
            message = tokens * h * 2  # bf16 hidden states
            per_allreduce = ring * message / link
            gather = share * tokens * vocab * 2 / link
            comm_s = 2 * layers * (per_allreduce + latency) + gather + latency
        total = max(memory_s, compute_s) + comm_s + overhead
        return total, memory_s, compute_s, comm_s, kv_bytes, linear_flops + attn_flops

    return at, (overhead, weight_bytes, kv_heads_per_gpu, kv_bytes_per_token, rate, rate_kind)


def step_time_breakdown(model: Any, precision: Any, gpu: Any, tp: int, batch_size: float, tokens_per_seq: int,
                        context_len: int, factors: StepFactors | None = None, *, kv_dtype_bytes: int = 2,
                        include_communication: bool = True) -> StepTime:
    """Time of one step of ``model`` for ``batch_size`` sequences each processing ``tokens_per_seq`` new tokens
    after ``context_len`` cached ones, per GPU of a TP group of ``tp``. ``batch_size`` may be fractional (the
    mean running batch of Little's law); 0 gives the empty-batch cost (weights only)."""
    f = factors or DEFAULT_FACTORS
    _positive_int("tp", tp)
    b = positive_number("batch_size", batch_size, strict=False)
    at, parts = _step_at(model, precision, gpu, tp, tokens_per_seq, context_len, f, kv_dtype_bytes,
                         include_communication)
    total, memory_s, compute_s, comm_s, kv_bytes, flops = at(b)
    overhead, weight_bytes, kv_heads_per_gpu, kv_bytes_per_token, rate, rate_kind = parts
    tp, q, ctx, kvb = int(tp), int(tokens_per_seq), int(context_len), int(kv_dtype_bytes)
    assumptions = (
        f"{model.name} at {precision.name} on {gpu.name}, TP {tp}: per GPU {weight_bytes / 1e9:.2f} GB weights "
        f"(lm_head 16-bit), KV {kv_bytes_per_token} B/token ({kv_heads_per_gpu} KV heads per GPU, {kvb}-byte KV)",
        f"{b:g} sequences × {q} tokens at context {ctx}; matmuls at the {rate_kind} peak {rate / 1e12:.0f} TFLOP/s "
        f"× η_compute {f.compute_efficiency:.2f}; bandwidth {gpu.bandwidth_bytes_per_s / 1e12:.2f} TB/s × η_mem "
        f"{f.memory_efficiency:.2f}",
        (f"TP all-reduce: 2 per layer, ring over {gpu.interconnect_bytes_per_s / 1e9:.0f} GB/s × "
         f"{f.interconnect_efficiency:.2f} + {f.allreduce_latency_s * 1e6:.0f} µs each, plus the logits gather"
         if include_communication and tp > 1 else "no TP communication"),
        f"overhead {f.overhead_s * 1e3:.2f} ms + {f.overhead_s_per_layer * 1e6:.0f} µs per layer; factors: "
        f"{f.source or 'given by the caller'}",
    )
    return StepTime(total_s=total, memory_s=memory_s, compute_s=compute_s, communication_s=comm_s,
                    overhead_s=overhead, weight_bytes=weight_bytes, kv_bytes=kv_bytes, flops=flops,
                    bound="memory" if memory_s >= compute_s else "compute", assumptions=assumptions)


def step_time_s(model: Any, precision: Any, gpu: Any, tp: int, batch_size: float, tokens_per_seq: int,
                context_len: int, factors: StepFactors | None = None, *, kv_dtype_bytes: int = 2,
                include_communication: bool = True) -> float:
    """Seconds for one step (see ``step_time_breakdown``)."""
    _positive_int("tp", tp)
    b = positive_number("batch_size", batch_size, strict=False)
    at, _ = _step_at(model, precision, gpu, tp, tokens_per_seq, context_len, factors or DEFAULT_FACTORS,
                     kv_dtype_bytes, include_communication)
    return at(b)[0]


# ----------------------------------------------------------------------------------------------------------------
# a deployment and speculation under load
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    """What runs where: the target at its TP and, for speculation, how drafts are made.

    method: "draft_model" (a separate small model at ``draft_tp``), "eagle" (one extra decoder layer of the
    target's shape plus the target's lm_head, at the target's TP), "ngram" (prompt lookup on the CPU:
    ``ngram_step_s`` per step, no GPU time), or "none".

    vLLM 0.32 runs ``draft_model`` only with draft TP = target TP (``v1/spec_decode/draft_model.py``,
    ``_raise_if_draft_tp_mismatch``); ``draft_tp`` = 1 under a larger target TP describes vLLM V0 (2024) or a what-if.
    """

    target: Any  # catalog.ModelSpec
    target_precision: Any  # catalog.Precision
    gpu: Any  # catalog.GPU
    tp: int
    method: str = "draft_model"
    draft: Any = None  # catalog.ModelSpec for "draft_model"
    draft_precision: Any = None
    draft_tp: int = 1
    kv_dtype_bytes: int = 2
    ngram_step_s: float = 0.0
    factors: StepFactors = DEFAULT_FACTORS

    def __post_init__(self) -> None:
        if self.method not in ("draft_model", "eagle", "ngram", "none"):
            raise ValueError(f"method={self.method!r}: expected 'draft_model', 'eagle', 'ngram' or 'none'")
        if self.method == "draft_model" and (self.draft is None or self.draft_precision is None):
            raise ValueError("draft=None: method 'draft_model' needs a draft ModelSpec and draft_precision")
        _positive_int("tp", self.tp)
        _positive_int("draft_tp", self.draft_tp)
        positive_number("ngram_step_s", self.ngram_step_s, strict=False)

    def describe(self) -> str:
        t = f"{self.target.name} {self.target_precision.name} TP {self.tp} on {self.gpu.name}"
        if self.method == "draft_model":
            return f"{t}; draft {self.draft.name} {self.draft_precision.name} TP {self.draft_tp}"
        return f"{t}; {self.method}"


def target_step_time(dep: Deployment, batch_size: float, tokens_per_seq: int, context_len: int) -> StepTime:
    """The target's step (``step_time_breakdown``) with the deployment's precision, GPU, TP and factors."""
    return step_time_breakdown(dep.target, dep.target_precision, dep.gpu, dep.tp, batch_size, tokens_per_seq,
                               context_len, dep.factors, kv_dtype_bytes=dep.kv_dtype_bytes)


def _target_step_at(dep: Deployment, tokens_per_seq: int, context_len: int):
    """b -> seconds of the target's step (``target_step_time(...).total_s``, same floats) for the hot paths."""
    at, _ = _step_at(dep.target, dep.target_precision, dep.gpu, dep.tp, tokens_per_seq, context_len, dep.factors,
                     dep.kv_dtype_bytes, True)
    return lambda b: at(b)[0]


def _target_step_s(dep: Deployment, batch_size: float, tokens_per_seq: int, context_len: int) -> float:
    """``target_step_time(...).total_s`` without building the step's assumption texts."""
    return step_time_s(dep.target, dep.target_precision, dep.gpu, dep.tp, batch_size, tokens_per_seq, context_len,
                       dep.factors, kv_dtype_bytes=dep.kv_dtype_bytes)


def _draft_step_at(dep: Deployment, context_len: int):
    """b -> seconds of one single-token draft step for the whole batch (see ``draft_step_time_s``)."""
    if dep.method == "none":
        return lambda b: 0.0
    if dep.method == "ngram":
        return lambda b: dep.ngram_step_s
    if dep.method == "eagle":
        model, precision, tp = replace(dep.target, num_layers=1), dep.target_precision, dep.tp
    else:
        model, precision, tp = dep.draft, dep.draft_precision, dep.draft_tp
    _positive_int("tp", tp)
    at, _ = _step_at(model, precision, dep.gpu, tp, 1, context_len, dep.factors, dep.kv_dtype_bytes, True)
    return lambda b: at(b)[0]


def draft_step_time_s(dep: Deployment, batch_size: float, context_len: int) -> float:
    """One single-token draft step for the whole batch (0 for "none"; ``ngram_step_s`` for n-gram)."""
    return _draft_step_at(dep, context_len)(batch_size)


def cost_ratio(dep: Deployment, batch_size: float, context_len: int) -> float:
    """c(B) = one draft step / one ordinary target step, at batch B (Leviathan's c, but load-dependent)."""
    return draft_step_time_s(dep, batch_size, context_len) / _target_step_s(dep, batch_size, 1, context_len)


@dataclass(frozen=True)
class SpeculativeStep:
    """One verification round: k draft steps then one target step over k + 1 positions."""

    draft_s: float  # all k draft steps
    verify_s: float  # the target's step with q = k + 1
    total_s: float


def _spec_step_at(dep: Deployment, k: int, context_len: int):
    """b -> (all k draft steps, the verification step) in seconds (see ``spec_step_time``)."""
    k = _positive_int("k", k)
    verify_at = _target_step_at(dep, k + 1, context_len)
    if dep.method == "ngram":
        return lambda b: (dep.ngram_step_s, verify_at(b))
    draft_at = _draft_step_at(dep, context_len)
    return lambda b: (k * draft_at(b), verify_at(b))


def spec_step_time(dep: Deployment, batch_size: float, k: int, context_len: int) -> SpeculativeStep:
    draft, verify = _spec_step_at(dep, k, context_len)(batch_size)
    return SpeculativeStep(draft_s=draft, verify_s=verify, total_s=draft + verify)


@dataclass(frozen=True)
class SpeedupResult:
    speedup: float  # baseline time per token / speculative time per token (> 1: faster)
    alpha: float
    k: int
    batch_size: float
    context_len: int
    expected_tokens: float
    c: float  # draft step / target step at this batch
    baseline_step_s: float
    verify_step_s: float
    draft_s: float  # all k draft steps of one round
    baseline_tpot_s: float
    spec_tpot_s: float
    bound: str  # what limits the baseline step: "memory" | "compute"
    assumptions: tuple[str, ...]


def speedup_vs_batch(dep: Deployment, alpha: float, k: int, batch_size: float, context_len: int) -> SpeedupResult:
    """Speculation's speedup on time per output token at a running batch of ``batch_size`` sequences."""
    if dep.method == "none":
        raise ValueError("method='none': a deployment without speculation has no speedup to compute")
    e = speculation.expected_tokens_per_step(alpha, _positive_int("k", k))
    base = target_step_time(dep, batch_size, 1, context_len)
    spec = spec_step_time(dep, batch_size, k, context_len)
    c = (spec.draft_s / k) / base.total_s
    spec_tpot = spec.total_s / e
    assumptions = (
        f"{dep.describe()}; α = {alpha:.3f} per token (independent positions), k = {k}: "
        f"E = {e:.3f} tokens per round (Leviathan et al. 2023, eq. 1)",
        f"every sequence in the batch speculates every step (vLLM V1 at fixed k); mean context {context_len} tokens",
        *( ("n-gram: draft GPU time 0, proposal cost "
            f"{dep.ngram_step_s * 1e3:.2f} ms per round; rounds without a proposal are not modelled",)
           if dep.method == "ngram" else ()),
        *base.assumptions,
    )
    return SpeedupResult(speedup=base.total_s / spec_tpot, alpha=alpha, k=k, batch_size=batch_size,
                         context_len=context_len, expected_tokens=e, c=c, baseline_step_s=base.total_s,
                         verify_step_s=spec.verify_s, draft_s=spec.draft_s, baseline_tpot_s=base.total_s,
                         spec_tpot_s=spec_tpot, bound=base.bound, assumptions=assumptions)


def crossover_batch(dep: Deployment, alpha: float, k: int, context_len: int, max_batch: int = 1024) -> int | None:
    """Smallest integer running batch at which speculation no longer pays (speedup ≤ 1); None if it pays up to
    ``max_batch``; 1 if it never pays."""
    _positive_int("max_batch", max_batch)
    for b in range(1, max_batch + 1):
        if speedup_vs_batch(dep, alpha, k, b, context_len).speedup <= 1.0:
            return b
    return None


# ----------------------------------------------------------------------------------------------------------------
# sensitivity
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sensitivity:
    """Elasticities d ln(output) / d ln(input): +0.5 means a 1 % rise in the input raises the output by 0.5 %."""

    value: float
    elasticities: dict[str, float]
    most_sensitive: str
    assumptions: tuple[str, ...]


def sensitivity(func: Callable[..., float], inputs: Mapping[str, float], *, integer_inputs: Iterable[str] = ("k",),
                rel_step: float = 0.01) -> Sensitivity:
    """Elasticity of ``func(**inputs)`` with respect to each input (central differences of ±rel_step; integer
    inputs such as k by ±1 and a 2-unit span). Which input has the largest |elasticity| is the one the verdict
    hinges on. Example: ``sensitivity(lambda alpha, k, c: speculation.speedup(alpha, k, c), dict(alpha=.7, k=5,
    c=.1))``. Inputs at 0 or inputs whose perturbation leaves the function's domain are reported as NaN."""
    ints = set(integer_inputs)
    base = float(func(**inputs))
    el: dict[str, float] = {}
    for name, x in inputs.items():
        try:
            if name in ints:
                lo, hi = dict(inputs), dict(inputs)
                lo[name], hi[name] = max(1, int(x) - 1), int(x) + 1
                dx = hi[name] - lo[name]
                el[name] = (func(**hi) - func(**lo)) / dx * x / base
            elif x == 0:
                el[name] = math.nan
            else:
                lo, hi = dict(inputs), dict(inputs)
                lo[name], hi[name] = x * (1 - rel_step), x * (1 + rel_step)
                el[name] = (func(**hi) - func(**lo)) / (2 * rel_step * x) * x / base
        except ValueError:
            el[name] = math.nan
    finite = {k: v for k, v in el.items() if math.isfinite(v)}
    most = max(finite, key=lambda n: abs(finite[n])) if finite else ""
    return Sensitivity(value=base, elasticities=el, most_sensitive=most, assumptions=(
        f"elasticities at {dict(inputs)}; central differences ±{rel_step:.0%} (integers ±1)",))


# The calibration fit (fitting StepFactors to measured steps) lives in step_fit.py; its names stay reachable here
# (`load.fit_step_factors`, ...) for the scripts and callers written before the split (PEP 562, no import cycle).
_MOVED_TO_STEP_FIT = ("StepObservation", "FitResult", "fit_step_factors", "fit_from_latency_sweep",
                      "observations_from_latency_sweep")


def __getattr__(name: str):
    if name in _MOVED_TO_STEP_FIT:
        from specdec_lib import step_fit

        return getattr(step_fit, name)
    if name in _MOVED_TO_LOAD_QPS:
        from specdec_lib import load_qps

        return getattr(load_qps, name)
    raise AttributeError(f"module 'specdec_lib.load' has no attribute {name!r}")
