"""Calibrating the step-time models to a running endpoint (`specdec calibrate`).

- `probe`    closed-loop levels against an endpoint, recorded as ordinary runs (I/O)
- `fit`      levels -> the simulator's `AffineStepTime` and the load model's `StepFactors`, with fit quality (pure)
- `files`    the calibration file: `write_calibration`, `load_calibration` (file I/O)
- `command`  `calibrate_endpoint` and the CLI's `register(subparsers)`

    cal = load_calibration("data/calibration/endpoint-....json")
    load.Deployment(..., factors=cal.step_factors)            # the planner's load model
    simulate.simulate(requests, server, cal.step_time, ...)   # the simulator (+ cal.request_overhead_s)
    cal.source                                                # which file and which probe run
"""

from specdec_lib.calibrate.files import FORMAT, EndpointCalibration, load_calibration, write_calibration
from specdec_lib.calibrate.fit import (
    LevelObservation,
    LoadModelFit,
    SimulatorFit,
    fit_load_factors,
    fit_simulator_step,
    level_observations,
)

__all__ = [
    "FORMAT", "EndpointCalibration", "LevelObservation", "LoadModelFit", "SimulatorFit", "fit_load_factors",
    "fit_simulator_step", "level_observations", "load_calibration", "write_calibration",
]
