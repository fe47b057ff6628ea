"""Fitting the load model's step-time factors (`load.StepFactors`) to measured steps: the calibration.

`fit_step_factors` fits the efficiencies and overheads of `load.step_time_breakdown` to observed step times;
`fit_from_latency_sweep` reads them from a latency sweep's records. Split from load.py (which re-exports these
names) so the step-time model reads on its own. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

from specdec_lib.load import DEFAULT_FACTORS, StepFactors, StepTime, positive_number, step_time_breakdown


@dataclass(frozen=True)
class StepObservation:
    """One measured step (or a TPOT read as one baseline step) with what ran."""

    model: Any
    precision: Any
    gpu: Any
    tp: int
    batch_size: float
    tokens_per_seq: int
    context_len: int
    measured_s: float
    include_communication: bool = True
    label: str = ""


@dataclass(frozen=True)
class FitResult:
    factors: StepFactors
    predicted_s: tuple[float, ...]
    measured_s: tuple[float, ...]
    median_abs_pct_error: float
    fitted: tuple[str, ...]
    assumptions: tuple[str, ...]


def _predict(obs: StepObservation, f: StepFactors) -> StepTime:
    return step_time_breakdown(obs.model, obs.precision, obs.gpu, obs.tp, obs.batch_size, obs.tokens_per_seq,
                               obs.context_len, f, include_communication=obs.include_communication)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def fit_step_factors(observations: Sequence[StepObservation], *, prior: StepFactors = DEFAULT_FACTORS,
                     fit_per_layer_overhead: bool | None = None, fit_compute: bool = True) -> FitResult:
    """Fit η_mem, η_compute and the overheads to measured steps, minimising the squared relative error.

    For each (η_mem, η_compute) on a grid (then a finer grid around the best), the overheads enter linearly and
    are solved by weighted least squares (non-negative). Per-layer and fixed overhead can only be told apart
    with models of different depths: by default the per-layer term is fitted only when the observations span
    more than one layer count, otherwise it stays at 0 and the fixed term absorbs it. A parameter the data
    cannot see (η_compute when no step is compute-bound) stays at the value closest to ``prior``.
    """
    if len(observations) < 2:
        raise ValueError(f"observations: {len(observations)} given, expected at least 2 measured steps")
    for i, o in enumerate(observations):
        positive_number(f"observations[{i}].measured_s", o.measured_s)
    depths = {o.model.num_layers for o in observations}
    per_layer = (len(depths) > 1) if fit_per_layer_overhead is None else fit_per_layer_overhead
    zero = replace(prior, overhead_s=0.0, overhead_s_per_layer=0.0)

    def solve(em: float, ec: float) -> tuple[float, StepFactors]:
        f = replace(zero, memory_efficiency=em, compute_efficiency=ec)
        r = [_predict(o, f).total_s for o in observations]
        m = [o.measured_s for o in observations]
        n = [o.model.num_layers for o in observations]
        w = [1.0 / x ** 2 for x in m]
        y = [mi - ri for mi, ri in zip(m, r)]

        def fixed_only() -> tuple[float, float]:
            return max(0.0, sum(wi * yi for wi, yi in zip(w, y)) / sum(w)), 0.0

        def layer_only() -> tuple[float, float]:
            return 0.0, max(0.0, sum(wi * yi * ni for wi, yi, ni in zip(w, y, n)) / sum(wi * ni * ni
                                                                                      for wi, ni in zip(w, n)))
        if per_layer:
            s_w, s_n, s_nn = sum(w), sum(wi * ni for wi, ni in zip(w, n)), sum(wi * ni * ni for wi, ni in zip(w, n))
            s_y, s_ny = sum(wi * yi for wi, yi in zip(w, y)), sum(wi * ni * yi for wi, ni, yi in zip(w, n, y))
            det = s_w * s_nn - s_n * s_n
            o0, o1 = ((s_y * s_nn - s_n * s_ny) / det, (s_w * s_ny - s_n * s_y) / det) if det > 0 else (-1, -1)
            if o0 < 0 or o1 < 0:
                cands = [fixed_only(), layer_only()]
                o0, o1 = min(cands, key=lambda c: sum(wi * (yi - c[0] - c[1] * ni) ** 2
                                                      for wi, yi, ni in zip(w, y, n)))
        else:
            o0, o1 = fixed_only()
        loss = sum(wi * (yi - o0 - o1 * ni) ** 2 for wi, yi, ni in zip(w, y, n))
        # a vanishing pull towards the prior decides between equally good values the data cannot tell apart
        loss += 1e-9 * ((em - prior.memory_efficiency) ** 2 + (ec - prior.compute_efficiency) ** 2)
        return loss, replace(f, overhead_s=o0, overhead_s_per_layer=o1)

    def grid(lo_m, hi_m, lo_c, hi_c, step):
        ms = [round(lo_m + i * step, 6) for i in range(int(round((hi_m - lo_m) / step)) + 1)]
        cs = [round(lo_c + i * step, 6) for i in range(int(round((hi_c - lo_c) / step)) + 1)] if fit_compute \
            else [prior.compute_efficiency]
        best = None
        for em in ms:
            if not 0 < em <= 1:
                continue
            for ec in cs:
                if not 0 < ec <= 1:
                    continue
                cand = solve(em, ec)
                if best is None or cand[0] < best[0]:
                    best = cand
        return best

    _, f = grid(0.2, 1.0, 0.1, 1.0, 0.04)
    for span, step in ((0.08, 0.01), (0.015, 0.002)):
        _, f = grid(f.memory_efficiency - span, f.memory_efficiency + span, f.compute_efficiency - span,
                    f.compute_efficiency + span, step)
    pred = tuple(_predict(o, f).total_s for o in observations)
    meas = tuple(o.measured_s for o in observations)
    mape = _median([abs(p - m) / m for p, m in zip(pred, meas)])
    fitted = ("memory_efficiency", *(("compute_efficiency",) if fit_compute else ()), "overhead_s",
              *(("overhead_s_per_layer",) if per_layer else ()))
    return FitResult(factors=replace(f, source=f"fitted to {len(observations)} measured steps"), predicted_s=pred,
                     measured_s=meas, median_abs_pct_error=mape, fitted=fitted, assumptions=(
                         "least squares on relative error; efficiencies on a grid of 0.04, refined to 0.01 then 0.002",
                         "interconnect factors not fitted (kept from the prior)"
                         if any(o.tp > 1 and o.include_communication for o in observations)
                         else "single-GPU steps: interconnect factors not fitted",
                     ))


def observations_from_latency_sweep(records: Iterable[Mapping[str, Any]], *, model: Any, precision: Any, gpu: Any,
                                    tp: int) -> list[StepObservation]:
    """Turn a baseline (no speculation) concurrency sweep into step observations.

    Records follow runs.py's schema; those with an ``error`` or no ``tpot_s`` are skipped. Per concurrency level:
    the median TPOT is one step at a running batch equal to the concurrency (a closed loop keeps that many
    requests in flight; prefill interleaving is ignored), at a context of median prompt + half the median output.
    """
    groups: dict[float, list[Mapping[str, Any]]] = {}
    for i, r in enumerate(records):
        if r.get("error") or r.get("tpot_s") is None:
            continue
        conc = r.get("concurrency")
        if conc is None:
            raise ValueError(f"records[{i}].concurrency=None: expected the closed-loop concurrency of a sweep")
        groups.setdefault(float(conc), []).append(r)
    out = []
    for conc, rs in sorted(groups.items()):
        tpot = _median([float(r["tpot_s"]) for r in rs])
        prompt = _median([float(r.get("prompt_tokens") or 0) for r in rs])
        completion = _median([float(r.get("completion_tokens") or 0) for r in rs])
        out.append(StepObservation(model=model, precision=precision, gpu=gpu, tp=tp, batch_size=conc,
                                   tokens_per_seq=1, context_len=int(prompt + completion / 2), measured_s=tpot,
                                   label=f"concurrency {conc:g} ({len(rs)} requests)"))
    return out


def fit_from_latency_sweep(records: Iterable[Mapping[str, Any]], *, model: Any, precision: Any, gpu: Any, tp: int,
                           prior: StepFactors = DEFAULT_FACTORS) -> FitResult:
    """Fit the step factors to a baseline latency sweep taken against the user's own endpoint.

    One model means one depth, so the overhead is fitted as a fixed per-step term (per-layer = 0); η_compute is
    seen only if the sweep reaches compute-bound batches, otherwise it stays at the prior's value.
    """
    obs = observations_from_latency_sweep(records, model=model, precision=precision, gpu=gpu, tp=tp)
    if len(obs) < 2:
        raise ValueError(f"records: {len(obs)} concurrency level(s) with a TPOT, expected at least 2")
    res = fit_step_factors(obs, prior=prior, fit_per_layer_overhead=False)
    return replace(res, factors=replace(res.factors, source=f"fitted to a latency sweep ({len(obs)} levels) of "
                                                            f"{model.name} TP {tp} on {gpu.name}"),
                   assumptions=(*res.assumptions, "TPOT at concurrency C read as one step at batch C"))
