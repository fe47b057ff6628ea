"""The workload: token-length distributions, traffic classes, and concrete request sets (pure).

A `Workload` is a list of `TrafficClass`es (share of requests, per-token acceptance alpha, prompt and output
length distributions); `make_requests` draws a `Requests` set from it (Poisson arrivals or a recorded trace);
`requests_from_records` and `lengths_from_records` take them from a measured run (runs.py records) instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class LengthDistribution:
    """Token lengths: a lognormal (median, sigma) clipped to [min_tokens, max_tokens], or an empirical sample.

    `values` set: lengths are drawn from it with replacement (a user's measured run); otherwise lognormal.
    sigma = 0 gives a fixed length (the median).
    """

    median_tokens: float = 1.0
    sigma: float = 0.0
    min_tokens: int = 1
    max_tokens: int = 1_000_000
    values: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.values is not None:
            if len(self.values) == 0:
                raise ValueError("LengthDistribution.values is empty; expected at least one length >= 1")
            bad = [v for v in self.values if int(v) != v or v < 1]
            if bad:
                raise ValueError(f"LengthDistribution.values has {bad[:5]}; expected integers >= 1")
            return
        if not (self.median_tokens >= 1):
            raise ValueError(f"LengthDistribution.median_tokens = {self.median_tokens!r}; expected >= 1")
        if not (0 <= self.sigma <= 5):
            raise ValueError(f"LengthDistribution.sigma = {self.sigma!r}; expected 0 <= sigma <= 5")
        if not (1 <= self.min_tokens <= self.max_tokens):
            raise ValueError(
                f"LengthDistribution.min_tokens/max_tokens = {self.min_tokens}/{self.max_tokens}; "
                "expected 1 <= min_tokens <= max_tokens"
            )

    @classmethod
    def fixed(cls, tokens: int) -> LengthDistribution:
        return cls(median_tokens=tokens, sigma=0.0, min_tokens=tokens, max_tokens=tokens)

    @classmethod
    def empirical(cls, values: Iterable[int]) -> LengthDistribution:
        return cls(values=tuple(int(v) for v in values))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.values is not None:
            return rng.choice(np.asarray(self.values, dtype=np.int64), size=n, replace=True)
        if self.sigma == 0:
            raw = np.full(n, float(self.median_tokens))
        else:
            raw = np.exp(rng.normal(math.log(self.median_tokens), self.sigma, size=n))
        return np.clip(np.rint(raw), self.min_tokens, self.max_tokens).astype(np.int64)


LENGTH_SHAPES: dict[str, tuple[LengthDistribution, LengthDistribution]] = {
    # (prompt, output). Illustrative shapes chosen for this workbook (long prompts for summarisation, long outputs
    # for code), not fitted to any trace. Replace them with your own run (`lengths_from_records`).
    "chat": (
        LengthDistribution(median_tokens=256, sigma=0.8, min_tokens=16, max_tokens=4096),
        LengthDistribution(median_tokens=256, sigma=0.7, min_tokens=8, max_tokens=2048),
    ),
    "summarisation": (
        LengthDistribution(median_tokens=2048, sigma=0.5, min_tokens=256, max_tokens=8192),
        LengthDistribution(median_tokens=200, sigma=0.5, min_tokens=16, max_tokens=1024),
    ),
    "code": (
        LengthDistribution(median_tokens=768, sigma=0.7, min_tokens=32, max_tokens=8192),
        LengthDistribution(median_tokens=384, sigma=0.8, min_tokens=8, max_tokens=2048),
    ),
}


def length_shape(name: str) -> tuple[LengthDistribution, LengthDistribution]:
    """(prompt, output) length distributions of a built-in shape: "chat", "summarisation" or "code"."""
    if name not in LENGTH_SHAPES:
        raise ValueError(f"length shape = {name!r}; expected one of {sorted(LENGTH_SHAPES)}")
    return LENGTH_SHAPES[name]


def lengths_from_records(records: Iterable[Mapping[str, Any]], field_name: str) -> LengthDistribution:
    """Empirical lengths from run records (runs.py schema): field_name "prompt_tokens" or "completion_tokens".

    Records with an error or without the field are skipped; none left is a ValueError.
    """
    if field_name not in ("prompt_tokens", "completion_tokens"):
        raise ValueError(f"field_name = {field_name!r}; expected 'prompt_tokens' or 'completion_tokens'")
    values = [
        int(r[field_name]) for r in records if not r.get("error") and r.get(field_name) and int(r[field_name]) >= 1
    ]
    if not values:
        raise ValueError(f"no successful record has {field_name!r} >= 1")
    return LengthDistribution.empirical(values)


@dataclass(frozen=True)
class TrafficClass:
    """A kind of request: its share of requests, per-token acceptance alpha, and length distributions."""

    name: str
    share: float
    alpha: float
    prompt: LengthDistribution
    output: LengthDistribution

    def __post_init__(self) -> None:
        if not (0 < self.share <= 1):
            raise ValueError(f"TrafficClass[{self.name!r}].share = {self.share!r}; expected 0 < share <= 1")
        if not (0 <= self.alpha <= 1):
            raise ValueError(f"TrafficClass[{self.name!r}].alpha = {self.alpha!r}; expected 0 <= alpha <= 1")


@dataclass(frozen=True)
class Workload:
    classes: tuple[TrafficClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("Workload.classes is empty; expected at least one TrafficClass")
        total = sum(c.share for c in self.classes)
        if abs(total - 1) > 1e-6:
            raise ValueError(f"Workload shares sum to {total!r}; expected 1")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"Workload class names {names}; expected distinct names")


def workload_from_scenario(workload: Iterable[Any], shape: str = "chat") -> Workload:
    """A Workload from `scenario.Scenario.workload` (RequestClass: name, share, prompt_tokens, output_tokens, alpha).

    The scenario's token counts become the medians of the named shape's lognormal spreads. A class without a known
    alpha is a ValueError: the simulation needs it (measure it, or state it).
    """
    prompt_shape, output_shape = length_shape(shape)
    classes = []
    for rc in workload:
        if rc.alpha is None:
            raise ValueError(f"workload[{rc.name!r}].alpha is None; expected a per-token acceptance in [0, 1]")
        classes.append(
            TrafficClass(
                name=rc.name,
                share=rc.share,
                alpha=rc.alpha,
                prompt=LengthDistribution(
                    rc.prompt_tokens, prompt_shape.sigma, 1, max(rc.prompt_tokens, prompt_shape.max_tokens)
                ),
                output=LengthDistribution(
                    rc.output_tokens, output_shape.sigma, 1, max(rc.output_tokens, output_shape.max_tokens)
                ),
            )
        )
    return Workload(tuple(classes))


@dataclass(frozen=True)
class Requests:
    """A concrete request set (arrays indexed by request), sorted by arrival time."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    class_index: np.ndarray
    class_names: tuple[str, ...]
    class_alpha: tuple[float, ...]

    @property
    def num_requests(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def alpha(self) -> np.ndarray:
        return np.asarray(self.class_alpha, dtype=np.float64)[self.class_index]


def poisson_arrivals_s(qps: float, num_requests: int, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a Poisson process: cumulative sums of exponential gaps of mean 1/qps, first gap included."""
    if not (qps > 0):
        raise ValueError(f"qps = {qps!r}; expected > 0")
    return np.cumsum(rng.exponential(1.0 / qps, size=num_requests))


def make_requests(
    workload: Workload,
    *,
    num_requests: int | None = None,
    qps: float | None = None,
    arrival_times_s: Sequence[float] | np.ndarray | None = None,
    seed: int = 0,
) -> Requests:
    """Draw a request set: Poisson(qps) arrivals for num_requests, or the given trace of arrival times.

    The random streams are split so the same seed gives the same classes and lengths whatever the QPS: a QPS sweep
    changes only the spacing of arrivals (common random numbers).
    """
    if arrival_times_s is not None:
        if qps is not None:
            raise ValueError("give either qps or arrival_times_s, not both")
        arrivals = np.sort(np.asarray(arrival_times_s, dtype=np.float64))
        if arrivals.ndim != 1 or arrivals.size == 0 or not np.all(np.isfinite(arrivals)) or arrivals[0] < 0:
            raise ValueError("arrival_times_s must be a non-empty 1-D list of finite times >= 0 seconds")
        if num_requests is not None and num_requests != arrivals.size:
            raise ValueError(f"num_requests = {num_requests} but arrival_times_s has {arrivals.size} times")
        n = arrivals.size
    else:
        if qps is None or num_requests is None:
            raise ValueError("give qps and num_requests (Poisson arrivals), or arrival_times_s (a trace)")
        if num_requests < 1:
            raise ValueError(f"num_requests = {num_requests!r}; expected >= 1")
        n = num_requests
        arrivals = poisson_arrivals_s(qps, n, np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    shares = np.array([c.share for c in workload.classes])
    class_index = rng.choice(len(shares), size=n, p=shares / shares.sum())
    prompt = np.empty(n, dtype=np.int64)
    output = np.empty(n, dtype=np.int64)
    for i, c in enumerate(workload.classes):
        sel = class_index == i
        m = int(sel.sum())
        prompt[sel] = c.prompt.sample(np.random.default_rng([seed, 3, i]), m)
        output[sel] = c.output.sample(np.random.default_rng([seed, 4, i]), m)
    return Requests(
        arrival_s=arrivals,
        prompt_tokens=prompt,
        output_tokens=output,
        class_index=class_index.astype(np.int64),
        class_names=tuple(c.name for c in workload.classes),
        class_alpha=tuple(float(c.alpha) for c in workload.classes),
    )



def requests_from_records(
    records: Iterable[Mapping[str, Any]], *, alpha: float = 0.0, class_name: str = "replay",
    alpha_by_temperature: Mapping[float, float] | None = None,
) -> Requests:
    """Replay a measured run (runs.py records): arrivals at each request's `sent_at_s` (shifted to start at 0),
    its measured prompt and completion tokens. One class with the given alpha, or with `alpha_by_temperature` one
    class per temperature ("T=0.1", ...) with that temperature's alpha (a record at a temperature not in the map is
    a ValueError). Errored records are left out."""
    ok = [r for r in records if not r.get("error") and r.get("sent_at_s") is not None and r.get("completion_tokens")]
    if not ok:
        raise ValueError("records: no successful request with sent_at_s and completion_tokens to replay")
    ok.sort(key=lambda r: r["sent_at_s"])
    sent = np.array([float(r["sent_at_s"]) for r in ok])
    if alpha_by_temperature is None:
        names, alphas, index = (class_name,), (float(alpha),), np.zeros(len(ok), dtype=np.int64)
    else:
        temps = sorted(float(t) for t in alpha_by_temperature)
        missing = sorted({float(r.get("temperature")) for r in ok} - set(temps))
        if missing:
            raise ValueError(f"records at temperatures {missing}; alpha_by_temperature has only {temps}")
        names = tuple(f"T={t:g}" for t in temps)
        alphas = tuple(float(alpha_by_temperature[t]) for t in temps)
        index = np.array([temps.index(float(r["temperature"])) for r in ok], dtype=np.int64)
    return Requests(
        arrival_s=sent - sent[0],
        prompt_tokens=np.array([int(r["prompt_tokens"]) for r in ok], dtype=np.int64),
        output_tokens=np.array([int(r["completion_tokens"]) for r in ok], dtype=np.int64),
        class_index=index,
        class_names=names,
        class_alpha=alphas,
    )
