"""Continuous-batching simulation of a vLLM-like server, with and without speculative decoding (pure).

For *my* mix of requests and *my* query rate, what happens to P50 and P99 when speculative decoding is switched on?
The package is split along its seams; every public name is re-exported here (`from specdec_lib import simulate`):

- `workload`  token-length distributions, traffic classes, request sets (Poisson, a trace, or a measured run)
- `config`    the scheduler's limits (`ServerConfig`) and the speculation setting (`SpeculationConfig`)
- `steptime`  step-time models: `AffineStepTime`, its fits (timed steps, a closed-loop run), the load model's roofline
- `engine`    the step loop, `simulate()` (its docstring says what is modelled and why a step loop)
- `results`   what a run returns: per-request times, the batch timeline, percentile summaries
- `analysis`  with/without comparison, QPS sweeps, validation against a measured run
- `examples`  the source's 60/40 mix on its 70B INT8 + 8B BF16 deployment

docs/simulation.md describes the model, its validation and its limits.
"""

from specdec_lib.simulate.analysis import (
    Comparison,
    Sweep,
    Validation,
    ValidationRow,
    compare,
    sweep_qps,
    validate_against_run,
)
from specdec_lib.simulate.config import ServerConfig, SpeculationConfig, servers_from_memory_plan
from specdec_lib.simulate.engine import simulate
from specdec_lib.simulate.examples import BuiltinScenario, source_mixed_example
from specdec_lib.simulate.results import LatencySummary, Percentiles, SimulationResult, Summary, Timeline
from specdec_lib.simulate.steptime import (
    AffineStepTime,
    Calibration,
    StepTimeFn,
    alpha_from_records,
    alpha_from_steps,
    calibrate_draft_from_records,
    calibrate_from_records,
    expected_decode_steps,
    fit_affine_step_time,
    step_time_from_load,
)
from specdec_lib.simulate.workload import (
    LENGTH_SHAPES,
    LengthDistribution,
    Requests,
    TrafficClass,
    Workload,
    length_shape,
    lengths_from_records,
    make_requests,
    poisson_arrivals_s,
    requests_from_records,
    workload_from_scenario,
)

__all__ = [
    "AffineStepTime", "BuiltinScenario", "Calibration", "Comparison", "LENGTH_SHAPES", "LatencySummary",
    "LengthDistribution", "Percentiles", "Requests", "ServerConfig", "SimulationResult", "SpeculationConfig",
    "StepTimeFn", "Summary", "Sweep", "Timeline", "TrafficClass", "Validation", "ValidationRow", "Workload",
    "alpha_from_records", "alpha_from_steps", "calibrate_draft_from_records", "calibrate_from_records", "compare",
    "expected_decode_steps", "fit_affine_step_time", "length_shape", "lengths_from_records", "make_requests",
    "poisson_arrivals_s", "requests_from_records", "servers_from_memory_plan", "simulate", "source_mixed_example",
    "step_time_from_load", "sweep_qps", "validate_against_run", "workload_from_scenario",
]
