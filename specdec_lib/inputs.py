"""The edge where a scenario's file references become evidence: prediction runs, a measurement run, a calibration.

`evaluate` is pure over records; the CLI, the memo command and the pages resolve paths here, once, then call

    resolved = resolve(scenario, prediction_runs=args.prediction, calibration=args.calibration)
    evaluate(scenario, estimates=resolved.estimates, calibration=resolved.step_factors, run=...)

Paths given explicitly (a CLI flag, a page control) are added to the scenario's own `prediction_runs`; an explicit
calibration replaces the scenario's `calibration`. Errors name the path and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from specdec_lib.evidence import AcceptanceEstimate


@dataclass(frozen=True)
class Resolved:
    """What the scenario's paths resolved to: predicted estimates (with the runs they came from) and a calibration
    (`calibrate.EndpointCalibration`, None: the built-in H100 factors)."""

    estimates: tuple[AcceptanceEstimate, ...] = ()
    prediction_runs: tuple[str, ...] = ()
    calibration: object | None = None

    @property
    def step_factors(self):
        """The load model's factors from the calibration file (None: `load.DEFAULT_FACTORS`)."""
        return None if self.calibration is None else self.calibration.step_factors

    @property
    def step_time(self):
        """The simulator's `AffineStepTime` from the calibration file (None: the caller's default)."""
        return None if self.calibration is None else self.calibration.step_time


def prediction_estimates(paths: Sequence[str | Path]) -> tuple[AcceptanceEstimate, ...]:
    """Every predicted `AcceptanceEstimate` of the prediction run folders (`prediction.load_prediction`)."""
    from specdec_lib.prediction import load_prediction

    out: list[AcceptanceEstimate] = []
    for path in paths:
        if not (Path(path) / "metadata.json").is_file():
            raise ValueError(f"prediction run {str(path)!r} is not a run folder (no metadata.json); "
                             "expected a folder written by `specdec predict`")
        out += load_prediction(path).estimates()
    return tuple(out)


def load_calibration_file(path: str | Path):
    """`calibrate.load_calibration`, refusing a file without load-model factors (the planner needs them)."""
    from specdec_lib.calibrate import load_calibration

    cal = load_calibration(path)
    if cal.step_factors is None:
        raise ValueError(f"calibration {str(path)!r}: has no load_model factors (re-run `specdec calibrate` with "
                         "model and hardware given, or use the simulator's step time only)")
    return cal


def resolve(scenario, *, prediction_runs: Sequence[str | Path] = (), calibration: str | Path | None = None
            ) -> Resolved:
    """The scenario's `prediction_runs` plus `prediction_runs`, and `calibration` (else the scenario's)."""
    runs = tuple(dict.fromkeys([*scenario.prediction_runs, *(str(p) for p in prediction_runs)]))
    cal_path = calibration if calibration is not None else scenario.calibration
    cal = load_calibration_file(cal_path) if cal_path else None
    return Resolved(estimates=prediction_estimates(runs), prediction_runs=runs, calibration=cal)
