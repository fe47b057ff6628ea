"""Refine a step-time fit by replaying the probe itself through the simulator (pure).

The staged fit (`fit.fit_simulator_step`) reads each closed-loop level as a mean step of known composition,
which is only approximately true: in a closed loop, when the prefills of replacement requests land depends on how the
streams drift in and out of step. Replaying the probe's own requests (their measured send times and token
counts, `simulate.requests_from_records`) through the simulation puts the prefills where the scheduler would, so
the parameters can be chosen to make the replay match what was measured: per level, the quartiles (25th, 50th,
75th percentiles) of the time from first token to last (E2E - TTFT) and of TTFT (its spread carries the prompt
lengths, which separate the per-token cost from the overhead). The objective is the mean squared log-ratio of
simulated to measured quartiles; it is minimised over the logarithms of the parameters by Nelder-Mead (Nelder
and Mead 1965, the standard reflection 1, expansion 2, contraction 0.5, shrink 0.5), from the staged fit.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from specdec_lib import simulate as sim

TARGET_PARAMS = ("fixed_s", "per_token_s", "per_seq_s")
DRAFT_PARAMS = ("draft_fixed_s", "draft_per_seq_s")
FLOOR_S = 1e-6  # a parameter the fit drives to zero stays at a microsecond (the search is over logarithms)


def group_levels(records: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Successful probe records grouped by (concurrency, max_tokens), each group sorted by send time."""
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("error") or r.get("ttft_s") is None or r.get("e2e_s") is None or not r.get("concurrency"):
            continue
        groups.setdefault((int(r["concurrency"]), int(r.get("max_tokens") or 0)), []).append(r)
    return [sorted(rs, key=lambda r: r["sent_at_s"]) for _, rs in sorted(groups.items())]


QUARTILES = (25, 50, 75)


def replay_medians(step: sim.AffineStepTime, overhead_s: float, levels: Sequence[Sequence[Mapping[str, Any]]],
                   server: sim.ServerConfig, speculation: sim.SpeculationConfig | None, alpha: float,
                   seed: int = 0) -> list[tuple[float, ...]]:
    """Per level, the simulated quartiles of TTFT then of E2E - TTFT of its replayed requests, seconds."""
    out = []
    for rs in levels:
        reqs = sim.requests_from_records(rs, alpha=alpha)
        res = sim.simulate(reqs, server, step, speculation, seed=seed)
        out.append((*(np.percentile(res.ttft_s, QUARTILES) + overhead_s).tolist(),
                    *np.percentile(res.e2e_s - res.ttft_s, QUARTILES).tolist()))
    return out


def measured_medians(levels: Sequence[Sequence[Mapping[str, Any]]]) -> list[tuple[float, ...]]:
    """Per level, the measured quartiles of TTFT then of E2E - TTFT, seconds."""
    return [(*np.percentile([r["ttft_s"] for r in rs], QUARTILES).tolist(),
             *np.percentile([r["e2e_s"] - r["ttft_s"] for r in rs], QUARTILES).tolist()) for rs in levels]


def _loss(simulated: Sequence[tuple[float, ...]], measured: Sequence[tuple[float, ...]]) -> float:
    terms = [math.log(max(s, 1e-9) / m) ** 2 for sp, mp in zip(simulated, measured) for s, m in zip(sp, mp) if m > 0]
    return float(np.mean(terms))


def nelder_mead(f: Callable[[np.ndarray], float], x0: np.ndarray, *, step: float = 0.3, iterations: int = 120,
                tolerance: float = 1e-5) -> tuple[np.ndarray, float]:
    """Minimise f from x0 (standard Nelder-Mead; the initial simplex moves each coordinate by `step`)."""
    n = x0.size
    simplex = [x0.astype(float)] + [x0 + step * np.eye(n)[i] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(iterations):
        order = np.argsort(values)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] < tolerance:
            break
        centroid = np.mean(simplex[:-1], axis=0)
        reflected = centroid + (centroid - simplex[-1])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centroid + 2 * (centroid - simplex[-1])
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centroid + 0.5 * (simplex[-1] - centroid)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:
                simplex = [simplex[0]] + [simplex[0] + 0.5 * (x - simplex[0]) for x in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    best = int(np.argmin(values))
    return simplex[best], values[best]


def refine(step: sim.AffineStepTime, overhead_s: float, records: Sequence[Mapping[str, Any]], *,
           names: Sequence[str], server: sim.ServerConfig, speculation: sim.SpeculationConfig | None = None,
           alpha: float = 0.0, start_at_least: Mapping[str, float] | None = None
           ) -> tuple[sim.AffineStepTime, float, float, float]:
    """Adjust the parameters `names` of `step` and the request overhead so the replayed probe matches its
    measurements. Returns (step, overhead_s, loss before, loss after).

    The search is over logarithms, so a parameter that starts at the floor (1 us, where the staged fit left it at
    zero) cannot leave it: at that size it does not change the replay, the loss is flat in its direction and
    Nelder-Mead never moves it. `start_at_least` gives such parameters a starting value of a size that matters
    (the search still takes it wherever the replay says; "loss before" is the staged fit's, unmodified)."""
    levels = group_levels(records)
    if not levels:
        raise ValueError("probe records: no successful closed-loop level to replay")
    measured = measured_medians(levels)

    def unpack(x: np.ndarray) -> tuple[sim.AffineStepTime, float]:
        values = np.exp(x)
        return replace(step, **dict(zip(names, values[:-1].tolist()))), float(values[-1])

    def loss(x: np.ndarray) -> float:
        s, ov = unpack(x)
        return _loss(replay_medians(s, ov, levels, server, speculation, alpha), measured)

    staged = np.log([max(FLOOR_S, getattr(step, n)) for n in names] + [max(FLOOR_S, overhead_s)])
    before = loss(staged)
    least = dict(start_at_least or {})
    x0 = np.log([max(FLOOR_S, getattr(step, n), least.get(n, 0.0)) for n in names] + [max(FLOOR_S, overhead_s)])
    x, after = nelder_mead(loss, x0, iterations=150)
    x, after = nelder_mead(loss, x, step=0.1, iterations=100)  # a restart: Nelder-Mead can stall on a ridge
    if after >= before:
        return step, overhead_s, before, before
    new_step, new_overhead = unpack(x)
    return new_step, new_overhead, before, after
