"""The simulator against a real vLLM server whose engine dominates: calibrate, drive, replay, compare.

    .venv/bin/python benchmarks/simulate_engine_bound.py [--rates 0.2,0.4,0.6,0.8]

Builds the engine-bound pair (`tiny_models.build_engine_bound`: a 94 M-parameter Llama target, its 1-layer
truncated draft), then for the baseline server and the speculative one (k = 4, greedy draft sampling), one at a
time: starts it, probes it as `specdec calibrate` does, drives it with Poisson arrivals at each rate for one
class (temperature 0.1) and for the source's 60/40 mix (0.1 and 1.0), and stops it. Both probes are fitted
together (`calibrate.command.calibrate_endpoint`) and written as a calibration file; each measured run is replayed
through the simulation with the calibrated step and compared (P50/P95/P99 of TTFT, TPOT, E2E). The probe's two
output lengths are interleaved with the runs (`engine_validation.probe_and_drive`: the machine's speed drifts over
minutes). Prints the table and writes everything (calibration, rows, order of runs, mix-effect signs) to
`test-output/benchmark-engine-bound/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # this client process; the server has its own environment
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specdec_lib import engine_validation as ev  # noqa: E402
from specdec_lib import simulate as sim  # noqa: E402
from specdec_lib.calibrate.command import calibrate_endpoint, format_fit  # noqa: E402
from specdec_lib.calibrate.files import write_calibration  # noqa: E402

K = 4


def measure_server(models, spec, out_dir: Path, args) -> dict:
    """One server probed and driven for both workloads at every rate (`engine_validation.measure_server`). Without
    `args.rates` (the first, baseline server) the rates are `args.load_fractions` of the capacity its probe
    calibrates; the second server is driven at the same rates."""
    def rates_from_probe(pr):
        return [round(r, 3) for r in ev.rates_from_probe(pr, args.load_fractions, args.prompt_tokens, args.max_tokens)]

    t0 = time.monotonic()
    m, kv = ev.measure_server(models, spec, out_dir, workloads={"one class": ev.ONE_CLASS_TEMPERATURES,
                                                                "60/40 mix": ev.MIX_TEMPERATURES},
                              rates_qps=args.rates or rates_from_probe, requests_per_rate=args.requests,
                              max_tokens=args.max_tokens,
                              probe_options=dict(concurrency=args.probe_concurrency,
                                                 output_tokens=args.probe_output_tokens),
                              log=lambda line: print(line, flush=True))
    args.rates = list(m.rates_qps)
    print(f"done at {time.monotonic() - t0:.0f} s", flush=True)
    return {"measured": m, "kv_tokens": kv}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="", help="Poisson rates, requests/s (default: --load-fractions of capacity)")
    p.add_argument("--load-fractions", default="0.15,0.3,0.45,0.6", help="rates as fractions of the calibrated "
                                                                       "capacity")
    p.add_argument("--prompt-tokens", type=float, default=40.0, help="mean prompt of the driven sets, for capacity")
    p.add_argument("--requests", type=int, default=60, help="requests per rate")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--probe-concurrency", default="1,2,4,8")
    p.add_argument("--probe-output-tokens", default="16,48")
    p.add_argument("--out", default="test-output/benchmark-engine-bound")
    p.add_argument("--calibration-out", default=None, help="also write the calibration file here")
    args = p.parse_args()
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    args.load_fractions = [float(x) for x in args.load_fractions.split(",")]
    args.probe_concurrency = [int(x) for x in args.probe_concurrency.split(",")]
    args.probe_output_tokens = [int(x) for x in args.probe_output_tokens.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = ev.ensure_engine_models()
    base = measure_server(models, None, out_dir, args)
    spec = measure_server(models, ev.draft_spec(models, K), out_dir, args)
    payload = calibrate_endpoint(base["measured"].probe, spec["measured"].probe, replay_server=ev.CPU_REPLAY_SERVER,
                                 notes=["engine-bound validation pair (tiny_models.build_engine_bound), this CPU"])
    write_calibration(out_dir / "calibration.json", payload)
    if args.calibration_out:
        write_calibration(args.calibration_out, payload)
    print(format_fit(payload))
    step = sim.AffineStepTime(**payload["simulator"]["step_time"])
    overheads = {"baseline": payload["simulator"]["request_overhead_s"],
                 "speculative": payload["simulator"]["speculative_request_overhead_s"]}
    spec_records = [r for rs in spec["measured"].records.values() for r in rs]
    alphas = ev.alpha_by_temperature(spec_records, K)
    print("alpha by temperature (measured on the speculative server):", alphas)
    rows, at_speed = [], []
    for kind, m, speculation in (("baseline", base, None), ("speculative", spec, sim.SpeculationConfig(K))):
        common = dict(server=kind, server_config=sim.ServerConfig(m["kv_tokens"], ev.CPU_MAX_NUM_SEQS,
                                                                  ev.CPU_MAX_NUM_BATCHED_TOKENS),
                      step_time=step, request_overhead_s=overheads[kind], speculation=speculation, alphas=alphas)
        rows += ev.compare_measured(m["measured"], **common)
        # diagnostic, printed below: the same replays with the step scaled to each run's own engine speed
        at_speed += ev.compare_at_run_speed(m["measured"], **common)
    print(ev.format_rows(rows))
    checks = (ev.step_checks(base["measured"], server="baseline", step_time=step)
              + ev.step_checks(spec["measured"], server="speculative", step_time=step, k=K))
    print("the calibration's step against each run's own steps:\n" + ev.format_step_checks(checks))
    signs = ev.mix_effect_signs(rows)
    for s in signs:
        print(f"mix effect {s['rate_qps']:.2f} qps {s['stat']}: measured {100 * s['measured']:+.1f} %, simulated "
              f"{100 * s['simulated']:+.1f} %, reproduced {s['reproduced']}")
    inside = sum(r.within_band for r in rows if r.stat in ("p50", "p99"))
    total = sum(1 for r in rows if r.stat in ("p50", "p99"))
    print(f"within the goal bands (P50 +-15 %, P99 +-25 %): {inside} of {total}")
    print("at each run's own engine speed (diagnostic: the step scaled to the run's mean step):\n"
          + ev.format_rows(at_speed))
    print(f"within the goal bands at each run's own engine speed: "
          f"{sum(r.within_band for r in at_speed if r.stat in ('p50', 'p99'))} of {total}")
    (out_dir / "rows.json").write_text(json.dumps({"rows": [{**asdict(r), "error": r.error} for r in rows],
                                                   "mix_effect": signs, "alphas": alphas, "step_checks": checks,
                                                   "at_run_speed": [{**asdict(r), "error": r.error} for r in at_speed],
                                                   "order": {k: m["measured"].order for k, m in
                                                             (("baseline", base), ("speculative", spec))},
                                                   "args": {k: v for k, v in vars(args).items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
