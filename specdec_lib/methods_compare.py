"""The methods that apply to a scenario's target, side by side, and the one to run.

The source answers "n-gram or a draft model?". The same question over every method vLLM 0.32 runs becomes one
rule (``RULE``), applied in ``compare_methods``:

1. A method applies when its drafter exists for the target: a draft model named by the scenario (same vocabulary
   size, or vLLM refuses it), an EAGLE/EAGLE-3 head or MTP module in data/drafters.csv trained for this target;
   n-gram and suffix always apply (no weights).
2. It must fit: the head's or draft's weights and KV layers come out of the KV cache (methods.method_memory); a
   method whose running-batch cap (KV capacity at the workload's request length) is below the batch the QPS
   needs is marked so.
3. Among the rest the highest predicted speedup at the scenario's QPS wins (load.speedup_at_qps, each method at
   its own k up to the scenario's num_speculative_tokens, chosen at the baseline's running batch).
4. Within ``TIE_MARGIN`` of the best, a method that takes no memory (n-gram, suffix) is preferred: it leaves the
   KV cache whole and costs nothing to try.
5. The pick states its acceptance evidence; when that is only a published prior from another target (or one
   that names none) the verdict says to measure it on the user's prompts before shipping.

Acceptance per method: the most trusted of the `estimates` passed in (measured, then predicted), the scenario's
own alpha for its configured method ("assumed"), else the best published prior (methods_priors.best_prior).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Iterable, Sequence

from . import load, load_forecast, memory, speculation, vllm_command
from .catalog import get_model
from .drafters import drafters_for, get_drafter
from .evidence import AcceptanceEstimate
from .methods import LOOKUP_METHODS, deployment, method_memory
from .methods_priors import best_prior
from .scenario import Scenario, production_temperature_median

TIE_MARGIN = 0.05  # rule 4: speedups within 5 % count as a tie
CURVE_POINTS = 12  # speedup-vs-QPS points per method (Evaluation.methods)
RULE = __doc__.split("applied in ``compare_methods``:")[1].split("Acceptance per method")[0].strip()


@dataclass(frozen=True)
class MethodRow:
    """One method on the scenario's deployment. Bytes and seconds; None where a figure does not apply."""

    method: str
    drafter: str | None
    applies: bool
    why_not: str = ""
    extra_weights_bytes_per_gpu: int | None = None
    kv_tokens_taken: int | None = None  # KV cache tokens the method's weights and layers take
    kv_capacity_tokens: int | None = None
    max_concurrent_seqs: int | None = None
    fits: bool | None = None
    cost_ratio: float | None = None  # one draft step / one target step at batch 1
    alpha: float | None = None
    acceptance: str = ""  # "measured", "predicted", "published prior (same target)", "assumed (scenario)", ...
    acceptance_origin: str = ""
    k: int | None = None
    speedup_batch1: float | None = None
    batch_at_qps: float | None = None
    speedup_at_qps: float | None = None
    crossover_batch: float | None = None
    crossover_qps: float | None = None
    max_batch: int | None = None
    k_schedule: list | None = None
    command: str = ""
    notes: tuple[str, ...] = ()
    saturated: bool | None = None  # the QPS exceeds the deployment's capacity (load_forecast): no speedup figure
    own: bool = False  # the scenario's own method and drafter: its figures are the Evaluation's


@dataclass(frozen=True)
class MethodComparison:
    scenario_title: str
    target: str
    qps: float
    rows: tuple[MethodRow, ...]
    best: str | None  # the method to run, None: leave speculation off
    reasons: tuple[str, ...]
    rule: str = RULE
    curves: dict = field(default_factory=dict)  # method -> (qps values, speedups) when asked for

    def frame(self):
        """The rows as a pandas DataFrame (bytes and seconds; display code converts)."""
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in asdict(r).items() if k != "notes"} for r in self.rows])

    def row(self, method: str) -> MethodRow:
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(f"method={method!r}: not in this comparison ({', '.join(r.method for r in self.rows)})")


def _acceptance(method: str, scenario: Scenario, estimates: Sequence[AcceptanceEstimate], drafter: str | None,
                temperature: float) -> tuple[float | None, str, str, int | None]:
    """(alpha, label, origin, k the figure was taken at when it is a prior with a k: beyond it is extrapolation)"""
    mtp = method.endswith("mtp")
    own = [e for e in estimates if (e.method == method or (mtp and e.method.endswith("mtp")))
           and e.source in ("measured", "predicted")
           and (e.target_model is None or _same(e.target_model, scenario.target_model))]
    if own:
        e = min(own, key=lambda e: (e.rank, abs((e.temperature if e.temperature is not None else temperature)
                                                - temperature)))
        return e.alpha, e.source, e.origin, None
    if method == scenario.method:
        alphas = [(c.share, c.alpha) for c in scenario.workload if c.alpha is not None]
        if alphas and math.isclose(sum(s for s, _ in alphas), 1.0):
            return sum(s * a for s, a in alphas), "assumed (scenario)", "the scenario's workload alpha", None
    match = best_prior(method, scenario.target_model, drafter=drafter, temperature=temperature)
    if match is None:
        return None, "none published", "", None
    return match.estimate.alpha, f"published prior ({match.fit})", match.estimate.origin, match.estimate.k


def _same(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        return s.lower().split("/")[-1].removesuffix("-instruct")
    return norm(a) == norm(b)


def _candidates(scenario: Scenario) -> list[tuple[str, str | None, str]]:
    """(method, drafter or draft model, why it does not apply or "")."""
    target = scenario.target_model
    out: list[tuple[str, str | None, str]] = []
    draft = scenario.draft_model if scenario.method == "draft_model" else None
    if draft is None:
        out.append(("draft_model", None, "no draft model named in the scenario"))
    elif get_model(draft).vocab_size != get_model(target).vocab_size:
        out.append(("draft_model", draft, "vocabulary sizes differ: vLLM 0.32 refuses it without "
                                          "use_heterogeneous_vocab"))
    else:
        out.append(("draft_model", draft, ""))
    for method in ("eagle3", "eagle"):
        heads = [h.name for h in drafters_for(target, method)]
        own = scenario.draft_model if scenario.method == method else None
        if own and get_drafter(own).name not in heads:
            heads = [own, *heads]  # the scenario's own head: a catalog name or the folder of its config.json
        if heads:
            out += [(method, h, "") for h in heads]
        elif method == "eagle3":
            out.append((method, None, f"no EAGLE-3 head for {target} in data/drafters.csv (none published that the "
                                      "catalog knows of)"))
    mtps = [d for d in drafters_for(target) if d.is_mtp]
    out += [(d.method, d.name, "") for d in mtps] or [("mtp", None, f"{target} has no MTP module in the catalog")]
    out += [("ngram", None, ""), ("suffix", None, "")]
    return out


def _plan_for_forecast(mem, scenario: Scenario, dep):
    """What `load_forecast.forecast` reads of a memory plan (replicas, KV tokens, max_num_seqs), for a method's own
    memory (methods.method_memory): every row's load figures come from the one forecast function."""
    return SimpleNamespace(replicas=max(1, scenario.num_gpus // scenario.tensor_parallel_size),
                           kv_capacity_tokens=mem.kv_capacity_tokens,
                           max_num_seqs=memory.default_batch_limits(dep.gpu)[1])


def _forecast(dep, scenario: Scenario, alphas, k: int, plan, curve_points: int):
    s = scenario if k == scenario.num_speculative_tokens else dataclasses.replace(scenario, num_speculative_tokens=k)
    return load_forecast.forecast(dep, s, list(alphas), memory_plan=plan, curve_points=curve_points)


def _is_own(scenario: Scenario, method: str, drafter: str | None) -> bool:
    """The row of the scenario's own configuration (its method and its drafter)."""
    if method != scenario.method:
        return False
    return method in LOOKUP_METHODS or drafter == scenario.draft_model


def _own_load(evaluation, method: str):
    """(LoadPrediction, alpha, label, origin) of the scenario's own method: the Evaluation's figures when it has an
    alpha; else the same forecast (evaluate's deployment and memory plan, the scenario's k) at the best published
    prior, labelled so. The verdict never sees that prior."""
    s = evaluation.scenario
    if evaluation.load is None:
        raise ValueError(evaluation.load_error or "the load model could not run for this scenario")
    if evaluation.load.alpha is not None:
        alpha, label = evaluation.workload_alpha
        origin = "; ".join(c.describe() for c in evaluation.acceptance)
        return evaluation.load, evaluation.load.alpha, label or "assumed (scenario)", origin
    match = best_prior(method, s.target_model, drafter=s.draft_model, temperature=production_temperature_median(s))
    if match is None:
        return evaluation.load, None, "none published", ""
    from specdec_lib.evaluate import deployment_for

    dep = deployment_for(s, evaluation.evidence.target, evaluation.evidence.draft,
                         evaluation.step_factors or load.DEFAULT_FACTORS)
    f = _forecast(dep, s, [match.estimate.alpha] * len(s.workload), s.num_speculative_tokens, evaluation.memory,
                  load_forecast.CURVE_POINTS if evaluation.load.curve_x else 0)
    return f, match.estimate.alpha, f"published prior ({match.fit})", match.estimate.origin


def _evaluate(scenario: Scenario, method: str, drafter: str | None, estimates, temperature: float,
              evaluation=None, curve_points: int = 0) -> tuple[MethodRow, object]:
    """(row, its LoadPrediction or None). Every load figure is `load_forecast.forecast`'s; the scenario's own
    method takes the Evaluation's (see `_own_load`)."""
    kvb = memory.kv_dtype_bytes(scenario.kv_cache_dtype)
    tp = scenario.tensor_parallel_size
    own = evaluation is not None and _is_own(scenario, method, drafter)
    mem = method_memory(method, scenario.target_model, drafter=drafter if method != "draft_model" else None,
                        draft_model=drafter if method == "draft_model" else None,
                        draft_precision=scenario.draft_precision, gpu=scenario.gpu, num_gpus=scenario.num_gpus,
                        tp=tp, target_precision=scenario.target_precision, kv_cache_dtype=scenario.kv_cache_dtype,
                        context_len=scenario.context_len, gpu_memory_utilization=scenario.gpu_memory_utilization)
    dep = deployment(method, scenario.target_model, gpu=scenario.gpu, tp=tp, target_precision=scenario.target_precision,
                     drafter=drafter if method != "draft_model" else None,
                     draft_model=drafter if method == "draft_model" else None,
                     draft_precision=scenario.draft_precision, kv_dtype_bytes=kvb)
    plan = _plan_for_forecast(mem, scenario, dep)
    if own and method == "draft_model" and evaluation.memory is not None:
        p = evaluation.memory  # the draft's memory as the Evaluation planned it (its draft TP included)
        mem = dataclasses.replace(mem, extra_weights_bytes_per_gpu=p.draft_weights_bytes_per_gpu,
                                  kv_capacity_tokens=p.kv_capacity_tokens,
                                  kv_capacity_tokens_without=p.kv_capacity_tokens_without_draft,
                                  max_concurrent_seqs=p.max_concurrent_seqs, fits=p.fits)
    notes = mem.notes
    if method in LOOKUP_METHODS:
        notes += (f"{method}: a published mean acceptance length counts only the steps that proposed; prompts with "
                  "little repetition propose rarely, so the prior need not transfer: predict it from your prompts or "
                  "measure it",)
    if own:
        f, alpha, label, origin = _own_load(evaluation, method)
        k = scenario.num_speculative_tokens
        notes += (f"the scenario's own configuration (k = {k}): the Evaluation's load figures",)
    else:
        alpha, label, origin, k_published = _acceptance(method, scenario, estimates, drafter, temperature)
        f = k = None
        if alpha is not None and mem.fits:
            f0 = _forecast(dep, scenario, [alpha] * len(scenario.workload), scenario.num_speculative_tokens, plan, 0)
            b0 = max(1.0, f0.batch_at_qps or 1.0)
            ctx = load.Workload(f0.prompt_tokens, f0.output_tokens).mean_context_len
            k_top = min(scenario.num_speculative_tokens, k_published or scenario.num_speculative_tokens)
            k = max(range(1, k_top + 1), key=lambda kk: load.speedup_vs_batch(dep, alpha, kk, b0, ctx).speedup)
            f = f0 if k == scenario.num_speculative_tokens and not curve_points else _forecast(
                dep, scenario, [alpha] * len(scenario.workload), k, plan, curve_points)
    base = dict(method=method, drafter=drafter, applies=True,
                extra_weights_bytes_per_gpu=mem.extra_weights_bytes_per_gpu,
                kv_tokens_taken=mem.kv_tokens_taken, kv_capacity_tokens=mem.kv_capacity_tokens,
                max_concurrent_seqs=mem.max_concurrent_seqs, fits=mem.fits,
                cost_ratio=None if f is None else f.cost_ratio, acceptance=label, acceptance_origin=origin,
                max_batch=None if f is None else f.max_batch, notes=notes, own=own)
    if alpha is None or f is None or not mem.fits:
        return MethodRow(**base, why_not="" if mem.fits else "does not fit in memory"), f
    max_num_seqs = memory.default_batch_limits(dep.gpu)[1]
    schedule = vllm_command.k_schedule(f.crossover_batch, k, max_num_seqs=max_num_seqs)
    cmd_method = "deepseek_mtp" if method == "mtp" else method
    cmd = vllm_command.method_serve_command(scenario, cmd_method, num_speculative_tokens=k,
                                            model=drafter if method not in LOOKUP_METHODS and
                                            not method.endswith("mtp") else None,
                                            crossover_batch=f.crossover_batch, max_num_seqs=max_num_seqs)
    return MethodRow(**base, alpha=alpha, k=k, speedup_batch1=speculation.speedup(alpha, k, f.cost_ratio),
                     batch_at_qps=f.batch_at_qps, speedup_at_qps=f.speedup_at_qps, saturated=f.saturated,
                     crossover_batch=f.crossover_batch, crossover_qps=f.crossover_qps, k_schedule=schedule,
                     command=cmd.shell()), f


def _name(r: MethodRow) -> str:
    """The method as a reason names it; the scenario's own row says it is the configuration as given."""
    return f"{r.method} (your scenario as configured, k = {r.k})" if r.own else r.method


def _pick(rows: Sequence[MethodRow], qps: float) -> tuple[str | None, list[str]]:
    live = [r for r in rows if r.applies and r.fits and r.speedup_at_qps is not None]
    reasons_sat = [f"{r.method}: saturated at QPS {qps:g} (beyond the deployment's capacity; load_forecast)"
                   for r in rows if r.applies and r.fits and r.saturated]
    reasons = [f"{r.method}: {r.why_not}" for r in rows if not r.applies]
    reasons += [f"{r.method}: no acceptance figure (measured, predicted or published) to predict with"
                for r in rows if r.applies and r.fits and r.alpha is None] + reasons_sat
    reasons += [f"{r.method}: does not fit in memory" for r in rows if r.applies and r.fits is False]
    gaining = [r for r in live if r.speedup_at_qps > 1.0]
    reasons += [f"{_name(r)}: predicted {r.speedup_at_qps:.2f}x at QPS {qps:g} (no gain)" for r in live
                if r.speedup_at_qps <= 1.0]
    if not gaining:
        return None, reasons + [f"leave speculation off: no method gains at QPS {qps:g}"]
    top = max(gaining, key=lambda r: r.speedup_at_qps)
    free = [r for r in gaining if r.method in LOOKUP_METHODS and r.speedup_at_qps >= top.speedup_at_qps
            * (1 - TIE_MARGIN)]
    best = max(free, key=lambda r: r.speedup_at_qps) if free and top.method not in LOOKUP_METHODS else top
    why = [f"{best.method}{f' ({best.drafter})' if best.drafter else ''}: predicted {best.speedup_at_qps:.2f}x at "
           f"QPS {qps:g} with k = {best.k}, acceptance alpha {best.alpha:.2f} ({best.acceptance})"]
    if best is not top:
        why.append(f"within {TIE_MARGIN:.0%} of {top.method}'s {top.speedup_at_qps:.2f}x and takes no memory "
                   f"(rule 4)")
    for r in gaining:
        if r is not best:
            why.append(f"{_name(r)}: predicted {r.speedup_at_qps:.2f}x, behind")
    if "other target" in best.acceptance or "not stated" in best.acceptance:
        why.append(f"{best.method}'s acceptance is a published prior from another deployment: measure it on your "
                   "prompts (specdec measure) before shipping")
    if best.kv_tokens_taken:
        why.append(f"{best.method} takes {best.kv_tokens_taken:,} tokens of KV cache per GPU")
    return best.method, why + reasons


def compare_methods(scenario: Scenario, *, estimates: Iterable[AcceptanceEstimate] = (),
                    curve_points: int = 0, evaluation=None) -> MethodComparison:
    """Every method that applies to the scenario's target, evaluated alike, and the pick with its reasons.

    `estimates`: measured / predicted AcceptanceEstimates (a run's, the acceptance oracle's) by method; they beat
    the scenario's assumed alpha and the published priors. `curve_points` > 0 adds speedup-vs-QPS curves.
    `evaluation`: the scenario's `evaluate.Evaluation`; its load figures become the scenario's own method's row (the
    faces call `Evaluation.methods`, which passes itself). Without it one is made here.
    """
    estimates = tuple(estimates)
    if evaluation is None:
        from specdec_lib.evaluate import evaluate

        evaluation = evaluate(scenario, estimates=estimates, curve_points=curve_points)
    temperature = production_temperature_median(scenario)
    rows, curves = [], {}
    try:
        candidates = _candidates(scenario)
    except ValueError as exc:  # a target (or draft) the catalog cannot resolve: said, as the Evaluation says it
        return MethodComparison(scenario.title, scenario.target_model, scenario.qps, (), None,
                                (f"methods not compared: {exc}",))
    for method, drafter, why_not in candidates:
        if why_not:
            rows.append(MethodRow(method=method, drafter=drafter, applies=False, why_not=why_not))
            continue
        try:
            row, f = _evaluate(scenario, method, drafter, estimates, temperature, evaluation, curve_points)
        except ValueError as exc:  # one method the planner cannot model costs its own row, not the comparison
            rows.append(MethodRow(method=method, drafter=drafter, applies=False, why_not=f"not planned: {exc}"))
            continue
        rows.append(row)
        if curve_points and f is not None and f.curve_x and row.alpha is not None and f.curves:
            curves.setdefault(method, (list(f.curve_x), list(next(iter(f.curves.values())))))
    best, reasons = _pick(rows, scenario.qps)
    return MethodComparison(scenario.title, scenario.target_model, scenario.qps, tuple(rows), best, tuple(reasons),
                            curves=curves)


__all__ = ["MethodRow", "MethodComparison", "compare_methods", "RULE", "TIE_MARGIN"]


# --- `specdec methods` ---------------------------------------------------------------------------------------------

def _cli(args) -> int:
    import json

    from .display import format_gib
    from .evaluate import evaluate
    from .scenario import DEFAULT_SCENARIO, load_scenario

    c = evaluate(DEFAULT_SCENARIO if args.scenario is None else load_scenario(args.scenario)).methods
    if args.json:
        print(json.dumps({"target": c.target, "qps": c.qps, "best": c.best, "reasons": list(c.reasons),
                          "rows": [asdict(r) for r in c.rows]}, indent=1, default=str))
        return 0
    print(f"{c.target} at QPS {c.qps:g}")
    for r in c.rows:
        if not r.applies:
            print(f"  {r.method:<12} n/a: {r.why_not}")
        elif r.speedup_at_qps is None:
            print(f"  {r.method:<12} {r.why_not or r.acceptance}")
        else:
            print(f"  {r.method:<12} {r.speedup_at_qps:5.2f}x at QPS, k {r.k}, alpha {r.alpha:.2f} ({r.acceptance}), "
                  f"+{format_gib(r.extra_weights_bytes_per_gpu, 2)}/GPU, {r.kv_tokens_taken:,} KV tokens taken")
    print(f"pick: {c.best or 'leave speculation off'}")
    for line in c.reasons:
        print(f"  - {line}")
    return 0


def register(subparsers) -> None:
    """Add `specdec methods [--scenario FILE] [--json]` to the CLI's subparsers."""
    p = subparsers.add_parser("methods", help="every speculative method side by side, and the one to run")
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: the built-in default scenario)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cli)
