"""Which acceptance figure counts for each request class, and why the others do not.

Producers hand `AcceptanceEstimate`s (see `evidence.py`) to `evaluate`: a measurement run (`estimates_from_run`),
the acceptance oracle ("predicted"), a drafter catalog ("prior"), and the scenario itself ("assumed",
`estimates_from_scenario`). `choose` keeps, per request class, the most trusted estimate that APPLIES:

- its target is the scenario's target (`catalog.same_model`: the served name against the catalog name);
- its method is the scenario's method (eagle/eagle3 count as one family only when both say the same);
- its draft is the scenario's draft (n-gram has none);
- it was taken at the scenario's k, when it says its k (a V1 ratio converted to alpha depends on the k it was read at);
- it was taken at the class's temperature (within `rules.MEASURED_TEMPERATURE_TOLERANCE`), when it says one.

An estimate that does not name its method or draft (a server without /server_info) is used with that caveat
written into the choice; one that names a different one is rejected with the reason. Pure apart from reading a
run's summary (`runs.summarise`) in `estimates_from_run`.
"""

from __future__ import annotations

from dataclasses import dataclass

from specdec_lib import rules
from specdec_lib.evidence import AcceptanceEstimate

UNKNOWN = "unknown"  # the method of a run whose server did not report it


@dataclass(frozen=True)
class ClassAcceptance:
    """The acceptance used for one request class: the chosen estimate (or None), the less trusted ones that
    also apply (shown beside it: predicted next to measured), those rejected with why, and caveats."""

    request_class: str
    temperature: float
    share: float
    chosen: AcceptanceEstimate | None
    also_applicable: tuple[AcceptanceEstimate, ...] = ()
    rejected: tuple[tuple[AcceptanceEstimate, str], ...] = ()
    caveats: tuple[str, ...] = ()

    @property
    def alpha(self) -> float | None:
        return None if self.chosen is None else self.chosen.alpha

    @property
    def source(self) -> str | None:
        return None if self.chosen is None else self.chosen.source

    def describe(self) -> str:
        """'0.720 predicted (0.650-0.780), origin' / 'unknown' : how pages and the memo print the choice."""
        return describe_estimate(self.chosen)


def describe_estimate(estimate: AcceptanceEstimate | None) -> str:
    if estimate is None:
        return "unknown"
    bounds = ""
    if estimate.alpha_low is not None or estimate.alpha_high is not None:
        low = "?" if estimate.alpha_low is None else f"{estimate.alpha_low:.3f}"
        high = "?" if estimate.alpha_high is None else f"{estimate.alpha_high:.3f}"
        bounds = f" ({low}-{high})"
    origin = f", {estimate.origin}" if estimate.origin else ""
    return f"{estimate.alpha:.3f} {estimate.source}{bounds}{origin}"


def estimate_from_class(scenario, request_class) -> AcceptanceEstimate | None:
    """A request class's typed alpha as an "assumed" estimate for that class (None when it states none)."""
    if request_class.alpha is None:
        return None
    return AcceptanceEstimate(
        alpha=request_class.alpha, source="assumed", method=scenario.method, temperature=request_class.temperature,
        k=None, target_model=scenario.target_model, draft_model=scenario.draft_model,
        origin=f"scenario, class {request_class.name!r}")


def estimates_from_scenario(scenario) -> tuple[AcceptanceEstimate, ...]:
    """The scenario's own per-class alpha as "assumed" estimates (one per class that states one)."""
    return tuple(e for c in scenario.workload if (e := estimate_from_class(scenario, c)) is not None)


def estimates_from_run(run) -> tuple[AcceptanceEstimate, ...]:
    """One "measured" estimate per temperature of a run (`runs.load_run`): counter-based V1 rate = accepted /
    draft tokens over the run's intervals at that temperature, alpha = `speculation.alpha_from_v1_rate(rate, k)`
    at the run's k; target, method and draft as the server reported them (method "unknown" when it did not)."""
    from specdec_lib import runs, speculation

    summary = runs.summarise(run)
    meta = run.metadata
    spec = meta.get("speculative") or {}
    by_temperature: dict[float, list[dict]] = {}
    for group in summary["groups"].values():
        if group.get("temperature") is not None:
            by_temperature.setdefault(float(group["temperature"]), []).append(group)
    out = []
    for t in sorted(by_temperature):
        groups = by_temperature[t]
        draft = sum(g["acceptance"]["draft_tokens"] for g in groups)
        accepted = sum(g["acceptance"]["accepted_tokens"] for g in groups)
        k = next((g["acceptance"]["num_speculative_tokens"] for g in groups
                  if g["acceptance"]["num_speculative_tokens"]), None) or spec.get("num_speculative_tokens")
        if draft <= 0 or not k:
            continue
        rate = min(max(accepted / draft, 0.0), 1.0)
        out.append(AcceptanceEstimate(
            alpha=speculation.alpha_from_v1_rate(rate, int(k)), source="measured",
            method=spec.get("method") or UNKNOWN, temperature=t, k=int(k),
            target_model=meta.get("served_model"), draft_model=spec.get("draft_model"),
            n_requests=sum(g["latency"]["succeeded"] for g in groups),
            origin=f"run {meta.get('run_id') or run.path}"))
    return tuple(out)


def per_request_alphas(run) -> list[float]:
    """Per-request alpha of a run (each request's V1 rate converted at the run's k); [] when k is unknown."""
    from specdec_lib import speculation

    spec = run.metadata.get("speculative") or {}
    k = spec.get("num_speculative_tokens")
    if not k:
        return []
    return [speculation.alpha_from_v1_rate(min(max(r["acceptance_rate"], 0.0), 1.0), int(k))
            for r in run.records if r.get("error") is None and r.get("acceptance_rate") is not None]


def mismatch(estimate: AcceptanceEstimate, scenario, temperature: float) -> str | None:
    """Why `estimate` does not apply to the class at `temperature` of `scenario`, or None when it applies."""
    from specdec_lib import catalog

    what = f"{estimate.source} {estimate.origin or ''}".strip()
    if estimate.target_model is not None and not catalog.same_model(estimate.target_model, scenario.target_model):
        return (f"{what} was taken on {estimate.target_model!r}, not the scenario's target "
                f"{scenario.target_model!r}")
    if estimate.target_model is None and estimate.source in ("measured", "predicted"):
        return f"{what} does not say which target it belongs to"
    if estimate.method != UNKNOWN and estimate.method != scenario.method:
        return f"{what} is for method {estimate.method!r}, the scenario uses {scenario.method!r}"
    if (estimate.draft_model is not None and scenario.draft_model is not None
            and not catalog.same_model(estimate.draft_model, scenario.draft_model)):
        return f"{what} used draft {estimate.draft_model!r}, the scenario's draft is {scenario.draft_model!r}"
    if estimate.k is not None and estimate.k != scenario.num_speculative_tokens:
        return f"{what} was taken at k={estimate.k}, the scenario runs k={scenario.num_speculative_tokens}"
    if (estimate.temperature is not None
            and abs(estimate.temperature - temperature) > rules.MEASURED_TEMPERATURE_TOLERANCE):
        return (f"{what} was taken at temperature {estimate.temperature:g}, this class runs at {temperature:g} "
                f"(tolerance {rules.MEASURED_TEMPERATURE_TOLERANCE:g})")
    return None


def _caveats(estimate: AcceptanceEstimate, scenario) -> tuple[str, ...]:
    out = []
    if estimate.method == UNKNOWN:
        out.append(f"{estimate.origin}: the server did not report its method; taken as {scenario.method!r}")
    if estimate.draft_model is None and scenario.draft_model is not None and estimate.source == "measured":
        out.append(f"{estimate.origin}: the server did not report its draft; taken as {scenario.draft_model!r}")
    if estimate.temperature is None:
        out.append(f"{estimate.source} {estimate.origin}: states no temperature; applied to every class")
    return tuple(out)


def choose(scenario, estimates=()) -> tuple[ClassAcceptance, ...]:
    """Per request class, the most trusted applicable estimate among `estimates` and the scenario's own alphas.

    Order: source rank (measured, predicted, prior, assumed), then the temperature closest to the class's, then
    the most requests behind it."""
    out = []
    for c in scenario.workload:
        own = estimate_from_class(scenario, c)  # a class's typed alpha is a candidate for that class only
        applicable, rejected = [], []
        for e in tuple(estimates) + ((own,) if own is not None else ()):
            why = mismatch(e, scenario, c.temperature)
            if why is None:
                applicable.append(e)
            else:
                rejected.append((e, why))
        applicable.sort(key=lambda e: (e.rank, 0.0 if e.temperature is None else abs(e.temperature - c.temperature),
                                       -(e.n_requests or 0)))
        chosen = applicable[0] if applicable else None
        out.append(ClassAcceptance(
            request_class=c.name, temperature=c.temperature, share=c.share, chosen=chosen,
            also_applicable=tuple(applicable[1:]), rejected=tuple(rejected),
            caveats=_caveats(chosen, scenario) if chosen else ()))
    return tuple(out)

