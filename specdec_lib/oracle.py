"""Predicting acceptance before deploying: the arithmetic (pure; no I/O, numpy only).

Inputs are what two ordinary vLLM servers return for the same token ids: per position, the top-N raw
log-probabilities of each model (``prompt_logprobs``; raw = before temperature, checked on vLLM 0.32). Outputs
are the per-position acceptance probability β, with a lower and an upper bound, and what vLLM's counters would
read when the pair is served with speculation on.

Acceptance per position, replicating vLLM 0.32 (``vllm/v1/sample/rejection_sampler.py``,
``vllm/v1/spec_decode/llm_base_proposer.py``):

* target at T < 1e-5 (vLLM's greedy test): the draft token is accepted iff it is the target's argmax (the token
  the target emitted there, ``greedy_token``); the draft proposes its own argmax whatever
  ``draft_sample_method`` says (``all_greedy`` path);
* ``draft_sample_method="greedy"`` (vLLM's default), T > 0: the draft proposes x* = argmax of its raw logits and
  sends no draft probabilities, so the kernel uses draft_prob = 1 and accepts when p_T(x*) ≥ u: β = p_T(x*) for
  one position. Along a sequence the draft's argmax is a function of the accepted text, so the rule of the next
  item applies to it too: ``prediction`` counts 1[the draft's argmax = emitted] along several sampled texts
  (exact in distribution) and keeps this β for the position-wise diagnostics and for runs recorded before;
* ``"probabilistic"``, T > 0: the draft samples x ~ q_T = softmax(ℓ_q / T) (temperature only: vLLM ignores
  top-k/top-p for the draft) and the kernel accepts when p_T(x) / q_T(x) ≥ u:
  β = Σ_x min(p_T(x), q_T(x)) (Leviathan et al. 2023, Theorem 3.5);
* n-gram and suffix decoding (no draft model, no draft probabilities): at every temperature the drafted token is
  accepted exactly when it equals the token the target emits there, β = 1[proposed = emitted]. Why, in the
  kernel's NO_DRAFT_PROBS path (T > 0): the token d is accepted when p_T(d) ≥ u, u ~ U(0, 1), i.e. with
  probability p_T(d); on rejection the recovered token is drawn from p_T with d zeroed and renormalised
  (``sample_recovered_tokens_kernel`` masks d out; exponential-race sampling), so it is never d. The emitted token
  y is therefore distributed as p_T (P(y = d) = p_T(d); P(y = x ≠ d) = (1 − p_T(d)) p_T(x) / (1 − p_T(d))), and
  "accepted" is the event y = d. The speculative server's text is distributed as the plain target's sampled
  text, and its counters are a function of that text: replaying the proposer over the target's own sampled
  continuation and counting 1[draft = emitted] is exact in distribution (one text is one draw; ``prediction``
  averages several per request). At T = 0 it is the greedy kernel's test. ``token_acceptance``'s p_T(proposed)
  is the probability for one position only: multiplied along a text that did not follow the accepted tokens, it
  biased the n-gram prediction (−0.11 at T = 0.5 in docs/acceptance.md's first run).

p_T = softmax(ℓ / T), with top-k and then top-p applied to the target only (as vLLM's
``apply_sampling_constraints``; the draft's own top-k/top-p are ignored by vLLM).

The vocabulary tail. A top-N answer leaves the tail's raw mass R = 1 − Σ_returned e^ℓ unknown in its shape: each
unreturned token has raw probability ≤ c = e^(N-th logprob). At temperature T the tail adds S = Σ_tail p_i^(1/T)
to the normaliser. With the tail's count n (vocabulary size − returned) S lies between the "even" value
n (R/n)^(1/T) and the "concentrated" value ⌊R/c⌋ c^(1/T) + (R − ⌊R/c⌋ c)^(1/T) (which is larger depends on
whether 1/T is above or below 1: x^(1/T) is convex for T < 1, concave for T > 1); at T = 1, S = R exactly.
Every β is reported as (point, low, high): point uses the even spread; the bounds use the extreme S and the
extreme values an unreturned token can take. They close as N grows: raise the server's ``--max-logprobs``.

Along a sequence (``step_counts``): a verify step starting at generated position t proposes tokens for t, t+1, ...
and accepts i of them with probability Π_{j<i} β_{t+j} · (1 − β_{t+i}); the next step starts at t + i + 1. The
expected counters (drafts, draft tokens, accepted, accepted per position) follow by dynamic programming over step
starts, exactly as vLLM's scheduler counts them (``vllm/v1/core/sched/scheduler.py``: a step with no proposal is
not a draft; accepted tokens past ``max_tokens`` are still counted). At T = 0 it is the exact replay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

SAMPLING_EPS = 1e-5  # vLLM's _SAMPLING_EPS: a temperature below it is greedy
DRAFT_SAMPLE_METHODS = ("greedy", "probabilistic")


def is_greedy(temperature: float) -> bool:
    return temperature < SAMPLING_EPS


# ---------------------------------------------------------------------------------------------- one position

@dataclass(frozen=True)
class Head:
    """One model's answer at one position: the returned token ids and raw log-probabilities.

    ``top1`` is the rank-1 token; ``cap`` is the lowest log-probability among ranks 1..N, an upper bound on every
    token not returned; ``complete`` is True when the answer covered the whole vocabulary (no tail).
    """

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    top1: int
    cap: float
    complete: bool = False

    @classmethod
    def from_vllm(cls, entry: Mapping, n: int, vocab_size: int | None = None) -> "Head":
        """From one element of vLLM's ``prompt_logprobs``: {"id": {"logprob", "rank", "decoded_token"}, ...}.

        The element holds the top-``n`` plus the actual prompt token (whatever its rank). Raises ValueError on
        anything else (the caller names the URL).
        """
        if not isinstance(entry, Mapping) or not entry:
            raise ValueError(f"expected a non-empty {{token id: {{logprob, rank}}}} object, got {str(entry)[:120]!r}")
        ids, lps, ranked = [], [], []
        for key, value in entry.items():
            try:
                tid, lp, rank = int(key), float(value["logprob"]), int(value["rank"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"entry {key!r}: {str(value)[:120]!r} is not {{logprob, rank}}") from None
            if lp != lp or lp > 1e-6:
                raise ValueError(f"entry {key!r}: logprob {lp!r} is not a log-probability (<= 0)")
            ids.append(tid)
            lps.append(min(lp, 0.0))
            ranked.append((rank, lp, tid))
        ranked.sort()
        top = [r for r in ranked if r[0] <= max(n, 1)] or ranked[:1]
        complete = vocab_size is not None and len(ids) >= vocab_size
        return cls(tuple(ids), tuple(lps), top[0][2], min(r[1] for r in top), complete)


@dataclass(frozen=True)
class TempDist:
    """p_T over one Head's returned tokens, with bounds for the unknown tail (see the module docstring).

    Arrays are aligned with ``head.token_ids``. ``one_point``/``one_high`` are the point and the upper bound of
    p_T for a single token that was not returned; ``tail_*`` the tail's total mass at T.
    """

    head: Head
    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    one_point: float
    one_high: float
    tail_point: float
    tail_low: float
    tail_high: float

    def index(self) -> dict[int, int]:
        return {t: i for i, t in enumerate(self.head.token_ids)}

    def of(self, token_id: int) -> tuple[float, float, float]:
        """(point, low, high) of p_T(token_id)."""
        i = self.index().get(token_id)
        if i is None:
            return self.one_point, 0.0, self.one_high
        return float(self.point[i]), float(self.low[i]), float(self.high[i])


def _tail_sums(raw_mass: float, cap: float, count: int | None, g: float) -> tuple[float, float, float]:
    """(point, low, high) of S = Σ p_i^g over a tail with Σ p_i = raw_mass, 0 ≤ p_i ≤ e^cap, ``count`` tokens."""
    if raw_mass <= 0.0:
        return 0.0, 0.0, 0.0
    c = math.exp(cap)
    if g == 1.0:
        return raw_mass, raw_mass, raw_mass
    full = math.floor(raw_mass / c)
    concentrated = full * c ** g + (raw_mass - full * c) ** g
    if count is not None and count > 0:
        even = count * (raw_mass / count) ** g
    else:
        even = 0.0 if g > 1.0 else math.inf  # spread over unboundedly many tokens
    low, high = sorted((concentrated, even))
    point = even if math.isfinite(even) and (count or 0) > 0 else (low if math.isfinite(low) else 0.0)
    return point, low, high


def temperature_dist(head: Head, temperature: float, vocab_size: int | None = None,
                     top_k: int | None = None, top_p: float | None = None) -> TempDist:
    """p_T, then vLLM's top-k and top-p on the target (``_temperature_dist``, then ``nucleus``)."""
    dist = _temperature_dist(head, temperature, vocab_size, top_k)
    return dist if top_p is None or top_p >= 1.0 else nucleus(dist, top_p)


def _temperature_dist(head: Head, temperature: float, vocab_size: int | None = None,
                      top_k: int | None = None) -> TempDist:
    """p_T = softmax(ℓ / T) over the returned tokens (T > 0), optionally restricted to the top-k (target only).

    log p_T(x) = ℓ(x)/T − logsumexp(ℓ/T); the tail's contribution to the normaliser is bounded (module doc).
    With ``top_k`` ≤ the returned ranks the kept set is known exactly and the tail drops out.
    """
    if is_greedy(temperature):
        raise ValueError(f"temperature={temperature!r}: T = 0 is argmax, not a distribution (use is_greedy)")
    lps = np.asarray(head.logprobs, dtype=np.float64)
    g = 1.0 / temperature
    scaled = lps * g
    if top_k is not None and top_k > 0:
        order = np.argsort(-lps, kind="stable")
        if top_k >= len(lps) and not head.complete:
            raise ValueError(f"top_k={top_k} needs at least top_k + 1 returned log-probabilities per position, got "
                             f"{len(lps)}: raise the server's --max-logprobs and the request's logprobs")
        keep = np.zeros(len(lps), dtype=bool)
        keep[order[:top_k]] = True
        weights = np.where(keep, np.exp(scaled - scaled[keep].max()), 0.0)
        p = weights / weights.sum()
        return TempDist(head, p, p, p, 0.0, 0.0, 0.0, 0.0, 0.0)
    shift = scaled.max()
    weights = np.exp(scaled - shift)
    total = weights.sum()
    raw_tail = 0.0 if head.complete else max(0.0, 1.0 - float(np.exp(lps).sum()))
    count = None if vocab_size is None else max(vocab_size - len(lps), 0)
    s_point, s_low, s_high = (v * math.exp(-shift) if math.isfinite(v) else math.inf
                              for v in _tail_sums(raw_tail, head.cap, count, g))
    point, low = weights / (total + s_point), (weights / (total + s_high) if math.isfinite(s_high)
                                                else np.zeros_like(weights))
    high = weights / (total + s_low)
    one_high = min(math.exp(head.cap * g - shift) / (total + s_low), 1.0) if raw_tail > 0 else 0.0
    one_point = 0.0
    if raw_tail > 0 and count:
        one_point = min(math.exp(g * math.log(raw_tail / count) - shift) / (total + s_point), one_high)
    tail_low = s_low / (total + s_low)
    tail_high = 1.0 if not math.isfinite(s_high) else s_high / (total + s_high)
    return TempDist(head, point, low, high, one_point, one_high, s_point / (total + s_point), tail_low, tail_high)


def _nucleus_keep(p: np.ndarray, order: np.ndarray, top_p: float) -> np.ndarray:
    """vLLM's top-p mask over tokens sorted by descending probability: a token stays when the mass of the tokens
    ranked above it is below ``top_p`` (``apply_top_k_top_p_pytorch``: ascending cumsum ≤ 1 − p is removed; the
    top token always stays)."""
    above = np.concatenate(([0.0], np.cumsum(p[order])[:-1]))
    keep = np.zeros(len(p), dtype=bool)
    keep[order] = above < top_p
    keep[order[0]] = True
    return keep


def nucleus(dist: TempDist, top_p: float) -> TempDist:
    """vLLM's top-p on an already tempered (and top-k'd) target distribution, renormalised over the kept tokens.

    Every unreturned token ranks below every returned one, so the tail is cut off as soon as the returned tokens
    carry at least ``top_p`` of the mass; where even the lowest normaliser leaves them short of it, the nucleus
    reaches into tokens the answer did not return and a ValueError asks for more log-probabilities. The kept set
    is computed with the point, the low and the high normaliser; a token at the edge of the nucleus under one of
    them only widens the bounds: low/high are the elementwise extremes over the three renormalised sets.
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r}: expected 0 < top_p <= 1")
    order = np.argsort(-np.asarray(dist.head.logprobs), kind="stable")
    if dist.tail_high > 0.0 and float(dist.low.sum()) < top_p:
        raise ValueError(f"top_p={top_p:g}: the {len(order)} returned log-probabilities carry less than top_p of the "
                         "mass at this temperature, so the nucleus reaches tokens the answer did not return: raise "
                         "the server's --max-logprobs and the request's logprobs")
    variants = []
    for p in (dist.point, dist.low, dist.high):
        keep = _nucleus_keep(p, order, top_p)
        q = np.where(keep, p, 0.0)
        variants.append(q / q.sum())
    point = variants[0]
    low, high = np.minimum.reduce(variants), np.maximum.reduce(variants)
    return TempDist(dist.head, point, low, high, 0.0, 0.0, 0.0, 0.0, 0.0)


Beta = tuple[float, float, float]  # (point, low, high)


def token_acceptance(target: Head, proposed: int, temperature: float, vocab_size: int | None = None,
                     top_k: int | None = None, greedy_token: int | None = None, top_p: float | None = None) -> Beta:
    """β of a greedy draft model's proposal (sent without draft probabilities): p_T(proposed); T = 0: 1[argmax].

    The probability at one position; n-gram and suffix drafts are counted with 1[proposed = emitted] instead
    (module docstring).

    ``greedy_token``: at T = 0, the token the target itself emitted there when it generated the text (its decode
    step's argmax), used instead of the teacher-forced argmax: the two can differ at near-ties (a one-token decode
    and a long prefill round differently), and what vLLM compares with is the target's own greedy choice.
    """
    if is_greedy(temperature):
        hit = float(proposed == (target.top1 if greedy_token is None else greedy_token))
        return hit, hit, hit
    return temperature_dist(target, temperature, vocab_size, top_k, top_p).of(proposed)


def probabilistic_acceptance(target: Head, draft: Head, temperature: float, vocab_size: int | None = None,
                             top_k: int | None = None, greedy_token: int | None = None,
                             top_p: float | None = None) -> Beta:
    """β = Σ_x min(p_T(x), q_T(x)) for a draft that samples from q_T (T = 0: 1[argmaxes agree])."""
    if is_greedy(temperature):
        hit = float(draft.top1 == (target.top1 if greedy_token is None else greedy_token))
        return hit, hit, hit
    p = temperature_dist(target, temperature, vocab_size, top_k, top_p)
    q = temperature_dist(draft, temperature, vocab_size)
    pi, qi = p.index(), q.index()
    both = [t for t in pi if t in qi]
    only_p = [t for t in pi if t not in qi]
    only_q = [t for t in qi if t not in pi]
    bp, bq = [pi[t] for t in both], [qi[t] for t in both]
    point = float(np.minimum(p.point[bp], q.point[bq]).sum())
    low = float(np.minimum(p.low[bp], q.low[bq]).sum())
    high = float(np.minimum(p.high[bp], q.high[bq]).sum())
    # Tokens returned by one model only, and the common tail: each other value is in [0, that model's cap].
    spread = sum(min(float(p.high[pi[t]]), q.one_high) for t in only_p) + \
        sum(min(p.one_high, float(q.high[qi[t]])) for t in only_q) + min(p.tail_high, q.tail_high)
    rest_high = min(spread, 1.0 - float(p.low[bp].sum()), 1.0 - float(q.low[bq].sum()))
    common_tail = 0 if vocab_size is None else max(vocab_size - len(set(pi) | set(qi)), 0)
    rest_point = sum(min(float(p.point[pi[t]]), q.one_point) for t in only_p) + \
        sum(min(p.one_point, float(q.point[qi[t]])) for t in only_q) + common_tail * min(p.one_point, q.one_point)
    high = min(high + max(rest_high, 0.0), 1.0)
    point = min(max(point + rest_point, low), high)
    return point, low, high


def draft_acceptance(target: Head, draft: Head, temperature: float, method: str, vocab_size: int | None = None,
                     top_k: int | None = None, greedy_token: int | None = None, top_p: float | None = None) -> Beta:
    """β of a draft model at one position under vLLM's ``draft_sample_method`` (module docstring)."""
    if method not in DRAFT_SAMPLE_METHODS:
        raise ValueError(f"draft_sample_method={method!r}: accepted {', '.join(DRAFT_SAMPLE_METHODS)}")
    if method == "greedy":
        return token_acceptance(target, draft.top1, temperature, vocab_size, top_k, greedy_token, top_p)
    return probabilistic_acceptance(target, draft, temperature, vocab_size, top_k, greedy_token, top_p)


# ------------------------------------------------------------------------------------------- along a sequence

@dataclass(frozen=True)
class StepCounts:
    """Expected vLLM V1 counters for one request (or a sum of requests): the same names as ``metrics.SpecDelta``."""

    drafts: float
    draft_tokens: float
    accepted_tokens: float
    per_position: tuple[float, ...]
    steps: float  # verify steps after the prefill, with or without a proposal

    @property
    def v1_rate(self) -> float | None:
        """accepted / draft tokens (V1, accepted prefix only)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens > 0 else None

    @property
    def mean_acceptance_length(self) -> float | None:
        """1 + accepted / drafts (vLLM's convention, includes the bonus token)."""
        return 1.0 + self.accepted_tokens / self.drafts if self.drafts > 0 else None

    @property
    def per_position_rates(self) -> tuple[float, ...] | None:
        return tuple(a / self.drafts for a in self.per_position) if self.drafts > 0 else None

    def __add__(self, other: "StepCounts") -> "StepCounts":
        n = max(len(self.per_position), len(other.per_position))
        pad = lambda xs: list(xs) + [0.0] * (n - len(xs))  # noqa: E731
        return StepCounts(self.drafts + other.drafts, self.draft_tokens + other.draft_tokens,
                          self.accepted_tokens + other.accepted_tokens,
                          tuple(a + b for a, b in zip(pad(self.per_position), pad(other.per_position))),
                          self.steps + other.steps)


ZERO_COUNTS = StepCounts(0.0, 0.0, 0.0, (), 0.0)


def step_counts(proposals: Sequence[Sequence[float]], max_tokens: int, k: int) -> StepCounts:
    """Expected counters of one request by dynamic programming over verify-step starts.

    ``proposals[t]`` = acceptance probabilities of the tokens proposed by a step that starts when t tokens have been
    generated (the prefill emits token 0, so the first step starts at t = 1); only the first ``k`` are used; an
    empty list is a step with nothing proposed (n-gram without a match: not a draft, one token emitted). Steps
    start while t < ``max_tokens``; positions past ``len(proposals)`` propose nothing.
    """
    if k < 1 or max_tokens < 1:
        raise ValueError(f"k={k}, max_tokens={max_tokens}: both must be >= 1")
    reach = np.zeros(max_tokens + k + 2)
    reach[1] = 1.0
    drafts = draft_tokens = accepted = steps = 0.0
    per_pos = np.zeros(k)
    for t in range(1, max_tokens):
        w = reach[t]
        if w <= 0.0:
            continue
        steps += w
        betas = list(proposals[t])[:k] if t < len(proposals) else []
        if not betas:
            reach[t + 1] += w
            continue
        drafts += w
        draft_tokens += w * len(betas)
        prefix = 1.0  # P(first i proposals all accepted)
        for i, beta in enumerate(betas):
            reach[t + i + 1] += w * prefix * (1.0 - beta)  # i accepted, then a rejection: i + 1 tokens emitted
            prefix *= beta
            per_pos[i] += w * prefix
            accepted += w * prefix
        reach[t + len(betas) + 1] += w * prefix  # all accepted plus the bonus token
    return StepCounts(drafts, draft_tokens, accepted, tuple(float(x) for x in per_pos), steps)


def chain_proposals(betas: Sequence[float], k: int) -> list[list[float]]:
    """A draft model's proposals along the text: a step at t proposes positions t..t+k−1 (β past the end is 0)."""
    n = len(betas)
    return [[betas[t + j] if t + j < n else 0.0 for j in range(k)] for t in range(n)]


def chain_expected_tokens(betas: Sequence[float], k: int) -> float:
    """Mean over positions t of 1 + Σ_{i=1..k} Π_{j<i} β_{t+j}: tokens per verify step from the positions' own chain,
    every position taken as a step start (no trajectory weighting; ``step_counts`` has the trajectory)."""
    if not betas:
        raise ValueError("betas=[]: no positions")
    values = []
    for row in chain_proposals(betas, k):
        values.append(1.0 + float(np.cumprod(row).sum()))
    return float(np.mean(values))


def ratio_interval(accepted: Sequence[float], drafted: Sequence[float], *, level: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap interval across requests of Σ accepted / Σ drafted (the counter ratio), resampling requests.

    Requests are the independent units (positions within a request are not): this is the measurement's spread
    across requests that a prediction is compared with. None with fewer than two requests with drafts.
    """
    a, d = np.asarray(accepted, dtype=float), np.asarray(drafted, dtype=float)
    keep = d > 0
    a, d = a[keep], d[keep]
    if len(a) < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    ratios = a[idx].sum(axis=1) / d[idx].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100.0 - tail))
