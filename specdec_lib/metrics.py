"""Reading vLLM's Prometheus ``/metrics``: snapshots, counter deltas, acceptance from counters (pure).

Nothing here does I/O: ``endpoint.py`` fetches the text, this module turns it into numbers.

Definitions used everywhere in the workbook (see ``docs/measurement.md``):

* **V1 acceptance rate** = Δaccepted_tokens / Δdraft_tokens between two scrapes. vLLM V1 counts only the
  accepted *prefix* of each draft (tokens after the first rejection are not counted), so this is (E − 1)/k with
  E = (1 − α^(k+1))/(1 − α): it is *not* α. Source: ``vllm/v1/spec_decode/metrics.py`` (``SpecDecodingProm``
  docstring and ``SpecDecodingLogging.log``), vLLM 0.32.
* **Mean acceptance length** = 1 + Δaccepted_tokens / Δdrafts (vLLM's convention: counts the bonus token).
  For n-gram, vLLM skips steps where nothing was proposed, so this overstates tokens per engine step.
* **Per-position acceptance rate** i = Δaccepted_per_pos[i] / Δdrafts (fraction of drafts whose accepted
  prefix reaches position i).
* **α (per-token acceptance, Leviathan et al. 2023)**: solved from the V1 rate and k with
  ``speculation.alpha_from_v1_rate``. The source document's thresholds (0.5 / 0.65) apply to α: they were written
  for vLLM V0's gauge ``vllm:spec_decode_draft_acceptance_rate``, which counted every accepted position.
* **V0 gauge**: ``vllm:spec_decode_draft_acceptance_rate`` as an old (V0) server reports it; an estimate of α,
  cumulative over the server's life (no delta is possible from a gauge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

# Family names as prometheus_client reports them (counter families lose their "_total" suffix).
DRAFTS = "vllm:spec_decode_num_drafts"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
ACCEPTED_TOKENS = "vllm:spec_decode_num_accepted_tokens"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
V0_ACCEPTANCE_RATE = "vllm:spec_decode_draft_acceptance_rate"
V0_EFFICIENCY = "vllm:spec_decode_efficiency"
REQUEST_SUCCESS = "vllm:request_success"
GENERATION_TOKENS = "vllm:generation_tokens"
PROMPT_TOKENS = "vllm:prompt_tokens"
CACHE_CONFIG_INFO = "vllm:cache_config_info"

DEFINITIONS = {
    "v1_rate": "vLLM V1 draft acceptance rate = Δaccepted / Δdraft tokens; counts the accepted prefix only, "
    "so it equals (E-1)/k, not the per-token α",
    "mean_acceptance_length": "1 + Δaccepted / Δdrafts (vLLM's convention; includes the bonus token)",
    "per_position_rates": "Δaccepted at position i / Δdrafts (share of drafts whose accepted prefix reaches i)",
    "alpha": "per-token acceptance α (Leviathan et al.), solved from the V1 rate and k; the source's thresholds "
    "(0.5 off, 0.65 win) apply to this number",
    "v0_gauge": "vLLM V0 gauge vllm:spec_decode_draft_acceptance_rate: every accepted position counted "
    "(an α estimate), cumulative since the server started",
}


class MetricsError(ValueError):
    """The /metrics text could not be read as Prometheus exposition format."""


class CounterResetError(ValueError):
    """A counter went down between two scrapes: the server (or one engine) restarted in between."""


@dataclass(frozen=True)
class EngineCounters:
    """The V1 speculative-decoding counters of one engine (labels ``engine``, ``model_name``)."""

    engine: str
    model_name: str
    drafts: int
    draft_tokens: int
    accepted_tokens: int
    accepted_per_position: tuple[int, ...]  # index = position


@dataclass(frozen=True)
class Snapshot:
    """Everything the workbook reads from one scrape of ``/metrics``.

    ``spec_engines`` is empty when the endpoint exposes no V1 speculative-decoding counters; ``v0_acceptance_rate``
    is None unless an old server exposes the V0 gauge. ``families`` lists every family name seen, so a caller can
    tell a vLLM server (``vllm:`` families) from another Prometheus exporter.
    """

    families: frozenset[str]
    spec_engines: tuple[EngineCounters, ...]
    v0_acceptance_rate: float | None
    v0_efficiency: float | None
    request_success: dict[str, int]  # finished_reason -> count, summed over engines
    generation_tokens: int | None
    prompt_tokens: int | None
    info: dict[str, dict[str, str]] = field(default_factory=dict)  # "vllm:cache_config_info" -> labels

    @property
    def is_vllm(self) -> bool:
        return any(name.startswith("vllm:") for name in self.families)

    @property
    def has_spec_counters(self) -> bool:
        return bool(self.spec_engines)

    @property
    def requests_finished(self) -> int:
        """All finished requests (every finished_reason: stop, length, abort, error, ...)."""
        return sum(self.request_success.values())


def _as_count(value: float, what: str) -> int:
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise MetricsError(f"{what} = {value!r}: a counter must be a finite, non-negative whole number")
    return int(value)


def _as_fraction(value: float, what: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise MetricsError(f"{what} = {value!r}: this gauge is a rate, expected a finite number in 0..1")
    return float(value)


def parse_metrics(text: str) -> Snapshot:
    """Parse Prometheus exposition text (as served by vLLM's ``/metrics``) with ``prometheus_client``'s parser.

    Raises MetricsError when the text is not valid exposition format, a counter holds an impossible value
    (negative, fractional, NaN, ±Inf), a V0 rate gauge is outside 0..1, or one series appears twice with
    different values (Prometheus rejects such a scrape; the same series twice with the same value is counted once).
    """
    if not isinstance(text, str):
        raise MetricsError(f"metrics text must be str, got {type(text).__name__}")
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError/IndexError/... on malformed input
        raise MetricsError(f"not Prometheus exposition text: {exc}") from exc

    names = frozenset(s.name for f in families for s in f.samples) | frozenset(f.name for f in families)
    per_engine: dict[tuple[str, str], dict] = {}
    v0_rate: list[float] = []
    v0_eff: list[float] = []
    success: dict[str, int] = {}
    gen_tokens: int | None = None
    prompt_tokens: int | None = None
    info: dict[str, dict[str, str]] = {}

    def engine_slot(labels: dict[str, str]) -> dict:
        key = (labels.get("engine", ""), labels.get("model_name", ""))
        return per_engine.setdefault(key, {"drafts": 0, "draft_tokens": 0, "accepted_tokens": 0, "per_pos": {}})

    seen: dict[tuple, float] = {}
    for fam in families:
        for s in fam.samples:
            # Counters expose "<name>_total" and "<name>_created"; only _total carries the count. Key on the
            # sample name: how the family is named depends on how the exporter wrote its TYPE line.
            if s.name.endswith("_created"):
                continue
            series = (s.name, tuple(sorted(s.labels.items())))
            if series in seen:
                same = seen[series] == s.value or (math.isnan(seen[series]) and math.isnan(s.value))
                if not same:
                    raise MetricsError(f"{s.name}{s.labels} appears twice with different values "
                                       f"({seen[series]!r} and {s.value!r}): which one is the count is unknowable")
                continue  # an exact repeat: count it once
            seen[series] = s.value
            name = s.name.removesuffix("_total")
            if name in (DRAFTS, DRAFT_TOKENS, ACCEPTED_TOKENS):
                slot = engine_slot(s.labels)
                key = {DRAFTS: "drafts", DRAFT_TOKENS: "draft_tokens", ACCEPTED_TOKENS: "accepted_tokens"}[name]
                slot[key] += _as_count(s.value, f"{s.name}{s.labels}")
            elif name == ACCEPTED_PER_POS:
                slot = engine_slot(s.labels)
                try:
                    pos = int(s.labels["position"])
                except (KeyError, ValueError) as exc:
                    raise MetricsError(f"{s.name}{s.labels}: missing or non-integer 'position' label") from exc
                slot["per_pos"][pos] = slot["per_pos"].get(pos, 0) + _as_count(s.value, f"{s.name}{s.labels}")
            elif name == V0_ACCEPTANCE_RATE:
                v0_rate.append(_as_fraction(s.value, f"{s.name}{s.labels}"))
            elif name == V0_EFFICIENCY:
                v0_eff.append(_as_fraction(s.value, f"{s.name}{s.labels}"))
            elif name == REQUEST_SUCCESS:
                reason = s.labels.get("finished_reason", "")
                success[reason] = success.get(reason, 0) + _as_count(s.value, f"{s.name}{s.labels}")
            elif name == GENERATION_TOKENS:
                gen_tokens = (gen_tokens or 0) + _as_count(s.value, s.name)
            elif name == PROMPT_TOKENS:
                prompt_tokens = (prompt_tokens or 0) + _as_count(s.value, s.name)
            elif name.startswith("vllm:") and name.endswith("_info"):
                info.setdefault(name, dict(s.labels))

    engines = []
    for (engine, model), slot in sorted(per_engine.items()):
        positions = slot["per_pos"]
        if positions and sorted(positions) != list(range(len(positions))):
            raise MetricsError(f"{ACCEPTED_PER_POS} engine={engine!r}: positions {sorted(positions)} are not 0..k-1")
        engines.append(
            EngineCounters(
                engine=engine,
                model_name=model,
                drafts=slot["drafts"],
                draft_tokens=slot["draft_tokens"],
                accepted_tokens=slot["accepted_tokens"],
                accepted_per_position=tuple(positions[i] for i in range(len(positions))),
            )
        )

    def mean_or_none(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    return Snapshot(
        families=names,
        spec_engines=tuple(engines),
        v0_acceptance_rate=mean_or_none(v0_rate),
        v0_efficiency=mean_or_none(v0_eff),
        request_success=success,
        generation_tokens=gen_tokens,
        prompt_tokens=prompt_tokens,
        info=info,
    )


@dataclass(frozen=True)
class SpecDelta:
    """Counter differences between two scrapes, summed over engines (``per_engine`` keeps them apart).

    ``available`` is False when the endpoint has no speculative-decoding counters at all: that means "no
    speculation", which is a different statement from a measured rate of zero.
    """

    available: bool
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    per_position: tuple[int, ...] = ()
    per_engine: tuple[EngineCounters, ...] = ()
    requests_finished: int | None = None
    generation_tokens: int | None = None

    @property
    def num_speculative_tokens(self) -> int | None:
        """k, as the number of per-position counters vLLM created (one per draft position)."""
        return len(self.per_position) or None

    @property
    def v1_rate(self) -> float | None:
        """Δaccepted / Δdraft tokens (V1, accepted prefix only); None with no speculation or no drafts."""
        if not self.available or self.draft_tokens == 0:
            return None
        return self.accepted_tokens / self.draft_tokens

    @property
    def mean_acceptance_length(self) -> float | None:
        """1 + Δaccepted / Δdrafts (vLLM's definition, bonus token included)."""
        if not self.available or self.drafts == 0:
            return None
        return 1.0 + self.accepted_tokens / self.drafts

    @property
    def per_position_rates(self) -> tuple[float, ...] | None:
        """Δaccepted_per_pos[i] / Δdrafts for i = 0..k-1."""
        if not self.available or self.drafts == 0:
            return None
        return tuple(a / self.drafts for a in self.per_position)

    @property
    def alpha(self) -> float | None:
        """Per-token α solved from the V1 rate and k = the number of per-position counters the server exposes."""
        return self.alpha_with_k(None)

    def alpha_with_k(self, k: int | None) -> float | None:
        """Per-token α solved from the V1 rate: ``speculation.alpha_from_v1_rate(rate, k)`` (k None: from counters)."""
        rate = self.v1_rate
        k = k if k is not None else self.num_speculative_tokens
        if rate is None or k is None:
            return None
        from specdec_lib.speculation import alpha_from_v1_rate

        return alpha_from_v1_rate(rate, k)

    @property
    def status(self) -> str:
        if not self.available:
            return "no speculation metrics: this endpoint exposes no vllm:spec_decode_* counters"
        if self.draft_tokens == 0:
            return "speculation on, but no draft tokens were proposed in this interval"
        return "measured"


def _diff(before: int, after: int, what: str) -> int:
    if after < before:
        raise CounterResetError(
            f"{what} went from {before} to {after}: the counter was reset, so the server (or this engine) "
            "restarted between the two scrapes; discard this interval and measure again"
        )
    return after - before


def delta(before: Snapshot, after: Snapshot) -> SpecDelta:
    """Counter deltas ``after - before``, per engine and summed.

    Raises CounterResetError if any counter decreased (server restart) or an engine present before vanished.
    An engine that appears only in ``after`` (scaled out) counts from zero.
    """
    if not after.has_spec_counters:
        if before.has_spec_counters:
            raise CounterResetError(
                "speculative-decoding counters were present in the first scrape and gone in the second: "
                "the server restarted (possibly with another configuration) between the scrapes"
            )
        return SpecDelta(
            available=False,
            requests_finished=_diff(before.requests_finished, after.requests_finished, "vllm:request_success_total"),
            generation_tokens=_gen_delta(before, after),
        )
    before_by_key = {(e.engine, e.model_name): e for e in before.spec_engines}
    after_keys = {(e.engine, e.model_name) for e in after.spec_engines}
    for key in before_by_key:
        if key not in after_keys:
            raise CounterResetError(f"engine={key[0]!r} model_name={key[1]!r} disappeared between the scrapes")
    engines = []
    for e in after.spec_engines:
        b = before_by_key.get((e.engine, e.model_name))
        label = f"engine={e.engine!r}"
        if b is None:
            b = EngineCounters(e.engine, e.model_name, 0, 0, 0, (0,) * len(e.accepted_per_position))
        if len(b.accepted_per_position) != len(e.accepted_per_position):
            raise CounterResetError(
                f"{label}: k changed from {len(b.accepted_per_position)} to {len(e.accepted_per_position)} "
                "per-position counters: the server restarted with another configuration"
            )
        engines.append(
            EngineCounters(
                engine=e.engine,
                model_name=e.model_name,
                drafts=_diff(b.drafts, e.drafts, f"{DRAFTS}_total {label}"),
                draft_tokens=_diff(b.draft_tokens, e.draft_tokens, f"{DRAFT_TOKENS}_total {label}"),
                accepted_tokens=_diff(b.accepted_tokens, e.accepted_tokens, f"{ACCEPTED_TOKENS}_total {label}"),
                accepted_per_position=tuple(
                    _diff(x, y, f"{ACCEPTED_PER_POS}_total {label} position={i}")
                    for i, (x, y) in enumerate(zip(b.accepted_per_position, e.accepted_per_position))
                ),
            )
        )
    k = max(len(e.accepted_per_position) for e in engines)
    per_pos = tuple(sum(e.accepted_per_position[i] for e in engines if i < len(e.accepted_per_position))
                    for i in range(k))
    return SpecDelta(
        available=True,
        drafts=sum(e.drafts for e in engines),
        draft_tokens=sum(e.draft_tokens for e in engines),
        accepted_tokens=sum(e.accepted_tokens for e in engines),
        per_position=per_pos,
        per_engine=tuple(engines),
        requests_finished=_diff(before.requests_finished, after.requests_finished, "vllm:request_success_total"),
        generation_tokens=_gen_delta(before, after),
    )


def _gen_delta(before: Snapshot, after: Snapshot) -> int | None:
    if before.generation_tokens is None or after.generation_tokens is None:
        return None
    return _diff(before.generation_tokens, after.generation_tokens, "vllm:generation_tokens_total")


@dataclass(frozen=True)
class LabelledValue:
    """A number with the definition it was computed under (so V1 and α are never confused)."""

    name: str
    value: float | None
    definition: str


@dataclass(frozen=True)
class AcceptanceReport:
    """What a user reads: status plus each number with its definition."""

    status: str
    available: bool
    num_speculative_tokens: int | None
    values: tuple[LabelledValue, ...]

    def get(self, name: str) -> float | None:
        for v in self.values:
            if v.name == name:
                return v.value
        raise KeyError(f"no value named {name!r}; have {[v.name for v in self.values]}")


def acceptance_report(d: SpecDelta, k: int | None = None, v0_gauge: float | None = None) -> AcceptanceReport:
    """Labelled acceptance numbers for one interval; ``v0_gauge`` from an old server's snapshot if present."""
    k = k if k is not None else d.num_speculative_tokens
    values = [
        LabelledValue("v1_rate", d.v1_rate, DEFINITIONS["v1_rate"]),
        LabelledValue("alpha", d.alpha_with_k(k), DEFINITIONS["alpha"]),
        LabelledValue("mean_acceptance_length", d.mean_acceptance_length, DEFINITIONS["mean_acceptance_length"]),
    ]
    rates = d.per_position_rates
    if rates is not None:
        for i, r in enumerate(rates):
            values.append(LabelledValue(f"position_{i}_rate", r, DEFINITIONS["per_position_rates"]))
    status = d.status
    available = d.available
    if v0_gauge is not None:
        values.append(LabelledValue("v0_gauge", v0_gauge, DEFINITIONS["v0_gauge"]))
        if not d.available:
            status = "old (V0) server: only the cumulative acceptance gauge is available"
            available = True
    return AcceptanceReport(status=status, available=available, num_speculative_tokens=k, values=tuple(values))
