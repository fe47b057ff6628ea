"""Median time of a full memory-plan sweep on this machine.

Sweep: every target/draft precision pair x every GPU kind x TP 1..8, for Llama-3.1-70B + Llama-3.1-8B
(draft at the target's TP, as vLLM 0.32 requires) at an 8,192-token context. TPs that do not divide the
heads (3, 5, 6, 7) are refused by the planner with a ValueError; they are counted, not timed separately.

    python benchmarks/planner.py [--repeats 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time

from specdec_lib import catalog
from specdec_lib.display import format_ms
from specdec_lib.memory import plan_memory

TARGET, DRAFT = "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-8B"


def sweep() -> tuple[int, int, int]:
    target, draft = catalog.get_model(TARGET), catalog.get_model(DRAFT)
    precisions = list(catalog.precisions().values())
    planned = refused = fitting = 0
    for gpu in catalog.gpus().values():
        for tp in range(1, 9):
            for tprec, dprec in itertools.product(precisions, precisions):
                try:
                    plan = plan_memory(target, draft, gpu=gpu, num_gpus=tp, tp=tp, target_precision=tprec,
                                       draft_precision=dprec, context_len=8192)
                except ValueError:
                    refused += 1
                    continue
                planned += 1
                fitting += plan.fits
    return planned, refused, fitting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the timings here")
    args = parser.parse_args()
    sweep()  # warm: loads the catalogs once
    times_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        planned, refused, fitting = sweep()
        times_s.append(time.perf_counter() - start)
    median_s = statistics.median(times_s)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"sweep: {len(catalog.precisions())}x{len(catalog.precisions())} precision pairs x {len(catalog.gpus())} "
          f"GPU kinds x TP 1-8 = {planned + refused} combinations ({planned} planned, {refused} refused, "
          f"{fitting} fit)")
    print(f"median sweep time over {args.repeats} runs: {format_ms(median_s)} "
          f"({median_s / max(planned, 1) * 1e6:.1f} us per plan); min {format_ms(min(times_s))}, "
          f"max {format_ms(max(times_s))}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"median_s": median_s, "times_s": times_s, "planned": planned, "refused": refused,
                       "fitting": fitting}, f, indent=2)


if __name__ == "__main__":
    main()
