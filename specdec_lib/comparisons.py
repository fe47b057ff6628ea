"""Comparing runs: baseline versus speculative latency per load level, and an A/B of acceptance (pure functions of
run summaries; ``loadtest`` re-exports them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from specdec_lib import runs

if TYPE_CHECKING:
    from specdec_lib.loadtest import LoadTestResult, SweepResult

AB_DROP_THRESHOLD = 0.05  # the source: "a drop of more than 5 percentage points ... revisit the configuration"


@dataclass(frozen=True)
class LatencyComparison:
    label: str
    metric: str  # "ttft" | "tpot" | "itl" | "e2e"
    baseline_p50_s: float | None
    speculative_p50_s: float | None
    baseline_p99_s: float | None
    speculative_p99_s: float | None
    p50_change: float | None  # (spec − base) / base; negative = faster
    p99_change: float | None
    p50_improves_p99_regresses: bool  # the source's mixed-workload signal


def _change(base: float | None, spec: float | None) -> float | None:
    if base is None or spec is None or base == 0:
        return None
    return (spec - base) / base


def compare_load_tests(baseline: LoadTestResult, speculative: LoadTestResult,
                       metrics_compared: Sequence[str] = ("ttft", "tpot", "itl", "e2e"),
                       ) -> tuple[LatencyComparison, ...]:
    """Side by side per level present in both runs. The signal fires when P50 gets faster while P99 gets slower."""
    spec_by_label = {lv.label: lv for lv in speculative.levels}
    rows = []
    for b in baseline.levels:
        s = spec_by_label.get(b.label)
        if s is None:
            continue
        for m in metrics_compared:
            b50, s50 = b.latency.get(f"{m}_p50_s"), s.latency.get(f"{m}_p50_s")
            b99, s99 = b.latency.get(f"{m}_p99_s"), s.latency.get(f"{m}_p99_s")
            c50, c99 = _change(b50, s50), _change(b99, s99)
            rows.append(LatencyComparison(b.label, m, b50, s50, b99, s99, c50, c99,
                                          bool(c50 is not None and c99 is not None and c50 < 0 < c99)))
    if not rows:
        raise ValueError(f"no common load levels: baseline {[lv.label for lv in baseline.levels]}, "
                         f"speculative {[lv.label for lv in speculative.levels]}")
    return tuple(rows)


@dataclass(frozen=True)
class ABRow:
    temperature: float
    reference_v1_rate: float | None
    candidate_v1_rate: float | None
    reference_alpha: float | None
    candidate_alpha: float | None
    alpha_drop_points: float | None  # (reference − candidate) α, in percentage points
    v1_drop_points: float | None
    flagged: bool  # α dropped by more than the threshold


def quantization_ab(reference: "SweepResult | runs.Run | str | Path", candidate: "SweepResult | runs.Run | str | Path",
                    threshold: float = AB_DROP_THRESHOLD) -> tuple[ABRow, ...]:
    """Compare acceptance of two sweeps on the same prompts (e.g. BF16 vs INT4 target).

    Flags a drop of more than ``threshold`` (0.05 = 5 points, the source's advice) in α, the per-token acceptance
    that the source's V0-era figures measured; the V1 rate drop is shown beside it.
    """
    from specdec_lib.loadtest import SweepResult, sweep_results_from_run  # the sweep's records live there

    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold}: accepted range is (0, 1)")

    def as_run(x) -> runs.Run:
        if isinstance(x, SweepResult):
            return runs.load_run(x.run_path)
        if isinstance(x, runs.Run):
            return x
        return runs.load_run(x)

    ra, rb = as_run(reference), as_run(candidate)
    pa = [(r["temperature"], r["prompt_id"]) for r in ra.records]
    pb = [(r["temperature"], r["prompt_id"]) for r in rb.records]
    if sorted(pa) != sorted(pb):
        raise ValueError(f"runs {ra.path.name} and {rb.path.name} did not use the same prompts "
                         "at the same temperatures")
    ta = {t.temperature: t for t in sweep_results_from_run(ra)}
    tb = {t.temperature: t for t in sweep_results_from_run(rb)}
    rows = []
    for temp in sorted(set(ta) & set(tb)):
        a, b = ta[temp], tb[temp]
        ad = (a.alpha - b.alpha) * 100 if a.alpha is not None and b.alpha is not None else None
        vd = (a.v1_rate - b.v1_rate) * 100 if a.v1_rate is not None and b.v1_rate is not None else None
        flagged = bool(ad is not None and ad > threshold * 100)
        rows.append(ABRow(temp, a.v1_rate, b.v1_rate, a.alpha, b.alpha, ad, vd, flagged))
    return tuple(rows)
