"""Published acceptance per speculative method (data/acceptance_priors.csv) as `AcceptanceEstimate` priors.

Every row is a published figure with its citation; none is a measurement. The figure is converted to
Leviathan's per-token alpha (the one acceptance unit of the library) with `speculation.py`, and the conversion is
written into the estimate's `origin`:

- ``mean_acceptance_length`` AL at k (vLLM's "mean acceptance length", bonus token included):
  alpha such that E(alpha, k) = (1 - alpha^(k+1)) / (1 - alpha) = AL (`speculation.alpha_from_mean_acceptance_length`).
- ``per_position`` rates r_1..r_k (P(first i drafts accepted)): AL = 1 + sum r_i
  (`speculation.expected_tokens_from_positions`), then as above.
- ``v0_rate`` (accepted / proposed without the prefix rule, vLLM V0's gauge, or a k = 1 acceptance): alpha
  itself (`speculation.alpha_from_v0_rate`).

`value_low` / `value_high`, when given, become `alpha_low` / `alpha_high`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import speculation
from .catalog import data_dir
from .evidence import AcceptanceEstimate

FIGURES = ("mean_acceptance_length", "per_position", "v0_rate")
_COLUMNS = ("method", "target_model", "draft_model", "k", "figure", "value", "value_low", "value_high",
            "temperature", "dataset", "origin")


@dataclass(frozen=True)
class PriorRow:
    """One published figure and the alpha it converts to."""

    estimate: AcceptanceEstimate
    figure: str
    value: str  # as published (a number, or ';'-separated per-position rates)
    dataset: str
    mean_acceptance_length: float  # E at the row's k (1 + alpha for a v0_rate without k)


def _alpha(figure: str, value: str, k: int | None, where: str) -> tuple[float, float]:
    """(alpha, mean acceptance length) for one published figure."""
    try:
        if figure == "per_position":
            rates = [float(x) for x in value.split(";")]
            length = speculation.expected_tokens_from_positions(rates)
            return speculation.alpha_from_mean_acceptance_length(length, len(rates)), length
        number = float(value)
        if figure == "mean_acceptance_length":
            if k is None:
                raise ValueError("a mean acceptance length needs its k")
            return speculation.alpha_from_mean_acceptance_length(number, k), number
        alpha = speculation.alpha_from_v0_rate(number)
        return alpha, speculation.expected_tokens_per_step(alpha, k or 1)
    except ValueError as exc:
        raise ValueError(f"{where}, field 'value': {value!r} is not a valid {figure}: {exc}") from None


def _row(raw: dict, where: str) -> PriorRow:
    def text(field: str) -> str:
        v = raw.get(field)
        if v is None:
            raise ValueError(f"{where}: missing column {field!r}")
        return v.strip()

    if None in raw:
        raise ValueError(f"{where}: {len(raw[None])} more fields than columns (quote a value holding a comma)")
    figure = text("figure")
    if figure not in FIGURES:
        raise ValueError(f"{where}, field 'figure': expected one of {', '.join(FIGURES)}, got {figure!r}")
    k_text = text("k")
    if k_text and not k_text.isdigit():
        raise ValueError(f"{where}, field 'k': expected an integer >= 1 or empty, got {k_text!r}")
    k = int(k_text) if k_text else None
    if figure == "per_position":
        k = len(text("value").split(";"))
    alpha, length = _alpha(figure, text("value"), k, where)
    bounds = [_alpha(figure, text(f), k, where)[0] if text(f) else None for f in ("value_low", "value_high")]
    temp = text("temperature")
    try:
        temperature = float(temp) if temp else None
    except ValueError:
        raise ValueError(f"{where}, field 'temperature': expected a number or empty, got {temp!r}") from None
    how = {"mean_acceptance_length": f"alpha from mean acceptance length {text('value')} at k = {k} by "
                                     "E(alpha, k) = AL (speculation.alpha_from_mean_acceptance_length)",
           "per_position": f"alpha from per-position rates {text('value')}: AL = 1 + sum = {length:.2f}, then "
                           "E(alpha, k) = AL",
           "v0_rate": f"alpha = published acceptance rate {text('value')} (accepted / proposed)"}[figure]
    origin = text("origin")
    if not origin:
        raise ValueError(f"{where}, field 'origin': expected the citation")
    estimate = AcceptanceEstimate(
        alpha=alpha, source="prior", method=text("method"), temperature=temperature, k=k,
        target_model=text("target_model") or None, draft_model=text("draft_model") or None,
        alpha_low=bounds[0], alpha_high=bounds[1], origin=f"{origin}; {how}")
    return PriorRow(estimate, figure, text("value"), text("dataset"), length)


@lru_cache(maxsize=None)
def _load(folder: str) -> tuple[PriorRow, ...]:
    path = Path(folder) / "acceptance_priors.csv"
    if not path.is_file():
        raise FileNotFoundError(f"catalog file {path} not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path.name}: missing columns {missing}")
        return tuple(_row(r, f"{path.name} line {reader.line_num}") for r in reader)


def prior_rows() -> tuple[PriorRow, ...]:
    """Every published figure of data/acceptance_priors.csv, converted."""
    return _load(str(data_dir()))


def priors(method: str | None = None) -> list[AcceptanceEstimate]:
    """The priors as `AcceptanceEstimate`s (source "prior"), optionally of one method."""
    return [r.estimate for r in prior_rows() if method is None or r.estimate.method == method]


def _same_model(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    def norm(s: str) -> str:
        return s.lower().split("/")[-1].removesuffix("-instruct")
    return norm(a) == norm(b)


@dataclass(frozen=True)
class PriorMatch:
    estimate: AcceptanceEstimate
    fit: str  # "same target and drafter" | "same target" | "other target" | "target not stated"


def best_prior(method: str, target: str, *, drafter: str | None = None, temperature: float | None = None,
               k: int | None = None) -> PriorMatch | None:
    """The published prior that fits a deployment best: same target and drafter, then same target, then any;
    among equals the nearest temperature (rows that state none come after), then the row at ``k``."""
    best, best_key = None, None
    mtp = method not in ("draft_model", "eagle", "eagle3", "ngram", "suffix")
    for e in priors():
        if e.method != method and not (mtp and e.method.endswith("mtp")):
            continue
        same_t = _same_model(e.target_model, target)
        fit = ("same target and drafter" if same_t and drafter and _same_model(e.draft_model, drafter)
               else "same target" if same_t else "other target" if e.target_model else "target not stated")
        rank = ("same target and drafter", "same target", "other target", "target not stated").index(fit)
        dt = abs(e.temperature - temperature) if (e.temperature is not None and temperature is not None) else 9.0
        dk = abs((e.k or 0) - k) if k is not None else 0
        key = (rank, dt, dk)
        if best_key is None or key < best_key:
            best, best_key = PriorMatch(e, fit), key
    return best
