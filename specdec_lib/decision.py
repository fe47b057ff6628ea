"""The source's decision framework: every condition, a verdict, and the reasons behind it.

The source ("Speculative Decoding on vLLM: A Configuration and Decision Framework", section "Decision
Framework") lists when to use speculative decoding, when to leave it off, a draft-model checklist, and acceptance
bands. Each becomes one `Reason` here: its condition id, whether it passed, failed or is unknown, the number
behind it with its unit, and where that number comes from:

- "assumed": stated in the scenario by the user (workload temperatures, SLO kind, monitoring...);
- "computed": derived by the workbook's models (memory plan, load model) from the scenario and the catalogs;
- "measured": from a measurement run against a real server.

Verdict (`decide`):
- "leave off"    when any condition the source lists under "leave it off when" fails (or acceptance is below
                 0.5, or the load model predicts a slowdown at the scenario's QPS);
- "measure more" when nothing says leave it off but some "use it when" condition fails or is unknown
                 (acceptance 0.5-0.65 is the source's "near break-even: measure P99 under real load");
- "use"          when every condition passes.

Acceptance thresholds apply to alpha, the per-token acceptance probability that vLLM V0's gauge estimated, not
to V1's accepted/draft-tokens ratio (which counts only the accepted prefix); measured V1 rates are converted with
`speculation.alpha_from_v1_rate(rate, k)` before any band is applied.

Thresholds the source states only in words ("varies widely", "dramatically different") are constants below,
marked as our reading; change them here, not in the notebooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from specdec_lib.scenario import Scenario, production_temperature_median

# --- thresholds: the source's numbers -------------------------------------------------------------------------
USE_MAX_TEMPERATURE = 0.5             # "target temperature <= 0.5"
LEAVE_OFF_MEDIAN_TEMPERATURE = 0.7    # "your median temperature is above 0.7"
DRAFT_MAX_MEMORY_SHARE = 0.15         # "draft should consume no more than ~15% of total available VRAM"
TARGET_CONSTRAINED_MEMORY_SHARE = 0.70  # "if your target already uses more than 70% of your GPU memory"
LONG_CONTEXT_TOKENS = 32768           # "long-context requests (32K+ tokens)"
RATIO_MIN, RATIO_MAX = 8.0, 12.0      # "1:8-1:12 size ratio"
ALPHA_OFF_BELOW = 0.5                 # "below 0.5 ... disable it"
ALPHA_WIN_ABOVE = 0.65                # "above 0.65, you're likely seeing a genuine benefit"
LOW_ACCEPTANCE_TRAFFIC_MAX = 0.10     # "if P10 of your acceptance distribution is below 0.5": < 10% of traffic
# --- thresholds: our reading of the source's words -----------------------------------------------------------
HOMOGENEOUS_TEMPERATURE_SPREAD = 0.3  # "temperature-homogeneous": classes within 0.3 of each other
WIDE_TEMPERATURE_SPREAD = 0.5         # "temperature varies widely": classes more than 0.5 apart
CONSISTENT_ALPHA_SPREAD = 0.2         # "dramatically different acceptance rates" (its example: 0.80 vs 0.35)
SIGNIFICANT_SHARE = 0.05              # request classes below 5% of traffic do not define the mix
MEASURED_TEMPERATURE_TOLERANCE = 0.05  # a measurement at T counts for a class at T +/- 0.05

VERDICTS = ("use", "measure more", "leave off")
STATUSES = ("passed", "failed", "unknown")
SOURCES = ("computed", "measured", "assumed")


@dataclass(frozen=True)
class Reason:
    """One condition of the framework, evaluated. `value` is in base units (fractions, bytes, tokens, x)."""

    condition: str
    group: str          # "use it when" | "leave it off when" | "draft checklist" | "acceptance" | "load"
    statement: str      # the source's condition, in words
    status: str         # "passed" | "failed" | "unknown"
    value: float | str | None
    unit: str           # "temperature", "fraction", "bytes", "tokens", "x", "alpha", "ratio", "" ...
    threshold: str      # what passing means, e.g. "<= 0.5"
    source: str         # "computed" | "measured" | "assumed"
    effect: str         # the verdict this condition forces when it fails: "leave off" | "measure more"
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status={self.status!r} is not accepted: one of {', '.join(STATUSES)}")
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is not accepted: one of {', '.join(SOURCES)}")
        if self.effect not in ("leave off", "measure more"):
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


@dataclass(frozen=True)
class ClassAcceptance:
    """Measured acceptance for one temperature: the V1 ratio as read, and alpha converted from it."""

    temperature: float
    alpha: float
    v1_rate: float | None = None
    requests: int = 0


@dataclass(frozen=True)
class Evidence:
    """Numbers the framework needs that the scenario does not state: computed by the workbook or measured.

    None means "not known", which makes the condition that needs it "unknown" (never a default value).
    """

    # catalog (computed from the model catalog)
    target_params: int | None = None
    draft_params: int | None = None
    target_family: str | None = None
    draft_family: str | None = None
    target_tokenizer: str | None = None
    draft_tokenizer: str | None = None
    target_vocab_size: int | None = None
    draft_vocab_size: int | None = None
    same_family_quantized_alternative: str | None = None  # a same-family draft that fits if quantized to int8
    # memory plan (computed)
    target_memory_share: float | None = None   # target weights per GPU / GPU memory (the 70% rule)
    draft_memory_share: float | None = None    # draft weights per GPU / memory vLLM may use per GPU (the 15% rule)
    target_weights_bytes: int | None = None
    draft_weights_bytes: int | None = None
    max_concurrent_full_context: float | None = None  # KV capacity with the draft / context_len
    max_concurrent_full_context_without_draft: float | None = None
    # load model (computed)
    needed_batch_at_qps: float | None = None
    cost_ratio: float | None = None
    predicted_speedup_at_qps: float | None = None
    crossover_qps: float | None = None
    crossover_batch: float | None = None
    # measurements (measured)
    measured: tuple[ClassAcceptance, ...] = ()
    measured_low_acceptance_share: float | None = None  # share of measured requests with alpha < 0.5
    run_id: str | None = None
    notes: tuple[str, ...] = field(default=())


def _reason(condition, group, statement, ok, value, unit, threshold, source, effect, detail="") -> Reason:
    status = "unknown" if ok is None else ("passed" if ok else "failed")
    return Reason(condition, group, statement, status, value, unit, threshold, source, effect, detail)


def _significant(scenario: Scenario):
    return [c for c in scenario.workload if c.share >= SIGNIFICANT_SHARE] or list(scenario.workload)


def class_alphas(scenario: Scenario, evidence: Evidence) -> list[tuple[str, float, float | None, str]]:
    """(class name, share, alpha or None, source) per request class: measured at its temperature if a
    measurement lies within MEASURED_TEMPERATURE_TOLERANCE, else the scenario's stated alpha (assumed)."""
    out = []
    for c in scenario.workload:
        near = [m for m in evidence.measured if abs(m.temperature - c.temperature) <= MEASURED_TEMPERATURE_TOLERANCE]
        if near:
            best = min(near, key=lambda m: abs(m.temperature - c.temperature))
            out.append((c.name, c.share, best.alpha, "measured"))
        elif c.alpha is not None:
            out.append((c.name, c.share, c.alpha, "assumed"))
        else:
            out.append((c.name, c.share, None, "assumed"))
    return out


def workload_alpha(scenario: Scenario, evidence: Evidence) -> tuple[float | None, str]:
    """Share-weighted alpha of the workload (what an aggregate counter would show) and its source."""
    per_class = class_alphas(scenario, evidence)
    if any(a is None for _, _, a, _ in per_class):
        return None, "assumed"
    alpha = sum(share * a for _, share, a, _ in per_class)
    source = "measured" if all(s == "measured" for *_, s in per_class) else "assumed"
    return alpha, source


def decide(scenario: Scenario, evidence: Evidence) -> Decision:
    """Evaluate every condition of the source's framework for this scenario; see the module docstring."""
    reasons: list[Reason] = []
    significant = _significant(scenario)
    temperatures = [c.temperature for c in significant]
    spread = max(temperatures) - min(temperatures)
    median_t = production_temperature_median(scenario)

    # --- use it when ---------------------------------------------------------------------------------------
    reasons.append(_reason(
        "temperature_low", "use it when", "Target temperature <= 0.5 (structured output, code)",
        median_t <= USE_MAX_TEMPERATURE, median_t, "temperature", f"median <= {USE_MAX_TEMPERATURE}", "assumed",
        "measure more", "share-weighted median temperature of the workload"))
    reasons.append(_reason(
        "temperature_homogeneous", "use it when", "Workload is temperature-homogeneous",
        spread <= HOMOGENEOUS_TEMPERATURE_SPREAD, spread, "temperature",
        f"spread <= {HOMOGENEOUS_TEMPERATURE_SPREAD}", "assumed", "measure more",
        "max - min temperature over request classes with >= 5% of traffic (threshold: our reading)"))
    if scenario.method in ("ngram", "none"):
        reasons.append(_reason(
            "draft_memory_share", "use it when", "Draft uses no more than ~15% of available VRAM",
            True, 0.0, "fraction", f"<= {DRAFT_MAX_MEMORY_SHARE:.0%}", "computed", "measure more",
            f"method {scenario.method} loads no draft model"))
    else:
        share = evidence.draft_memory_share
        reasons.append(_reason(
            "draft_memory_share", "use it when", "Draft uses no more than ~15% of available VRAM",
            None if share is None else share <= DRAFT_MAX_MEMORY_SHARE, share, "fraction",
            f"<= {DRAFT_MAX_MEMORY_SHARE:.0%}", "computed", "measure more",
            "draft weights / (GPU memory x gpu_memory_utilization), per GPU"))
    per_class = class_alphas(scenario, evidence)
    if len(significant) == 1:
        reasons.append(_reason(
            "batch_consistent", "use it when", "Requests in a batch have similar acceptance rates",
            True, 0.0, "alpha", f"spread <= {CONSISTENT_ALPHA_SPREAD}", "assumed", "measure more",
            "one request class"))
    else:
        sig_names = {c.name for c in significant}
        alphas = [(a, s) for name, _, a, s in per_class if name in sig_names]
        if any(a is None for a, _ in alphas):
            reasons.append(_reason(
                "batch_consistent", "use it when", "Requests in a batch have similar acceptance rates",
                None, None, "alpha", f"spread <= {CONSISTENT_ALPHA_SPREAD}", "assumed", "measure more",
                "acceptance unknown for some request classes: measure each temperature"))
        else:
            a_spread = max(a for a, _ in alphas) - min(a for a, _ in alphas)
            src = "measured" if all(s == "measured" for _, s in alphas) else "assumed"
            reasons.append(_reason(
                "batch_consistent", "use it when", "Requests in a batch have similar acceptance rates",
                a_spread <= CONSISTENT_ALPHA_SPREAD, a_spread, "alpha", f"spread <= {CONSISTENT_ALPHA_SPREAD}",
                src, "measure more", "max - min per-class alpha (threshold: our reading of 'dramatically different')"))
    measured_here = all(
        any(abs(m.temperature - c.temperature) <= MEASURED_TEMPERATURE_TOLERANCE for m in evidence.measured)
        for c in significant)
    if evidence.measured and measured_here:
        validated, vsource = True, "measured"
        vdetail = f"run {evidence.run_id or '?'} measured every production temperature"
    else:
        validated, vsource = scenario.acceptance_validated_at_production_temperature, "assumed"
        vdetail = "stated in the scenario" + ("" if not evidence.measured else
                                              "; the run does not cover every production temperature")
    reasons.append(_reason(
        "acceptance_validated", "use it when", "Acceptance validated at production temperatures, not only greedy",
        validated, "yes" if validated else "no", "", "yes", vsource, "measure more", vdetail))
    # TPOT/throughput vs TTFT: one condition, listed by the source on both sides; failing it means leave off.
    reasons.append(_reason(
        "slo_not_ttft", "leave it off when", "Primary SLO is TPOT/throughput, not TTFT",
        scenario.slo != "ttft", scenario.slo, "", "tpot, throughput or e2e", "assumed", "leave off",
        "speculation shortens TPOT; the draft's prefill can lengthen TTFT"))

    # --- leave it off when -----------------------------------------------------------------------------------
    reasons.append(_reason(
        "temperature_median_high", "leave it off when", "Median temperature not above 0.7",
        median_t <= LEAVE_OFF_MEDIAN_TEMPERATURE, median_t, "temperature",
        f"median <= {LEAVE_OFF_MEDIAN_TEMPERATURE}", "assumed", "leave off"))
    reasons.append(_reason(
        "temperature_varies_widely", "leave it off when", "Temperature does not vary widely across the request mix",
        spread <= WIDE_TEMPERATURE_SPREAD, spread, "temperature", f"spread <= {WIDE_TEMPERATURE_SPREAD}",
        "assumed", "leave off", "threshold: our reading of 'varies widely'"))
    fits = evidence.max_concurrent_full_context
    reasons.append(_reason(
        "memory_fits", "leave it off when", "Target, draft and one full-context request fit in GPU memory",
        None if fits is None else fits >= 1.0, fits, "requests", ">= 1 request of context_len", "computed",
        "leave off", "KV cache capacity with the draft / context_len"))
    target_share = evidence.target_memory_share
    long_context = scenario.context_len >= LONG_CONTEXT_TOKENS
    if target_share is None:
        constrained = None
    else:
        squeezed = (fits is not None and evidence.needed_batch_at_qps is not None
                    and fits < evidence.needed_batch_at_qps)
        constrained = target_share > TARGET_CONSTRAINED_MEMORY_SHARE or squeezed
    vram_ok = True if not long_context else (None if constrained is None else not constrained)
    reasons.append(_reason(
        "vram_long_context", "leave it off when", "Not VRAM-constrained while serving long-context requests",
        vram_ok, target_share, "fraction",
        f"target <= {TARGET_CONSTRAINED_MEMORY_SHARE:.0%} of memory, or context < {LONG_CONTEXT_TOKENS}",
        "computed", "leave off",
        f"context_len {scenario.context_len} tokens ({'long' if long_context else 'not long'}); target weights share "
        f"of GPU memory" + ("" if fits is None else f"; {fits:.1f} full-context requests fit with the draft")))
    reasons.append(_reason(
        "monitoring_in_place", "leave it off when", "Acceptance-rate monitoring is set up",
        scenario.monitoring_in_place, "yes" if scenario.monitoring_in_place else "no", "", "yes", "assumed",
        "leave off", "without it you cannot tell whether speculation helps"))

    # --- draft checklist ---------------------------------------------------------------------------------------
    if scenario.method in ("draft_model",):
        fam_ok = (None if evidence.target_family is None or evidence.draft_family is None
                  else evidence.target_family == evidence.draft_family)
        reasons.append(_reason(
            "draft_same_family", "draft checklist", "Draft from the same model family (training distribution)",
            fam_ok, evidence.draft_family, "family", f"== {evidence.target_family}", "computed", "measure more"))
        ratio = (evidence.target_params / evidence.draft_params
                 if evidence.target_params and evidence.draft_params else None)
        reasons.append(_reason(
            "draft_size_ratio", "draft checklist", "Draft:target size ratio 1:8 to 1:12",
            None if ratio is None else RATIO_MIN <= ratio <= RATIO_MAX, ratio, "ratio",
            f"{RATIO_MIN:g} <= target/draft <= {RATIO_MAX:g}", "computed", "measure more",
            "target parameters / draft parameters"))
        tok_known = evidence.target_tokenizer is not None and evidence.draft_tokenizer is not None
        tok_ok = None if not tok_known else (evidence.target_tokenizer == evidence.draft_tokenizer
                                             and evidence.target_vocab_size == evidence.draft_vocab_size)
        reasons.append(_reason(
            "draft_same_tokenizer", "draft checklist", "Draft shares the target's tokenizer",
            tok_ok, evidence.draft_tokenizer, "tokenizer", f"== {evidence.target_tokenizer}", "computed", "leave off",
            "vLLM 0.32 refuses different vocabulary sizes unless use_heterogeneous_vocab (greedy drafts only)"))
        if fam_ok is False:
            alt = evidence.same_family_quantized_alternative
            reasons.append(_reason(
                "draft_quantize_before_relaxing_family", "draft checklist",
                "Quantize a same-family draft before relaxing the family",
                alt is None, alt or "none fits", "model", "no same-family draft fits when quantized", "computed",
                "measure more", "an INT8 same-family draft loses less acceptance than a different family"))
        else:
            reasons.append(_reason(
                "draft_quantize_before_relaxing_family", "draft checklist",
                "Quantize a same-family draft before relaxing the family",
                fam_ok, evidence.draft_family, "family", "family kept", "computed", "measure more",
                "the family was not relaxed" if fam_ok else "family unknown"))

    # --- acceptance bands ----------------------------------------------------------------------------------------
    alpha, alpha_source = workload_alpha(scenario, evidence)
    if scenario.method == "none":
        band_ok, band_effect, band_detail = False, "leave off", "speculation is off in this scenario"
    elif alpha is None:
        band_ok, band_effect, band_detail = None, "measure more", "acceptance not known: measure it"
    elif alpha < ALPHA_OFF_BELOW:
        band_ok, band_effect, band_detail = False, "leave off", "below 0.5: speculation adds latency"
    elif alpha <= ALPHA_WIN_ABOVE:
        band_ok, band_effect, band_detail = False, "measure more", "0.5-0.65: near break-even, measure P99 under load"
    else:
        band_ok, band_effect, band_detail = True, "measure more", "above 0.65: likely a genuine win"
    reasons.append(_reason(
        "acceptance_band", "acceptance", "Per-token acceptance alpha above 0.65 (below 0.5: turn it off)",
        band_ok, alpha, "alpha", f"> {ALPHA_WIN_ABOVE} (off below {ALPHA_OFF_BELOW})", alpha_source, band_effect,
        band_detail + " (alpha per token; V1 accepted/draft ratios converted)"))
    if evidence.measured_low_acceptance_share is not None:
        low_share, low_source = evidence.measured_low_acceptance_share, "measured"
    elif all(a is not None for _, _, a, _ in per_class):
        low_share = sum(share for _, share, a, _ in per_class if a < ALPHA_OFF_BELOW)
        low_source = "measured" if all(s == "measured" for *_, s in per_class) else "assumed"
    else:
        low_share, low_source = None, "assumed"
    reasons.append(_reason(
        "acceptance_tail", "acceptance", "Less than 10% of traffic below 0.5 acceptance (P10 >= 0.5)",
        None if low_share is None else low_share < LOW_ACCEPTANCE_TRAFFIC_MAX, low_share, "fraction",
        f"< {LOW_ACCEPTANCE_TRAFFIC_MAX:.0%} of requests", low_source, "measure more",
        "aggregate acceptance hides the slow tail: P50 wins while P99 regresses"))

    # --- load model -------------------------------------------------------------------------------------------------
    speed = evidence.predicted_speedup_at_qps
    reasons.append(_reason(
        "speedup_at_qps", "load", f"Load model predicts a speedup at {scenario.qps:g} requests/s",
        None if speed is None else speed > 1.0, speed, "x", "> 1", "computed", "leave off",
        ("" if evidence.crossover_qps is None else f"crossover at {evidence.crossover_qps:.3g} requests/s; ")
        + ("alpha unknown" if speed is None else f"at alpha {alpha:.2f}" if alpha is not None else "")))

    return Decision(_verdict(reasons), tuple(reasons))


def _verdict(reasons: list[Reason]) -> str:
    if any(r.status == "failed" and r.effect == "leave off" for r in reasons):
        return "leave off"
    if any(r.status != "passed" for r in reasons):
        return "measure more"
    return "use"


# --- gathering the evidence: catalog + memory plan + load model + a measurement run ---------------------------

def measured_acceptance(run, k: int | None = None) -> tuple[tuple[ClassAcceptance, ...], float | None]:
    """Per-temperature alpha from a loaded run (`runs.load_run`), and the share of requests with alpha < 0.5.

    Counter-based: V1 rate = accepted / draft tokens summed over the run's intervals at one temperature, then
    alpha = speculation.alpha_from_v1_rate(rate, k). Per-request rates (V1 definition, from the response's
    spec-decode metrics or from tokens per chunk) give the low-acceptance share. k comes from the run's
    counters (num_speculative_tokens) unless given.
    """
    from specdec_lib import runs, speculation

    summary = runs.summarise(run)
    by_temperature: dict[float, list[dict]] = {}
    for label, group in summary["groups"].items():
        t = group.get("temperature")
        if t is None:
            continue
        by_temperature.setdefault(float(t), []).append(group)
    out: list[ClassAcceptance] = []
    k_run = k
    for t in sorted(by_temperature):
        groups = by_temperature[t]
        draft = sum(g["acceptance"]["draft_tokens"] for g in groups)
        accepted = sum(g["acceptance"]["accepted_tokens"] for g in groups)
        kk = k or next((g["acceptance"]["num_speculative_tokens"] for g in groups
                        if g["acceptance"]["num_speculative_tokens"]), None)
        k_run = k_run or kk
        if draft <= 0 or not kk:
            continue
        rate = accepted / draft
        out.append(ClassAcceptance(temperature=t, alpha=speculation.alpha_from_v1_rate(rate, kk), v1_rate=rate,
                                   requests=sum(g["latency"]["succeeded"] for g in groups)))
    rates = [r["acceptance_rate"] for r in run.records
             if r.get("error") is None and r.get("acceptance_rate") is not None]
    low_share = None
    if rates and k_run:
        low = sum(1 for r in rates if speculation.alpha_from_v1_rate(min(max(r, 0.0), 1.0), k_run) < ALPHA_OFF_BELOW)
        low_share = low / len(rates)
    return tuple(out), low_share


def same_family_quantized_alternative(scenario: Scenario) -> str | None:
    """A catalog model of the target's family, 1:8-1:12 of its size, whose INT8 weights stay within 15% of the
    memory left after the target: the draft to try before relaxing the family. None if there is none."""
    from specdec_lib import catalog, memory

    target = catalog.get_model(scenario.target_model)
    gpu = catalog.get_gpu(scenario.gpu)
    int8 = catalog.get_precision("int8")
    target_bytes = memory.weight_bytes(target, catalog.get_precision(scenario.target_precision),
                                       scenario.tensor_parallel_size)
    available = gpu.memory_bytes * scenario.gpu_memory_utilization - target_bytes
    for name, model in sorted(catalog.models().items(), key=lambda kv: -kv[1].params):
        if model.family != target.family or model.name == target.name:
            continue
        ratio = target.params / model.params
        if not RATIO_MIN <= ratio <= RATIO_MAX:
            continue
        try:
            draft_bytes = memory.weight_bytes(model, int8, scenario.draft_tensor_parallel_size)
        except ValueError:
            continue
        if available > 0 and draft_bytes / available <= DRAFT_MAX_MEMORY_SHARE:
            return name
    return None


def evidence_for(scenario: Scenario, *, run=None, memory_plan=None, load_prediction=None) -> Evidence:
    """Everything `decide` needs beyond the scenario: catalog facts, the memory plan, the load model's
    prediction (a `LoadPrediction`, see `predict_load`) and, if a run is given, measured acceptance."""
    from specdec_lib import catalog

    target = catalog.get_model(scenario.target_model)
    draft = catalog.get_model(scenario.draft_model) if scenario.draft_model else None
    plan = memory_plan if memory_plan is not None else plan_memory_for(scenario)
    measured: tuple[ClassAcceptance, ...] = ()
    low_share = None
    run_id = None
    if run is not None:
        measured, low_share = measured_acceptance(run, k=None)
        run_id = run.metadata.get("run_id")
    alt = None
    if draft is not None and draft.family != target.family:
        alt = same_family_quantized_alternative(scenario)
    lp = load_prediction
    return Evidence(
        target_params=target.params, draft_params=draft.params if draft else None,
        target_family=target.family, draft_family=draft.family if draft else None,
        target_tokenizer=target.tokenizer, draft_tokenizer=draft.tokenizer if draft else None,
        target_vocab_size=target.vocab_size, draft_vocab_size=draft.vocab_size if draft else None,
        same_family_quantized_alternative=alt,
        target_memory_share=plan.target_weights_fraction_of_memory,
        draft_memory_share=plan.draft_weights_fraction_of_usable,  # the reading is explained in memory.MemoryPlan
        target_weights_bytes=plan.target_weights_bytes, draft_weights_bytes=plan.draft_weights_bytes,
        max_concurrent_full_context=plan.max_concurrent_seqs,
        max_concurrent_full_context_without_draft=plan.max_concurrent_seqs_without_draft,
        needed_batch_at_qps=lp.batch_at_qps if lp else None,
        cost_ratio=lp.cost_ratio if lp else None,
        predicted_speedup_at_qps=lp.speedup_at_qps if lp else None,
        crossover_qps=lp.crossover_qps if lp else None,
        crossover_batch=lp.crossover_batch if lp else None,
        measured=measured, measured_low_acceptance_share=low_share, run_id=run_id,
        notes=tuple(lp.notes) if lp else ("load model not evaluated",))


def plan_memory_for(scenario: Scenario):
    """`memory.plan_memory` with the scenario's fields."""
    from specdec_lib import memory

    return memory.plan_memory(
        scenario.target_model, scenario.draft_model, gpu=scenario.gpu,
        num_gpus=scenario.num_gpus, tp=scenario.tensor_parallel_size,
        draft_tp=scenario.draft_tensor_parallel_size if scenario.draft_model else None,
        target_precision=scenario.target_precision, draft_precision=scenario.draft_precision,
        gpu_memory_utilization=scenario.gpu_memory_utilization, kv_cache_dtype=scenario.kv_cache_dtype,
        context_len=scenario.context_len)


@dataclass(frozen=True)
class LoadPrediction:
    """The load model's numbers for one scenario (computed by `load.py`; see `predict_load`)."""

    alpha: float | None
    cost_ratio: float | None                  # draft/target step time at batch 1 (the paper's c)
    batch_at_qps: float | None                # running batch size at the scenario's QPS
    speedup_at_qps: float | None
    crossover_batch: float | None             # batch size where the predicted speedup falls to 1
    crossover_qps: float | None
    curve_x: tuple[float, ...] = ()           # request rates for the chart
    curves: dict = field(default_factory=dict)  # label -> speedups over curve_x
    notes: tuple[str, ...] = ()


def with_load(evidence: Evidence, prediction: LoadPrediction) -> Evidence:
    """The evidence with the load model's numbers filled in."""
    import dataclasses

    return dataclasses.replace(
        evidence, needed_batch_at_qps=prediction.batch_at_qps, cost_ratio=prediction.cost_ratio,
        predicted_speedup_at_qps=prediction.speedup_at_qps, crossover_qps=prediction.crossover_qps,
        crossover_batch=prediction.crossover_batch, notes=evidence.notes + prediction.notes)


LOAD_METHODS = {"draft_model": "draft_model", "eagle": "eagle", "eagle3": "eagle", "ngram": "ngram"}
ILLUSTRATIVE_ALPHAS = (0.5, 0.65, 0.8)


def load_workload(scenario: Scenario):
    """The load model's single request shape: share-weighted mean prompt and output tokens."""
    from specdec_lib import load

    prompt = round(sum(c.share * c.prompt_tokens for c in scenario.workload))
    output = round(sum(c.share * c.output_tokens for c in scenario.workload))
    return load.Workload(prompt_tokens=max(1, prompt), output_tokens=max(1, output))


def deployment_for(scenario: Scenario):
    """`load.Deployment` for the scenario (catalog lookups; ValueError for unknown names)."""
    from specdec_lib import catalog, load, memory

    if scenario.method not in LOAD_METHODS:
        raise ValueError(f"method={scenario.method!r}: the load model covers {', '.join(LOAD_METHODS)}")
    method = LOAD_METHODS[scenario.method]
    kwargs = {}
    if method == "draft_model":
        kwargs = dict(draft=catalog.get_model(scenario.draft_model),
                      draft_precision=catalog.get_precision(scenario.draft_precision),
                      draft_tp=scenario.draft_tensor_parallel_size)
    return load.Deployment(target=catalog.get_model(scenario.target_model),
                           target_precision=catalog.get_precision(scenario.target_precision),
                           gpu=catalog.get_gpu(scenario.gpu), tp=scenario.tensor_parallel_size, method=method,
                           kv_dtype_bytes=memory.kv_dtype_bytes(scenario.kv_cache_dtype), **kwargs)


def predict_load(scenario: Scenario, *, alpha: float | None, memory_plan=None, curve_points: int = 24) -> LoadPrediction:
    """The load model (`load.py`) at the scenario's QPS: c at batch 1, running batch, speedup, crossovers, and
    speedup-vs-QPS curves (for alpha, or for illustrative alphas 0.5/0.65/0.8 when alpha is unknown).

    The batch cap is vLLM's max_num_seqs or what the KV cache holds at the workload's mean request length,
    whichever is smaller (from the memory plan when given).
    """
    from specdec_lib import load

    dep = deployment_for(scenario)
    wl = load_workload(scenario)
    k = scenario.num_speculative_tokens
    max_batch = 256
    notes = [f"load model: {dep.factors.source}"]
    if memory_plan is not None:
        per_request = wl.prompt_tokens + wl.output_tokens
        kv_requests = memory_plan.kv_capacity_tokens // per_request
        max_batch = max(1, min(memory_plan.max_num_seqs, kv_requests))
        notes.append(f"running batch capped at {max_batch} (max_num_seqs {memory_plan.max_num_seqs}, KV cache "
                     f"{kv_requests} requests of {per_request} tokens)")
    c = load.cost_ratio(dep, 1, wl.mean_context_len)
    batch = speedup = crossover_b = crossover_q = None
    if alpha is not None:
        result = load.speedup_at_qps(dep, scenario.qps, wl, alpha, k, max_batch=max_batch)
        batch, speedup = result.speculative.batch_size, result.speedup
        crossover_b = load.crossover_batch(dep, alpha, k, wl.mean_context_len, max_batch=max(max_batch, 2))
        crossover_q = load.crossover_qps(dep, wl, alpha, k, max_batch=max_batch)
    else:
        batch = load.batch_from_qps(dep, scenario.qps, wl, speculative=False, max_batch=max_batch).batch_size
    capacity = load.capacity_qps(dep, wl, speculative=False, max_batch=max_batch)
    lo, hi = capacity / 1000.0, capacity * 0.98  # up to the baseline's capacity: beyond it both queues grow
    xs = tuple(lo * (hi / lo) ** (i / (curve_points - 1)) for i in range(curve_points)) if curve_points > 1 else ()
    curves = {}
    for a in ((alpha,) if alpha is not None else ILLUSTRATIVE_ALPHAS) if xs else ():
        ys = []
        for q in xs:
            s = load.speedup_at_qps(dep, q, wl, a, k, max_batch=max_batch).speedup
            ys.append(s if math.isfinite(s) else None)
        curves[f"alpha {a:.2f}"] = ys
    return LoadPrediction(alpha=alpha, cost_ratio=c, batch_at_qps=batch, speedup_at_qps=speedup,
                          crossover_batch=crossover_b, crossover_qps=crossover_q, curve_x=xs, curves=curves,
                          notes=tuple(notes))


def evaluate(scenario: Scenario, *, run=None) -> tuple[Decision, Evidence]:
    """Plan memory, gather evidence (with a run's measurements if given), run the load model, decide.

    A scenario the catalog or memory model cannot plan (unknown model, does not fit the TP...) raises ValueError
    naming the field: the caller reports it (the memo shows it; the CLI exits 2).
    """
    plan = plan_memory_for(scenario)
    evidence = evidence_for(scenario, run=run, memory_plan=plan)
    alpha, _ = workload_alpha(scenario, evidence)
    if scenario.method != "none":
        evidence = with_load(evidence, predict_load(scenario, alpha=alpha, memory_plan=plan, curve_points=0))
    return decide(scenario, evidence), evidence
