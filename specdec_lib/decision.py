"""The source's decision framework: every condition, a verdict, and the reasons behind it.

The source ("Speculative Decoding on vLLM: A Configuration and Decision Framework", section "Decision
Framework") lists when to use speculative decoding, when to leave it off, a draft-model checklist, and acceptance
bands. Each becomes one `Reason` here: its condition id, whether it passed, failed or is unknown, the number
behind it with its unit, and where that number comes from (`SOURCES`):

- "computed":  derived by the workbook's models (memory plan, load model) from the scenario and the catalogs;
- "measured":  from a measurement run of this exact configuration;
- "predicted": from the acceptance oracle (with bounds);
- "prior":     a published number (its citation in the estimate's origin);
- "assumed":   stated in the scenario by the user.

Two validity gates come before the framework: a configuration vLLM refuses (`vllm_accepts`) and a load beyond
what the deployment can serve (`within_capacity`) each fail with their own words and force "leave off"; an
acceptance figure that does not apply to the scenario (another model, k, method, draft, temperature) is never
used and fails `evidence_applies`.

Verdict (`decide`):
- "leave off"    when any condition with effect "leave off" fails;
- "measure more" when nothing says leave it off but some condition fails or is unknown;
- "use"          when every condition passes.

Acceptance thresholds apply to alpha, the per-token acceptance probability; measured V1 rates are converted
(`speculation.alpha_from_v1_rate`) before any band is applied. Thresholds live in `rules.py`. Pure: `decide`
reads only the scenario and the `Evidence` records the caller (`evaluate.evaluate`) built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specdec_lib.rules import (
    ALPHA_OFF_BELOW,
    ALPHA_WIN_ABOVE,
    CONSISTENT_ALPHA_SPREAD,
    DRAFT_MAX_MEMORY_SHARE,
    HOMOGENEOUS_TEMPERATURE_SPREAD,
    LEAVE_OFF_MEDIAN_TEMPERATURE,
    LONG_CONTEXT_TOKENS,
    LOW_ACCEPTANCE_TRAFFIC_MAX,
    RATIO_MAX,
    RATIO_MIN,
    SIGNIFICANT_SHARE,
    TARGET_CONSTRAINED_MEMORY_SHARE,
    USE_MAX_TEMPERATURE,
    WIDE_TEMPERATURE_SPREAD,
)
from specdec_lib.scenario import Scenario, production_temperature_median

VERDICTS = ("use", "measure more", "leave off")
STATUSES = ("passed", "failed", "unknown")
SOURCES = ("computed", "measured", "predicted", "prior", "assumed")
EFFECTS = ("leave off", "measure more")


@dataclass(frozen=True)
class Reason:
    """One condition of the framework, evaluated. `value` is in base units (fractions, bytes, tokens, x)."""

    condition: str
    group: str          # "validity" | "use it when" | "leave it off when" | "draft checklist" | "acceptance" | "load"
    statement: str      # the source's condition, in words
    status: str         # "passed" | "failed" | "unknown"
    value: float | str | None
    unit: str           # "temperature", "fraction", "bytes", "tokens", "x", "alpha", "ratio", "" ...
    threshold: str      # what passing means, e.g. "<= 0.5"
    source: str         # one of SOURCES
    effect: str         # the verdict this condition forces when it fails: "leave off" | "measure more"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not accepted: one of {', '.join(STATUSES)}")
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is not accepted: one of {', '.join(SOURCES)}")
        if self.effect not in EFFECTS:
            raise ValueError(f"effect={self.effect!r} is not accepted: 'leave off' or 'measure more'")


@dataclass(frozen=True)
class Decision:
    verdict: str
    reasons: tuple[Reason, ...]

    def reason(self, condition: str) -> Reason:
        for r in self.reasons:
            if r.condition == condition:
                return r
        raise KeyError(condition)

    @property
    def deciding(self) -> tuple[Reason, ...]:
        """The reasons that set the verdict (failed ones forcing it, or unknown ones blocking "use")."""
        if self.verdict == "leave off":
            return tuple(r for r in self.reasons if r.status == "failed" and r.effect == "leave off")
        if self.verdict == "measure more":
            return tuple(r for r in self.reasons if r.status != "passed")
        return ()

    def __repr__(self) -> str:
        deciding = ", ".join(r.condition for r in self.deciding) or "every condition passed"
        return f"Decision({self.verdict!r}; deciding: {deciding}; {len(self.reasons)} reasons)"

    def to_frame(self):
        """One row per reason (pandas DataFrame), in the framework's order."""
        import pandas as pd

        from specdec_lib.display import format_reason_value

        return pd.DataFrame([dict(condition=r.condition, group=r.group, statement=r.statement, status=r.status,
                                  value=format_reason_value(r.value, r.unit), threshold=r.threshold,
                                  source=r.source, if_it_fails=r.effect, detail=r.detail,
                                  deciding=r in self.deciding) for r in self.reasons]).set_index("condition")


@dataclass(frozen=True)
class Evidence:
    """What `decide` needs beyond the scenario, as the records that hold it (None: not known, so the condition
    that needs it is "unknown", never a default value).

    target, draft: catalog `ModelSpec`s; memory: `memory.MemoryPlan`; load: `load_forecast.LoadPrediction`;
    acceptance: one `acceptance.ClassAcceptance` per request class (in workload order); vllm_refusals: what
    vLLM 0.32 would refuse at start-up (the memory plan's and the command builder's).
    """

    target: Any = None
    draft: Any = None
    memory: Any = None
    load: Any = None
    acceptance: tuple = ()
    low_acceptance_share: float | None = None   # measured: share of requests with alpha < 0.5
    low_acceptance_origin: str = ""
    same_family_quantized_alternative: str | None = None
    vllm_refusals: tuple[str, ...] = ()
    unused_estimates: tuple[tuple[Any, str], ...] = ()  # (estimate, why) for figures that apply to no class
    notes: tuple[str, ...] = field(default=())


def _reason(condition, group, statement, ok, value, unit, threshold, source, effect, detail="") -> Reason:
    status = "unknown" if ok is None else ("passed" if ok else "failed")
    return Reason(condition, group, statement, status, value, unit, threshold, source, effect, detail)


def _significant(scenario: Scenario):
    return [c for c in scenario.workload if c.share >= SIGNIFICANT_SHARE] or list(scenario.workload)


def class_alphas(scenario: Scenario, evidence: Evidence) -> list[tuple[str, float, float | None, str | None]]:
    """(class name, share, alpha or None, source or None) per request class, as `evidence.acceptance` chose."""
    by_name = {c.request_class: c for c in evidence.acceptance}
    out = []
    for c in scenario.workload:
        choice = by_name.get(c.name)
        out.append((c.name, c.share, choice.alpha if choice else None, choice.source if choice else None))
    return out


def _weakest(sources) -> str:
    ranked = [s for s in sources if s is not None]
    order = ("measured", "predicted", "prior", "assumed")
    return max(ranked, key=order.index) if ranked else "assumed"


def workload_alpha(scenario: Scenario, evidence: Evidence) -> tuple[float | None, str]:
    """Share-weighted alpha of the workload (what an aggregate counter would show) and its least trusted source."""
    per_class = class_alphas(scenario, evidence)
    if any(a is None for _, _, a, _ in per_class):
        return None, _weakest(s for *_, s in per_class)
    return sum(share * a for _, share, a, _ in per_class), _weakest(s for *_, s in per_class)


def decide(scenario: Scenario, evidence: Evidence) -> Decision:
    """Evaluate every condition of the source's framework for this scenario; see the module docstring."""
    reasons = [*_validity(scenario, evidence), *_use_it_when(scenario, evidence),
               *_leave_off_when(scenario, evidence), *_draft_checklist(scenario, evidence),
               *_acceptance(scenario, evidence), *_load(scenario, evidence)]
    return Decision(_verdict(reasons), tuple(reasons))


def _validity(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    refusals = evidence.vllm_refusals
    out = [_reason(
        "vllm_accepts", "validity", "vLLM 0.32 starts this configuration", not refusals,
        "refused" if refusals else "yes", "", "no start-up error", "computed", "leave off",
        "; ".join(refusals) if refusals else "no refusal known to the memory planner or the command builder")]
    unused = evidence.unused_estimates
    out.append(_reason(
        "evidence_applies", "validity", "Every acceptance figure given belongs to this scenario", not unused,
        f"{len(unused)} not used" if unused else "yes", "", "same target, method, draft, k and temperatures",
        unused[0][0].source if unused else "computed", "measure more",
        "; ".join(dict.fromkeys(why for _, why in unused)) if unused else "no figure was set aside"))
    return out


def _use_it_when(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    significant = _significant(scenario)
    temperatures = [c.temperature for c in significant]
    spread = max(temperatures) - min(temperatures)
    median_t = production_temperature_median(scenario)
    out = [_reason(
        "temperature_low", "use it when", "Target temperature <= 0.5 (structured output, code)",
        median_t <= USE_MAX_TEMPERATURE, median_t, "temperature", f"median <= {USE_MAX_TEMPERATURE}", "assumed",
        "measure more", "share-weighted median temperature of the workload"), _reason(
        "temperature_homogeneous", "use it when", "Workload is temperature-homogeneous",
        spread <= HOMOGENEOUS_TEMPERATURE_SPREAD, spread, "temperature",
        f"spread <= {HOMOGENEOUS_TEMPERATURE_SPREAD}", "assumed", "measure more",
        "max - min temperature over request classes with >= 5% of traffic (threshold: our reading)")]
    statement = "Draft uses no more than ~15% of available VRAM"
    if scenario.method in ("ngram", "none"):
        out.append(_reason("draft_memory_share", "use it when", statement, True, 0.0, "fraction",
                           f"<= {DRAFT_MAX_MEMORY_SHARE:.0%}", "computed", "measure more",
                           f"method {scenario.method} loads no draft model"))
    else:
        share = None if evidence.memory is None else evidence.memory.draft_weights_fraction_of_usable
        out.append(_reason("draft_memory_share", "use it when", statement,
                           None if share is None else share <= DRAFT_MAX_MEMORY_SHARE, share, "fraction",
                           f"<= {DRAFT_MAX_MEMORY_SHARE:.0%}", "computed", "measure more",
                           "draft weights / (GPU memory x gpu_memory_utilization), per GPU"))
    out.append(_batch_consistent(scenario, evidence, significant))
    out.append(_validated(scenario, evidence, significant))
    # TPOT/throughput vs TTFT: one condition, listed by the source on both sides; failing it means leave off.
    out.append(_reason(
        "slo_not_ttft", "leave it off when", "Primary SLO is TPOT/throughput, not TTFT",
        scenario.slo != "ttft", scenario.slo, "", "tpot, throughput or e2e", "assumed", "leave off",
        "speculation shortens TPOT; the draft's prefill can lengthen TTFT"))
    return out


def _batch_consistent(scenario: Scenario, evidence: Evidence, significant) -> Reason:
    statement, threshold = "Requests in a batch have similar acceptance rates", f"spread <= {CONSISTENT_ALPHA_SPREAD}"
    if len(significant) == 1:
        return _reason("batch_consistent", "use it when", statement, True, 0.0, "alpha", threshold, "assumed",
                       "measure more", "one request class")
    names = {c.name for c in significant}
    alphas = [(a, s) for name, _, a, s in class_alphas(scenario, evidence) if name in names]
    if any(a is None for a, _ in alphas):
        return _reason("batch_consistent", "use it when", statement, None, None, "alpha", threshold, "assumed",
                       "measure more", "acceptance unknown for some request classes: measure each temperature")
    spread = max(a for a, _ in alphas) - min(a for a, _ in alphas)
    return _reason("batch_consistent", "use it when", statement, spread <= CONSISTENT_ALPHA_SPREAD, spread, "alpha",
                   threshold, _weakest(s for _, s in alphas), "measure more",
                   "max - min per-class alpha (threshold: our reading of 'dramatically different')")


def _validated(scenario: Scenario, evidence: Evidence, significant) -> Reason:
    names = {c.name for c in significant}
    chosen = [c.chosen for c in evidence.acceptance if c.request_class in names]
    if chosen and len(chosen) == len(names) and all(e is not None and e.source == "measured" for e in chosen):
        validated, source = True, "measured"
        detail = "measured at every production temperature: " + ", ".join(sorted({e.origin for e in chosen}))
    else:
        validated, source = scenario.acceptance_validated_at_production_temperature, "assumed"
        measured = [e for c in evidence.acceptance for e in (c.chosen, *c.also_applicable)
                    if e is not None and e.source == "measured"]
        detail = "stated in the scenario" + ("; a measurement covers only some production temperatures"
                                             if measured else "; no measurement of this configuration")
    return _reason("acceptance_validated", "use it when",
                   "Acceptance validated at production temperatures, not only greedy", validated,
                   "yes" if validated else "no", "", "yes", source, "measure more", detail)


def _leave_off_when(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    significant = _significant(scenario)
    temperatures = [c.temperature for c in significant]
    spread = max(temperatures) - min(temperatures)
    median_t = production_temperature_median(scenario)
    plan, forecast = evidence.memory, evidence.load
    fits = None if plan is None else plan.max_concurrent_seqs
    out = [_reason(
        "temperature_median_high", "leave it off when", "Median temperature not above 0.7",
        median_t <= LEAVE_OFF_MEDIAN_TEMPERATURE, median_t, "temperature",
        f"median <= {LEAVE_OFF_MEDIAN_TEMPERATURE}", "assumed", "leave off"), _reason(
        "temperature_varies_widely", "leave it off when", "Temperature does not vary widely across the request mix",
        spread <= WIDE_TEMPERATURE_SPREAD, spread, "temperature", f"spread <= {WIDE_TEMPERATURE_SPREAD}",
        "assumed", "leave off", "threshold: our reading of 'varies widely'"), _reason(
        "memory_fits", "leave it off when", "Target, draft and one full-context request fit in GPU memory",
        None if fits is None else fits >= 1.0, fits, "requests", ">= 1 request of context_len", "computed",
        "leave off", "KV cache capacity with the draft / context_len")]
    target_share = None if plan is None else plan.target_weights_fraction_of_memory
    long_context = scenario.context_len >= LONG_CONTEXT_TOKENS
    if target_share is None:
        constrained = None
    else:
        needed = None if forecast is None else forecast.batch_at_qps
        squeezed = fits is not None and needed is not None and fits < needed
        constrained = target_share > TARGET_CONSTRAINED_MEMORY_SHARE or squeezed
    vram_ok = True if not long_context else (None if constrained is None else not constrained)
    out.append(_reason(
        "vram_long_context", "leave it off when", "Not VRAM-constrained while serving long-context requests",
        vram_ok, target_share, "fraction",
        f"target <= {TARGET_CONSTRAINED_MEMORY_SHARE:.0%} of memory, or context < {LONG_CONTEXT_TOKENS}",
        "computed", "leave off",
        f"context_len {scenario.context_len} tokens ({'long' if long_context else 'not long'}); target weights share "
        f"of GPU memory" + ("" if fits is None else f"; {fits:.1f} full-context requests fit with the draft")))
    out.append(_reason(
        "monitoring_in_place", "leave it off when", "Acceptance-rate monitoring is set up",
        scenario.monitoring_in_place, "yes" if scenario.monitoring_in_place else "no", "", "yes", "assumed",
        "leave off", _monitoring_detail(scenario, evidence)))
    return out


def _monitoring_detail(scenario: Scenario, evidence: Evidence) -> str:
    """What is generated for the operator and what they must still confirm (issue 15): the same plan the memo's
    rule file is built from (`monitoring.plan_for_evaluation` reads the same k and crossover)."""
    from specdec_lib import monitoring  # monitoring reads this module's thresholds: imported here, not above

    if scenario.method == "none":
        return "without it you cannot tell whether speculation helps"
    confirm = monitoring.operator_must_confirm(monitoring.plan_for(scenario, evidence.load))
    return ("without it you cannot tell whether speculation helps. Generated for k="
            f"{scenario.num_speculative_tokens}: a Prometheus rule file and a Grafana dashboard (shipped with the "
            "memo; `specdec monitoring --scenario FILE`). The operator must still confirm: " + " ".join(confirm))


def _draft_checklist(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    if scenario.method != "draft_model":
        return []
    target, draft = evidence.target, evidence.draft
    t_family = None if target is None else target.family
    d_family = None if draft is None else draft.family
    fam_ok = None if t_family is None or d_family is None else t_family == d_family
    ratio = target.params / draft.params if target is not None and draft is not None else None
    tok_ok = None if target is None or draft is None else (target.tokenizer == draft.tokenizer
                                                           and target.vocab_size == draft.vocab_size)
    out = [_reason(
        "draft_same_family", "draft checklist", "Draft from the same model family (training distribution)",
        fam_ok, d_family, "family", f"== {t_family}", "computed", "measure more"), _reason(
        "draft_size_ratio", "draft checklist", "Draft:target size ratio 1:8 to 1:12",
        None if ratio is None else RATIO_MIN <= ratio <= RATIO_MAX, ratio, "ratio",
        f"{RATIO_MIN:g} <= target/draft <= {RATIO_MAX:g}", "computed", "measure more",
        "target parameters / draft parameters"), _reason(
        "draft_same_tokenizer", "draft checklist", "Draft shares the target's tokenizer",
        tok_ok, None if draft is None else draft.tokenizer, "tokenizer",
        f"== {None if target is None else target.tokenizer}", "computed", "leave off",
        "vLLM 0.32 refuses different vocabulary sizes unless use_heterogeneous_vocab (greedy drafts only)")]
    statement = "Quantize a same-family draft before relaxing the family"
    if fam_ok is False:
        alt = evidence.same_family_quantized_alternative
        out.append(_reason("draft_quantize_before_relaxing_family", "draft checklist", statement,
                           alt is None, alt or "none fits", "model", "no same-family draft fits when quantized",
                           "computed", "measure more",
                           "an INT8 same-family draft loses less acceptance than a different family"))
    else:
        out.append(_reason("draft_quantize_before_relaxing_family", "draft checklist", statement,
                           fam_ok, d_family, "family", "family kept", "computed", "measure more",
                           "the family was not relaxed" if fam_ok else "family unknown"))
    return out


def _acceptance(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    alpha, source = workload_alpha(scenario, evidence)
    break_even = None if evidence.load is None else evidence.load.break_even_alpha
    arithmetic = ("" if break_even is None else
                  f"; computed break-even alpha at k={scenario.num_speculative_tokens}, batch 1: {break_even:.2f}")
    if scenario.method == "none":
        ok, effect, detail = False, "leave off", "speculation is off in this scenario"
    elif alpha is None:
        ok, effect, detail = None, "measure more", "acceptance not known: measure it"
    elif break_even is not None and alpha <= break_even:
        ok, effect, detail = False, "leave off", (f"below the computed break-even {break_even:.2f}: the arithmetic "
                                                  "decides (stricter than the source's 0.5 band here)")
    elif alpha < ALPHA_OFF_BELOW:
        ok, effect, detail = False, "leave off", "below 0.5: the source's band decides (speculation adds latency)"
    elif alpha <= ALPHA_WIN_ABOVE:
        ok, effect, detail = False, "measure more", "0.5-0.65: near break-even, measure P99 under load"
    else:
        ok, effect, detail = True, "measure more", "above 0.65: likely a genuine win"
    out = [_reason(
        "acceptance_band", "acceptance", "Per-token acceptance alpha above 0.65 (below 0.5: turn it off)",
        ok, alpha, "alpha", f"> {ALPHA_WIN_ABOVE} (off below {ALPHA_OFF_BELOW})", source, effect,
        detail + arithmetic + " (alpha per token; V1 accepted/draft ratios converted)")]
    per_class = class_alphas(scenario, evidence)
    if evidence.low_acceptance_share is not None:
        low_share, low_source = evidence.low_acceptance_share, "measured"
    elif all(a is not None for _, _, a, _ in per_class):
        low_share = sum(share for _, share, a, _ in per_class if a < ALPHA_OFF_BELOW)
        low_source = _weakest(s for *_, s in per_class)
    else:
        low_share, low_source = None, "assumed"
    out.append(_reason(
        "acceptance_tail", "acceptance", "Less than 10% of traffic below 0.5 acceptance (P10 >= 0.5)",
        None if low_share is None else low_share < LOW_ACCEPTANCE_TRAFFIC_MAX, low_share, "fraction",
        f"< {LOW_ACCEPTANCE_TRAFFIC_MAX:.0%} of requests", low_source, "measure more",
        "aggregate acceptance hides the slow tail: P50 wins while P99 regresses"))
    return out


def _load(scenario: Scenario, evidence: Evidence) -> list[Reason]:
    f = evidence.load
    out = []
    if f is None:
        out.append(_reason("within_capacity", "load", f"The deployment serves {scenario.qps:g} requests/s",
                           None, None, "requests/s", f"capacity > {scenario.qps:g}", "computed", "leave off",
                           "load model not evaluated"))
        out.append(_reason("speedup_at_qps", "load", f"Load model predicts a speedup at {scenario.qps:g} requests/s",
                           None, None, "x", "> 1", "computed", "leave off", "load model not evaluated"))
        return out
    out.append(_reason(
        "within_capacity", "load", f"The deployment serves {scenario.qps:g} requests/s (not saturated)",
        not f.saturated, f.capacity_qps, "requests/s", f"capacity > {scenario.qps:g}", "computed", "leave off",
        f"{f.replicas} replica(s) ({f.replicas_source}) of {f.prompt_tokens} + {f.output_tokens} tokens per "
        f"request (share-weighted); " + (f"saturated: {f.replicas_needed} replicas needed" if f.saturated
                                         else f"{scenario.qps / f.capacity_qps:.0%} of capacity without speculation")))
    if f.saturated:
        ok, value = False, "saturated"
        detail = "no steady state at this load: a queue grows with or without speculation"
    elif f.speedup_at_qps is None:
        ok, value, detail = None, None, "alpha unknown"
    else:
        ok, value = f.speedup_at_qps > 1.0, f.speedup_at_qps
        detail = f"at effective alpha {f.alpha:.2f}, running batch {f.batch_at_qps:.1f} per replica"
    if f.crossover_qps is not None:
        detail = f"crossover at {f.crossover_qps:.3g} requests/s; " + detail
    out.append(_reason("speedup_at_qps", "load", f"Load model predicts a speedup at {scenario.qps:g} requests/s",
                       ok, value, "x", "> 1", "computed", "leave off", detail))
    return out


def _verdict(reasons: list[Reason]) -> str:
    if any(r.status == "failed" and r.effect == "leave off" for r in reasons):
        return "leave off"
    if any(r.status != "passed" for r in reasons):
        return "measure more"
    return "use"


def evaluate(scenario: Scenario, *, run=None) -> tuple[Decision, Evidence]:
    """Compatibility for callers written before `evaluate.evaluate` (the one evaluation path, which new code
    should call): its (decision, evidence)."""
    from specdec_lib.evaluate import evaluate as evaluate_scenario

    ev = evaluate_scenario(scenario, run=run)
    return ev.decision, ev.evidence
