"""Step time: the affine model, its least-squares fit, the load model's roofline, and calibration from runs (pure).

A step-time function is `step_time_fn(batch_size, tokens_in_step, num_speculative_tokens, kv_tokens)` in
seconds (`StepTimeFn`). `AffineStepTime` is the first-order model; `fit_affine_step_time` fits it to timed steps;
`calibrate_from_records` and `calibrate_draft_from_records` fit it to a closed-loop run of a real server
(runs.py records); `step_time_from_load` wraps `specdec_lib.load`'s roofline for a `load.Deployment`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence

import numpy as np


class StepTimeFn(Protocol):
    def __call__(
        self, batch_size: int, tokens_in_step: int, num_speculative_tokens: int, kv_tokens: Any
    ) -> Any:  # float, or an array when kv_tokens is an array
        ...


@dataclass(frozen=True)
class AffineStepTime:
    """Step time = fixed + per_token * tokens_in_step + per_seq * batch_size + per_kv_token * kv_tokens
    + k * (draft_fixed + draft_per_seq * batch_size + draft_per_kv_token * kv_tokens), in seconds.

    A first-order model of a forward pass: `fixed_s` is reading the weights (memory-bound floor), `per_token_s`
    the compute per scheduled token (prefill chunks, and the k + 1 positions each speculative sequence verifies),
    `per_kv_token_s` reading the KV cache in attention (kv_tokens: the context the step's sequences hold); the
    draft runs k sequential forward passes per step, each `draft_fixed_s` + `draft_per_seq_s` per sequence.
    `draft_per_kv_token_s` is what each speculative token adds per KV token: the draft pass's attention and the
    target's extra verified position attending the sequence's context. Where attention reads the KV once for all
    k + 1 query positions (a memory-bound GPU kernel) it is near 0; where it computes per query position it
    approaches `per_kv_token_s` (on the engine-bound CPU server, with the probe's 60-250-token contexts, both came
    out 0-5 us, no more than the machine's drift: docs/simulation.md). `draft_per_token_s` is the draft's compute
    per token it processes: vLLM's draft-model proposer (`vllm/v1/spec_decode/llm_base_proposer.py`, `propose`)
    runs its first pass over every token the target scheduled in the step (prefill chunks and the k + 1 verified
    positions: the draft's KV cache follows the target's), then k - 1 passes of one token per sequence, so a step
    with k >= 1 adds draft_per_token * (tokens_in_step + (k - 1) * batch_size). Summing memory and compute time
    (rather than taking the maximum, as a roofline would) overstates the step near the memory/compute crossover:
    calibrate from your own measurements with `fit_affine_step_time`.
    """

    fixed_s: float
    per_token_s: float = 0.0
    per_seq_s: float = 0.0
    per_kv_token_s: float = 0.0
    draft_fixed_s: float = 0.0
    draft_per_seq_s: float = 0.0
    draft_per_token_s: float = 0.0
    draft_per_kv_token_s: float = 0.0

    def __post_init__(self) -> None:
        for name in STEP_TIME_FIELDS:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"AffineStepTime.{name} = {value!r}; expected a finite number >= 0 seconds")
        if self.fixed_s <= 0 and self.per_token_s <= 0 and self.per_seq_s <= 0:
            raise ValueError("AffineStepTime: fixed_s, per_token_s and per_seq_s are all 0; a step must take time")

    def __call__(self, batch_size, tokens_in_step, num_speculative_tokens, kv_tokens):
        return (
            self.fixed_s
            + self.per_token_s * tokens_in_step
            + self.per_seq_s * batch_size
            + self.per_kv_token_s * kv_tokens
            + num_speculative_tokens * (self.draft_fixed_s + self.draft_per_seq_s * batch_size
                                        + self.draft_per_kv_token_s * kv_tokens)
            + (self.draft_per_token_s * (tokens_in_step + (num_speculative_tokens - 1) * batch_size)
               if num_speculative_tokens else 0.0)
        )


STEP_TIME_FIELDS = tuple(f.name for f in dataclasses.fields(AffineStepTime))  # all seconds


def nonnegative_least_squares(columns: dict[str, np.ndarray], y: np.ndarray, what: str,
                              weights: np.ndarray | None = None) -> dict[str, float]:
    """Least squares with non-negative coefficients, rows weighted by `weights` (e.g. 1 / y for relative error;
    default unweighted): fit, drop the most negative coefficient, refit (an active-set method, enough for a handful
    of unknowns). Returns name -> coefficient (0 for dropped or all-zero columns)."""
    w = np.ones_like(y, dtype=np.float64) if weights is None else np.asarray(weights, dtype=np.float64)
    active = [name for name in columns if np.any(columns[name] != 0)]
    while active:
        x = np.column_stack([columns[name] * w for name in active])
        sol, *_ = np.linalg.lstsq(x, y * w, rcond=None)
        if np.all(sol >= 0):
            fitted = dict(zip(active, sol.tolist()))
            return {name: float(fitted.get(name, 0.0)) for name in columns}
        active.pop(int(np.argmin(sol)))
    raise ValueError(f"{what}: no non-negative fit exists for these measurements")


def fit_affine_step_time(
    batch_size: Sequence[float],
    tokens_in_step: Sequence[float],
    step_time_s: Sequence[float],
    kv_tokens: Sequence[float] | None = None,
) -> AffineStepTime:
    """Least-squares fit of the target-only terms (fixed, per_token, per_seq[, per_kv_token]) to measured steps.

    Coefficients are kept non-negative (a negative cost is dropped and the rest refitted). Draft terms are not
    fitted here: they need speculative measurements; set them with `dataclasses.replace`.
    """
    y = np.asarray(step_time_s, dtype=np.float64)
    columns = {
        "fixed_s": np.ones_like(y),
        "per_token_s": np.asarray(tokens_in_step, dtype=np.float64),
        "per_seq_s": np.asarray(batch_size, dtype=np.float64),
    }
    if kv_tokens is not None:
        columns["per_kv_token_s"] = np.asarray(kv_tokens, dtype=np.float64)
    if y.ndim != 1 or y.size < 2 or any(c.shape != y.shape for c in columns.values()):
        raise ValueError("fit_affine_step_time: inputs must be 1-D of equal length >= 2")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("fit_affine_step_time: step_time_s must be finite and > 0")
    return AffineStepTime(**nonnegative_least_squares(columns, y, "fit_affine_step_time"))


def step_time_from_load(deployment: Any, *, kv_bucket_tokens: int = 64) -> StepTimeFn:
    """A step-time function from `specdec_lib.load` (roofline plus calibrated factors) for a `load.Deployment`.

    Target: `load.target_step_time` for `batch_size` sequences at tokens_in_step / batch_size tokens each (a mixed
    prefill + decode step is approximated by its mean tokens per sequence, rounded up) and context
    kv_tokens / batch_size. Drafting, as `load.spec_step_time` charges it: k single-token draft steps
    (`load.draft_step_time_s`), or the fixed n-gram cost once. Results are memoised on (batch size, tokens, k,
    context rounded to `kv_bucket_tokens`), since the simulation asks for the same shapes many times.
    """
    from specdec_lib import load  # pure as well; imported here so AffineStepTime users need no catalog

    if int(kv_bucket_tokens) != kv_bucket_tokens or kv_bucket_tokens < 1:
        raise ValueError(f"kv_bucket_tokens = {kv_bucket_tokens!r}; expected an integer >= 1")
    cache: dict[tuple[int, int, int, int], float] = {}

    def one(batch_size: int, tokens_in_step: int, k: int, kv: float) -> float:
        b = max(1, int(batch_size))
        ctx = max(1, int(round(kv / b / kv_bucket_tokens)) * kv_bucket_tokens)
        key = (b, int(tokens_in_step), int(k), ctx)
        if key not in cache:
            tokens_per_seq = max(1, math.ceil(tokens_in_step / b))
            t = load.target_step_time(deployment, b, tokens_per_seq, ctx).total_s
            if k > 0:
                if deployment.method == "ngram":
                    t += deployment.ngram_step_s
                else:
                    t += k * load.draft_step_time_s(deployment, b, ctx)
            cache[key] = float(t)
        return cache[key]

    def step_time(batch_size, tokens_in_step, num_speculative_tokens, kv_tokens):
        if np.ndim(kv_tokens) == 0:
            return one(batch_size, tokens_in_step, num_speculative_tokens, float(kv_tokens))
        return np.array([one(batch_size, tokens_in_step, num_speculative_tokens, float(v)) for v in kv_tokens])

    return step_time


@dataclass(frozen=True)
class Calibration:
    """Step costs fitted to a measured baseline run, plus the per-request time outside the engine steps (HTTP,
    tokenisation, the first chunk's trip to the client) that a client-side TTFT includes and a step does not."""

    step_time: AffineStepTime
    request_overhead_s: float
    num_observations: int


def _step_estimates(records: Iterable[Mapping[str, Any]], per_chunk: bool) -> tuple[dict[int, float], float]:
    """Per closed-loop concurrency c, the median engine step of the level, and the idle first-token latency.

    A request run at concurrency c spends its life after the first step in steps of about c sequences, so its
    step is (E2E - idle TTFT) / (steps - 1), where steps = completion tokens (one per step without speculation) or
    streamed chunks (vLLM sends one chunk per engine step with speculation), and idle TTFT is the smallest TTFT at
    concurrency 1. E2E is used, not TTFT or inter-chunk gaps: on a small CPU server the API process is starved
    while the engine runs and delivers chunks in bursts (a TTFT of most of the request and gaps of microseconds
    were seen), which moves time between TTFT and TPOT but not out of E2E; bursts only ever delay the first
    chunk, so the smallest idle TTFT is the one closest to the engine's.
    """
    ok = [r for r in records if not r.get("error") and r.get("concurrency") and r.get("e2e_s") is not None]
    idle_ttft = [float(r["ttft_s"]) for r in ok if int(r["concurrency"]) == 1 and r.get("ttft_s") is not None]
    if not idle_ttft:
        raise ValueError("records: no successful request at concurrency 1 (needed for the idle TTFT)")
    ttft0 = float(np.min(idle_ttft))
    by_c: dict[int, list[float]] = {}
    for r in ok:
        steps = int((r.get("chunks") if per_chunk else r.get("completion_tokens")) or 0)
        if steps >= 3:
            by_c.setdefault(int(r["concurrency"]), []).append((float(r["e2e_s"]) - ttft0) / (steps - 1))
    if len(by_c) < 2:
        raise ValueError("records: need closed-loop levels at two or more concurrencies (1 and more) to calibrate")
    return {c: float(np.median(v)) for c, v in sorted(by_c.items())}, ttft0


def calibrate_from_records(records: Iterable[Mapping[str, Any]]) -> Calibration:
    """Fit step costs to a closed-loop baseline run (runs.py records of concurrency levels, e.g. 1, 2, 4, 8).

    The median step at each concurrency c (see `_step_estimates`) is fitted with fixed + per_seq * c (non-negative
    least squares); the idle TTFT beyond one step is the per-request overhead (HTTP, tokenisation, the API
    process). per_token_s is left at 0: with prompts of tens to hundreds of tokens on a small model, prefill compute
    is lost in that overhead and cannot be separated (set it with `dataclasses.replace` where it can be measured).
    Speculative runs are refused.
    """
    records = list(records)
    for r in records:
        if not r.get("error") and (r.get("acceptance_source") is not None or r.get("draft_tokens")):
            raise ValueError(f"record {r.get('index')}: speculative; calibrate from a baseline (no draft) run")
    steps, ttft0 = _step_estimates(records, per_chunk=False)
    c = np.array(list(steps), dtype=np.float64)
    coef = nonnegative_least_squares(
        {"fixed_s": np.ones(len(c)), "per_seq_s": c}, np.array(list(steps.values())), "calibrate_from_records"
    )
    step = AffineStepTime(fixed_s=coef["fixed_s"], per_seq_s=coef["per_seq_s"])
    return Calibration(step, max(0.0, ttft0 - float(step(1, 1, 0, 0))), len(steps))


def calibrate_draft_from_records(
    records: Iterable[Mapping[str, Any]], target: AffineStepTime, num_speculative_tokens: int
) -> AffineStepTime:
    """Add draft costs to a baseline-calibrated step from a closed-loop run on the speculative server.

    The median speculative step at concurrency c (see `_step_estimates`, counting streamed chunks as steps) is
    the target's cost for c * (k + 1) tokens plus k * (draft_fixed + draft_per_seq * c); the residual over the
    target's part is fitted with non-negative least squares.
    """
    k = int(num_speculative_tokens)
    if k < 1:
        raise ValueError(f"num_speculative_tokens = {num_speculative_tokens!r}; expected >= 1")
    steps, _ = _step_estimates(records, per_chunk=True)
    c_arr = np.array(list(steps), dtype=np.float64)
    residual = np.array([steps[int(c)] - float(target(c, c * (k + 1), 0, 0)) for c in c_arr])
    coef = nonnegative_least_squares(
        {"draft_fixed_s": np.full(len(c_arr), float(k)), "draft_per_seq_s": k * c_arr},
        residual,
        "calibrate_draft_from_records",
    )
    return AffineStepTime(
        fixed_s=target.fixed_s, per_token_s=target.per_token_s, per_seq_s=target.per_seq_s,
        per_kv_token_s=target.per_kv_token_s, **coef,
    )


def alpha_from_records(records: Iterable[Mapping[str, Any]], num_speculative_tokens: int) -> float:
    """Per-token acceptance alpha from a speculative run's records: pooled accepted / draft tokens is vLLM V1's
    prefix-counting rate, converted with `speculation.alpha_from_v1_rate` (V1 counts only the accepted prefix)."""
    from specdec_lib import speculation

    accepted = drafted = 0
    for r in records:
        if not r.get("error") and r.get("accepted_tokens") is not None and r.get("draft_tokens"):
            accepted += int(r["accepted_tokens"])
            drafted += int(r["draft_tokens"])
    if drafted == 0:
        raise ValueError("records: no request reports accepted_tokens and draft_tokens")
    return float(speculation.alpha_from_v1_rate(accepted / drafted, int(num_speculative_tokens)))


def _decode_steps_table(alpha: float, tokens: int, k: int) -> list[float]:
    """E[steps to generate n more tokens] for n = 0..tokens (see `expected_decode_steps`)."""
    p = [alpha ** (j - 1) * (1 - alpha) for j in range(1, k + 1)] + [alpha ** k]
    e = [0.0] * (int(tokens) + 1)
    for n in range(1, int(tokens) + 1):
        e[n] = 1.0 + sum(pj * e[max(0, n - j)] for j, pj in enumerate(p, start=1))
    return e


def expected_decode_steps(alpha: float, tokens: int, num_speculative_tokens: int) -> float:
    """Expected decode steps to generate `tokens` tokens when each step appends 1 + a geometric accepted prefix
    truncated at k (per-token acceptance `alpha`), and the tokens past the last one needed are dropped: the
    simulator's process (`engine`). By recursion on the tokens still needed: E[n] = 1 + sum_j P(j) E[n - j], with
    P(j) = alpha^(j-1) (1 - alpha) for j = 1..k and alpha^k for j = k + 1, E[n <= 0] = 0."""
    k = int(num_speculative_tokens)
    if not 0.0 <= alpha <= 1.0 or k < 1 or int(tokens) < 0:
        raise ValueError(f"alpha = {alpha!r}, k = {k!r}, tokens = {tokens!r}; expected 0 <= alpha <= 1, k >= 1, "
                         "tokens >= 0")
    return _decode_steps_table(alpha, int(tokens), k)[int(tokens)]


def alpha_from_steps(records: Iterable[Mapping[str, Any]], num_speculative_tokens: int) -> float:
    """The per-token acceptance a replay through the simulation needs: the alpha whose process
    (`expected_decode_steps`, truncation at each request's length included) gives the records' mean decode steps
    (streamed chunks - 1 after the first token; vLLM sends one chunk per engine step with speculation).

    Why not `alpha_from_records`: a request cut by max_tokens discards its last step's surplus accepted tokens, so
    counts read from its chunks (tokens - chunks) under-read the acceptance, and a replay that truncates again
    counts that loss twice: on the engine-bound CPU server (32 tokens, k = 4) 0.876 against 0.906 at temperature
    0.1, about 5 % more simulated decode steps than measured. Bisection on alpha (steps fall as alpha rises)."""
    k = int(num_speculative_tokens)
    if k < 1:
        raise ValueError(f"num_speculative_tokens = {k!r}; expected k >= 1")
    rs = [r for r in records if not r.get("error") and r.get("chunks") and r.get("completion_tokens")
          and int(r["chunks"]) >= 2]
    if not rs:
        raise ValueError("records: no successful request with 2 or more streamed chunks and its completion tokens")
    need = [int(r["completion_tokens"]) - 1 for r in rs]
    observed = sum(int(r["chunks"]) - 1 for r in rs) / len(rs)

    def mean_steps(alpha: float) -> float:
        e = _decode_steps_table(alpha, max(need), k)
        return sum(e[n] for n in need) / len(need)

    if observed >= mean_steps(0.0):
        return 0.0
    if observed <= mean_steps(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_steps(mid) > observed else (lo, mid)
    return (lo + hi) / 2
