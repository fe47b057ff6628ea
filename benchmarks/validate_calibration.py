"""Predicted versus measured step time for every H100 step in data/calibration/, and the fit that produced the
library's default factors.

    python benchmarks/validate_calibration.py            # fit, print the table and the errors
    python benchmarks/validate_calibration.py --write    # also (re)write data/calibration/h100_fitted_factors.json

Four views of the error, so the fit is not graded only on the data it saw:
  1. in-sample: factors fitted to the "fit" grid (context 512 and 2048, B 1-256, q 1/4/6);
  2. held-out grid: steps the fit never saw (context 8192 and 1024, B 2-96, q 3/5/8);
  3. leave-one-model-out: factors fitted to the other models' fit grid, predicting the held-out model;
  4. the library's DEFAULT_FACTORS (which should equal view 1).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specdec_lib import catalog, load  # noqa: E402

TIMINGS = ROOT / "data" / "calibration" / "h100_step_timings.json"
FACTORS = ROOT / "data" / "calibration" / "h100_fitted_factors.json"
SHARD_SUFFIX = "@tp4-shard"


def observations(data: dict, subset: str | None = None) -> list[load.StepObservation]:
    """Measured steps as observations. The "@tp4-shard" model is the per-GPU quarter of the named model at TP 4,
    timed without the all-reduces, so it is predicted at tp=4 with communication left out."""
    gpu = catalog.get_gpu("H100-SXM")
    bf16 = catalog.get_precision("bf16")
    out = []
    for r in data["records"]:
        if subset is not None and r.get("set", "fit") != subset:
            continue
        name, tp, comm = r["model"], 1, True
        if name.endswith(SHARD_SUFFIX):
            name, tp, comm = name[: -len(SHARD_SUFFIX)], 4, False
        model = catalog.get_model(name)
        out.append(load.StepObservation(model=model, precision=bf16, gpu=gpu, tp=tp, batch_size=r["batch_size"],
                                        tokens_per_seq=r["tokens_per_seq"], context_len=r["context_len"],
                                        measured_s=r["median_s"], include_communication=comm, label=r["model"]))
    return out


def errors(obs, factors):
    rows = []
    for o in obs:
        p = load.step_time_breakdown(o.model, o.precision, o.gpu, o.tp, o.batch_size, o.tokens_per_seq,
                                     o.context_len, factors, include_communication=o.include_communication)
        rows.append((o, p, (p.total_s - o.measured_s) / o.measured_s))
    return rows


def median(xs):
    return statistics.median(list(xs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write the fitted factors to " + str(FACTORS))
    args = ap.parse_args()
    data = json.loads(TIMINGS.read_text())
    env = data["environment"]
    driver = env.get("nvidia_smi", "").splitlines()[-1].split(",")[1].strip()
    print(f"measured on {env.get('gpu_name')} (driver {driver}), torch {env['torch']} CUDA {env['torch_cuda']}, "
          f"{env['utc']}")
    mb = data.get("microbench", {})
    if mb:
        print(f"microbenchmarks: copy {mb['copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (peak 3.35 → "
              f"{mb['copy_bandwidth_bytes_per_s'] / 3.35e12:.2f}), bf16 matmul 8192³ "
              f"{mb['matmul_bf16_flops_per_s'] / 1e12:.0f} TFLOP/s (dense peak 989 → "
              f"{mb['matmul_bf16_flops_per_s'] / 989.4e12:.2f})")
    obs = observations(data, "fit")
    held_obs = observations(data, "holdout")
    fit = load.fit_step_factors(obs)
    f = fit.factors
    print(f"\nfit over {len(obs)} steps: η_mem {f.memory_efficiency:.3f}, η_compute {f.compute_efficiency:.3f}, "
          f"overhead {f.overhead_s * 1e3:.3f} ms + {f.overhead_s_per_layer * 1e6:.1f} µs/layer")

    print(f"\n{'model':38s} {'set':7s} {'L':>5s} {'B':>4s} {'q':>2s} {'measured ms':>11s} {'predicted ms':>12s} "
          f"{'error':>7s} bound")
    for subset, group in (("fit", obs), ("holdout", held_obs)):
        for o, p, e in errors(group, f):
            print(f"{o.label:38s} {subset:7s} {o.context_len:5d} {int(o.batch_size):4d} {o.tokens_per_seq:2d} "
                  f"{o.measured_s * 1e3:11.3f} {p.total_s * 1e3:12.3f} {e:+7.1%} {p.bound}")
    rows = errors(obs, f)
    print(f"\nin-sample median |error| {median(abs(e) for *_, e in rows):.1%}, "
          f"max {max(abs(e) for *_, e in rows):.1%}")
    for label in sorted({o.label for o in obs}):
        sub = [abs(e) for o, _, e in rows if o.label == label]
        print(f"  {label:38s} median |error| {median(sub):.1%} over {len(sub)} steps")

    hrows = errors(held_obs, f)
    if hrows:
        print(f"held-out grid ({len(hrows)} steps the fit never saw): median |error| "
              f"{median(abs(e) for *_, e in hrows):.1%}, max {max(abs(e) for *_, e in hrows):.1%}")
        for label in sorted({o.label for o in held_obs}):
            sub = [abs(e) for o, _, e in hrows if o.label == label]
            print(f"  {label:38s} median |error| {median(sub):.1%} over {len(sub)} steps")

    print("by context and step kind (all steps, fitted factors):")
    for subset, group in (("fit", obs), ("holdout", held_obs)):
        rs = errors(group, f)
        for ctx in sorted({o.context_len for o in group}):
            for kind, test in (("decode q=1", lambda q: q == 1), ("verify q>1", lambda q: q > 1)):
                sub = [abs(e) for o, _, e in rs if o.context_len == ctx and test(o.tokens_per_seq)]
                if sub:
                    print(f"  {subset:7s} context {ctx:5d} {kind}: median |error| {median(sub):.1%} "
                          f"over {len(sub)} steps")

    print("\nleave-one-model-out (fit on the other models, predict this one):")
    held = []
    for label in sorted({o.label for o in obs}):
        train = [o for o in obs if o.label != label]
        test = [o for o in obs if o.label == label]
        ff = load.fit_step_factors(train, fit_per_layer_overhead=True).factors
        errs = [abs(e) for *_, e in errors(test, ff)]
        held += errs
        print(f"  {label:38s} median |error| {median(errs):.1%} (η_mem {ff.memory_efficiency:.2f}, η_compute "
              f"{ff.compute_efficiency:.2f}, {ff.overhead_s_per_layer * 1e6:.0f} µs/layer)")
    print(f"  all held-out steps: median |error| {median(held):.1%}")

    d = load.DEFAULT_FACTORS
    derr = [abs(e) for *_, e in errors(obs + held_obs, d)]
    print(f"\nlibrary DEFAULT_FACTORS (η_mem {d.memory_efficiency}, η_compute {d.compute_efficiency}, "
          f"{d.overhead_s_per_layer * 1e6:.1f} µs/layer): median |error| {median(derr):.1%} over all "
          f"{len(derr)} steps")

    if args.write:
        out = {
            "gpu": "H100-SXM",
            "measured_on": {k: env.get(k) for k in ("gpu_name", "nvidia_smi", "torch", "torch_cuda", "cudnn",
                                                    "transformers", "python", "utc")},
            "timings_file": TIMINGS.name,
            "fit": "specdec_lib.load.fit_step_factors over the records with set == 'fit' "
                   "(benchmarks/validate_calibration.py --write)",
            "n_steps": len(obs),
            "median_abs_pct_error_in_sample": median(abs(e) for *_, e in rows),
            "n_holdout_steps": len(hrows),
            "median_abs_pct_error_holdout": median(abs(e) for *_, e in hrows) if hrows else None,
            "median_abs_pct_error_leave_one_model_out": median(held),
            "factors": {k: v for k, v in replace(
                f, source="H100 SXM calibration (data/calibration/h100_fitted_factors.json); interconnect values "
                          "assumed").as_dict().items()},
            "not_fitted": ["interconnect_efficiency", "allreduce_latency_s"],
        }
        FACTORS.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {FACTORS}")


if __name__ == "__main__":
    main()
