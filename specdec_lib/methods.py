"""Every speculative method vLLM 0.32 runs, planned alike: memory taken from the KV cache, draft cost, acceptance.

Methods: ``draft_model`` (a separate small model), ``eagle`` / ``eagle3`` (a head from data/drafters.csv),
the MTP names (the target's own multi-token-prediction module), ``ngram`` and ``suffix`` (CPU lookups, no
weights). Pure: catalog names in, numbers out; ``compare_methods`` (methods_compare.py) puts them side by side.

Memory (bytes, per GPU of the target's TP group), read from vLLM 0.32's source:

* weights: an EAGLE-3 head as ``llama_eagle3.py`` builds it: its decoder layer(s) (QKV of layer 0 reads 2h:
  embeddings and hidden state concatenated) sharded like the target's layers, ``fc`` (3h -> h) a
  ReplicatedLinear (whole on every GPU), its lm_head over the draft vocabulary (ParallelLMHead: the vocabulary,
  padded to 64, split over TP) and the int64 ``d2t`` map (draft_vocab x 8 bytes, replicated). The embedding is the
  target's (``v1/spec_decode/llm_base_proposer.py`` _maybe_share_embeddings), not counted. An MTP module shares
  the target's embedding and lm_head (same file), so its resident weights are its published parameter count
  minus those two copies, split over TP.
* KV: the head's attention layers register after the target's (``start_layer_id = target layers``) and, having
  the same KV shape, join the target's single KV-cache group (``v1/core/kv_cache_utils.py``): every block holds
  block_size tokens of every layer of both, so capacity = budget // (block_size x (target + head) bytes per
  token) -- what ``memory.kv_capacity_tokens`` computes when given the head as a model (``DrafterSpec.kv_model``).
* reserve: the estimate adds one more CUDA-graph set for the head, as ``memory.estimate_overhead`` does for a
  draft model (``memory.CUDAGRAPH_BYTES_PER_MODEL``).

Cost: a head step is the load model's step (``load.step_time_breakdown``) of a one-layer model whose linear
weights equal the head's: SwiGLU width I' = I + h + (q + 2 kv)/3 folds the fc (3h x h) and layer 0's extra QKV
input (h x (q + 2 kv)) into 3 h I' exactly (integer for every published Llama head), lm_head over the draft
vocabulary, the head's own KV cache and per-layer overhead. So every QPS/crossover figure comes from load.py's one
path (``load.Deployment(method="draft_model", draft=<that model>)``). Approximation, said: under TP the fc is
counted sharded (vLLM replicates it), i.e. (1 - 1/tp) x 3h^2 x 2 bytes too few per GPU. ``parallel_drafting``
(P-EAGLE) replaces the k sequential head steps by one pass over 2k positions per sequence (the accepted tokens
plus k - 1 masked slots), see ``draft_round_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from . import load, memory
from .catalog import GPU, ModelSpec, get_gpu, get_model, get_precision
from .drafters import D2T_BYTES_PER_ENTRY, DrafterSpec, get_drafter

LOOKUP_METHODS = ("ngram", "suffix")
HEAD_METHODS = ("eagle", "eagle3")
SUFFIX_DEFAULT_K = 24  # vllm/config/speculative.py: suffix_decoding_max_tree_depth default (and k when unset)


def _drafter(d: DrafterSpec | str) -> DrafterSpec:
    return d if isinstance(d, DrafterSpec) else get_drafter(d)


# ----------------------------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------------------------


def head_weight_bytes(drafter: DrafterSpec | str, tp: int = 1, *, dtype_bytes: int = 2) -> int:
    """Bytes of a head's or MTP module's weights resident on one GPU of a TP group of ``tp`` (see module doc)."""
    d = _drafter(drafter)
    load._positive_int("tp", tp)
    if d.is_mtp:
        shared = 2 * d.vocab_size * d.hidden_size  # embedding and lm_head: the target's
        return math.ceil((d.params - shared) / tp) * dtype_bytes
    h, hd = d.hidden_size, d.head_dim
    q_rank = d.num_attention_heads * hd // tp
    kv_rank = max(1, d.num_kv_heads // tp) * hd
    inter_rank = math.ceil(d.intermediate_size / tp)
    layers = 0
    for i in range(d.num_layers):
        qkv_in = 2 * h if (d.method == "eagle3" and i == 0) else h
        norms = 3 * h if d.method == "eagle3" else (h if i == 0 else 2 * h)
        layers += qkv_in * (q_rank + 2 * kv_rank) + q_rank * h + 3 * h * inter_rank + norms
    fc = d.fc_input_multiple * h * h  # ReplicatedLinear: whole on every GPU
    final_norm = h if d.method == "eagle3" else 0
    lm_head = 0
    if d.own_lm_head:
        padded = math.ceil(d.draft_vocab_size / memory.VOCAB_PADDING) * memory.VOCAB_PADDING
        lm_head = math.ceil(padded / tp) * h
    d2t = d.draft_vocab_size * D2T_BYTES_PER_ENTRY if d.has_d2t else 0
    return (layers + fc + final_norm + lm_head) * dtype_bytes + d2t


def head_kv_bytes_per_token(drafter: DrafterSpec | str, kv_dtype_bytes: int, tp: int = 1) -> int:
    """KV bytes per token per GPU of the head's layers: GQA as memory.kv_bytes_per_token; MLA one latent of
    head_dim per layer (vLLM's MLAAttentionSpec, no separate V, not split over TP)."""
    d = _drafter(drafter)
    if d.attention == "mla":
        return d.num_layers * d.head_dim * kv_dtype_bytes
    return memory.kv_bytes_per_token(d.kv_model(), kv_dtype_bytes, tp)


@dataclass(frozen=True)
class MethodMemory:
    """What one method takes from the memory vLLM may use, per GPU, and what KV cache is left."""

    method: str
    drafter: str | None
    extra_weights_bytes_per_gpu: int
    extra_kv_bytes_per_token_per_gpu: int
    kv_budget_bytes_per_gpu: int
    kv_capacity_tokens: int  # vLLM's "KV cache size: N tokens" with this method
    kv_capacity_tokens_without: int  # the same deployment without speculation
    max_concurrent_seqs: int  # at context_len, per replica, after the null block
    max_concurrent_seqs_without: int
    fits: bool
    notes: tuple[str, ...] = ()

    @property
    def kv_tokens_taken(self) -> int:
        return self.kv_capacity_tokens_without - self.kv_capacity_tokens


def _base_plan(target: str, *, gpu: str, num_gpus: int, tp: int, target_precision: str, kv_cache_dtype: str,
               context_len: int, gpu_memory_utilization: float, block_size: int):
    return memory.plan_memory(target, None, gpu=gpu, num_gpus=num_gpus, tp=tp, target_precision=target_precision,
                              kv_cache_dtype=kv_cache_dtype, context_len=context_len, block_size=block_size,
                              gpu_memory_utilization=gpu_memory_utilization)


def method_memory(method: str, target: str, *, drafter: DrafterSpec | str | None = None, draft_model: str | None = None,
                  draft_precision: str = "bf16", gpu: str, num_gpus: int, tp: int, target_precision: str = "bf16",
                  kv_cache_dtype: str = "auto", context_len: int,
                  gpu_memory_utilization: float = memory.DEFAULT_GPU_MEMORY_UTILIZATION,
                  block_size: int = memory.DEFAULT_BLOCK_SIZE) -> MethodMemory:
    """Memory of one method on the target's deployment, through memory.plan_memory / kv_capacity_tokens."""
    kw = dict(gpu=gpu, num_gpus=num_gpus, tp=tp, target_precision=target_precision, kv_cache_dtype=kv_cache_dtype,
              context_len=context_len, gpu_memory_utilization=gpu_memory_utilization, block_size=block_size)
    base = _base_plan(target, **kw)
    if method in LOOKUP_METHODS:
        return MethodMemory(method, None, 0, 0, base.kv_budget_bytes_per_gpu, base.kv_capacity_tokens,
                            base.kv_capacity_tokens, base.max_concurrent_seqs, base.max_concurrent_seqs, base.fits,
                            (f"{method}: no weights and no KV cache on the GPU (CPU-side matching)",))
    if method == "draft_model":
        if not draft_model:
            raise ValueError("draft_model=None: method 'draft_model' needs a draft model name")
        plan = memory.plan_memory(target, draft_model, draft_precision=draft_precision, draft_tp=tp, **kw)
        return MethodMemory(method, plan.draft, plan.draft_weights_bytes_per_gpu,
                            plan.draft_kv_bytes_per_token_per_gpu, plan.kv_budget_bytes_per_gpu,
                            plan.kv_capacity_tokens, plan.kv_capacity_tokens_without_draft, plan.max_concurrent_seqs,
                            plan.max_concurrent_seqs_without_draft, plan.fits, plan.vllm_errors)
    if drafter is None:
        raise ValueError(f"drafter=None: method {method!r} needs a head or MTP module from data/drafters.csv")
    d = _drafter(drafter)
    t = get_model(target)
    kvb = memory.kv_dtype_bytes(kv_cache_dtype)
    weights = head_weight_bytes(d, tp)
    budget = base.kv_budget_bytes_per_gpu - weights - memory.CUDAGRAPH_BYTES_PER_MODEL
    notes = [f"{d.name}: {weights / memory.GIB:.2f} GiB of weights per GPU (embedding"
             f"{' and lm_head' if d.is_mtp else ''} shared with the target) + one more CUDA-graph set "
             f"({memory.CUDAGRAPH_BYTES_PER_MODEL / memory.MIB:.0f} MiB, estimate)"]
    if d.attention != "gqa":
        raise ValueError(f"drafter {d.name}: its {d.attention} KV cache goes into a separate vLLM KV-cache group, "
                         "which this planner does not model (only GQA heads beside a GQA target)")
    head_kv = d.kv_model()
    if (head_kv.num_kv_heads, head_kv.head_dim) != (t.num_kv_heads, t.head_dim):
        notes.append(f"the head's KV shape ({head_kv.num_kv_heads} x {head_kv.head_dim}) differs from the target's: "
                     "vLLM still shares one group (UniformTypeKVCacheSpecs) and this sum holds")
    cap = memory.kv_capacity_tokens(max(0, budget), [t, head_kv], kvb, block_size, tp=[tp, tp],
                                    max_model_len=context_len)
    bpb = memory.bytes_per_block([t, head_kv], kvb, block_size, [tp, tp])
    blocks_per_seq = math.ceil(context_len / block_size)
    seqs = max(0, max(0, budget) // bpb - 1) // blocks_per_seq
    return MethodMemory(method, d.name, weights, head_kv_bytes_per_token(d, kvb, tp), budget, cap,
                        base.kv_capacity_tokens, seqs, base.max_concurrent_seqs, seqs >= 1, tuple(notes))


# ----------------------------------------------------------------------------------------------------------------
# cost
# ----------------------------------------------------------------------------------------------------------------


def head_cost_model(drafter: DrafterSpec | str, target: ModelSpec | str | None = None) -> ModelSpec:
    """A one-layer ModelSpec whose step in load.py costs what the head's does (see module doc for I')."""
    d = _drafter(drafter)
    if d.is_mtp or d.attention != "gqa":
        raise ValueError(f"drafter {d.name}: the cost model covers EAGLE heads (an MTP layer is one target layer)")
    h, q, kv = d.hidden_size, d.num_attention_heads * d.head_dim, d.num_kv_heads * d.head_dim
    extra = d.fc_input_multiple * h * h + (h * (q + 2 * kv) if d.method == "eagle3" else 0)
    vocab = d.draft_vocab_size
    if not d.own_lm_head:  # the head computes logits with the target's lm_head
        t = get_model(target) if isinstance(target, str) else target
        vocab = t.vocab_size if t is not None else d.vocab_size
    return ModelSpec(name=f"{d.name} (cost model)", family="drafter", tokenizer="", num_layers=d.num_layers,
                     hidden_size=h, intermediate_size=d.intermediate_size + round(extra / (3 * h)),
                     num_attention_heads=d.num_attention_heads, num_kv_heads=d.num_kv_heads, head_dim=d.head_dim,
                     vocab_size=vocab, tie_word_embeddings=False, max_position_embeddings=1, params=d.params,
                     model_type="drafter")


def deployment(method: str, target: str, *, gpu: GPU | str, tp: int, target_precision: str = "bf16",
               drafter: DrafterSpec | str | None = None, draft_model: str | None = None,
               draft_precision: str = "bf16", kv_dtype_bytes: int = 2,
               factors: load.StepFactors = load.DEFAULT_FACTORS) -> load.Deployment:
    """The load model's Deployment for any method (heads and MTP as a "draft_model" at the target's TP)."""
    common = dict(target=get_model(target), target_precision=get_precision(target_precision),
                  gpu=gpu if isinstance(gpu, GPU) else get_gpu(gpu), tp=tp, kv_dtype_bytes=kv_dtype_bytes,
                  factors=factors)
    if method in LOOKUP_METHODS:
        return load.Deployment(method="ngram", **common)  # CPU proposals: no GPU draft time
    if method == "draft_model":
        return load.Deployment(method="draft_model", draft=get_model(draft_model),
                               draft_precision=get_precision(draft_precision), draft_tp=tp, **common)
    d = _drafter(drafter)
    if d.is_mtp:
        t = common["target"]
        mtp = replace(t, name=f"{d.name} (cost model)", num_layers=d.num_layers,
                      intermediate_size=t.intermediate_size + round(d.fc_input_multiple * t.hidden_size / 3))
        return load.Deployment(method="draft_model", draft=mtp, draft_precision=common["target_precision"],
                               draft_tp=tp, **common)
    return load.Deployment(method="draft_model", draft=head_cost_model(d, common["target"]),
                           draft_precision=get_precision("bf16"), draft_tp=tp, **common)


def head_step_time(drafter: DrafterSpec | str, *, gpu: GPU | str, tp: int = 1, batch_size: float,
                   context_len: int, tokens_per_seq: int = 1, target: str | None = None,
                   factors: load.StepFactors = load.DEFAULT_FACTORS, kv_dtype_bytes: int = 2) -> load.StepTime:
    """One head pass for ``batch_size`` sequences x ``tokens_per_seq`` positions (load.step_time_breakdown)."""
    g = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    return load.step_time_breakdown(head_cost_model(drafter, target), get_precision("bf16"), g, tp, batch_size,
                                    tokens_per_seq, context_len, factors, kv_dtype_bytes=kv_dtype_bytes)


def draft_round_s(dep: load.Deployment, batch_size: float, k: int, context_len: int, *,
                  parallel_drafting: bool = False) -> float:
    """Draft time of one speculation round: k sequential draft steps (load.spec_step_time), or with
    ``parallel_drafting`` one pass over 2k positions per sequence (accepted tokens + k - 1 masked slots)."""
    if not parallel_drafting:
        return load.spec_step_time(dep, batch_size, k, context_len).draft_s
    return load.step_time_s(dep.draft, dep.draft_precision, dep.gpu, dep.draft_tp, batch_size, 2 * k, context_len,
                            dep.factors, kv_dtype_bytes=dep.kv_dtype_bytes)


def speedup_at_batch(dep: load.Deployment, alpha: float, k: int, batch_size: float, context_len: int, *,
                     parallel_drafting: bool = False) -> float:
    """TPOT speedup at a running batch: baseline step x E(alpha, k) / (draft round + verification step)."""
    from . import speculation

    if not parallel_drafting:
        return load.speedup_vs_batch(dep, alpha, k, batch_size, context_len).speedup
    base = load.target_step_time(dep, batch_size, 1, context_len).total_s
    verify = load.target_step_time(dep, batch_size, k + 1, context_len).total_s
    e = speculation.expected_tokens_per_step(alpha, k)
    return base * e / (draft_round_s(dep, batch_size, k, context_len, parallel_drafting=True) + verify)


_COMPARE_NAMES = ("compare_methods", "MethodComparison", "MethodRow", "RULE")


def __getattr__(name: str):
    """`methods.compare_methods` and friends live in methods_compare.py (which imports this module)."""
    if name in _COMPARE_NAMES:
        from . import methods_compare

        return getattr(methods_compare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
