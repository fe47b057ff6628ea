"""pandas DataFrames of the workbook's records, for planners who script (the notebooks' "In code" sections).

Plans, evaluations and load predictions have their own `.to_frame()`; this module turns the records other
modules return (run folders, temperature sweeps, load-test comparisons, draft candidates) into DataFrames
without those modules importing pandas. Values stay in base units (seconds, bytes, fractions).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import pandas as pd


def records(items: Iterable[Any], index: str | None = None) -> pd.DataFrame:
    """One row per dataclass (or mapping) in `items`; nested lists and dicts are kept as cells."""
    rows = [dataclasses.asdict(i) if dataclasses.is_dataclass(i) else dict(i) for i in items]
    frame = pd.DataFrame(rows)
    return frame.set_index(index) if index and not frame.empty else frame


def run_records(run) -> pd.DataFrame:
    """A run folder's request records (`runs.load_run(path).records`), one row per request."""
    return records(run.records, index="index")


def run_summary(run) -> pd.DataFrame:
    """Per group of a run (`runs.summarise`): latency percentiles (s) and acceptance counters, one row per label."""
    from specdec_lib import runs

    rows = {}
    for label, group in runs.summarise(run)["groups"].items():
        row = {"temperature": group.get("temperature")}
        row.update({k: v for k, v in group["latency"].items() if not isinstance(v, (list, dict))})
        row.update({f"acceptance_{k}": v for k, v in group["acceptance"].items() if not isinstance(v, (list, dict))})
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def sweep(result) -> pd.DataFrame:
    """A temperature sweep's per-temperature results (`loadtest.run_temperature_sweep(...).temperatures`)."""
    return records(result.temperatures, index="temperature")


def comparison(rows) -> pd.DataFrame:
    """`loadtest.compare_load_tests(baseline, speculative)` rows: P50/P99 with and without, per level and metric."""
    return records(rows)


def memory_plan(plan) -> pd.DataFrame:
    """A `memory.MemoryPlan` as one column of values (bytes, tokens), one row per field."""
    return pd.Series(plan.to_dict()).to_frame("value")
