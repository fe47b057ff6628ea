"""Acceptance evidence: one record type for every place an acceptance figure can come from.

The verdict turns on alpha (Leviathan et al.'s per-token acceptance probability). It can come from four places,
ranked by how much it can be trusted for the user's deployment:

- "measured":  counters of a real server running this exact configuration (a run folder);
- "predicted": the acceptance oracle, from the target's and the draft's own distributions on the user's prompts,
               with a lower and an upper bound (the vocabulary tail the server did not return);
- "prior":     a published number (paper, vLLM issue, model card): says its citation in `origin`;
- "assumed":   typed by the user into the scenario.

Producers (runs -> measured, the oracle -> predicted, the drafter catalog -> prior, the scenario -> assumed)
return `AcceptanceEstimate`s; the single evaluation path (`evaluate`) chooses among them per request class and
says which it used. This module is pure: no I/O, no imports from the rest of the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SOURCES = ("measured", "predicted", "prior", "assumed")  # most trusted first


@dataclass(frozen=True)
class AcceptanceEstimate:
    """One acceptance figure with everything needed to decide whether it applies to a scenario.

    `alpha` is always Leviathan's per-token alpha (never vLLM V1's accepted/draft ratio: convert first with
    `speculation.alpha_from_v1_rate`). `alpha_low`/`alpha_high` are bounds when the producer has them (predicted:
    vocabulary-tail bounds; measured: a 95 % interval across requests). `temperature` None means "any / not
    stated" (a prior that does not say). `origin` is a run id, a citation or "scenario".
    """

    alpha: float
    source: str
    method: str                      # "draft_model" | "eagle" | "eagle3" | "mtp" | "ngram" | "suffix" | ...
    temperature: float | None = None
    k: int | None = None             # k the figure was taken at (acceptance per position does not depend on k,
                                     # but a V1 ratio converted to alpha does)
    target_model: str | None = None  # served / catalog name of the target the figure belongs to
    draft_model: str | None = None   # the draft / head; None for n-gram and suffix
    draft_sample_method: str | None = None  # "greedy" (vLLM's default) | "probabilistic"
    alpha_low: float | None = None
    alpha_high: float | None = None
    n_requests: int | None = None
    origin: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is not accepted: one of {', '.join(SOURCES)}")
        for name in ("alpha", "alpha_low", "alpha_high"):
            value = getattr(self, name)
            if value is None and name != "alpha":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                    or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} is not accepted: a number in [0, 1]")
        if self.alpha_low is not None and self.alpha_low > self.alpha + 1e-12:
            raise ValueError(f"alpha_low={self.alpha_low!r} is above alpha={self.alpha!r}")
        if self.alpha_high is not None and self.alpha_high < self.alpha - 1e-12:
            raise ValueError(f"alpha_high={self.alpha_high!r} is below alpha={self.alpha!r}")
        if self.k is not None and (not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1):
            raise ValueError(f"k={self.k!r} is not accepted: an integer >= 1")
        if self.temperature is not None and (not math.isfinite(self.temperature) or self.temperature < 0):
            raise ValueError(f"temperature={self.temperature!r} is not accepted: a number >= 0")

    @property
    def rank(self) -> int:
        """0 for measured ... 3 for assumed: lower is more trusted."""
        return SOURCES.index(self.source)
