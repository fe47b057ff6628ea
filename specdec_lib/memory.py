"""Weights, tensor-parallel sharding, KV bytes per token, what fits: the memory side of a plan (pure).

No I/O here: catalog names given instead of specs are resolved through catalog.py (which reads data/ once).
All sizes are bytes; "per GPU" means one tensor-parallel rank.

How vLLM 0.32 sizes the KV cache, read from its source (the authority):

* ``vllm/v1/worker/utils.py`` request_memory: requested = ceil(total_memory x gpu_memory_utilization).
* ``vllm/v1/worker/gpu_worker.py`` determine_available_memory: KV budget per GPU = requested
  - non_kv_cache_memory (weights + non-torch memory such as NCCL/cuBLAS buffers + the transient torch peak
  of the profile run at max_num_batched_tokens) - the CUDA-graph estimate (on by default since v0.21,
  VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1). ``vllm/utils/mem_utils.py`` memory_profiling names the parts.
* ``vllm/v1/core/kv_cache_utils.py``: the target's and the draft's attention layers are put in ONE KV cache
  group (uniform spec, or UniformTypeKVCacheSpecs when the shapes differ), so one block holds block_size
  tokens of *every* layer of both models: bytes_per_block = sum over layers of the layer's page size
  (block_size x 2 x kv_heads_per_rank x head_dim x dtype bytes); num_blocks = budget // bytes_per_block.
  The startup line ``KV cache size: N tokens`` is int(num_blocks / cdiv(max_model_len, block_size)
  x max_model_len) (get_kv_cache_capacity), i.e. num_blocks x block_size when max_model_len is a
  multiple of block_size. The draft's KV cache therefore comes out of the same budget, token for token.
* ``vllm/v1/core/kv_cache_utils.py`` get_kv_cache_configs: one block is held back as the null block;
  startup fails when the rest cannot hold one request at max_model_len.
* ``vllm/config/cache.py``: gpu_memory_utilization defaults to 0.92 (the source says 0.9); the CPU backend
  (``vllm/platforms/cpu.py``) uses block_size 128 and VLLM_CPU_KVCACHE_SPACE GiB as the whole budget.
* ``vllm/v1/spec_decode/draft_model.py`` _raise_if_draft_tp_mismatch: method draft_model requires the
  draft's TP to equal the target's (the config layer accepts 1 or the target's TP, the proposer refuses 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from .catalog import GPU, ModelSpec, Precision, get_gpu, get_model, get_precision
from .display import GIB, MIB
from .rules import DRAFT_MAX_MEMORY_SHARE, TARGET_CONSTRAINED_MEMORY_SHARE

DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # vllm/config/cache.py, vLLM 0.32 (the source says 0.9)
SOURCE_GPU_MEMORY_UTILIZATION = 0.90
DEFAULT_BLOCK_SIZE = 16  # GPU attention backends; the CPU backend uses 128
CPU_BLOCK_SIZE = 128
UNQUANTIZED_BYTES = 2  # embeddings, lm_head, norms and biases stay bf16/fp16 in every format here
ACTIVATION_BYTES = 2  # bf16 activations
VOCAB_PADDING = 64  # vLLM's VocabParallelEmbedding pads the vocabulary to a multiple of 64

# Estimates of the parts of vLLM's reserve that the profile run measures on a real GPU. Replace them with
# measured numbers (pass overhead=Overhead(...)) from a startup log when you have one.
NON_TORCH_BYTES_TP1 = 256 * MIB  # cuBLAS/cuDNN workspaces created after the init snapshot
NON_TORCH_BYTES_TP = 1 * GIB  # + NCCL channel buffers and custom all-reduce IPC buffers when TP > 1
CUDAGRAPH_BYTES_PER_MODEL = 512 * MIB  # vLLM's "Estimated CUDA graph memory", typically a few hundred MiB

RULE_TARGET_WEIGHTS_FRACTION = TARGET_CONSTRAINED_MEMORY_SHARE  # the source's 70 % (rules.py)
RULE_DRAFT_FRACTION = DRAFT_MAX_MEMORY_SHARE  # the source's ~15 % (rules.py)

KV_CACHE_DTYPES: dict[str, int | None] = {
    "auto": None,  # the model's dtype: bf16/fp16 here, so 2 bytes
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float32": 4,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "fp8_inc": 1,
}


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r}: expected a positive integer")
    return value


def check_utilization(gpu_memory_utilization: float) -> float:
    u = gpu_memory_utilization
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not (0 < u <= 1):
        raise ValueError(f"gpu_memory_utilization={u!r}: expected a number in (0, 1]")
    return float(u)


def check_tp(model: ModelSpec, tp: int, field_name: str = "tp") -> int:
    """vLLM's rules: TP must divide the attention heads; KV heads either divide by TP or divide TP."""
    _positive_int(field_name, tp)
    heads, kv = model.num_attention_heads, model.num_kv_heads
    if heads % tp:
        ok = [d for d in range(1, heads + 1) if heads % d == 0 and (d <= kv and kv % d == 0 or d > kv and d % kv == 0)]
        raise ValueError(f"{field_name}={tp}: {model.name} has {heads} attention heads; accepted: {ok}")
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        raise ValueError(f"{field_name}={tp}: {model.name} has {kv} KV heads; TP must divide them or be a "
                         f"multiple of them")
    return tp


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per KV element for vLLM's --kv-cache-dtype ("auto" = the model's bf16/fp16: 2)."""
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ValueError(f"kv_cache_dtype={kv_cache_dtype!r}: expected one of {sorted(KV_CACHE_DTYPES)}")
    size = KV_CACHE_DTYPES[kv_cache_dtype]
    return UNQUANTIZED_BYTES if size is None else size


def _resolve_model(m: ModelSpec | str, name: str) -> ModelSpec:
    if isinstance(m, ModelSpec):
        return m
    if isinstance(m, str):
        return get_model(m)
    raise ValueError(f"{name}={m!r}: expected a ModelSpec or a catalog model name")


def _resolve_gpu(g: GPU | str) -> GPU:
    return g if isinstance(g, GPU) else get_gpu(g)


def _resolve_precision(p: Precision | str) -> Precision:
    return p if isinstance(p, Precision) else get_precision(p)


# --------------------------------------------------------------------------------------------------
# Weights and KV bytes
# --------------------------------------------------------------------------------------------------


def kv_heads_per_rank(model: ModelSpec, tp: int = 1) -> int:
    """max(1, kv_heads // tp): with fewer KV heads than ranks, each rank keeps a replica of one head."""
    check_tp(model, tp)
    return max(1, model.num_kv_heads // tp)


def weight_bytes(model: ModelSpec, precision: Precision, tp: int = 1) -> int:
    """Weight bytes on one TP rank (tp=1: the whole model).

    Quantized formats (fp8, int8, AWQ, GPTQ) cover the decoder's q/k/v/o/gate/up/down matrices only;
    embeddings, lm_head (when untied), norms and biases stay 16-bit, as vLLM loads AWQ/GPTQ/FP8/INT8
    checkpoints. Sharding: q, o, gate, up, down and the vocabulary split over tp; k/v keep
    max(1, kv_heads // tp) heads per rank (replicated when kv_heads < tp); norms are replicated.
    """
    check_tp(model, tp)
    h, hd, L = model.hidden_size, model.head_dim, model.num_layers
    kv_rank = max(1, model.num_kv_heads // tp) * hd
    q_rank = model.q_size // tp
    inter_rank = math.ceil(model.intermediate_size / tp)
    linear = L * (2 * h * q_rank + 2 * h * kv_rank + 3 * h * inter_rank)
    bias = 0
    if model.qkv_bias:
        bias += L * (q_rank + 2 * kv_rank)
    if model.o_proj_bias:
        bias += L * h
    padded_vocab = math.ceil(model.vocab_size / VOCAB_PADDING) * VOCAB_PADDING
    emb_rank = math.ceil(padded_vocab / tp) * h
    embeddings = emb_rank if model.tie_word_embeddings else 2 * emb_rank
    unquantized = bias + model.norm_params() + embeddings
    return precision.weight_bytes(linear) + UNQUANTIZED_BYTES * unquantized


def kv_bytes_per_token(model: ModelSpec, kv_dtype_bytes: int | float, tp: int = 1) -> int:
    """KV cache bytes per token on one TP rank: 2 (K and V) x layers x kv_heads_per_rank x head_dim x bytes."""
    if kv_dtype_bytes not in (1, 2, 4):
        raise ValueError(f"kv_dtype_bytes={kv_dtype_bytes!r}: expected 1 (fp8), 2 (bf16/fp16) or 4 (fp32)")
    return int(2 * model.num_layers * kv_heads_per_rank(model, tp) * model.head_dim * kv_dtype_bytes)


def bytes_per_block(models: Sequence[ModelSpec], kv_dtype_bytes: int, block_size: int,
                    tp: int | Sequence[int] = 1) -> int:
    """One KV block of the shared group: block_size tokens of every layer of every model."""
    _positive_int("block_size", block_size)
    if not models:
        raise ValueError("models=[]: expected at least one model")
    tps = [tp] * len(models) if isinstance(tp, int) else list(tp)
    if len(tps) != len(models):
        raise ValueError(f"tp={tp!r}: expected one TP per model ({len(models)})")
    return block_size * sum(kv_bytes_per_token(m, kv_dtype_bytes, t) for m, t in zip(models, tps))


def kv_capacity_tokens(kv_budget_bytes: int, models: Sequence[ModelSpec], kv_dtype_bytes: int, block_size: int,
                       *, tp: int | Sequence[int] = 1, max_model_len: int | None = None) -> int:
    """The figure of vLLM's startup line ``KV cache size: N tokens`` for a per-GPU KV budget.

    num_blocks = kv_budget_bytes // bytes_per_block (all layers of target and draft share one block);
    with max_model_len: int(num_blocks / cdiv(max_model_len, block_size) * max_model_len), computed in
    floating point exactly as vllm/v1/core/kv_cache_utils.py get_kv_cache_capacity does; without it,
    num_blocks * block_size (equal whenever max_model_len is a multiple of block_size).
    The CPU backend uses block_size=128 and a budget of VLLM_CPU_KVCACHE_SPACE GiB.
    """
    if isinstance(kv_budget_bytes, bool) or not isinstance(kv_budget_bytes, int) or kv_budget_bytes < 0:
        raise ValueError(f"kv_budget_bytes={kv_budget_bytes!r}: expected an integer >= 0")
    num_blocks = kv_budget_bytes // bytes_per_block(models, kv_dtype_bytes, block_size, tp)
    if max_model_len is None:
        return num_blocks * block_size
    _positive_int("max_model_len", max_model_len)
    blocks_per_request = math.ceil(max_model_len / block_size)
    return int(num_blocks / blocks_per_request * max_model_len)


def default_batch_limits(gpu: GPU) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM 0.32's API server picks for this GPU.

    vllm/engine/arg_utils.py: >= 160 GiB: 16384 / 1024; >= 70 GiB and not an A100: 8192 / 1024;
    otherwise 2048 / 256.
    """
    if gpu.memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu.memory_bytes >= 70 * GIB and "a100" not in gpu.name.lower():
        return 8192, 1024
    return 2048, 256


@dataclass(frozen=True)
class Overhead:
    """The per-GPU reserve vLLM subtracts besides weights (bytes), each part named as in its source."""

    activation_peak_bytes: int  # transient torch peak of the profile run (mem_utils: transient_peak_headroom)
    non_torch_bytes: int  # memory outside torch's allocator created after the init snapshot (NCCL, cuBLAS)
    cudagraph_bytes: int  # gpu_worker: cudagraph_memory_estimate (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS)
    source: str = "estimate"

    @property
    def total_bytes(self) -> int:
        return self.activation_peak_bytes + self.non_torch_bytes + self.cudagraph_bytes


def estimate_overhead(target: ModelSpec, draft: ModelSpec | None, *, tp: int, max_num_batched_tokens: int,
                      max_num_seqs: int) -> Overhead:
    """An estimate of vLLM's reserve on one GPU.

    activation peak: the profile run pushes max_num_batched_tokens tokens through the target; the widest
    moment is the MLP, holding the residual and hidden state (2 x hidden), the gate/up output (2 x I/tp)
    and the activated product (I/tp), plus the attention projections ((q + 2 kv)/tp), in bf16; then the
    dummy sampler run holds max_num_seqs x vocab fp32 logits and probabilities (x 2).
    non-torch and CUDA graphs: the constants above (typical startup-log values), one graph set per model.

    Sanity check against a public vLLM startup log (DEBUG "Memory profiling takes ...") of a 14.99 GiB
    (8B-class) model on one GPU: "torch peak memory increase: 1.89GiB; non-torch forward increase memory:
    0.25GiB"; this function gives 1.85 GiB and 0.25 GiB for Llama-3.1-8B on one H100 (8,192 tokens, 1,024
    sequences). It is an estimate: pass measured numbers as Overhead(...) to plan_memory when you have them.
    """
    T = max_num_batched_tokens
    kv_rank = max(1, target.num_kv_heads // tp) * target.head_dim
    width = 2 * target.hidden_size + 3 * math.ceil(target.intermediate_size / tp) + target.q_size // tp + 2 * kv_rank
    activation = T * width * ACTIVATION_BYTES + max_num_seqs * target.vocab_size * 4 * 2
    return Overhead(
        activation_peak_bytes=int(activation),
        non_torch_bytes=NON_TORCH_BYTES_TP if tp > 1 else NON_TORCH_BYTES_TP1,
        cudagraph_bytes=CUDAGRAPH_BYTES_PER_MODEL * (2 if draft is not None else 1),
    )


# --------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryPlan:
    """Everything a notebook or a memo needs about memory, in bytes and tokens. Per GPU = per TP rank."""

    target: str
    draft: str | None
    gpu: str
    num_gpus: int
    tp: int
    draft_tp: int | None
    replicas: int  # num_gpus // tp independent copies (data parallel)
    target_precision: str
    draft_precision: str | None
    gpu_memory_utilization: float
    kv_cache_dtype: str
    kv_dtype_bytes: int
    context_len: int
    block_size: int
    max_num_batched_tokens: int
    max_num_seqs: int
    memory_bytes_per_gpu: int
    requested_bytes_per_gpu: int  # ceil(memory x utilization)
    target_weights_bytes: int  # whole model
    draft_weights_bytes: int
    target_weights_bytes_per_gpu: int
    draft_weights_bytes_per_gpu: int
    activation_peak_bytes_per_gpu: int
    non_torch_bytes_per_gpu: int
    cudagraph_bytes_per_gpu: int
    overhead_source: str
    kv_budget_bytes_per_gpu: int  # may be negative: does not fit
    kv_budget_bytes_total: int  # over the TP ranks of one replica
    target_kv_heads_per_rank: int
    draft_kv_heads_per_rank: int | None
    target_kv_bytes_per_token_per_gpu: int
    draft_kv_bytes_per_token_per_gpu: int
    bytes_per_block_per_gpu: int
    num_blocks: int
    kv_capacity_tokens: int  # vLLM's "KV cache size: N tokens" with max_model_len = context_len
    kv_capacity_tokens_without_draft: int  # same budget without the draft's weights and layers
    draft_kv_share: float  # fraction of every block holding the draft's layers
    blocks_per_seq: int
    max_concurrent_seqs: int  # per replica, at context_len, after the null block
    max_concurrent_seqs_without_draft: int
    max_concurrency_vllm: float  # vLLM's "Maximum concurrency for N tokens per request: X x"
    fits: bool
    target_weights_fraction_of_memory: float
    draft_fraction_of_available: float  # draft weights / (requested - target weights), per GPU
    # The source's "draft ... no more than ~15% of total available VRAM", read as draft weights / memory vLLM may
    # use (memory x utilization), per GPU. Not of what is left after the target: by that reading the source's own
    # recommended INT8 target + BF16 draft on 2x H100 (16 GB of ~90 GB free, its numbers) would break its rule.
    draft_weights_fraction_of_usable: float
    findings: tuple[str, ...] = field(default_factory=tuple)
    vllm_errors: tuple[str, ...] = field(default_factory=tuple)  # what vLLM 0.32 would refuse at startup

    @property
    def kv_bytes_per_token_per_gpu(self) -> int:
        return self.target_kv_bytes_per_token_per_gpu + self.draft_kv_bytes_per_token_per_gpu

    @property
    def weights_bytes_total(self) -> int:
        return self.target_weights_bytes + self.draft_weights_bytes

    def __repr__(self) -> str:
        draft = f" + {self.draft} ({self.draft_precision})" if self.draft else ""
        return (f"MemoryPlan({self.target} ({self.target_precision}){draft} on {self.num_gpus}x {self.gpu}, "
                f"TP {self.tp}: {'fits' if self.fits else 'does NOT fit'}; KV cache "
                f"{self.kv_capacity_tokens:,} tokens = {self.max_concurrent_seqs:,} requests of "
                f"{self.context_len:,} per replica)")

    def to_frame(self):
        """The plan as a pandas DataFrame (one row per field, base units)."""
        from specdec_lib.frames import memory_plan

        return memory_plan(self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = list(self.findings)
        d["vllm_errors"] = list(self.vllm_errors)
        d["kv_bytes_per_token_per_gpu"] = self.kv_bytes_per_token_per_gpu
        d["weights_bytes_total"] = self.weights_bytes_total
        return d


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def plan_memory(target: ModelSpec | str, draft: ModelSpec | str | None, *, gpu: GPU | str, num_gpus: int, tp: int,
                draft_tp: int | None = None, target_precision: Precision | str = "bf16",
                draft_precision: Precision | str = "bf16",
                gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION, kv_cache_dtype: str = "auto",
                context_len: int, block_size: int = DEFAULT_BLOCK_SIZE, overhead: Overhead | None = None,
                max_num_batched_tokens: int | None = None, max_num_seqs: int | None = None) -> MemoryPlan:
    """Plan one deployment: weights per GPU, vLLM's reserve, the shared KV budget and what it holds.

    draft_tp=None means vLLM 0.32's default (the target's TP). A draft_tp of 1 with tp > 1 (the source's
    --speculative-draft-tensor-parallel-size 1) is planned as the draft whole on every rank (the GPU that
    holds it bounds the shared block count) and reported in vllm_errors, since vLLM 0.32's draft_model
    proposer refuses it. Per GPU: KV budget = ceil(memory x utilization) - target weights - draft weights
    - overhead (activation peak + non-torch + CUDA graphs; see estimate_overhead). A measured overhead passed
    in is used for the without-draft figures too; the estimate drops the draft's CUDA graphs there.
    """
    t = _resolve_model(target, "target")
    d = _resolve_model(draft, "draft") if draft is not None else None
    g = _resolve_gpu(gpu)
    tp_ = _positive_int("tp", tp)
    n = _positive_int("num_gpus", num_gpus)
    if n % tp_:
        raise ValueError(f"num_gpus={n}: expected a multiple of tp={tp_} (accepted: {tp_}, {2 * tp_}, ...)")
    check_tp(t, tp_, "tp")
    util = check_utilization(gpu_memory_utilization)
    ctx = _positive_int("context_len", context_len)
    if ctx > t.max_position_embeddings:
        raise ValueError(f"context_len={ctx}: {t.name} accepts at most max_position_embeddings="
                         f"{t.max_position_embeddings} (accepted range 1..{t.max_position_embeddings})")
    bs = _positive_int("block_size", block_size)
    kvb = kv_dtype_bytes(kv_cache_dtype)
    tprec = _resolve_precision(target_precision)
    dprec = _resolve_precision(draft_precision) if d is not None else None
    dtp = None
    if d is not None:
        dtp = tp_ if draft_tp is None else _positive_int("draft_tp", draft_tp)
        if dtp > tp_ or tp_ % dtp:
            raise ValueError(f"draft_tp={dtp}: expected a divisor of tp={tp_}")
        check_tp(d, dtp, "draft_tp")
    default_tokens, default_seqs = default_batch_limits(g)
    mbt = _positive_int("max_num_batched_tokens", max_num_batched_tokens or default_tokens)
    mns = _positive_int("max_num_seqs", max_num_seqs or default_seqs)
    ov = overhead or estimate_overhead(t, d, tp=tp_, max_num_batched_tokens=mbt, max_num_seqs=mns)

    requested = math.ceil(g.memory_bytes * util)
    tw_total = weight_bytes(t, tprec, 1)
    tw_gpu = weight_bytes(t, tprec, tp_)
    dw_total = weight_bytes(d, dprec, 1) if d is not None else 0
    dw_gpu = weight_bytes(d, dprec, dtp) if d is not None else 0
    budget = requested - tw_gpu - dw_gpu - ov.total_bytes
    ov_nd = overhead or estimate_overhead(t, None, tp=tp_, max_num_batched_tokens=mbt, max_num_seqs=mns)
    budget_no_draft = requested - tw_gpu - ov_nd.total_bytes

    t_kv = kv_bytes_per_token(t, kvb, tp_)
    d_kv = kv_bytes_per_token(d, kvb, dtp) if d is not None else 0
    models = [t] + ([d] if d is not None else [])
    tps = [tp_] + ([dtp] if d is not None else [])
    bpb = bytes_per_block(models, kvb, bs, tps)
    num_blocks = max(0, budget) // bpb
    blocks_per_seq = math.ceil(ctx / bs)
    capacity = kv_capacity_tokens(max(0, budget), models, kvb, bs, tp=tps, max_model_len=ctx)
    capacity_nd = kv_capacity_tokens(max(0, budget_no_draft), [t], kvb, bs, tp=tp_, max_model_len=ctx)
    nb_nd = max(0, budget_no_draft) // bytes_per_block([t], kvb, bs, tp_)
    max_seqs = max(0, num_blocks - 1) // blocks_per_seq
    max_seqs_nd = max(0, nb_nd - 1) // blocks_per_seq
    fits = max_seqs >= 1
    t_frac = tw_gpu / g.memory_bytes
    avail_after_target = requested - tw_gpu
    d_frac = dw_gpu / avail_after_target if avail_after_target > 0 else math.inf
    d_rule = dw_gpu / requested

    findings: list[str] = []
    errors: list[str] = []
    if fits:
        findings.append(f"Fits: {_gib(budget)} of KV cache per GPU = {capacity:,} tokens = {max_seqs:,} concurrent "
                        f"sequences of {ctx:,} tokens per replica.")
    else:
        findings.append(f"Does not fit: {_gib(budget)} left for KV cache per GPU after weights "
                        f"({_gib(tw_gpu + dw_gpu)}) and reserve ({_gib(ov.total_bytes)}); one sequence of {ctx:,} "
                        f"tokens needs {_gib((blocks_per_seq + 1) * bpb)}.")
        errors.append("vLLM refuses to start: the KV cache cannot hold one request at max_model_len "
                      f"{ctx:,} (vllm/v1/core/kv_cache_utils.py _check_enough_kv_cache_memory).")
    verb = "over" if t_frac > RULE_TARGET_WEIGHTS_FRACTION else "within"
    findings.append(f"Target weights take {t_frac:.0%} of each GPU's {_gib(g.memory_bytes)} ({verb} the source's "
                    f"70% rule of thumb{': a draft will cut concurrency, test under load' if verb == 'over' else ''}).")
    if d is not None:
        verb = "over" if d_rule > RULE_DRAFT_FRACTION else "within"
        findings.append(f"Draft weights take {d_rule:.0%} of the memory vLLM may use ({_gib(dw_gpu)} of "
                        f"{_gib(requested)} per GPU; {verb} the source's 15% rule of thumb) and {d_frac:.0%} of "
                        f"what is left after the target ({_gib(avail_after_target)}).")
        share = d_kv / (t_kv + d_kv)
        findings.append(f"The draft's own KV cache takes {share:.0%} of every block ({d_kv:,} of {t_kv + d_kv:,} "
                        f"bytes per token per GPU): the draft costs {capacity_nd - capacity:,} tokens of KV cache "
                        f"({max_seqs_nd - max_seqs:,} sequences), not just its weights.")
        if dtp != tp_:
            errors.append(f"vLLM 0.32 refuses draft_tensor_parallel_size={dtp} with tensor_parallel_size={tp_} for "
                          "method draft_model (vllm/v1/spec_decode/draft_model.py _raise_if_draft_tp_mismatch).")
        if d.vocab_size != t.vocab_size:
            errors.append(f"vLLM 0.32 refuses a draft_model with vocab_size {d.vocab_size:,} for a target with "
                          f"{t.vocab_size:,} unless use_heterogeneous_vocab=true (greedy draft sampling only).")
        if ctx > d.max_position_embeddings:
            findings.append(f"context_len {ctx:,} exceeds the draft's max_position_embeddings "
                            f"{d.max_position_embeddings:,}.")
    for model, prec, rank_tp, role in ((t, tprec, tp_, "target"), (d, dprec, dtp, "draft")):
        if model is None or not prec.group_size:
            continue
        # Row-parallel layers (o_proj, down_proj) split their input dimension, which carries the groups.
        for dim_name, dim in (("intermediate_size", model.intermediate_size), ("q heads x head_dim", model.q_size)):
            if (dim // rank_tp) % prec.group_size:
                errors.append(f"{role} {model.name}: {dim_name} {dim} / TP {rank_tp} is not a multiple of the "
                              f"{prec.name} group size {prec.group_size}: vLLM cannot shard such a checkpoint "
                              "(published AWQ/GPTQ releases often pad the dimension: plan with their own config.json).")
    if kvb == 1:
        findings.append("fp8 KV cache: half the bytes per token of bf16, at some accuracy risk.")

    return MemoryPlan(
        target=t.name, draft=d.name if d is not None else None, gpu=g.name, num_gpus=n, tp=tp_, draft_tp=dtp,
        replicas=n // tp_, target_precision=tprec.name, draft_precision=dprec.name if dprec else None,
        gpu_memory_utilization=util, kv_cache_dtype=kv_cache_dtype, kv_dtype_bytes=kvb, context_len=ctx,
        block_size=bs, max_num_batched_tokens=mbt, max_num_seqs=mns, memory_bytes_per_gpu=g.memory_bytes,
        requested_bytes_per_gpu=requested, target_weights_bytes=tw_total, draft_weights_bytes=dw_total,
        target_weights_bytes_per_gpu=tw_gpu, draft_weights_bytes_per_gpu=dw_gpu,
        activation_peak_bytes_per_gpu=ov.activation_peak_bytes, non_torch_bytes_per_gpu=ov.non_torch_bytes,
        cudagraph_bytes_per_gpu=ov.cudagraph_bytes, overhead_source=ov.source, kv_budget_bytes_per_gpu=budget,
        kv_budget_bytes_total=budget * tp_, target_kv_heads_per_rank=kv_heads_per_rank(t, tp_),
        draft_kv_heads_per_rank=kv_heads_per_rank(d, dtp) if d is not None else None,
        target_kv_bytes_per_token_per_gpu=t_kv, draft_kv_bytes_per_token_per_gpu=d_kv,
        bytes_per_block_per_gpu=bpb, num_blocks=num_blocks, kv_capacity_tokens=capacity,
        kv_capacity_tokens_without_draft=capacity_nd, draft_kv_share=d_kv / (t_kv + d_kv),
        blocks_per_seq=blocks_per_seq, max_concurrent_seqs=max_seqs, max_concurrent_seqs_without_draft=max_seqs_nd,
        max_concurrency_vllm=num_blocks / blocks_per_seq, fits=fits, target_weights_fraction_of_memory=t_frac,
        draft_fraction_of_available=d_frac if d is not None else 0.0,
        draft_weights_fraction_of_usable=d_rule if d is not None else 0.0, findings=tuple(findings),
        vllm_errors=tuple(errors),
    )


# --------------------------------------------------------------------------------------------------
# The source's quantization table
# --------------------------------------------------------------------------------------------------

# (target precision, draft precision, source's target GB, draft GB, total GB) in the source's row order.
SOURCE_QUANT_ROWS: tuple[tuple[str, str, float, float, float], ...] = (
    ("bf16", "bf16", 140, 16, 156),
    ("int8", "bf16", 70, 16, 86),
    ("int8", "int8", 70, 8, 78),
    ("int4-awq", "bf16", 35, 16, 51),
    ("int4-awq", "int4-awq", 35, 4, 39),
)
# What the source says is left (GB) and whether it fits, where it says so, keyed by (GPU, target, draft).
SOURCE_LEFT_GB: dict[tuple[str, str, str], float] = {
    ("H100-SXM", "bf16", "bf16"): 4, ("H100-SXM", "int8", "bf16"): 74, ("H200", "bf16", "bf16"): 126,
}
SOURCE_FITS: dict[tuple[str, str, str], bool] = {
    ("H100-SXM", "bf16", "bf16"): False, ("H100-SXM", "int8", "bf16"): True, ("H100-SXM", "int8", "int8"): True,
    ("H100-SXM", "int4-awq", "bf16"): True, ("H100-SXM", "int4-awq", "int4-awq"): True,
    ("H200", "bf16", "bf16"): True,
}


@dataclass(frozen=True)
class QuantizationRow:
    target_precision: str
    draft_precision: str
    source_target_gb: float
    source_draft_gb: float
    source_total_gb: float
    source_left_gb: float | None  # as the source states it (None: not stated)
    source_fits: bool | None
    target_weights_bytes: int
    draft_weights_bytes: int
    weights_bytes: int
    naive_left_bytes: int  # the source's method: num_gpus x nominal GB - weights
    kv_budget_bytes: int  # the library: over all TP ranks, after utilization and vLLM's reserve
    fits: bool
    kv_capacity_tokens: int
    max_concurrent_seqs: int
    plan: MemoryPlan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["plan"] = self.plan.to_dict()
        return d


def source_quantization_table(gpu: GPU | str = "H100-SXM", num_gpus: int = 2, *,
                              target: ModelSpec | str = "meta-llama/Llama-3.1-70B",
                              draft: ModelSpec | str = "meta-llama/Llama-3.1-8B", draft_tp: int | None = None,
                              gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
                              context_len: int = 8192, overhead: Overhead | None = None) -> list[QuantizationRow]:
    """The source's five target/draft quantization rows (70B + 8B), recomputed on num_gpus x gpu at TP num_gpus."""
    g = _resolve_gpu(gpu)
    rows = []
    for tprec, dprec, s_t, s_d, s_total in SOURCE_QUANT_ROWS:
        plan = plan_memory(target, draft, gpu=g, num_gpus=num_gpus, tp=num_gpus, draft_tp=draft_tp,
                           target_precision=tprec, draft_precision=dprec,
                           gpu_memory_utilization=gpu_memory_utilization, context_len=context_len,
                           overhead=overhead)
        weights = plan.target_weights_bytes + plan.draft_weights_bytes
        nominal = int(num_gpus * g.nominal_memory_gb * 1e9)
        key = (g.name, tprec, dprec)
        rows.append(QuantizationRow(
            target_precision=tprec, draft_precision=dprec, source_target_gb=s_t, source_draft_gb=s_d,
            source_total_gb=s_total, source_left_gb=SOURCE_LEFT_GB.get(key), source_fits=SOURCE_FITS.get(key),
            target_weights_bytes=plan.target_weights_bytes, draft_weights_bytes=plan.draft_weights_bytes,
            weights_bytes=weights, naive_left_bytes=nominal - weights, kv_budget_bytes=plan.kv_budget_bytes_total,
            fits=plan.fits, kv_capacity_tokens=plan.kv_capacity_tokens,
            max_concurrent_seqs=plan.max_concurrent_seqs, plan=plan,
        ))
    return rows
