"""From a probe's request records to step-time fits: the load model's factors and the simulator's step (pure).

A probe is a set of closed-loop levels (concurrency c, output length N, temperature 0) against one server. In a
level, c requests are in flight all the time, so a request's life after its first token is spent in engine steps
of about c sequences: steps - 1 of them between its first token and its end (steps = completion tokens without
speculation, streamed chunks with it: vLLM sends one chunk per engine step).

Each request's decode span is cut where its chunks arrived (the load test records their gaps), so each piece is
one engine step, and what that step held is read from the requests' own times (`step_composition`): the sequences
decoding alongside (overlapping spans; 1 token each, or k + 1 verified positions with speculation), the prompts of
the requests whose first token ended it (their prefill ran in it) and the context the sequences hold. Per level
the steps are pooled (seconds over steps) apart for those that only decoded and those a prompt landed in: two
observations (`LevelObservation`). Nothing is assumed about how the streams move. Released together with equal
outputs they mostly stay in step, but not exactly: the engine takes the first arrival alone and the rest of the
wave one step later, inside the first one's decode (a 2 s step holding seven prompts, on the engine-bound CPU
server); with speculation the steps per request vary with acceptance, the streams drift apart, and prefills land in
most decode steps of a 16-token level. Why apart: a step holding a wave's prompts costs tens of decode steps (on
that server 3.6 s against 53 ms at concurrency 8), so one mean per level was mostly its few prefills, and the fit
that matched those means within 2 % charged the decode steps 6-8 % too much at batch 3-8, the steps a loaded
server mostly runs (docs/simulation.md, "engine-dominated validation"). Records without chunk times (older files)
give each span whole. A request whose chunks came in one burst (a held stream, `burst_flags`) measures no steps
and is left out.

The simulator's `AffineStepTime` (fixed + per_token * tokens + per_seq * batch + k * (draft terms)) is fitted in
stages (`fit_simulator_step`): the cost per token from the idle first-token latency against prompt length (the
built-in prompts run from tens to hundreds of tokens; where that line does not rise, from the steps a prompt
landed in), the fixed and per-sequence costs from the baseline levels
(after their tokens' cost), the draft terms from the speculative levels after subtracting the target's part, the
KV terms where the levels' contexts differ enough (the probe alternates short and long prompts). The
per-request time outside engine steps (HTTP, tokenisation, the API process) is the idle line's intercept beyond
one step.

The load model's `StepFactors` are fitted with `load.fit_step_factors` to the baseline levels' decode steps
(batch c, 1 token per sequence, context P + N / 2), the model's architecture and the hardware's peaks given by the
caller; the speculative levels are then predicted with `load.spec_step_time` (out of sample) and their errors
reported as the fit's quality on speculative steps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from specdec_lib import load
from specdec_lib.simulate import AffineStepTime
from specdec_lib.simulate.steptime import STEP_TIME_FIELDS, nonnegative_least_squares


@dataclass(frozen=True)
class LevelObservation:
    """One closed-loop level of the probe reduced to the engine step it measures: a level gives one for its decode
    steps and one for the steps a prompt landed in (`prompt_in_step`), each pooled over its requests."""

    server: str  # "baseline" or "speculative"
    concurrency: int
    max_tokens: int
    requests: int
    prompt_tokens: float
    completion_tokens: float
    step_s: float  # the mean step: its steps' seconds over their number, summed over the requests
    decode_tokens_per_seq: float  # 1 without speculation; k + 1 verified positions with it
    tokens_per_step_emitted: float  # completion tokens per step: 1, or more with speculation
    num_speculative_tokens: int  # 0 for the baseline
    batch_size: float  # sequences in the mean step, as observed (`step_composition`)
    tokens_in_step: float  # tokens computed in the mean step, as observed: decodes and prompts landing in it
    kv_tokens: float  # context the mean step's decoding sequences hold, as observed
    stalled_requests: int = 0  # requests left out of the mean: a decode span stalled (`STALL_FACTOR`)
    burst_requests: int = 0  # requests left out of the mean: their chunks came in one burst (`burst_flags`)
    prompt_in_step: bool = False  # True: the level's steps a prompt landed in; False: those that only decoded
    steps: float = 0.0  # the steps pooled, summed over the requests (a step shared by c requests counts c times)

    @property
    def context_tokens(self) -> float:
        """Context per sequence during the level's decode steps: the median prompt + half the output."""
        return self.prompt_tokens + self.completion_tokens / 2


def _steps(r: Mapping[str, Any], k: int) -> int:
    """Engine steps of a request: its completion tokens, or with speculation (k >= 1) its streamed chunks."""
    return int((r.get("chunks") if k else r.get("completion_tokens")) or 0)


def _timed(r: Mapping[str, Any], k: int) -> bool:
    """A successful request with the times a decode span needs and 3 or more steps."""
    return not r.get("error") and all(r.get(f) is not None for f in ("e2e_s", "ttft_s", "sent_at_s")) \
        and _steps(r, k) >= 3


def _median(values: Iterable[float]) -> float:
    v = [float(x) for x in values]
    return float(np.median(v)) if v else math.nan


def _mean_decode_step(r: Mapping[str, Any], k: int) -> float:
    return (float(r["e2e_s"]) - float(r["ttft_s"])) / (_steps(r, k) - 1)


# A request whose mean decode step is more than this many times its level's median is a stall, not a step, and is
# left out of the level's mean (it still counts as a sequence in the steps it shared). Seen once: a 40 s first step
# on the speculative CPU server, 50 times its level's median, which alone doubled the level's pooled mean. A
# legitimate long step stays well below: the first stream of a wave carrying the rest's prefills, 3-6 times.
STALL_FACTOR = 10.0


def burst_flags(records: Sequence[Mapping[str, Any]], k: int = 0) -> list[bool]:
    """Per record of one server: True where its chunks came in one burst, its mean decode step below 1 /
    `STALL_FACTOR` of the median over the server's timed records (untimed records: False). Neither its first-token
    time nor its decode span then measures the engine. Seen on the tiny CPU server in a full test run (other
    servers of the pool alive on the two cores): a whole concurrency-1 level's 16 chunks arriving 0.02 ms apart
    at the end, against 2.6 ms steps in the next level, each first token taking the whole request's 50 ms (the API
    process, starved, held the stream). A real step at batch 1 is within 2x of the server's median, not 10x."""
    floor = _burst_floor(records, k)
    return [_timed(r, k) and _mean_decode_step(r, k) < floor for r in records]


def _burst_floor(records: Sequence[Mapping[str, Any]], k: int) -> float:
    """The mean decode step below which a record of this server came in a burst (0 without timed records)."""
    steps = [_mean_decode_step(r, k) for r in records if _timed(r, k)]
    return float(np.median(steps)) / STALL_FACTOR if steps else 0.0


def idle_records(records: Sequence[Mapping[str, Any]], k: int = 0) -> list[Mapping[str, Any]]:
    """The records whose first token measures an idle prefill: concurrency 1, successful, not delivered in a burst
    (`burst_flags`)."""
    return [r for r, burst in zip(records, burst_flags(records, k))
            if r.get("concurrency") == 1 and not r.get("error") and not burst]


class StepTotals(NamedTuple):
    """Totals over a run's decode steps (`step_composition`); each divided by `steps` is the mean step's."""

    span_s: float  # decode seconds
    steps: float  # decode steps
    seq_steps: float  # sequences, summed over the steps
    tokens: float  # tokens computed, summed over the steps
    kv_token_steps: float  # context held by the steps' sequences, summed over the steps

    @property
    def composition(self) -> tuple[float, float, float]:
        """(batch, tokens, KV tokens) of the mean step."""
        return self.seq_steps / self.steps, self.tokens / self.steps, self.kv_token_steps / self.steps

    @classmethod
    def pooled(cls, parts: Iterable[StepTotals]) -> StepTotals:
        """The totals of several runs' or kinds' steps together (field by field)."""
        return cls(*(sum(t) for t in zip(*parts)))


def _decode_intervals(r: Mapping[str, Any], first_s: float, end_s: float, n_steps: int) -> tuple[np.ndarray, ...]:
    """A request's decode span cut where its chunks arrived, as (starts, ends, steps in each): one step per chunk
    where the load test recorded the chunks' gaps (`itl_s`) and they number the steps; else the whole span, its
    steps spread evenly (a baseline chunk that carried two tokens, or a record without chunk times)."""
    gaps = r.get("itl_s")
    if gaps is not None and len(gaps) == n_steps:
        t = first_s + np.concatenate([[0.0], np.cumsum(np.asarray(gaps, dtype=float))])
        return t[:-1], t[1:], np.ones(n_steps)
    return np.array([first_s]), np.array([end_s]), np.array([float(n_steps)])


def step_composition(records: Sequence[Mapping[str, Any]], steps: Sequence[int], k: int,
                     counted: Sequence[bool] | None = None) -> dict[bool, StepTotals]:
    """What the decode steps of one run held, read from its requests' own times, as totals over its requests
    (`StepTotals`), apart for the steps a prompt landed in (key True) and those that only decoded (False). Pooled
    (sums over sums) each gives a mean step and its mean batch, tokens and KV: the estimator an affine step model
    is linear in.

    Request r decodes from its first token to its end over steps_r - 1 steps, cut where its chunks arrived
    (`_decode_intervals`). Sharing each interval's steps: every other request decoding over it (their overlap, as
    a fraction of the interval, each computing k + 1 positions), and the prefill of every other request whose first
    token arrived at the interval's end (its prompt was computed in that step; half a step of slack at either
    edge, so a request prefilled in r's own first step is not counted). Nothing is assumed about the streams
    moving in step: when they do (one wave's requests prefilled together) no prefill is found; when they drift
    apart (the engine takes a wave's first arrival alone, and speculation's steps per request vary with
    acceptance) the prefills are counted where they landed. Apart, because a step holding a prompt costs several
    decode steps and a level's mean would otherwise be mostly its few prefills: fitted apart, the decode steps
    (most of a loaded server's steps) are not traded against them. The KV a sequence holds is its prompt plus half
    its output (its growing context's mean; a landed prompt's KV is computed in its step, charged per token, not
    read there). `counted` (default all) says whose intervals are pooled; the others still count as sequences in
    the steps they shared.
    """
    first = np.array([float(r["sent_at_s"]) + float(r["ttft_s"]) for r in records])
    end = np.array([float(r["sent_at_s"]) + float(r["e2e_s"]) for r in records])
    prompt = np.array([float(r.get("prompt_tokens") or 0) for r in records])
    context = prompt + np.array([float(r.get("completion_tokens") or 0) for r in records]) / 2
    pooled = np.ones(len(records), dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
    sums = {held: np.zeros(5) for held in (False, True)}
    for i in np.flatnonzero(pooled):
        n_steps = int(steps[i]) - 1
        start, stop, in_step = _decode_intervals(records[i], first[i], end[i], n_steps)
        others = np.arange(len(records)) != i
        overlap = np.clip(np.minimum(end, stop[:, None]) - np.maximum(first, start[:, None]), 0.0, None) * others
        share = overlap / (stop - start)[:, None]  # of each other sequence, in each interval's steps
        decoding = 1.0 + share.sum(axis=1)
        slack = 0.5 * (end[i] - first[i]) / n_steps
        landed = others & (first > start[:, None] + slack) & (first <= stop[:, None] + slack)
        rows = np.column_stack([stop - start, in_step, in_step * decoding + landed.sum(axis=1),
                                in_step * decoding * (k + 1) + landed @ prompt,
                                in_step * (context[i] + share @ context)])
        held = landed.any(axis=1)
        for key in (False, True):
            sums[key] += rows[held == key].sum(axis=0)
    return {key: StepTotals(*map(float, v)) for key, v in sums.items() if v[1] > 0}


def _one_run_each(records: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Split a level's records into the runs they came from (a merged probe may hold a level twice; send times are
    relative to each run's start): a new run begins where a record's index repeats."""
    out: list[list[Mapping[str, Any]]] = []
    seen: set[Any] = set()
    for r in records:
        if not out or r.get("index") in seen:
            out.append([])
            seen = set()
        out[-1].append(r)
        seen.add(r.get("index"))
    return out


def level_observations(records: Iterable[Mapping[str, Any]], server: str, num_speculative_tokens: int = 0,
                       *, min_requests: int = 2) -> list[LevelObservation]:
    """Group a probe's records (runs.py schema) by (concurrency, max_tokens) and reduce each group to its
    observations (`step_composition`): the mean of the steps that only decoded and the mean of those a prompt
    landed in, each with its observed composition (a level without one kind gives one observation).

    Records with an error, without a concurrency, or with fewer than 3 steps are left out; a group with fewer
    than `min_requests` usable records is dropped.
    """
    if server not in ("baseline", "speculative"):
        raise ValueError(f"server = {server!r}; expected 'baseline' or 'speculative'")
    k = int(num_speculative_tokens)
    if (server == "speculative") != (k > 0):
        raise ValueError(f"server = {server!r} with num_speculative_tokens = {k}; a speculative server needs k >= 1")
    records = list(records)
    burst_floor = _burst_floor(records, k)  # the server's, over all its levels (`burst_flags`)
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in records:
        if not r.get("concurrency") or not _timed(r, k):
            continue
        groups.setdefault((int(r["concurrency"]), int(r.get("max_tokens") or 0)), []).append(r)
    out = []
    for (c, n), rs in sorted(groups.items()):
        if len(rs) < min_requests:
            continue
        totals: dict[bool, list[StepTotals]] = {False: [], True: []}
        stalled = bursts_left_out = 0
        for run in _one_run_each(rs):
            steps = [_steps(r, k) for r in run]
            mean_step = np.array([_mean_decode_step(r, k) for r in run])
            in_burst = mean_step < burst_floor
            streamed = mean_step[~in_burst]
            stall_limit = STALL_FACTOR * float(np.median(streamed)) if streamed.size else 0.0
            counted = ~in_burst & (mean_step <= stall_limit)
            bursts_left_out += int(in_burst.sum())
            stalled += int((~counted & ~in_burst).sum())
            for held, t in step_composition(run, steps, k, counted).items():
                totals[held].append(t)
        for held, parts in totals.items():
            if not parts:
                continue
            pooled = StepTotals.pooled(parts)
            batch, tokens, kv = pooled.composition
            out.append(LevelObservation(
                server=server, concurrency=c, max_tokens=n, requests=len(rs), prompt_in_step=held,
                prompt_tokens=_median(r.get("prompt_tokens") or 0 for r in rs),
                completion_tokens=_median(r["completion_tokens"] for r in rs),
                step_s=pooled.span_s / pooled.steps, steps=pooled.steps,
                decode_tokens_per_seq=float(k + 1),
                tokens_per_step_emitted=_median((int(r["completion_tokens"]) - 1) / (_steps(r, k) - 1) for r in rs)
                if k else 1.0,
                num_speculative_tokens=k, batch_size=batch, tokens_in_step=tokens, kv_tokens=kv,
                stalled_requests=stalled, burst_requests=bursts_left_out,
            ))
    return out


def run_step_check(records: Sequence[Mapping[str, Any]], step: AffineStepTime, k: int = 0) -> dict[str, float]:
    """A calibration's step against the steps of any one run on the same server (a load test, Poisson or closed
    loop): the run's mean decode step and its observed composition (`step_composition`), and the step the
    calibration gives that composition. Their ratio separates the engine's speed during the run (did the server
    run as calibrated?) from what the simulation adds on top (queueing, batching). Seconds; `error` is
    predicted / observed - 1."""
    ok = [r for r in records if _timed(r, k)]
    if not ok:
        raise ValueError("run_step_check: no successful request with 3 or more steps")
    totals = StepTotals.pooled(step_composition(ok, [_steps(r, k) for r in ok], k).values())
    batch, tokens, kv = totals.composition
    observed = totals.span_s / totals.steps
    predicted = float(step(batch, tokens, k, kv))
    return {"observed_step_s": observed, "predicted_step_s": predicted, "batch_size": batch,
            "tokens_in_step": tokens, "kv_tokens": kv, "error": predicted / observed - 1}


def at_run_speed(records: Sequence[Mapping[str, Any]], step: AffineStepTime, k: int = 0) -> AffineStepTime:
    """`step` with every cost scaled by one factor, so that it gives the run's own mean step for the run's
    composition (`run_step_check` then reads 0): the calibration at the speed the engine ran during the run. For
    diagnosis only: a simulation with it has read the run it predicts, and separates its own error (queueing,
    batching) from the machine's drift since the calibration."""
    scale = 1.0 / (1.0 + run_step_check(records, step, k)["error"])
    return AffineStepTime(**{name: scale * getattr(step, name) for name in STEP_TIME_FIELDS})


def _nnls_relative(columns: dict[str, np.ndarray], y: np.ndarray, what: str,
                   scale: np.ndarray | None = None) -> dict[str, float]:
    """Non-negative least squares on relative error: rows weighted by 1 / scale (default 1 / y)."""
    return nonnegative_least_squares(columns, y, what, 1.0 / (y if scale is None else scale))


# The KV terms are fitted only where the levels' contexts (KV per sequence) differ by this factor or more: below it
# the KV column is nearly batch times a constant and cannot be told from the per-sequence cost. The probe
# alternates short and long prompts over its levels (`probe.level_prompt_sets`) to spread them (about 4x on the
# built-in prompts). The idle first-token line reads a slope by the same rule: only where its prompts' lengths
# differ by this factor or more (over a narrow range the slope is mostly noise).
KV_SPREAD = 1.5


def _context_spread(levels: Sequence[LevelObservation]) -> float:
    context = [o.kv_tokens / o.batch_size for o in levels]
    return max(context) / min(context)


@dataclass(frozen=True)
class SimulatorFit:
    step_time: AffineStepTime
    request_overhead_s: float
    speculative_request_overhead_s: float | None  # the speculative server's (its draft's prefill included)
    predicted_s: tuple[float, ...]  # per level, in the order of `levels`
    levels: tuple[LevelObservation, ...]
    fallbacks: tuple[str, ...] = ()  # where the measurements did not identify a term its usual way: what was done

    @property
    def median_abs_pct_error(self) -> float:
        return _median(abs(p - o.step_s) / o.step_s for p, o in zip(self.predicted_s, self.levels))


def predict_level(step: AffineStepTime, o: LevelObservation) -> float:
    """The simulator's mean step for a level (see the module docstring for its tokens, batch and KV)."""
    return float(step(o.batch_size, o.tokens_in_step, o.num_speculative_tokens, o.kv_tokens))


def _idle_points(idle_records: Iterable[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens, first-token seconds) of the usable idle records."""
    pts = [(float(r["prompt_tokens"]), float(r["ttft_s"])) for r in idle_records
           if not r.get("error") and r.get("ttft_s") is not None and r.get("prompt_tokens")]
    return (np.array([x for x, _ in pts]), np.array([t for _, t in pts]))


def _prefill_line(idle_records: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    """(intercept, slope) of the idle first-token latency against prompt tokens (non-negative least squares on
    relative error): slope = the cost per prefill token; intercept = one step's fixed part plus the time outside
    engine steps. Prompts whose lengths differ less than `KV_SPREAD` times give no slope (0)."""
    p, y = _idle_points(idle_records)
    if len(p) < 2:
        raise ValueError(f"idle records: {len(p)} usable; expected at least 2 concurrency-1 requests with a TTFT")
    if p.max() < KV_SPREAD * p.min():  # prompts of about one length: no slope to read
        return float(np.median(y)), 0.0
    coef = _nnls_relative({"intercept": np.ones_like(p), "slope": p}, y, "idle TTFT against prompt tokens")
    return coef["intercept"], coef["slope"]


def _draft_per_token(per_token_s: float, speculative_idle_records: Iterable[Mapping[str, Any]]) -> float:
    """The draft's cost per token it computes: the speculative server's idle first-token slope against prompt
    length minus the target's (`per_token_s`); 0 where the speculative idle records give no slope."""
    try:
        _, spec_slope = _prefill_line(speculative_idle_records)
    except ValueError:
        return 0.0
    return max(0.0, spec_slope - per_token_s)


def _prompt_step_slope(levels: Sequence[LevelObservation]) -> float:
    """The cost per token from the steps a prompt landed in: per level, what its mean such step takes beyond the
    level's mean decode step over the tokens it computes beyond it; the median over the levels (0 where no level
    has both kinds of step)."""
    decode = {(o.concurrency, o.max_tokens): o for o in levels if not o.prompt_in_step}
    slopes = [(o.step_s - d.step_s) / (o.tokens_in_step - d.tokens_in_step) for o in levels
              if o.prompt_in_step and (d := decode.get((o.concurrency, o.max_tokens))) is not None
              and o.tokens_in_step > d.tokens_in_step]
    return max(0.0, _median(slopes)) if slopes else 0.0


def fit_simulator_step(baseline: Sequence[LevelObservation], speculative: Sequence[LevelObservation],
                       idle_records: Iterable[Mapping[str, Any]],
                       speculative_idle_records: Iterable[Mapping[str, Any]] = ()) -> SimulatorFit:
    """Fit `AffineStepTime` in three stages, each on what identifies it:

    1. per_token_s: the slope of the idle (concurrency-1 baseline) first-token latency against prompt length;
       where that line gives no positive slope (in CI once, from first tokens of a held stream: those are now
       left out, `idle_records`, but a line can still come out flat), the slope of the steps a prompt landed
       in over their level's decode steps (`_prompt_step_slope`; on the tiny CPU server within 10 % of the idle
       slope);
    2. fixed_s, per_seq_s and per_kv_token_s: the baseline levels' mean steps after subtracting per_token_s x
       tokens in the step (non-negative least squares on each level's relative error); a KV term that leaves the
       step no fixed cost (every step reads the weights: the contexts did not tell the costs apart) is dropped and
       the rest refitted;
    3. draft_per_token_s: the slope of the speculative server's idle first-token latency against prompt length
       beyond the baseline's (the draft prefills every prompt too: its first pass covers every token the target
       scheduled); draft_fixed_s, draft_per_seq_s and draft_per_kv_token_s: the speculative levels' steps minus
       the target's part and the draft's tokens.

    The KV terms are fitted only where the levels' contexts differ by `KV_SPREAD` or more (else left at 0, their
    cost inside the per-sequence terms at the probe's context). The request overhead is the idle line's intercept
    minus one step's fixed and per-sequence cost. The speculative server's overhead (from
    `speculative_idle_records`) is the median of its idle TTFT minus the predicted prefill step, which drafts too.
    """
    if len(baseline) < 2:
        raise ValueError(f"baseline levels: {len(baseline)} given; expected at least 2 (two concurrencies)")
    fallbacks = []
    idle_records, speculative_idle_records = list(idle_records), list(speculative_idle_records)
    intercept, per_token = _prefill_line(idle_records)
    if not per_token:
        per_token = _prompt_step_slope(baseline)
        prompts, ttft = _idle_points(idle_records)
        intercept = float(np.median(ttft - per_token * prompts))  # the idle first token beyond its prefill
        fallbacks.append((f"cost per token {per_token * 1e3:.4f} ms from the steps a prompt landed in" if per_token
                          else "no cost per token (no level's steps with a prompt gave one)")
                         + ": the idle first-token latency gave no slope against prompt length")
    step_s = np.array([o.step_s for o in baseline])
    # a step shorter than its decode tokens' share at the idle prefill rate keeps a floor of 10 %
    y = np.maximum(0.1 * step_s, step_s - per_token * np.array([o.tokens_in_step for o in baseline]))
    cols = {"fixed_s": np.ones(len(baseline)), "per_seq_s": np.array([o.batch_size for o in baseline])}
    if _context_spread(baseline) >= KV_SPREAD:
        cols["per_kv_token_s"] = np.array([o.kv_tokens for o in baseline])
    coef = _nnls_relative(cols, y, "fit_simulator_step (baseline levels)", step_s)
    if coef.get("per_kv_token_s") and coef["fixed_s"] == 0:
        del cols["per_kv_token_s"]
        coef = _nnls_relative(cols, y, "fit_simulator_step (baseline levels, no KV term)", step_s)
        fallbacks.append("no KV cost: with one the baseline steps kept no fixed cost (the probe's contexts did not "
                         "tell the KV cost from the others)")
    step = AffineStepTime(per_token_s=per_token, **coef)
    if speculative:
        step = replace(step, draft_per_token_s=_draft_per_token(per_token, speculative_idle_records))
        spec_s = np.array([o.step_s for o in speculative])
        residual = spec_s - np.array([predict_level(step, o) for o in speculative])
        k = np.array([float(o.num_speculative_tokens) for o in speculative])
        draft = {"draft_fixed_s": k, "draft_per_seq_s": k * np.array([o.batch_size for o in speculative])}
        if _context_spread(speculative) >= KV_SPREAD:
            draft["draft_per_kv_token_s"] = k * np.array([o.kv_tokens for o in speculative])
        if np.any(residual > 0):
            step = replace(step, **_nnls_relative(draft, residual, "fit_simulator_step (speculative levels)", spec_s))
    overhead = max(0.0, intercept - coef["fixed_s"] - coef["per_seq_s"])
    k_spec = speculative[0].num_speculative_tokens if speculative else 0  # the simulator drafts after a prefill too
    spec_gaps = [float(t) - float(step(1, int(p), k_spec, 0)) for p, t in zip(*_idle_points(speculative_idle_records))]
    spec_overhead = max(0.0, _median(spec_gaps)) if spec_gaps else None
    levels = (*baseline, *speculative)
    return SimulatorFit(step, overhead, spec_overhead, tuple(predict_level(step, o) for o in levels), tuple(levels),
                        tuple(fallbacks))


@dataclass(frozen=True)
class LoadModelFit:
    factors: load.StepFactors
    baseline_median_abs_pct_error: float
    speculative_median_abs_pct_error: float | None  # out of sample; None without speculative levels
    predicted_s: tuple[float, ...]
    levels: tuple[LevelObservation, ...]
    fitted: tuple[str, ...]


def fit_load_factors(baseline: Sequence[LevelObservation], speculative: Sequence[LevelObservation], *,
                     model: Any, precision: Any, hardware: Any, tp: int = 1, draft: Any = None,
                     draft_precision: Any = None, prior: load.StepFactors = load.DEFAULT_FACTORS) -> LoadModelFit:
    """`load.fit_step_factors` on the baseline levels' decode steps (those no prompt landed in: batch c, one token
    per sequence, context P + N / 2); speculative levels' decode steps predicted with the fitted factors
    (`load.spec_step_time` with the draft model, one draft step per speculative token)."""
    baseline = [o for o in baseline if not o.prompt_in_step]
    speculative = [o for o in speculative if not o.prompt_in_step]
    obs = [load.StepObservation(model=model, precision=precision, gpu=hardware, tp=tp, batch_size=o.concurrency,
                                tokens_per_seq=1, context_len=int(o.context_tokens), measured_s=o.step_s,
                                label=f"c={o.concurrency} N={o.max_tokens}") for o in baseline]
    if len(obs) < 2:
        raise ValueError(f"baseline levels: {len(obs)} given; expected at least 2")
    res = load.fit_step_factors(obs, prior=prior, fit_per_layer_overhead=False)
    predicted = list(res.predicted_s)
    spec_err = None
    if speculative and draft is not None:
        dep = load.Deployment(target=model, target_precision=precision, gpu=hardware, tp=tp, method="draft_model",
                              draft=draft, draft_precision=draft_precision or precision, draft_tp=tp,
                              factors=res.factors)
        spec_pred = [load.spec_step_time(dep, o.concurrency, o.num_speculative_tokens, int(o.context_tokens)).total_s
                     for o in speculative]
        predicted += spec_pred
        spec_err = _median(abs(p - o.step_s) / o.step_s for p, o in zip(spec_pred, speculative))
    levels = tuple(baseline) + (tuple(speculative) if spec_err is not None else ())
    return LoadModelFit(res.factors, res.median_abs_pct_error, spec_err, tuple(predicted), levels, res.fitted)


def level_rows(levels: Sequence[LevelObservation], simulator: SimulatorFit | None,
               load_fit: LoadModelFit | None) -> list[dict[str, Any]]:
    """One dict per level (seconds) with both fits' predictions, for the calibration file and the printout."""
    sim_by = {id(o): p for o, p in zip(simulator.levels, simulator.predicted_s)} if simulator else {}
    load_by = {id(o): p for o, p in zip(load_fit.levels, load_fit.predicted_s)} if load_fit else {}
    rows = []
    for o in levels:
        row = {**asdict(o), "context_tokens": o.context_tokens,
               "simulator_step_s": sim_by.get(id(o)), "load_model_step_s": load_by.get(id(o))}
        rows.append(row)
    return rows
