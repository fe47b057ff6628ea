"""The speculative-sampling arithmetic: acceptance, expected tokens per step, speedup, break-even (pure).

Notation (Leviathan, Kalman & Matias 2023, "Fast Inference from Transformers via Speculative Decoding", ICML;
Chen et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling"):

* ``alpha`` (α): probability that one draft token is accepted, assumed independent across positions.
  This is the number the source document's thresholds (0.5 / 0.65) apply to: they were written for vLLM V0's
  gauge, which counted every accepted draft position, an estimate of α.
* ``k``: draft tokens proposed per verification step (the paper's γ; vLLM's ``num_speculative_tokens``).
* ``c``: cost ratio, time of one draft step / time of one target step (the paper's c).

What vLLM V1 reports is not α (``vllm/v1/spec_decode/metrics.py``, vLLM 0.32):

* draft acceptance rate = accepted / draft tokens, where only the accepted *prefix* of each draft is counted,
  so it equals (E − 1) / k with E the expected tokens per step below;
* mean acceptance length = 1 + accepted / drafts (counts the bonus token): E itself;
* per-position rate i = accepted at position i / drafts = P(the first i + 1 draft tokens are all accepted).

Convert with the functions here before applying any threshold.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

from specdec_lib.rules import ALPHA_OFF_BELOW, ALPHA_WIN_ABOVE

__all__ = [
    "expected_tokens_per_step",
    "expected_tokens_from_positions",
    "conditional_acceptance_from_positions",
    "speedup",
    "arithmetic_ops_factor",
    "break_even_alpha",
    "best_k",
    "v1_rate_from_alpha",
    "alpha_from_v1_rate",
    "mean_acceptance_length_from_v1_rate",
    "alpha_from_mean_acceptance_length",
    "alpha_from_v0_rate",
    "VerdictBand",
    "verdict_band",
    "BANDS",
]

_BISECTION_TOL = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------


def _check_alpha(alpha: float, name: str = "alpha") -> float:
    if type(alpha) is float and 0.0 <= alpha <= 1.0:  # the common case, without the checks below (hot path)
        return alpha
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise ValueError(f"{name}={alpha!r}: expected a finite number in [0, 1]")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{name}={alpha!r}: expected a probability in [0, 1]")
    return float(alpha)


def _check_k(k: int, minimum: int = 1) -> int:
    if type(k) is int and k >= minimum:  # the common case, without the checks below (hot path)
        return k
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k={k!r}: expected an integer number of speculative tokens >= {minimum}")
    if k < minimum:
        raise ValueError(f"k={k}: expected an integer number of speculative tokens >= {minimum}")
    return int(k)


def _check_c(c: float) -> float:
    if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c < 0:
        raise ValueError(f"c={c!r}: expected a finite cost ratio (draft step / target step time) >= 0")
    return float(c)


def _bisect_increasing(f, target: float, lo: float, hi: float) -> float:
    """x in [lo, hi] with f(x) = target for f non-decreasing, by bisection."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < _BISECTION_TOL:
            break
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------------------------------------
# expected tokens and speedup
# ----------------------------------------------------------------------------------------------------------------


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """Tokens emitted per target verification step: (1 − α^(k+1)) / (1 − α); k + 1 in the limit α → 1.

    Leviathan et al. 2023, eq. (1) (their γ is k); assumes each draft token is accepted independently with
    probability α. Counts the bonus/correction token the target always adds, so α = 0 gives 1.
    """
    a = _check_alpha(alpha)
    k = _check_k(k, minimum=0)
    if a == 1.0:
        return float(k + 1)
    # sum_{i=0..k} a^i, written as a geometric sum to stay accurate near a = 1
    return (1.0 - a ** (k + 1)) / (1.0 - a) if a < 0.999 else math.fsum(a**i for i in range(k + 1))


def expected_tokens_from_positions(per_position_rates: Sequence[float]) -> float:
    """Tokens per step from measured per-position acceptance, with no independence assumption.

    ``per_position_rates[i]`` = P(draft tokens 1..i+1 all accepted), which is what vLLM V1's counters give:
    ``vllm:spec_decode_num_accepted_tokens_per_pos_total{position=i}`` / ``num_drafts`` (a token after the first
    rejection is never counted). Then E = 1 + Σ_i rates[i] (the 1 is the token the target always emits).
    The rates of an accepted prefix cannot increase with position; a sequence that does is rejected.
    """
    rates = list(per_position_rates)
    if not rates:
        raise ValueError("per_position_rates=[]: expected at least one position (k >= 1)")
    previous = 1.0
    for i, r in enumerate(rates):
        _check_alpha(r, name=f"per_position_rates[{i}]")
        if r > previous + 1e-9:
            raise ValueError(
                f"per_position_rates[{i}]={r!r} > per_position_rates[{i - 1}]={previous!r}: rates of an accepted "
                "prefix must be non-increasing with position (expected vLLM V1 per-position counters / drafts)")
        previous = r
    return 1.0 + math.fsum(rates)


def conditional_acceptance_from_positions(per_position_rates: Sequence[float]) -> list[float]:
    """P(token i accepted | tokens before it accepted) = rates[i] / rates[i−1] (rates[−1] = 1).

    Equal values across positions mean the i.i.d. α model fits; falling values mean later positions are harder
    (the usual case), and α from the aggregate rate then overstates late positions. NaN where the previous
    position was never reached.
    """
    expected_tokens_from_positions(per_position_rates)  # validates
    out, previous = [], 1.0
    for r in per_position_rates:
        out.append(r / previous if previous > 0 else math.nan)
        previous = r
    return out


def speedup(alpha: float, k: int, c: float) -> float:
    """Expected walltime improvement factor: (1 − α^(k+1)) / ((1 − α)(k c + 1)).

    Leviathan et al. 2023, Theorem 3.8 (γ = k). Assumes a verification step of k + 1 tokens costs the same as
    one ordinary target step (memory-bound decoding) and k draft steps cost k·c target steps. Under load that
    assumption fails: ``load.speedup_vs_batch`` uses the step-time model instead.
    """
    c = _check_c(c)
    return expected_tokens_per_step(alpha, k) / (_check_k(k) * c + 1.0)


def arithmetic_ops_factor(alpha: float, k: int, c_hat: float) -> float:
    """Expected factor by which total arithmetic work grows: (1 − α)(k ĉ + k + 1) / (1 − α^(k+1)).

    Leviathan et al. 2023, Theorem 3.11; ĉ = draft ops per token / target ops per token. When the GPU is
    compute-bound (large batches) this extra work is what turns the speedup into a slowdown.
    """
    c_hat = _check_c(c_hat)
    k = _check_k(k)
    return (k * c_hat + k + 1.0) / expected_tokens_per_step(alpha, k)


def break_even_alpha(k: int, c: float) -> float:
    """The α at which speedup(α, k, c) = 1 (bisection; speedup increases with α).

    At α = 0 the speedup is 1/(kc + 1) and at α = 1 it is (k + 1)/(kc + 1), so a break-even exists in [0, 1]
    exactly when c < 1; for c ≥ 1 no acceptance rate pays and a ValueError says so.
    """
    k = _check_k(k)
    c = _check_c(c)
    if c >= 1.0:
        raise ValueError(f"c={c!r}: expected c < 1; with a draft step as slow as a target step no alpha in [0, 1] "
                         f"gives a speedup above 1 (at alpha=1 it is (k+1)/(kc+1) = {(k + 1) / (k * c + 1):.3f})")
    if c == 0.0:
        return 0.0
    return _bisect_increasing(lambda a: speedup(a, k, c), 1.0, 0.0, 1.0)


def best_k(alpha: float, c: float, k_max: int = 16) -> int:
    """The k in 1..k_max that maximises speedup(α, k, c); 0 when no k gives a speedup above 1.

    Leviathan et al. 2023 §3.5 (their Figure 3 plots the same optimum). Ties go to the smaller k (less memory
    and less wasted compute for the same expected gain).
    """
    a = _check_alpha(alpha)
    c = _check_c(c)
    k_max = _check_k(k_max)
    best, best_value = 0, 1.0
    for k in range(1, k_max + 1):
        value = speedup(a, k, c)
        if value > best_value * (1 + 1e-12):
            best, best_value = k, value
    return best


# ----------------------------------------------------------------------------------------------------------------
# vLLM's rates <-> alpha
# ----------------------------------------------------------------------------------------------------------------


def v1_rate_from_alpha(alpha: float, k: int) -> float:
    """vLLM V1's draft acceptance rate (accepted / draft tokens, prefix only) implied by α: (E − 1) / k."""
    k = _check_k(k)
    return (expected_tokens_per_step(alpha, k) - 1.0) / k


def alpha_from_v1_rate(rate: float, k: int) -> float:
    """α such that v1_rate_from_alpha(α, k) = rate (bisection; the V1 rate increases with α).

    Example: α = 0.7, k = 5 reads as a V1 rate of 0.39; a V1 rate of 0.39 at k = 5 is α ≈ 0.70.
    """
    r = _check_alpha(rate, name="rate")
    k = _check_k(k)
    if r in (0.0, 1.0):
        return r
    return _bisect_increasing(lambda a: v1_rate_from_alpha(a, k), r, 0.0, 1.0)


def mean_acceptance_length_from_v1_rate(rate: float, k: int) -> float:
    """vLLM's mean acceptance length (1 + accepted / drafts) from its V1 rate: 1 + k · rate (= E)."""
    return 1.0 + _check_k(k) * _check_alpha(rate, name="rate")


def alpha_from_mean_acceptance_length(length: float, k: int) -> float:
    """α such that expected_tokens_per_step(α, k) = length; length in [1, k + 1]."""
    k = _check_k(k)
    if isinstance(length, bool) or not isinstance(length, numbers.Real) or not math.isfinite(length) \
            or not 1.0 <= length <= k + 1:
        raise ValueError(f"length={length!r}: expected a mean acceptance length in [1, k + 1] = [1, {k + 1}]")
    return alpha_from_v1_rate((length - 1.0) / k, k)


def alpha_from_v0_rate(rate: float) -> float:
    """α from vLLM V0's gauge ``vllm:spec_decode_draft_acceptance_rate``: the gauge counted every accepted draft
    position (accepted / draft tokens without the prefix rule), so it estimates α directly."""
    return _check_alpha(rate, name="rate")


# ----------------------------------------------------------------------------------------------------------------
# the source's bands
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerdictBand:
    """One of the source document's acceptance bands, applied to α (per-token acceptance)."""

    name: str  # "off" | "borderline" | "likely_win"
    alpha: float
    lower: float  # band edges on α
    upper: float
    advice: str
    definition: str = ("α = per-token acceptance (Leviathan et al.); the source's thresholds were written for "
                       "vLLM V0's acceptance gauge, which estimates α. Convert a V1 rate with alpha_from_v1_rate.")


# (name, lower, upper, advice): "below 0.5 ... disable it"; "between 0.5 and 0.65 ... measure P99 latency under
# real load before deciding"; "above 0.65 ... likely a genuine benefit, confirm with a baseline comparison".
BANDS = (
    ("off", 0.0, ALPHA_OFF_BELOW, "net-negative on this workload: turn speculative decoding off"),
    ("borderline", ALPHA_OFF_BELOW, ALPHA_WIN_ABOVE,
     "near break-even: measure P99 latency under real load before deciding"),
    ("likely_win", ALPHA_WIN_ABOVE, 1.0, "likely a genuine benefit: confirm with a baseline comparison, then ship"),
)


def verdict_band(alpha: float) -> VerdictBand:
    """The source's band for α: < 0.5 off; 0.5 ≤ α ≤ 0.65 borderline; > 0.65 likely win.

    The bands ignore k, c and load; ``break_even_alpha`` and ``load.speedup_vs_batch`` give the deployment's
    own threshold. Pass α, never vLLM V1's prefix-only rate (it reads lower: α 0.7 at k 5 shows as 0.39).
    """
    a = _check_alpha(alpha)
    if a < ALPHA_OFF_BELOW:
        name, lo, hi, advice = BANDS[0]
    elif a <= ALPHA_WIN_ABOVE:
        name, lo, hi, advice = BANDS[1]
    else:
        name, lo, hi, advice = BANDS[2]
    return VerdictBand(name=name, alpha=a, lower=lo, upper=hi, advice=advice)
