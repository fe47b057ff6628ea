"""Speed and validity of the continuous-batching simulation (the specdec_lib.simulate package).

    .venv/bin/python benchmarks/simulate.py              # speed, the source's 60/40 sweep, live validation
    .venv/bin/python benchmarks/simulate.py --skip-live  # no vLLM server

1. Speed: wall time to simulate 10,000 requests of the source's 60/40 mix, with and without speculation, at a low
   load (1 QPS: the most engine steps per request, the slowest case) and a busy one; target under 2 s each on one
   core (numpy's thread pools are pinned to one thread below). Both wall and CPU time are printed: on a shared
   machine the wall time includes waiting for the core, the CPU time is the single-core cost.
2. The source's 60/40 mix over a QPS sweep: P50/P99 with and without speculation, and the one-sentence verdict.
3. Validation against reality: a real vLLM CPU server (the tiny local target, no speculation) is calibrated from
   its own closed-loop levels (concurrency 1, 2, 4, 8: step time vs batch size, from E2E), then driven
   with Poisson arrivals at two rates; each measured request stream is replayed through the simulation (same send
   times and token counts) and the simulated P50/P99 of TTFT, TPOT and E2E are compared with the measured ones.
   E2E is the comparison to trust: the small CPU server's API process delivers chunks in bursts, which moves time
   between TTFT and TPOT (docs/simulation.md has the results and why the model misses). The scheduler limits are
   vLLM 0.32's CPU API-server defaults (max_num_seqs 128, max_num_batched_tokens 2048, from
   vllm/engine/arg_utils.py) and the KV capacity is read from the server's start-up log.
   Then the same with a speculative server (a draft = the target + 5 % noise, probabilistic draft sampling, k = 4):
   the draft's cost is calibrated from that server's closed-loop levels, alpha from its measured acceptance (vLLM
   V1's prefix rate converted), and the Poisson runs at the same rates are replayed with speculation; the
   measured and simulated speculative/baseline ratios are printed side by side.
   Raw records are kept in the run folders printed (JSON summary in test-output/benchmark-simulate/).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from specdec_lib import simulate as sim  # noqa: E402

CPU_MAX_NUM_SEQS = 128  # vLLM 0.32 CPU, OpenAI API server default
CPU_MAX_NUM_BATCHED_TOKENS = 2048


def speed(num_requests: int) -> dict:
    sc = sim.source_mixed_example()
    out = {}
    print(f"== speed: {num_requests:,} requests of the source's 60/40 mix (best of 3, one thread) ==")
    for qps in (1.0, 6.0):
        reqs = sim.make_requests(sc.workload, num_requests=num_requests, qps=qps, seed=0)
        for name, server, spec in (
            ("baseline", sc.baseline_server, None),
            ("speculative k=5", sc.speculative_server, sc.speculation),
        ):
            best_wall = best_cpu = float("inf")
            for _ in range(3):
                w0, c0 = time.perf_counter(), time.process_time()
                r = sim.simulate(reqs, server, sc.step_time, spec, seed=0)
                best_wall = min(best_wall, time.perf_counter() - w0)
                best_cpu = min(best_cpu, time.process_time() - c0)
            print(
                f"  {qps:4g} QPS {name:16s} wall {best_wall:5.2f} s, CPU {best_cpu:5.2f} s  ({r.num_steps:,} engine "
                f"steps in {len(r.timeline.start_s):,} loop iterations, {r.horizon_s:,.0f} simulated s)"
            )
            out[f"{qps:g}qps {name}"] = {"wall_s": best_wall, "cpu_s": best_cpu, "steps": r.num_steps,
                                         "iterations": len(r.timeline.start_s)}
    return out


def source_sweep() -> dict:
    out = {}
    for scale, label in ((1.0, "8B draft, c = 0.25 (the source's deployment)"), (0.2, "cheap draft, c = 0.05")):
        sc = sim.source_mixed_example(draft_cost_scale=scale)
        sweep = sim.sweep_qps(
            sc.workload, [0.5, 1, 2, 3, 4, 6, 8], sc.step_time, sc.speculation,
            baseline_server=sc.baseline_server, speculative_server=sc.speculative_server, num_requests=4000,
        )
        print(f"\n== the source's 60/40 mix, {label}: baseline -> speculative (4,000 requests per point) ==")
        print("   QPS  batch      E2E P50 s        E2E P99 s        TPOT P50 ms     TPOT P99 ms   "
              "P99 E2E ratio structured / creative")
        rows = []
        for p in sweep.points:
            b, s = p.baseline, p.speculative
            ratios = [p.ratio("e2e", "p99", c) for c in b.by_class]
            print(
                f"  {p.qps:4g} {b.mean_batch_size:5.1f}>{s.mean_batch_size:<5.1f} "
                f"{b.overall.e2e.p50:6.2f} > {s.overall.e2e.p50:6.2f}  "
                f"{b.overall.e2e.p99:6.2f} > {s.overall.e2e.p99:6.2f}  "
                f"{b.overall.tpot.p50 * 1e3:5.1f} > {s.overall.tpot.p50 * 1e3:5.1f}   "
                f"{b.overall.tpot.p99 * 1e3:5.1f} > {s.overall.tpot.p99 * 1e3:5.1f}     "
                + " / ".join(f"{x:.2f}" for x in ratios)
            )
            rows.append({"qps": p.qps, "e2e_p50_ratio": p.ratio("e2e", "p50"), "e2e_p99_ratio": p.ratio("e2e", "p99"),
                         "tpot_p50_ratio": p.ratio("tpot", "p50"), "tpot_p99_ratio": p.ratio("tpot", "p99")})
        print("  " + sweep.statement("e2e"))
        print("  " + sweep.statement("tpot"))
        out[label] = {"points": rows, "statement_e2e": sweep.statement("e2e"),
                      "statement_tpot": sweep.statement("tpot")}
    return out


def contagion() -> dict:
    """The source's diagnostic: the structured requests' P99 in the mix versus alone (at their own 60 % of the QPS)."""
    import dataclasses

    sc = sim.source_mixed_example()
    structured = sc.workload.classes[0]
    alone = sim.Workload((dataclasses.replace(structured, share=1.0),))
    print("\n== contagion: structured requests' P99 E2E in the 60/40 mix vs alone (4,000 mixed requests) ==")
    out = {}
    for qps in (1.0, 3.0, 6.0):
        mix = sim.make_requests(sc.workload, num_requests=4000, qps=qps, seed=0)
        only = sim.make_requests(alone, num_requests=2400, qps=0.6 * qps, seed=0)
        row = {}
        for name, server, spec in (("baseline", sc.baseline_server, None),
                                   ("speculative", sc.speculative_server, sc.speculation)):
            in_mix = sim.simulate(mix, server, sc.step_time, spec).summary().by_class[structured.name].e2e.p99
            by_itself = sim.simulate(only, server, sc.step_time, spec).summary().by_class[structured.name].e2e.p99
            row[name] = {"in_mix_s": in_mix, "alone_s": by_itself, "ratio": in_mix / by_itself}
        print(f"  {qps:3g} QPS  baseline {row['baseline']['in_mix_s']:6.2f} s in mix / "
              f"{row['baseline']['alone_s']:6.2f} s "
              f"alone = {row['baseline']['ratio']:.2f}x   speculative {row['speculative']['in_mix_s']:6.2f} / "
              f"{row['speculative']['alone_s']:6.2f} = {row['speculative']['ratio']:.2f}x")
        out[f"{qps:g}"] = row
    return out


def _print_validation(label: str, v: "sim.Validation") -> dict:
    for metric in ("ttft", "tpot", "e2e"):
        p50 = next(r for r in v.rows if r.metric == metric and r.stat == "p50")
        p99 = next(r for r in v.rows if r.metric == metric and r.stat == "p99")
        print(
            f"  {label:24s} {v.num_requests:4d}  {v.simulated_mean_batch_size:6.2f}     {metric:5s}  "
            f"{p50.measured_s * 1e3:8.1f} / {p99.measured_s * 1e3:8.1f}       "
            f"{p50.simulated_s * 1e3:8.1f} / {p99.simulated_s * 1e3:8.1f}        "
            f"{p50.relative_error:+6.1%} / {p99.relative_error:+6.1%}"
        )
    return {"num_requests": v.num_requests, "simulated_mean_batch_size": v.simulated_mean_batch_size,
            "rows": [{**r.__dict__, "relative_error": r.relative_error} for r in v.rows]}


def _closed_and_open_runs(server, out_dir: Path, max_tokens: int, requests_per_level: int, rates: list[float] | None,
                          step_for_rates=None):
    """Warm-up, closed-loop levels 1/2/4/8, then Poisson levels; returns (calibration records, open-loop run)."""
    from specdec_lib import endpoint, loadtest, runs

    client = endpoint.EndpointClient(server.base_url)
    common = dict(temperatures=(0.0,), max_tokens=max_tokens, runs_dir=out_dir / "runs", progress=False)
    loadtest.run_load_test(client, concurrency_levels=(2,), requests_per_level=4, **common)  # warm-up, discarded
    t0 = time.perf_counter()
    calib = loadtest.run_load_test(client, concurrency_levels=(1, 2, 4, 8), requests_per_level=requests_per_level,
                                   **common)
    calib_records = runs.load_run(calib.run_path).records
    print(f"  closed-loop run {calib.run_path} ({time.perf_counter() - t0:.0f} s)")
    if rates is None:
        calibration = step_for_rates(calib_records)
        # rates that should hold about 2 and 6 sequences running: Little's law, b = QPS * (max_tokens * step(b))
        rates = [round(b / (max_tokens * float(calibration.step_time(b, b, 0, 0))), 2) for b in (2, 6)]
    t0 = time.perf_counter()
    measured = loadtest.run_load_test(client, concurrency_levels=(), request_rates_qps=rates,
                                      requests_per_level=3 * requests_per_level, max_in_flight=64, **common)
    print(f"  Poisson run {measured.run_path} at {rates} QPS ({time.perf_counter() - t0:.0f} s)")
    return calib_records, runs.load_run(measured.run_path).records, rates


def _by_rate(records: list[dict]) -> list[tuple[str, list[dict]]]:
    labels = sorted({r["label"] for r in records}, key=lambda x: float(x.split("=")[1].removesuffix("qps")))
    return [(label, [r for r in records if r["label"] == label]) for label in labels]


def live_validation(out_dir: Path, max_tokens: int, requests_per_level: int, speculative: bool) -> dict:
    from specdec_lib import localserver

    models = localserver.ensure_tiny_models()
    result: dict = {}
    header = ("  level                       n  batch(sim)  metric  measured P50 / P99 ms    simulated P50 / P99 ms"
              "    error P50 / P99")

    print("\n== validation against a real vLLM CPU server: tiny target, no speculation ==")
    with localserver.VLLMServer(models.target, log_path=out_dir / "baseline-server.log",
                                served_model_name="tiny-target") as server:
        kv_base = localserver.kv_cache_tokens_from_log(server.log_text())
        calib_records, base_records, rates = _closed_and_open_runs(
            server, out_dir, max_tokens, requests_per_level, None, sim.calibrate_from_records)
    calibration = sim.calibrate_from_records(calib_records)
    step = calibration.step_time
    print(f"  calibrated: step = {step.fixed_s * 1e3:.2f} ms + {step.per_token_s * 1e6:.2f} us/token + "
          f"{step.per_seq_s * 1e3:.3f} ms/seq; request overhead {calibration.request_overhead_s * 1e3:.2f} ms "
          f"({calibration.num_observations} observations); KV {kv_base:,} tokens")
    base_server = sim.ServerConfig(kv_base, CPU_MAX_NUM_SEQS, CPU_MAX_NUM_BATCHED_TOKENS)
    result["baseline"] = {"kv_capacity_tokens": kv_base, "step_time": step.__dict__,
                          "request_overhead_s": calibration.request_overhead_s, "levels": {}}
    print(header)
    base_validations = {}
    for label, level in _by_rate(base_records):
        v = sim.validate_against_run(level, base_server, step, request_overhead_s=calibration.request_overhead_s)
        base_validations[label] = v
        result["baseline"]["levels"][label] = _print_validation(label, v)
    if not speculative:
        return result

    k = 4
    spec_config = localserver.draft_spec(str(models.path("draft_noise05")), "probabilistic", k)
    print(f"\n== the same against a speculative server: draft = target + 5 % noise, probabilistic, k = {k} ==")
    with localserver.VLLMServer(models.target, speculative_config=spec_config, log_path=out_dir / "spec-server.log",
                                served_model_name="tiny-target") as server:
        kv_spec = localserver.kv_cache_tokens_from_log(server.log_text())
        spec_calib_records, spec_records, _ = _closed_and_open_runs(server, out_dir, max_tokens, requests_per_level,
                                                                   rates)
    spec_step = sim.calibrate_draft_from_records(spec_calib_records, step, k)
    alpha = sim.alpha_from_steps(spec_records, k)  # truncation at max_tokens counted once, by the replay
    print(f"  calibrated draft: {spec_step.draft_fixed_s * 1e3:.3f} ms + {spec_step.draft_per_seq_s * 1e3:.3f} ms/seq "
          f"per draft pass; measured alpha {alpha:.3f}; KV {kv_spec:,} tokens")
    spec_server = sim.ServerConfig(kv_spec, CPU_MAX_NUM_SEQS, CPU_MAX_NUM_BATCHED_TOKENS)
    result["speculative"] = {"kv_capacity_tokens": kv_spec, "step_time": spec_step.__dict__, "alpha": alpha,
                             "levels": {}}
    print(header)
    for label, level in _by_rate(spec_records):
        v = sim.validate_against_run(level, spec_server, spec_step, request_overhead_s=calibration.request_overhead_s,
                                     speculation=sim.SpeculationConfig(k), alpha=alpha)
        result["speculative"]["levels"][label] = _print_validation(label, v)
        b = base_validations.get(label)
        if b is not None:
            for metric in ("tpot", "e2e"):
                for stat in ("p50", "p99"):
                    mb = next(r for r in b.rows if r.metric == metric and r.stat == stat)
                    ms = next(r for r in v.rows if r.metric == metric and r.stat == stat)
                    print(f"    {label} {metric} {stat}: speculative/baseline measured "
                          f"{ms.measured_s / mb.measured_s:.2f}"
                          f", simulated {ms.simulated_s / mb.simulated_s:.2f}")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-live", action="store_true", help="no vLLM server: speed and the sweep only")
    ap.add_argument("--requests", type=int, default=10_000, help="requests for the speed test (default 10,000)")
    ap.add_argument("--max-tokens", type=int, default=200, help="max_tokens of live requests (default 200)")
    ap.add_argument("--requests-per-level", type=int, default=16, help="live closed-loop requests per level")
    ap.add_argument("--live-only", action="store_true", help="only the validation against a real server")
    ap.add_argument("--skip-speculative", action="store_true", help="live: the baseline server only")
    ap.add_argument("--out", type=Path, default=ROOT / "test-output" / "benchmark-simulate")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {} if args.live_only else {
        "speed": speed(args.requests), "source_sweep": source_sweep(), "contagion": contagion()}
    if not args.skip_live:
        report["validation"] = live_validation(args.out, args.max_tokens, args.requests_per_level,
                                               not args.skip_speculative)
    (args.out / "simulate.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {args.out / 'simulate.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
