"""How well a step-time fit replays the probe it came from (pure).

The staged fit (`fit.fit_simulator_step`) reads each closed-loop level as a mean decode step. As a check of the
whole fit, the probe's own requests (their measured send times and token counts, `simulate.requests_from_records`)
are replayed through the simulation with the fitted step and overhead, and compared with what was measured: per
level, the quartiles (25th, 50th, 75th percentiles) of TTFT and of the time from first token to last (E2E - TTFT).
The figure is the mean squared log-ratio of simulated to measured quartiles (0: the replay matches).

Until 7 Dec 2026 this loss was also minimised (Nelder-Mead over the step's parameters) to refine the staged fit.
On the engine-bound validation server that refinement fitted the TTFT of waves of c prompts prefilled together
(cheaper per token than one prompt alone on this CPU) by moving half the per-token cost into request overhead,
outside the engine, and the simulation under Poisson load then ran 30-55 % fast; with the staged fit's decode steps
read correctly (`fit.LevelObservation.tokens_in_step`) it is not needed (docs/simulation.md).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from specdec_lib import simulate as sim


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


def replay_loss(step: sim.AffineStepTime, overhead_s: float, records: Sequence[Mapping[str, Any]], *,
                server: sim.ServerConfig, speculation: sim.SpeculationConfig | None = None,
                alpha: float = 0.0) -> float:
    """The replay's mean squared log-ratio of simulated to measured TTFT and decode-time quartiles, over the probe's
    levels (`records`: one server's probe)."""
    levels = group_levels(records)
    if not levels:
        raise ValueError("probe records: no successful closed-loop level to replay")
    return _loss(replay_medians(step, overhead_s, levels, server, speculation, alpha), measured_medians(levels))
