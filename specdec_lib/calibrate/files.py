"""Calibration files: what `specdec calibrate` writes, and `load_calibration`, which the load model, the simulator
and the memo read (file I/O only; the fits are in `fit.py`).

A file holds the probe's raw observations (every request record the fit used, trimmed to the fields it reads),
the per-level reductions with both fits' predictions, the fitted values, their quality, the server's identity
(URL without credentials, served model, vLLM version, speculative settings; never a key) and the hardware the
load model's factors are relative to. `load_calibration` also reads the built-in H100 factors file
(`data/calibration/h100_fitted_factors.json`), which has no simulator step.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from specdec_lib import load
from specdec_lib.simulate import AffineStepTime
from specdec_lib.simulate.steptime import STEP_TIME_FIELDS

FORMAT = "specdec-endpoint-calibration/1"
RECORD_FIELDS_KEPT = (
    "index", "label", "temperature", "max_tokens", "concurrency", "sent_at_s", "ttft_s", "tpot_s", "e2e_s",
    "prompt_tokens", "completion_tokens", "chunks", "accepted_tokens", "draft_tokens", "error_kind", "itl_s",
)


def redact_url(url: str) -> str:
    """The URL without `user:password@` and without a query string (where keys are sometimes passed)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def trimmed_records(records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The fields the fit reads; the chunks' gaps (`itl_s`, which cut each decode span into its steps) to 1 us."""
    return [{f: [round(float(x), 6) for x in r[f]] if f == "itl_s" and r.get(f) else r.get(f)
             for f in RECORD_FIELDS_KEPT} for r in records]


@dataclass(frozen=True)
class EndpointCalibration:
    """What a calibration file gives its users. `source` names the file and the run it came from; `step_factors`
    feeds `load.Deployment(factors=...)` / the planner; `step_time` and `request_overhead_s` feed the simulator
    (`simulate.simulate(..., step_time)`, and add the overhead to simulated TTFT and E2E: `request_overhead_s`
    for the server without speculation, `speculative_request_overhead_s` for the one with it)."""

    path: Path
    source: str
    step_factors: load.StepFactors | None
    step_time: AffineStepTime | None
    request_overhead_s: float
    speculative_request_overhead_s: float | None
    num_speculative_tokens: int | None
    hardware: str | None
    server: Mapping[str, Any]
    fit_quality: Mapping[str, Any]

    def __repr__(self) -> str:
        return f"EndpointCalibration({self.source!r})"


def _fail(path: Path, field: str, expected: str) -> ValueError:
    return ValueError(f"{path}: field {field!r}: expected {expected}")


def _number(d: Mapping[str, Any], key: str, path: Path, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise _fail(path, f"{where}.{key}", f"a finite number >= 0, got {v!r}")
    return float(v)


def _step_time(d: Any, path: Path) -> AffineStepTime:
    if not isinstance(d, Mapping):
        raise _fail(path, "simulator.step_time", "an object of AffineStepTime fields (seconds)")
    unknown = set(d) - set(STEP_TIME_FIELDS)
    if unknown:
        raise _fail(path, "simulator.step_time", f"only {STEP_TIME_FIELDS}, got unknown {sorted(unknown)}")
    try:
        return AffineStepTime(**{f: _number(d, f, path, "simulator.step_time") for f in STEP_TIME_FIELDS if f in d})
    except ValueError as exc:
        raise ValueError(f"{path}: simulator.step_time: {exc}") from None


def _factors(d: Any, path: Path, source: str) -> load.StepFactors:
    if not isinstance(d, Mapping):
        raise _fail(path, "factors", "an object of load.StepFactors fields")
    try:
        return load.StepFactors.from_dict({**d, "source": source})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: factors: {exc}") from None


def load_calibration(path: str | os.PathLike) -> EndpointCalibration:
    """Read a calibration file written by `specdec calibrate` (or the built-in H100 factors file).

    Errors name the file and the field. The returned factors' `source` says which file and which probe run they
    came from, so a plan or memo that uses them can say so.
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such calibration file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{p}: expected a JSON object")
    if d.get("format") is None and "factors" in d:  # the built-in GPU factors file
        source = f"{p.name} (GPU step timings, {d.get('gpu', 'unknown GPU')})"
        return EndpointCalibration(p, source, _factors(d["factors"], p, source), None, 0.0, None, None, d.get("gpu"),
                                   {}, {"median_abs_pct_error_in_sample": d.get("median_abs_pct_error_in_sample")})
    if d.get("format") != FORMAT:
        raise _fail(p, "format", f"{FORMAT!r}, got {d.get('format')!r}")
    server = d.get("server")
    if not isinstance(server, Mapping) or not server.get("baseline"):
        raise _fail(p, "server.baseline", "the identity of the probed baseline server")
    runs = ", ".join(str(Path(r).name) for r in d.get("runs", []))
    source = f"{p.name} (probe of {server['baseline'].get('served_model')} at {server['baseline'].get('base_url')}"
    source += f", {d.get('created_utc', 'unknown time')}; runs {runs or 'not recorded'})"
    sim = d.get("simulator")
    if not isinstance(sim, Mapping):
        raise _fail(p, "simulator", "an object with step_time and request_overhead_s")
    step = _step_time(sim.get("step_time"), p)
    overhead = _number(sim, "request_overhead_s", p, "simulator")
    spec_overhead = None
    if sim.get("speculative_request_overhead_s") is not None:
        spec_overhead = _number(sim, "speculative_request_overhead_s", p, "simulator")
    load_part = d.get("load_model")
    factors = None
    if isinstance(load_part, Mapping) and load_part.get("factors") is not None:
        factors = _factors(load_part["factors"], p, source)
    k = d.get("num_speculative_tokens")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise _fail(p, "num_speculative_tokens", f"an integer >= 1 or null, got {k!r}")
    hardware = load_part.get("hardware", {}).get("name") if isinstance(load_part, Mapping) else None
    return EndpointCalibration(p, source, factors, step, overhead, spec_overhead, k, hardware, server,
                               d.get("fit_quality", {}))


def write_calibration(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Write the calibration JSON (creating folders); refuses a payload that carries a key-like field."""
    from specdec_lib import runs

    runs._check_no_secrets(dict(payload), f"calibration file {path}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(payload, indent=1, default=float) + "\n", encoding="utf-8")
    return p
