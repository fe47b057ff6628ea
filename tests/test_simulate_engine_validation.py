"""engine_validation's comparison without a server: records made by hand, replayed through the simulation."""

from __future__ import annotations

import numpy as np
import pytest

from specdec_lib import engine_validation as ev
from specdec_lib import simulate as sim

STEP = sim.AffineStepTime(fixed_s=0.040, per_token_s=0.003, draft_fixed_s=0.010)
SERVER = sim.ServerConfig(65536, ev.CPU_MAX_NUM_SEQS, ev.CPU_MAX_NUM_BATCHED_TOKENS)
ALPHAS = {0.1: 0.87, 1.0: 0.41}


def _records(n: int = 30, rate_qps: float = 1.5, seed: int = 3) -> list[dict]:
    """A Poisson run of the 60/40 mix as runs.py records (only the fields the replay reads)."""
    rng = np.random.default_rng(seed)
    sent = np.cumsum(rng.exponential(1 / rate_qps, n))
    temps = [ev.MIX_TEMPERATURES[i % len(ev.MIX_TEMPERATURES)] for i in range(n)]
    return [{"sent_at_s": float(t), "prompt_tokens": 50, "completion_tokens": 32, "temperature": temp,
             "rate_qps": rate_qps, "ttft_s": 0.3, "tpot_s": 0.06, "e2e_s": 2.2} for t, temp in zip(sent, temps)]


def _e2e_p50(rows: list[ev.Row]) -> float:
    return next(r.simulated_s for r in rows if r.metric == "e2e" and r.stat == "p50")


def _compare(records, speculation, seed: int, seeds: int) -> list[ev.Row]:
    return ev.compare_level(records, server="s", workload="60/40 mix", rate_qps=1.5, server_config=SERVER,
                            step_time=STEP, request_overhead_s=0.02, speculation=speculation, alphas=ALPHAS,
                            seed=seed, seeds=seeds)


def test_a_baseline_replay_is_deterministic_and_runs_once():
    records = _records()
    assert _compare(records, None, 0, 1) == _compare(records, None, 0, 16)
    # one request alone: prefill step (50 tokens) then 31 decode steps, plus the overhead, by hand
    alone = _compare(records[:1], None, 0, 16)
    e2e = 0.040 + 0.003 * 50 + 31 * (0.040 + 0.003 * 1) + 0.02
    assert _e2e_p50(alone) == pytest.approx(e2e, rel=1e-9)


def test_pooling_speculative_replicas_steadies_the_simulated_percentiles():
    """One replica's E2E P50 moves with the acceptance draws; the pool of 16 moves much less (its spread over
    four disjoint seed ranges is under half that of four single replicas)."""
    records = _records()
    spec = sim.SpeculationConfig(4)
    single = [_e2e_p50(_compare(records, spec, s, 1)) for s in (0, 1, 2, 3)]
    pooled = [_e2e_p50(_compare(records, spec, s, 16)) for s in (0, 16, 32, 48)]
    assert len(set(single)) > 1  # the draws do move a single replica
    assert np.ptp(pooled) < 0.5 * np.ptp(single), (single, pooled)
    assert min(single) * 0.9 <= np.median(pooled) <= max(single) * 1.1



def test_the_probe_parts_are_spread_over_the_driven_runs():
    """Part i of P before run floor(i x runs / P); the first part first; parts beyond the runs last."""
    assert ev.interleaved([16, 96], 2) == [("probe", 16), ("run", 0), ("probe", 96), ("run", 1)]
    eight = ev.interleaved([16, 48], 8)
    assert eight[:2] == [("probe", 16), ("run", 0)] and eight[5] == ("probe", 48) and eight[4] == ("run", 3)
    assert [k for k, _ in eight].count("run") == 8
    assert ev.interleaved([16, 48, 96], 1) == [("probe", 16), ("probe", 48), ("probe", 96), ("run", 0)]
    assert ev.interleaved([16, 96], 0) == [("probe", 16), ("probe", 96)]
    with pytest.raises(ValueError, match="at least one probe length"):
        ev.interleaved([], 2)
