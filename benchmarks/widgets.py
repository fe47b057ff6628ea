#!/usr/bin/env python3
"""How quickly the notebooks answer: median time from a control change to updated figure data, per page, and the
time to execute every offline notebook headless.

A control change is timed as a live kernel runs it: inside a running asyncio event loop (ipykernel's comm
handlers run on one), a single change runs the page's figure update at once (leading edge of the debouncer), so
the FigureWidget's data is updated when the setter returns; the slow part (verdict, crossovers, tables) follows
on the loop once dragging stops (widgets.SLOW_WAIT_S) and is timed separately as "then all" (both parts, run
back to back with no loop). The mixed-workload page runs a simulation and only reacts when a slider is released.

Usage: .venv/bin/python benchmarks/widgets.py [--repeats N] [--skip-notebooks] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

TARGET_MS = 50.0

# page function, control, values cycled through (each different from the previous one)
CASES = [
    ("02 memory budget", "memory_budget_page", "gpu_memory_utilization", [0.90, 0.85, 0.80, 0.88, 0.92]),
    ("00 start here", "start_here_page", "gpu_memory_utilization", [0.90, 0.85, 0.80, 0.88, 0.92]),
    ("01 draft selection", "draft_selection_page", "num_speculative_tokens", [3, 4, 6, 7, 5]),
    ("03 break-even and load", "break_even_page", "qps", [0.5, 2.0, 3.0, 1.5, 1.0]),
    ("07 decision memo", "decision_memo_page", "gpu_memory_utilization", [0.90, 0.85, 0.80, 0.88, 0.92]),
    ("06 mixed workload (simulation)", "mixed_workload_page", "creative_alpha", [0.5, 0.6, 0.3, 0.7, 0.38]),
]


def figure_data(page) -> str:
    return json.dumps([fig.to_dict()["data"] for fig in page.figures.values()], default=str, sort_keys=True)


def time_control_changes(repeats: int) -> list[dict]:
    import asyncio

    from specdec_lib import widgets as ui

    results = []
    for label, fn, control, values in CASES:
        page = getattr(ui, fn)()
        fast_ms, all_ms = [], []

        async def one_change(value) -> float:
            before = figure_data(page)
            start = time.perf_counter()
            page.controls[control].value = value
            elapsed_ms = (time.perf_counter() - start) * 1000
            if figure_data(page) == before:
                raise RuntimeError(f"{label}: changing {control} did not change the figure data at once")
            await asyncio.sleep(ui.SLOW_WAIT_S + 0.2)  # let the slow part run and the debouncer go quiet
            return elapsed_ms

        for i in range(repeats):
            fast_ms.append(asyncio.run(one_change(values[(2 * i) % len(values)])))
            if page.message.value and "#b00020" in page.message.value:
                raise RuntimeError(f"{label}: the page showed an error: {page.message.value}")
            start = time.perf_counter()
            page.controls[control].value = values[(2 * i + 1) % len(values)]  # no loop: figures and slow part
            all_ms.append((time.perf_counter() - start) * 1000)
        results.append({"page": label, "control": control, "changes": repeats,
                        "median_ms": statistics.median(fast_ms), "max_ms": max(fast_ms),
                        "median_all_ms": statistics.median(all_ms)})
    return results


def time_notebooks() -> list[dict]:
    from test_notebooks import OFFLINE, execute_notebook

    out = []
    env_saved = {k: os.environ.pop(k, None) for k in ("SPECDEC_ENDPOINT", "SPECDEC_AUTORUN")}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in OFFLINE:
                start = time.perf_counter()
                execute_notebook(name, Path(tmp))
                out.append({"notebook": name, "seconds": time.perf_counter() - start})
    finally:
        os.environ.update({k: v for k, v in env_saved.items() if v is not None})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} "
          "(other processes slow these figures)", flush=True)
    changes = time_control_changes(args.repeats)
    print(f"\nControl change -> updated figure data (median of {args.repeats}; target < {TARGET_MS:.0f} ms)")
    print(f"{'page':34} {'control':24} {'median ms':>10} {'max ms':>8} {'then all':>9}  target")
    for r in changes:
        ok = "met" if r["median_ms"] < TARGET_MS else "MISSED"
        if "simulation" in r["page"]:
            ok = "n/a (runs on release)"
        print(f"{r['page']:34} {r['control']:24} {r['median_ms']:10.1f} {r['max_ms']:8.1f} "
              f"{r['median_all_ms']:9.1f}  {ok}")
    notebooks = []
    if not args.skip_notebooks:
        notebooks = time_notebooks()
        print("\nHeadless execution of the offline notebooks (nbclient, fresh kernel each)")
        for r in notebooks:
            print(f"{r['notebook']:34} {r['seconds']:8.1f} s")
        print(f"{'all offline notebooks':34} {sum(r['seconds'] for r in notebooks):8.1f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"control_changes": changes, "notebooks": notebooks}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
