"""The engine: vLLM's continuous-batching step loop, with and without speculation (pure).

What is modelled (read vLLM 0.32's `vllm/v1/core/sched/scheduler.py` beside this):

- **Continuous batching**: every engine step, the running sequences (admission order) are scheduled first, then
  waiting requests are admitted first-come-first-served while fewer than `max_num_seqs` run and the step's token
  budget (`max_num_batched_tokens`) has room. No step is "prefill only": prefill chunks and decodes share steps.
- **Chunked prefill**: a prompt is processed in chunks of at most the budget left in the step; the step that
  completes a prompt samples its first token (TTFT is the end of that step).
- **KV cache**: a capacity in tokens (the memory planner's `kv_capacity_tokens`, which already counts the draft's
  layers for a draft model). Allocation is on demand, as in vLLM V1: a sequence holds KV for what it has computed,
  and a step needs room for its new tokens (for a decode: the last token plus k draft slots). When the running
  sequences' next step does not fit, the newest running sequences are preempted (vLLM V1's default, recompute):
  their KV is freed, they go to the front of the queue and re-prefill prompt + tokens generated so far when
  re-admitted. No waiting request is admitted in a step that preempted (as vLLM). A waiting request is admitted only
  if its first chunk fits the free KV. Accounting is per token, not per 16-token block (vLLM rounds each sequence up
  to whole blocks, so it fits slightly fewer sequences than this model).
- **Speculation**: in a step, every decoding sequence verifies k + 1 positions (k draft tokens plus the last token)
  and appends 1..k+1 tokens: 1 + the accepted prefix, a geometric count truncated at k with per-token acceptance
  alpha of its class (Leviathan et al. 2023: P(accepted >= j) = alpha**j; mean tokens (1 - alpha**(k+1)) / (1 - alpha)).
  Tokens past `max_tokens` are dropped, as vLLM does. k may follow a batch-size schedule (`SpeculationConfig`); as
  vLLM does, k is looked up from the number of sequences scheduled in the step (token budget and KV are reserved for
  the k of the running count before admissions, so an unusual schedule whose k rises with batch size is capped at
  that k for the step).
- **Step time**: a parameter (`steptime.StepTimeFn`). Every sequence in the batch waits for the whole step: a
  low-acceptance request pays the same verification and drafting time as a high-acceptance one but gains fewer
  tokens from it. That shared step is the mechanism behind the source's "P50 improves while P99 regresses".

The drafter also runs in a step with no decoding sequence (vLLM drafts after every forward pass of a speculative
server): such a step is charged the draft terms of the k its batch size gives, its first pass over the step's prompt
tokens (until 7 Dec 2026 it was not, and the calibration folded an idle prefill's draft into the speculative
server's request overhead, which over-charged short prompts).

Not modelled: prefix caching, priorities, pipeline parallelism, async scheduling overlap, detokenisation and network
time, and requests longer than the KV capacity (rejected with a ValueError, as vLLM rejects a prompt longer than the
model length).

Why a step loop and not an event heap or simpy: in a continuous-batching engine, nothing happens between step
boundaries: the scheduler acts once per step, and every running sequence advances in lockstep. A discrete-event
library (simpy's processes and resources) would model each request as a coroutine yielding per token, which costs
microseconds per token-event in Python: 10,000 requests of a few hundred tokens are millions of events, far over the
two-second budget. A step loop with the running set held in numpy arrays advances all sequences of a step at once,
and, where no scheduling decision can occur (all running sequences decoding, no admissible arrival, KV not about to
overflow), it advances many steps in one vectorised block ("stretch"): the step count to the next finish, arrival or
KV overflow is found from cumulative sums. The simulation is deterministic given its seed: acceptance draws come
from `simulate(seed=...)`, so a with/without comparison on the same requests uses common random numbers.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from specdec_lib.simulate.config import ServerConfig, SpeculationConfig
from specdec_lib.simulate.results import SimulationResult, Timeline
from specdec_lib.simulate.steptime import StepTimeFn
from specdec_lib.simulate.workload import Requests


def _draw_tokens(rng: np.random.Generator, inv_log_alpha: np.ndarray, k: int, steps: int) -> np.ndarray:
    """Tokens appended per step, shape (sequences, steps): 1 + min(geometric accepted prefix, k).

    P(accepted >= j) = alpha**j, so accepted = floor(log(1 - U) / log(alpha)) for U uniform on [0, 1).
    `inv_log_alpha` is 1 / log(alpha): -0.0 for alpha = 0 (never accepts), -1e300 for alpha = 1 (always k).
    """
    x = np.log1p(-rng.random((inv_log_alpha.shape[0], steps)))
    x *= inv_log_alpha[:, None]
    np.minimum(x, k, out=x)
    tokens = x.astype(np.int64)  # truncation is floor here: x >= 0
    tokens += 1
    return tokens


def _check_inputs(requests: Requests, server: ServerConfig, k_max: int) -> None:
    """Refuse what the loop cannot run: empty lengths, unsorted arrivals, a token budget too small for one decode
    per running sequence, a request that could never fit the KV cache, acceptance outside [0, 1]."""
    prompt, out_len = requests.prompt_tokens, requests.output_tokens
    if np.any(prompt < 1) or np.any(out_len < 1):
        raise ValueError("requests: prompt_tokens and output_tokens must be >= 1")
    if np.any(np.diff(requests.arrival_s) < 0):
        raise ValueError("requests.arrival_s must be sorted (make_requests sorts it)")
    cap_seqs, budget = int(server.max_num_seqs), int(server.max_num_batched_tokens)
    if budget < cap_seqs * (1 + k_max):
        raise ValueError(
            f"ServerConfig.max_num_batched_tokens = {budget}; this model needs >= max_num_seqs * (1 + k) = "
            f"{cap_seqs * (1 + k_max)} so every running decode fits one step"
        )
    longest = prompt + out_len + k_max + 1
    if longest.max() > int(server.kv_capacity_tokens):
        i = int(np.argmax(longest))
        raise ValueError(
            f"request {i} needs {int(longest[i])} KV tokens (prompt + output + k + 1) but "
            f"ServerConfig.kv_capacity_tokens = {int(server.kv_capacity_tokens)}; it could never run"
        )
    alpha = np.asarray(requests.class_alpha, dtype=np.float64)
    if np.any((alpha < 0) | (alpha > 1)):
        raise ValueError(f"requests.class_alpha = {requests.class_alpha}; expected values in [0, 1]")


def _alpha_tables(class_alpha: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: 1 / log(alpha) for `_draw_tokens`, and the mean tokens per step for k = 0..k_max,
    (1 - alpha**(k+1)) / (1 - alpha) (k + 1 at alpha = 1)."""
    with np.errstate(divide="ignore"):
        inv_log_alpha = np.where(class_alpha >= 1, -1e300, 1.0 / np.log(np.maximum(class_alpha, 0.0)))
    inv_log_alpha = np.where(class_alpha <= 0, -0.0, inv_log_alpha)
    ks = np.arange(k_max + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_tokens = np.where(
            class_alpha[:, None] >= 1,
            ks[None, :] + 1.0,
            (1 - class_alpha[:, None] ** (ks[None, :] + 1)) / (1 - class_alpha[:, None]),
        )
    return inv_log_alpha, mean_tokens


@dataclass
class _Segments:
    """The timeline as it is recorded: one entry per single step or per stretch of identical decode steps."""

    start: list[float] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    batch: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    waiting: list[float] = field(default_factory=list)
    k: list[int] = field(default_factory=list)

    def add(self, start: float, duration: float, steps: int, batch: int, running: int, waiting: float, k: int):
        self.start.append(start)
        self.duration.append(duration)
        self.steps.append(steps)
        self.batch.append(batch)
        self.running.append(running)
        self.waiting.append(waiting)
        self.k.append(k)

    def timeline(self) -> Timeline:
        return Timeline(
            start_s=np.asarray(self.start),
            duration_s=np.asarray(self.duration),
            num_steps=np.asarray(self.steps, dtype=np.int64),
            batch_size=np.asarray(self.batch, dtype=np.int64),
            num_running=np.asarray(self.running, dtype=np.int64),
            waiting_seconds=np.asarray(self.waiting),
            num_speculative_tokens=np.asarray(self.k, dtype=np.int64),
        )


@dataclass
class _Plan:
    """The running set's needs for the next step, before admissions: `decoding` marks sequences past prefill;
    `need_dec` = decoding sequences x (1 + k) token slots; `chunks` the prefill chunk of each running sequence
    still prefilling (None when all decode)."""

    n: int
    decoding: np.ndarray
    n_dec: int
    k: int
    need_dec: int
    kv0: int
    budget: int
    chunks: np.ndarray | None
    chunk_total: int


class _Engine:
    """The state of one simulation: the running set as a struct of numpy arrays in admission order (the first `n`
    entries live), the waiting queue, per-request outcomes, and the timeline being recorded."""

    def __init__(self, requests: Requests, server: ServerConfig, step_time_fn: Callable[..., Any],
                 speculation: SpeculationConfig | None, seed: int, max_stretch_steps: int) -> None:
        self.requests = requests
        self.step_time_fn = step_time_fn
        self.max_stretch_steps = max_stretch_steps
        self.cap_seqs = int(server.max_num_seqs)
        self.kv_cap = int(server.kv_capacity_tokens)
        self.budget_total = int(server.max_num_batched_tokens)
        if speculation is None:
            k_table = np.zeros(self.cap_seqs + 1, dtype=np.int64)
        else:
            k_table = speculation.k_by_batch_size(self.cap_seqs)
        self.k_list = k_table.tolist()
        _check_inputs(requests, server, int(k_table.max()))
        inv_log_alpha, self.mean_tokens_table = _alpha_tables(
            np.asarray(requests.class_alpha, dtype=np.float64), int(k_table.max())
        )
        self.rng = np.random.default_rng([seed, 5])
        self.n_req = requests.num_requests
        self.arrival_list = requests.arrival_s.tolist()
        self.arrival_prefix = np.concatenate([[0.0], np.cumsum(requests.arrival_s)]).tolist()
        self.prompt_list = requests.prompt_tokens.tolist()
        self.out_list = requests.output_tokens.tolist()
        self.class_list = requests.class_index.tolist()
        self.inv_list = inv_log_alpha[requests.class_index].tolist()

        self.admitted = np.full(self.n_req, np.nan)
        self.first_token = np.full(self.n_req, np.nan)
        self.finish = np.full(self.n_req, np.nan)
        self.gen_total = np.zeros(self.n_req, dtype=np.int64)  # up to date for finished and preempted requests
        self.preempt = np.zeros(self.n_req, dtype=np.int64)
        self.started = [False] * self.n_req

        cap = self.cap_seqs
        self.r_id = np.zeros(cap, dtype=np.int64)
        self.r_ctx = np.zeros(cap, dtype=np.int64)  # KV tokens resident
        self.r_pdone = np.zeros(cap, dtype=np.int64)  # prefill tokens computed
        self.r_plen = np.zeros(cap, dtype=np.int64)  # prefill length (prompt, + generated tokens after preemption)
        self.r_gen = np.zeros(cap, dtype=np.int64)
        self.r_out = np.zeros(cap, dtype=np.int64)
        self.r_inv = np.zeros(cap, dtype=np.float64)  # 1 / log(alpha)
        self.r_cls = np.zeros(cap, dtype=np.int64)
        self.arrays = (self.r_id, self.r_ctx, self.r_pdone, self.r_plen, self.r_gen, self.r_out, self.r_inv,
                       self.r_cls)
        self.n = 0
        self.waiting: deque[int] = deque()
        self.next_arrival = 0
        self.n_finished = 0
        self.t = self.arrival_list[0]
        self.max_kv = 0
        self.steps_total = 0
        self.segments = _Segments()

    # ---- the loop

    def run(self) -> None:
        while self.n_finished < self.n_req:
            self._take_arrivals()
            if self.n == 0 and not self.waiting:
                self.t = self.arrival_list[self.next_arrival]
                continue
            plan = self._plan(self.n)
            if plan.n and plan.n_dec == plan.n and plan.kv0 + plan.need_dec <= self.kv_cap and self._stretch(plan):
                continue
            self._step(plan)

    def _take_arrivals(self) -> None:
        if self.next_arrival < self.n_req and self.arrival_list[self.next_arrival] <= self.t:
            j = bisect_right(self.arrival_list, self.t, self.next_arrival)
            self.waiting.extend(range(self.next_arrival, j))
            self.next_arrival = j

    def _plan(self, n: int) -> _Plan:
        decoding = self.r_pdone[:n] == self.r_plen[:n]
        n_dec = int(decoding.sum())
        k = self.k_list[n] if n else 0
        need_dec = n_dec * (1 + k)
        budget = self.budget_total - need_dec
        chunks, chunk_total = None, 0
        if n_dec < n:
            rem_prefill = self.r_plen[:n] - self.r_pdone[:n]  # 0 for decoding sequences
            chunks = np.minimum(rem_prefill, np.maximum(0, budget - (np.cumsum(rem_prefill) - rem_prefill)))
            chunk_total = int(chunks.sum())
        return _Plan(n, decoding, n_dec, k, need_dec, int(self.r_ctx[:n].sum()), budget, chunks, chunk_total)

    def _arrivals_area(self, t0: float, t1: float) -> float:
        """Request-seconds spent waiting in (t0, t1] by requests arriving inside it."""
        i0 = bisect_right(self.arrival_list, t0, self.next_arrival)
        i1 = bisect_right(self.arrival_list, t1, i0)
        return (i1 - i0) * t1 - (self.arrival_prefix[i1] - self.arrival_prefix[i0])

    def _retire(self, t1: float) -> None:
        """Record the running sequences that have all their tokens as finished at t1 and drop them."""
        n = self.n
        fin = self.r_gen[:n] >= self.r_out[:n]
        if fin.any():
            ids = self.r_id[:n][fin]
            self.finish[ids] = t1
            self.gen_total[ids] = self.r_gen[:n][fin]
            self.n_finished += ids.shape[0]
            keep = ~fin
            m = int(keep.sum())
            for a in self.arrays:
                a[:m] = a[:n][keep]
            self.n = m

    # ---- a stretch of pure decode steps, advanced in one vectorised block

    def _stretch(self, p: _Plan) -> bool:
        """Advance several decode-only steps at once; False (nothing done) when a waiting request could be admitted
        now or not even one step fits the KV cache."""
        n, k, need_dec, kv0 = p.n, p.k, p.need_dec, p.kv0
        if self.waiting:
            head = self.waiting[0]
            fits = min(self.prompt_list[head] + int(self.gen_total[head]), p.budget) <= self.kv_cap - kv0 - need_dec
            if n < self.cap_seqs and fits:
                return False
        rem = self.r_out[:n] - self.r_gen[:n]
        m, kv, cum = self._stretch_draws(rem, n, k, kv0)
        if kv[m - 1] + need_dec > self.kv_cap:  # stop before the first step whose new tokens would not fit
            m = int(np.searchsorted(kv[:m], self.kv_cap - need_dec, side="right"))
        if m < 1:
            return False
        dt = self.step_time_fn(n, need_dec, k, kv[:m])
        if np.ndim(dt):
            t_end = np.cumsum(dt)
            t_end += self.t
        else:
            t_end = self.t + float(dt) * np.arange(1, m + 1)
        if not self.waiting and n < self.cap_seqs and self.next_arrival < self.n_req:
            # an arrival during the stretch can be admitted at the next step boundary
            a_next = self.arrival_list[self.next_arrival]
            if m > 1 and t_end[m - 2] >= a_next:
                m = 1 + int(np.searchsorted(t_end[: m - 1], a_next, side="left"))
        t, t1 = self.t, float(t_end[m - 1])
        self.segments.add(t, t1 - t, m, n, n, len(self.waiting) * (t1 - t) + self._arrivals_area(t, t1), k)
        self.max_kv = max(self.max_kv, int(kv[m - 1]) + need_dec)
        self.steps_total += m
        inc = m if cum is None else np.minimum(cum[:, m - 1], rem)
        self.r_gen[:n] += inc
        self.r_ctx[:n] += inc
        self._retire(t1)
        self.t = t1
        return True

    def _stretch_draws(self, rem: np.ndarray, n: int, k: int, kv0: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        """Steps until the first sequence finishes (at most `max_stretch_steps`), the KV resident at the start of
        each, and with speculation the cumulative tokens per sequence (pre-drawn acceptance outcomes)."""
        rem_min = int(rem.min())
        if k == 0:
            m = min(rem_min, self.max_stretch_steps)
            return m, kv0 + n * np.arange(m, dtype=np.int64), None
        mean_tokens = self.mean_tokens_table[self.r_cls[:n], k]
        m = min(rem_min, math.ceil(1.5 * float((rem / mean_tokens).min())) + 2, self.max_stretch_steps)
        cum = np.cumsum(_draw_tokens(self.rng, self.r_inv[:n], k, m), axis=1)
        # steps until each sequence has its tokens: rows of cum increase, so count the short steps
        first_done = int((cum < rem[:, None]).sum(axis=1).min())
        if first_done < m:
            m = first_done + 1
        kv = np.empty(m, dtype=np.int64)
        kv[0] = kv0
        if m > 1:
            kv[1:] = kv0 + cum[:, : m - 1].sum(axis=0)
        return m, kv, cum

    # ---- one step with scheduling decisions (prefill chunks, admissions, preemption)

    def _step(self, p: _Plan) -> None:
        preempted = False
        while p.n > 0 and p.kv0 + p.need_dec + p.chunk_total > self.kv_cap:
            self._preempt_newest()
            preempted = True
            p = self._plan(self.n)
        n_before = p.n
        new_tokens = p.need_dec + p.chunk_total
        first_token_ids: list[int] = []
        if not preempted:
            new_tokens = self._admit(new_tokens, p.kv0, first_token_ids)
        n_admitted = self.n - n_before
        batch_size = p.n_dec + n_admitted + (int(np.count_nonzero(p.chunks)) if p.chunks is not None else 0)
        if batch_size == 0:
            # cannot happen: a lone request always fits (checked above) and the head of the queue is admitted
            raise RuntimeError(f"simulation stalled at t = {self.t} s: no sequence could be scheduled")
        # vLLM looks k up from the number of sequences scheduled; budget and KV were reserved for the k of the
        # running count before admissions, so a schedule whose k rises with batch size is capped at that k
        k_step = min(p.k, self.k_list[min(batch_size, self.cap_seqs)]) if p.n_dec else 0
        if k_step != p.k:
            new_tokens -= p.n_dec * (p.k - k_step)
        # the drafter runs after every forward pass of a speculative server, prefill-only ones included (vLLM 0.32
        # `gpu_model_runner.execute_model` proposes the next step's drafts right after sampling): a step without
        # decodes still pays the draft passes, the first over the step's prompt tokens
        k_draft = k_step if p.n_dec else self.k_list[min(batch_size, self.cap_seqs)]
        dt = float(self.step_time_fn(batch_size, new_tokens, k_draft, p.kv0))
        t, t1 = self.t, self.t + dt
        self.max_kv = max(self.max_kv, p.kv0 + new_tokens)
        self.steps_total += 1
        self.segments.add(t, dt, 1, batch_size, self.n, len(self.waiting) * dt + self._arrivals_area(t, t1), k_step)
        self._advance_running(p, n_before, k_step, first_token_ids)
        if first_token_ids:
            self.first_token[first_token_ids] = t1
        self._retire(t1)
        self.t = t1

    def _preempt_newest(self) -> None:
        """vLLM V1's recompute preemption of the newest running sequence: free its KV, requeue it first."""
        last = self.n - 1
        rid = int(self.r_id[last])
        self.preempt[rid] += 1
        self.gen_total[rid] = self.r_gen[last]
        self.waiting.appendleft(rid)
        self.n -= 1

    def _admit(self, new_tokens: int, kv0: int, first_token_ids: list[int]) -> int:
        """Admit waiting requests first-come-first-served while a slot, the token budget and the KV for the first
        chunk last; a request whose whole prompt fits the step samples a token in it. Returns the step's tokens."""
        budget_left = self.budget_total - new_tokens
        free_kv = self.kv_cap - kv0 - new_tokens
        while self.waiting and self.n < self.cap_seqs and budget_left > 0:
            rid = self.waiting[0]
            g = int(self.gen_total[rid])
            plen = self.prompt_list[rid] + g
            chunk = min(plen, budget_left)
            if chunk > free_kv:
                break
            self.waiting.popleft()
            n = self.n
            self.r_id[n] = rid
            self.r_ctx[n] = chunk
            self.r_pdone[n] = chunk
            self.r_plen[n] = plen
            self.r_out[n] = self.out_list[rid]
            self.r_inv[n] = self.inv_list[rid]
            self.r_cls[n] = self.class_list[rid]
            if chunk == plen:  # the whole prompt in this step: it samples a token
                self.r_gen[n] = g + 1
                if g == 0:
                    first_token_ids.append(rid)
            else:
                self.r_gen[n] = g
            if not self.started[rid]:
                self.started[rid] = True
                self.admitted[rid] = self.t
            self.n += 1
            budget_left -= chunk
            free_kv -= chunk
            new_tokens += chunk
        return new_tokens

    def _advance_running(self, p: _Plan, n_before: int, k_step: int, first_token_ids: list[int]) -> None:
        """Apply the step to the sequences that were running before admissions: prefill chunks (a prompt completed
        in this step samples a token) and decodes (1 token, or 1 + the accepted prefix with speculation)."""
        if p.chunks is not None:
            self.r_pdone[:n_before] += p.chunks
            self.r_ctx[:n_before] += p.chunks
            completes = (p.chunks > 0) & (self.r_pdone[:n_before] == self.r_plen[:n_before])
            if completes.any():
                self.r_gen[:n_before] += completes
                ids = self.r_id[:n_before][completes]
                first_token_ids.extend(ids[np.isnan(self.first_token[ids])].tolist())
        if not p.n_dec:
            return
        idx = slice(0, p.n_dec) if p.n_dec == n_before else np.flatnonzero(p.decoding)
        if k_step:
            emitted = _draw_tokens(self.rng, self.r_inv[idx], k_step, 1)[:, 0]
            np.minimum(emitted, self.r_out[idx] - self.r_gen[idx], out=emitted)
        else:
            emitted = 1
        self.r_gen[idx] += emitted
        self.r_ctx[idx] += emitted

    def result(self, server: ServerConfig, speculation: SpeculationConfig | None) -> SimulationResult:
        return SimulationResult(
            requests=self.requests,
            server=server,
            speculation=speculation,
            admitted_s=self.admitted,
            first_token_s=self.first_token,
            finish_s=self.finish,
            generated_tokens=self.gen_total,
            preemptions=self.preempt,
            timeline=self.segments.timeline(),
            max_kv_tokens=self.max_kv,
            num_steps=self.steps_total,
        )


def simulate(
    requests: Requests,
    server: ServerConfig,
    step_time_fn: StepTimeFn | Callable[..., Any],
    speculation: SpeculationConfig | None = None,
    *,
    seed: int = 0,
    max_stretch_steps: int = 4096,
) -> SimulationResult:
    """Run the continuous-batching model (see the module docstring) until every request has finished."""
    engine = _Engine(requests, server, step_time_fn, speculation, seed, max_stretch_steps)
    engine.run()
    return engine.result(server, speculation)
