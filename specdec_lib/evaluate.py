"""The one path from a scenario to a verdict: every page, the memo and the CLI render one `Evaluation`.

    scenario --(catalog, at this edge)--> models, GPU, precisions
             --> memory plan (memory.plan_memory)
             --> acceptance per request class (acceptance.choose over the estimates given)
             --> load prediction per class and for the mix, with capacity (load_forecast.forecast)
             --> reasons and verdict (decision.decide)
             --> the vLLM command, or why it will not start (vllm_command)

Use:

    from specdec_lib.evaluate import evaluate
    ev = evaluate(scenario, estimates=oracle_estimates, run=measurement_run, calibration=my_factors)
    ev.verdict, ev.decision.deciding, ev.load.crossover_batch, ev.command.shell(), ev.to_frame()

A scenario the catalog or the memory model cannot plan (an unknown model, a TP the heads do not divide) does
not raise: the Evaluation carries the error text (`memory_error`, `load_error`) and the conditions that need
those numbers are "unknown".
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import Any, Sequence

from specdec_lib import acceptance, decision, load, load_forecast, rules, vllm_command
from specdec_lib.evidence import AcceptanceEstimate
from specdec_lib.scenario import Scenario

LOAD_METHODS = {"draft_model": "draft_model", "eagle": "eagle", "eagle3": "eagle", "ngram": "ngram", "none": "none"}


@dataclass(frozen=True)
class Evaluation:
    """Everything known about one scenario, computed once. Render it; never recompute beside it."""

    scenario: Scenario
    decision: decision.Decision
    evidence: decision.Evidence
    calibration: str                      # `StepFactors.source` of the step-time factors the load model used
    command: vllm_command.ServeCommand | None
    command_error: str | None             # why no command could be written
    legacy_command: vllm_command.ServeCommand | None
    legacy_error: str | None
    memory_error: str | None = None
    load_error: str | None = None
    run: Any = None                       # the measurement run given, if any (`runs.Run`)
    estimates: tuple = ()                 # every AcceptanceEstimate given (the run's included): the methods compared
    step_factors: Any = None              # the `load.StepFactors` behind `calibration`

    # --- the records, by name ------------------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        return self.decision.verdict

    @property
    def title(self) -> str:
        return self.scenario.display_title

    @property
    def memory(self):
        return self.evidence.memory

    @property
    def load(self) -> load_forecast.LoadPrediction | None:
        return self.evidence.load

    @property
    def acceptance(self) -> tuple[acceptance.ClassAcceptance, ...]:
        return self.evidence.acceptance

    @property
    def refusals(self) -> tuple[str, ...]:
        """What vLLM 0.32 would refuse at start-up: when not empty, the command will not start."""
        return self.evidence.vllm_refusals

    @property
    def command_will_start(self) -> bool:
        return self.command is not None and not self.refusals

    @property
    def workload_alpha(self) -> tuple[float | None, str]:
        return decision.workload_alpha(self.scenario, self.evidence)

    # --- figures that every face shows ------------------------------------------------------------------------
    def speedup_vs_alpha(self, alphas: Sequence[float] | None = None) -> dict[int, list[float]]:
        """Speedup at batch 1 over alpha for k-2, k, k+2 with this deployment's c (Leviathan et al. Thm 3.8)."""
        from specdec_lib import speculation

        if self.load is None or self.scenario.method == "none":
            return {}
        alphas = alphas if alphas is not None else [i / 100 for i in range(100)]
        k = self.scenario.num_speculative_tokens
        return {kk: [speculation.speedup(a, kk, self.load.cost_ratio) for a in alphas]
                for kk in sorted({max(1, k - 2), k, k + 2})}

    def speedup_at_batch1(self, alpha: float) -> float | None:
        """Leviathan's speedup at batch 1 for `alpha` with this deployment's c and k (None without a load model)."""
        from specdec_lib import speculation

        if self.load is None or self.scenario.method == "none":
            return None
        return speculation.speedup(alpha, self.scenario.num_speculative_tokens, self.load.cost_ratio)

    def k_schedule(self):
        """`num_speculative_tokens_per_batch_size` from the mix's crossover batch (None: no schedule)."""
        crossover = None if self.load is None else self.load.crossover_batch
        return vllm_command.k_schedule(crossover, self.scenario.num_speculative_tokens)

    # --- the methods compared (issue 13) -----------------------------------------------------------------------
    @functools.cached_property
    def methods(self):
        """Every speculative method that applies to the target, side by side, and the pick
        (`methods_compare.compare_methods` over this scenario and these estimates): computed on first use, once, so
        a face that does not show it does not pay for it. The scenario's own method row carries this Evaluation's
        load figures; published priors fill the other methods' acceptance and never reach the verdict."""
        from specdec_lib.methods_compare import CURVE_POINTS, compare_methods

        return compare_methods(self.scenario, estimates=self.estimates, evaluation=self, curve_points=CURVE_POINTS)

    # --- pandas and printing ----------------------------------------------------------------------------------
    def to_frame(self):
        """The reasons as a DataFrame (see also `.load.to_frame()`, `.acceptance_frame()`, `.memory_frame()`)."""
        return self.decision.to_frame()

    def acceptance_frame(self):
        import pandas as pd

        return pd.DataFrame([dict(request_class=c.request_class, share=c.share, temperature=c.temperature,
                                  alpha=c.alpha, source=c.source, used=c.describe(),
                                  also=[acceptance.describe_estimate(e) for e in c.also_applicable],
                                  rejected=[why for _, why in c.rejected]) for c in self.acceptance]
                            ).set_index("request_class")

    def memory_frame(self):
        import pandas as pd

        return self.memory.to_frame() if self.memory is not None else pd.DataFrame()

    def __repr__(self) -> str:
        deciding = ", ".join(r.condition for r in self.decision.deciding) or "every condition passed"
        speed = "no load prediction" if self.load is None else repr(self.load)
        return f"Evaluation({self.title!r}: {self.verdict.upper()}; deciding: {deciding}; {speed})"

    def _repr_html_(self) -> str:
        from specdec_lib.report import verdict_html

        return f"<h4>{html.escape(self.title)}</h4>" + verdict_html(self)


def deployment_for(scenario: Scenario, target, draft, calibration: load.StepFactors) -> load.Deployment:
    """`load.Deployment` for the scenario with resolved catalog records."""
    from specdec_lib import catalog, memory

    method = LOAD_METHODS[scenario.method]
    kwargs = {}
    if method == "draft_model":
        kwargs = dict(draft=draft, draft_precision=catalog.get_precision(scenario.draft_precision),
                      draft_tp=scenario.draft_tensor_parallel_size)
    return load.Deployment(target=target, target_precision=catalog.get_precision(scenario.target_precision),
                           gpu=catalog.get_gpu(scenario.gpu), tp=scenario.tensor_parallel_size, method=method,
                           kv_dtype_bytes=memory.kv_dtype_bytes(scenario.kv_cache_dtype), factors=calibration,
                           **kwargs)


def plan_memory_for(scenario: Scenario, target=None, draft=None):
    """`memory.plan_memory` with the scenario's fields; catalog names are resolved here, once (the memory model
    takes records)."""
    from specdec_lib import catalog, memory

    target = target if target is not None else catalog.get_model(scenario.target_model)
    if draft is None and scenario.draft_model:
        draft = catalog.get_model(scenario.draft_model)
    return memory.plan_memory(
        target, draft, gpu=catalog.get_gpu(scenario.gpu), num_gpus=scenario.num_gpus,
        tp=scenario.tensor_parallel_size,
        draft_tp=scenario.draft_tensor_parallel_size if draft is not None else None,
        target_precision=catalog.get_precision(scenario.target_precision),
        draft_precision=catalog.get_precision(scenario.draft_precision),
        gpu_memory_utilization=scenario.gpu_memory_utilization, kv_cache_dtype=scenario.kv_cache_dtype,
        context_len=scenario.context_len)


def same_family_quantized_alternative(scenario: Scenario, target) -> str | None:
    """A catalog model of the target's family, 1:8-1:12 of its size, whose INT8 weights stay within 15% of the
    memory left after the target: the draft to try before relaxing the family. None if there is none."""
    from specdec_lib import catalog, memory

    gpu = catalog.get_gpu(scenario.gpu)
    int8 = catalog.get_precision("int8")
    target_bytes = memory.weight_bytes(target, catalog.get_precision(scenario.target_precision),
                                       scenario.tensor_parallel_size)
    available = gpu.memory_bytes * scenario.gpu_memory_utilization - target_bytes
    for name, model in sorted(catalog.models().items(), key=lambda kv: -kv[1].params):
        if model.family != target.family or model.name == target.name:
            continue
        if not rules.RATIO_MIN <= target.params / model.params <= rules.RATIO_MAX:
            continue
        try:
            draft_bytes = memory.weight_bytes(model, int8, scenario.draft_tensor_parallel_size)
        except ValueError:
            continue
        if available > 0 and draft_bytes / available <= rules.DRAFT_MAX_MEMORY_SHARE:
            return name
    return None


def low_acceptance_share(run, choices) -> tuple[float | None, str]:
    """Share of a run's requests with per-request alpha < 0.5, when the run is the evidence used for some class."""
    used = {e.origin for c in choices for e in (c.chosen,) if e is not None and e.source == "measured"}
    if run is None or not used:
        return None, ""
    alphas = acceptance.per_request_alphas(run)
    if not alphas:
        return None, ""
    return sum(1 for a in alphas if a < rules.ALPHA_OFF_BELOW) / len(alphas), ", ".join(sorted(used))


def _commands(scenario: Scenario, crossover_batch):
    command = legacy = command_error = legacy_error = None
    try:
        command = vllm_command.serve_command(scenario, crossover_batch=crossover_batch)
    except ValueError as exc:
        command_error = str(exc)
    try:
        legacy = vllm_command.legacy_command(scenario, crossover_batch=crossover_batch)
    except ValueError as exc:
        legacy_error = str(exc)
    return command, command_error, legacy, legacy_error


def _unused(pool, choices) -> tuple[tuple[AcceptanceEstimate, str], ...]:
    """(estimate, why) for every given estimate that applies to no request class."""
    out = []
    for e in pool:
        if any(e is c.chosen or any(e is a for a in c.also_applicable) for c in choices):
            continue
        why = next((w for c in choices for r, w in c.rejected if r is e), "applies to no request class")
        out.append((e, why))
    return tuple(out)


def _resolve(scenario: Scenario):
    """(target, draft, target error, draft error): catalog records for the scenario's model names, resolved once.
    An EAGLE head outside the catalog leaves the memory plan unknown (said), not the load model, which models the
    head as one decoder layer of the target's shape."""
    from specdec_lib import catalog

    try:
        target = catalog.get_model(scenario.target_model)
    except ValueError as exc:
        return None, None, str(exc), None
    try:
        draft = catalog.get_model(scenario.draft_model) if scenario.draft_model else None
    except ValueError as exc:
        return target, None, None, str(exc)
    return target, draft, None, None


def evaluate(scenario: Scenario, *, estimates: Sequence[AcceptanceEstimate] = (), run=None,
             calibration: load.StepFactors | None = None, curve_points: int = load_forecast.CURVE_POINTS
             ) -> Evaluation:
    """Scenario -> memory plan -> acceptance per class -> load prediction -> verdict -> vLLM command.

    estimates: acceptance figures from any producer (oracle "predicted", drafter catalog "prior", measured
    runs); the scenario's own per-class alpha is added as "assumed". run: a measurement run (`runs.load_run`),
    converted with `acceptance.estimates_from_run` and added to `estimates`. calibration: step-time factors for
    the load model (default `load.DEFAULT_FACTORS`, the H100 calibration); its `source` is reported.
    """
    calibration = calibration or load.DEFAULT_FACTORS
    pool = tuple(estimates) + (acceptance.estimates_from_run(run) if run is not None else ())
    choices = acceptance.choose(scenario, pool)
    unused = _unused(pool, choices)
    target, draft, memory_error, draft_error = _resolve(scenario)
    plan = forecast = None
    load_error = None
    refusals: list[str] = []
    alternative = None
    if target is not None:
        if draft_error:
            memory_error = draft_error
        else:
            try:
                plan = plan_memory_for(scenario, target, draft)
                refusals += list(plan.vllm_errors)
            except ValueError as exc:
                memory_error = str(exc)
        try:
            if draft_error and scenario.method == "draft_model":
                raise ValueError(draft_error)
            dep = deployment_for(scenario, target, draft, calibration)
            forecast = load_forecast.forecast(dep, scenario, [c.alpha for c in choices], memory_plan=plan,
                                              curve_points=curve_points)
        except ValueError as exc:
            load_error = str(exc)
        if draft is not None and draft.family != target.family:
            alternative = same_family_quantized_alternative(scenario, target)
    elif memory_error:
        load_error = memory_error
    command, command_error, legacy, legacy_error = _commands(
        scenario, None if forecast is None else forecast.crossover_batch)
    if command_error and command_error not in refusals:
        refusals.append(command_error)
    low_share, low_origin = low_acceptance_share(run, choices)
    evidence = decision.Evidence(
        target=target, draft=draft, memory=plan, load=forecast, acceptance=choices, low_acceptance_share=low_share,
        low_acceptance_origin=low_origin, same_family_quantized_alternative=alternative,
        vllm_refusals=tuple(refusals), unused_estimates=unused,
        notes=tuple(n for n in (memory_error, load_error) if n))
    return Evaluation(scenario=scenario, decision=decision.decide(scenario, evidence), evidence=evidence,
                      calibration=calibration.source, command=command, command_error=command_error,
                      legacy_command=legacy, legacy_error=legacy_error, memory_error=memory_error,
                      load_error=load_error, run=run, estimates=pool, step_factors=calibration)
