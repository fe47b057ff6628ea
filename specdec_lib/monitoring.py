"""Prometheus rules and the thresholds table for a planned deployment (pure: text in, text out).

What an operator loads: ``rules_yaml(plan)`` is one Prometheus rule file (recording + alerting rules over vLLM
0.32's metrics); ``dashboard.dashboard_json(plan)`` the Grafana dashboard over the same expressions;
``artifacts_for(plan)`` bundles both with the thresholds table the memo prints.

Units. vLLM V1's counters count only the accepted *prefix* of each draft, so accepted / draft tokens is
(E − 1)/k with E = (1 − α^(k+1))/(1 − α), never α (``docs/measurement.md``). The source's bands (α < 0.5: turn it
off; α > 0.65: a genuine win) are converted to that ratio for the configured k with
``speculation.v1_rate_from_alpha`` — the one conversion — and taken from ``decision`` (the one place that keeps the
source's numbers). The same ratio and thresholds drive a rule, a dashboard line and a row of the table.

Counter resets: every counter is read through ``rate()``/``increase()``, which treat a decrease as a restart and
count from zero again, so a vLLM restart costs no false alert. Ratios are ratios of sums (``sum(rate(a)) /
sum(rate(b))``), not means of per-engine ratios, so several engines (data-parallel ranks, replicas behind one
model name) weigh by their traffic. With no drafts in the window the ratio is 0/0 = NaN, which compares false:
an idle server raises no acceptance alert.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

from specdec_lib import decision, speculation

# vLLM 0.32 metric names (vllm/v1/metrics/loggers.py, vllm/v1/spec_decode/metrics.py); counters end in _total.
DRAFTS = "vllm:spec_decode_num_drafts_total"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"
TPOT_HIST = "vllm:request_time_per_output_token_seconds"
TTFT_HIST = "vllm:time_to_first_token_seconds"
PREEMPTIONS = "vllm:num_preemptions_total"
KV_USAGE = "vllm:kv_cache_usage_perc"  # a fraction despite the name: "1 means 100 percent usage"
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"

# Operator defaults, not from the source: the one place they live (memo, rules, dashboard and watch read them).
LATENCY_REGRESSION_TOLERANCE = 0.20  # P99 more than 20 % above the plan's figure is a regression
KV_CACHE_USAGE_MAX = 0.90            # sustained usage above 90 % of the KV cache: the squeeze is near
ALERT_FOR = "15m"                    # how long a condition must hold before it fires (production)
RATE_WINDOW = "5m"                   # rate() window of every recording rule (production)
EVAL_INTERVAL = "30s"                # the rule group's evaluation interval (production)

# What the alerts aggregate over: all engines and replicas of one deployment (a scrape job) and served model.
GROUP_BY = ("job", "model_name")
ENGINE_BY = ("job", "instance", "model_name", "engine")  # the per-engine drill-down

_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


@dataclass(frozen=True)
class WatchPlan:
    """The deployment as planned: what the rules compare against.

    ``p99_tpot_s`` / ``p99_ttft_s`` are the plan's predicted P99s (None: no latency alert, the table says the
    operator must set one). ``model_name`` restricts every query to one served model (None: all models).
    ``crossover_batch``: the load model's first batch size without a gain (None: no rule).
    """

    num_speculative_tokens: int
    p99_tpot_s: float | None = None
    p99_ttft_s: float | None = None
    model_name: str | None = None
    crossover_batch: float | None = None
    rate_window: str = RATE_WINDOW
    alert_for: str = ALERT_FOR
    eval_interval: str = EVAL_INTERVAL
    latency_tolerance: float = LATENCY_REGRESSION_TOLERANCE
    kv_cache_usage_max: float = KV_CACHE_USAGE_MAX

    def __post_init__(self) -> None:
        k = self.num_speculative_tokens
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"num_speculative_tokens={k!r}: expected a whole number >= 1 (vLLM's k)")
        for name in ("p99_tpot_s", "p99_ttft_s", "crossover_batch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0):
                raise ValueError(f"{name}={v!r}: expected a positive number (seconds for latencies) or None")
        for name in ("rate_window", "alert_for", "eval_interval"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _DURATION.match(v):
                raise ValueError(f"{name}={v!r}: expected a Prometheus duration such as '30s', '5m', '1h'")
        if not 0 <= self.latency_tolerance < 10:
            raise ValueError(f"latency_tolerance={self.latency_tolerance!r}: expected a fraction such as 0.2")
        if not 0 < self.kv_cache_usage_max <= 1:
            raise ValueError(f"kv_cache_usage_max={self.kv_cache_usage_max!r}: expected a fraction in (0, 1]")
        if self.model_name is not None and (not isinstance(self.model_name, str) or not self.model_name):
            raise ValueError(f"model_name={self.model_name!r}: expected a served model name or None")

    @property
    def v1_off_below(self) -> float:
        """V1 ratio at the source's 'turn it off' α (decision.ALPHA_OFF_BELOW) for this k."""
        return speculation.v1_rate_from_alpha(decision.ALPHA_OFF_BELOW, self.num_speculative_tokens)

    @property
    def v1_win_above(self) -> float:
        """V1 ratio at the source's 'genuine win' α (decision.ALPHA_WIN_ABOVE) for this k."""
        return speculation.v1_rate_from_alpha(decision.ALPHA_WIN_ABOVE, self.num_speculative_tokens)


# ------------------------------------------------------------------------------------------- expressions
def selector(plan: WatchPlan, extra: str = "") -> str:
    """The label matcher every query uses: ``{model_name="..."}`` or nothing."""
    parts = [f"model_name={json.dumps(plan.model_name)}"] if plan.model_name else []
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _by(labels: Iterable[str]) -> str:
    return "by (" + ", ".join(labels) + ")"


def v1_rate_expr(sel: str, window: str, by: Iterable[str] = GROUP_BY) -> str:
    """V1 acceptance rate = Σ rate(accepted) / Σ rate(draft tokens) (vLLM's SpecDecodingLogging ratio)."""
    b = _by(by)
    return f"sum {b} (rate({ACCEPTED}{sel}[{window}])) / sum {b} (rate({DRAFT_TOKENS}{sel}[{window}]))"


def mean_length_expr(sel: str, window: str, by: Iterable[str] = GROUP_BY) -> str:
    """Mean acceptance length = 1 + Σ rate(accepted) / Σ rate(drafts) (vLLM's convention, bonus token counted)."""
    b = _by(by)
    return f"1 + sum {b} (rate({ACCEPTED}{sel}[{window}])) / sum {b} (rate({DRAFTS}{sel}[{window}]))"


def per_position_expr(sel: str, window: str, by: Iterable[str] = GROUP_BY) -> str:
    """Per-position rate i = Σ rate(accepted at i) / Σ rate(drafts): the share of drafts reaching position i."""
    b = _by(by)
    bp = _by((*by, "position"))
    return (f"sum {bp} (rate({ACCEPTED_PER_POS}{sel}[{window}])) / ignoring(position) group_left "
            f"sum {b} (rate({DRAFTS}{sel}[{window}]))")


def band_expr(v1_expr: str, plan: WatchPlan) -> str:
    """α's band from the V1 ratio: 0 = below the off line, 1 = break-even zone, 2 = win (decision's bands).

    ``decision`` calls α < ALPHA_OFF_BELOW off and α <= ALPHA_WIN_ABOVE uncertain; the V1 ratio rises with α, so
    the same bands hold on the ratio at the converted lines.
    """
    # "+ 0 * ratio" keeps NaN (no drafts in the window) as NaN instead of band 0
    return (f"({v1_expr} >= bool {plan.v1_off_below!r}) + ({v1_expr} > bool {plan.v1_win_above!r}) "
            f"+ 0 * {v1_expr}")


def quantile_expr(hist: str, q: float, sel: str, window: str, by: Iterable[str] = GROUP_BY) -> str:
    """histogram_quantile over vLLM's histogram, buckets summed over engines (``le`` kept)."""
    return f"histogram_quantile({q!r}, sum {_by((*by, 'le'))} (rate({hist}_bucket{sel}[{window}])))"


# ------------------------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class Threshold:
    """One alert line in both units: the source's (α) or the plan's, and the one the rule compares."""

    alert: str
    severity: str
    meaning: str
    source_value: float | None  # α for acceptance, seconds for latency, None where the source has no number
    source_unit: str
    value: float | None         # what the rule compares, in ``unit``; None: no rule (operator must set it)
    unit: str
    origin: str


def thresholds(plan: WatchPlan) -> tuple[Threshold, ...]:
    """Every alert's threshold, converted; one row per alert the rules contain (and one per missing input)."""
    k = plan.num_speculative_tokens
    tol = plan.latency_tolerance
    rows = [
        Threshold("SpecDecodeAcceptanceBelowOff", "critical", f"alpha below {decision.ALPHA_OFF_BELOW}: turn it off",
                  decision.ALPHA_OFF_BELOW, "alpha", plan.v1_off_below, f"V1 ratio accepted/draft tokens (k={k})",
                  "source: 'Below ~0.5, you're adding latency ... turn it off' (decision.ALPHA_OFF_BELOW)"),
        Threshold("SpecDecodeAcceptanceBreakEven", "warning",
                  f"alpha in [{decision.ALPHA_OFF_BELOW}, {decision.ALPHA_WIN_ABOVE}]: near break-even, check P99",
                  decision.ALPHA_WIN_ABOVE, "alpha", plan.v1_win_above, f"V1 ratio accepted/draft tokens (k={k})",
                  "source: 'between 0.5 and 0.65 ... measure P99 latency under real load' (decision.ALPHA_WIN_ABOVE)"),
        Threshold("SpecDecodeKMismatch", "warning", "the server drafts another k than planned: thresholds invalid",
                  None, "", float(k), "per-position counters", "the plan's k (thresholds are computed for it)"),
        Threshold("SpecDecodeMetricsAbsent", "warning", "no speculative-decoding counters: acceptance unwatched",
                  None, "", None, "", "the source: leave it off without acceptance monitoring"),
    ]
    for alert, plan_s, what in (("SpecDecodeTPOTRegression", plan.p99_tpot_s, "TPOT"),
                                ("SpecDecodeTTFTRegression", plan.p99_ttft_s, "TTFT")):
        rows.append(Threshold(alert, "warning", f"P99 {what} more than {tol:.0%} above the plan", plan_s, "s",
                              None if plan_s is None else plan_s * (1 + tol), "s",
                              "the plan's P99 (operator must set it)" if plan_s is None else
                              f"the plan's P99 {what} x (1 + {tol:g}) (monitoring.LATENCY_REGRESSION_TOLERANCE)"))
    rows += [
        Threshold("VLLMPreemptions", "warning", "requests preempted (KV cache exhausted)", None, "", 0.0,
                  "preemptions per window", "any preemption: the draft's KV squeezes the target's"),
        Threshold("VLLMKVCachePressure", "warning", "KV cache nearly full", None, "", plan.kv_cache_usage_max,
                  "fraction of KV cache", "monitoring.KV_CACHE_USAGE_MAX (operator default)"),
        Threshold("VLLMRequestsWaiting", "warning", "requests queue for the whole 'for' period", None, "", 0.0,
                  "waiting requests", "a queue that never empties: saturated"),
        Threshold("SpecDecodeAboveCrossover", "warning", "running batch at or above the load model's crossover",
                  plan.crossover_batch, "requests", plan.crossover_batch, "running requests",
                  "the plan's crossover batch" if plan.crossover_batch else "no crossover given: no rule"),
    ]
    return tuple(rows)


def _rule_groups(plan: WatchPlan) -> list[dict]:
    sel, w = selector(plan), plan.rate_window
    v1 = v1_rate_expr(sel, w)
    rec = [
        ("specdec:acceptance_v1_rate", v1),
        ("specdec:acceptance_v1_rate:per_engine", v1_rate_expr(sel, w, ENGINE_BY)),
        ("specdec:mean_acceptance_length", mean_length_expr(sel, w)),
        ("specdec:acceptance_per_position", per_position_expr(sel, w)),
        ("specdec:acceptance_band", band_expr("specdec:acceptance_v1_rate", plan)),
        ("specdec:draft_tokens:rate", f"sum {_by(GROUP_BY)} (rate({DRAFT_TOKENS}{sel}[{w}]))"),
    ]
    for q in (0.5, 0.99):
        rec.append((f"specdec:tpot_seconds:p{int(q * 100)}", quantile_expr(TPOT_HIST, q, sel, w)))
        rec.append((f"specdec:ttft_seconds:p{int(q * 100)}", quantile_expr(TTFT_HIST, q, sel, w)))
    rules: list[dict] = [{"record": name, "expr": expr} for name, expr in rec]

    by_alert = {t.alert: t for t in thresholds(plan)}
    k = plan.num_speculative_tokens

    def alert(name: str, expr: str, summary: str, for_: str | None = None) -> None:
        t = by_alert[name]
        rule = {"alert": name, "expr": expr, "for": for_ or plan.alert_for,
                "labels": {"severity": t.severity, "num_speculative_tokens": str(k)},
                "annotations": {"summary": summary, "description": f"{t.meaning}. Threshold from {t.origin}."}}
        rules.append(rule)

    off, win = plan.v1_off_below, plan.v1_win_above
    alert("SpecDecodeAcceptanceBelowOff", f"specdec:acceptance_v1_rate < {off!r}",
          f"{{{{ $labels.model_name }}}}: V1 acceptance ratio below {off:.4f} = alpha {decision.ALPHA_OFF_BELOW} "
          f"at k={k}: speculation adds latency, turn it off")
    alert("SpecDecodeAcceptanceBreakEven",
          f"specdec:acceptance_v1_rate >= {off!r} and specdec:acceptance_v1_rate <= {win!r}",
          f"{{{{ $labels.model_name }}}}: V1 acceptance ratio in [{off:.4f}, {win:.4f}] = alpha "
          f"{decision.ALPHA_OFF_BELOW}-{decision.ALPHA_WIN_ABOVE} at k={k}: near break-even, check P99 under load")
    alert("SpecDecodeKMismatch",
          f"count {_by(GROUP_BY)} (count {_by((*GROUP_BY, 'position'))} ({ACCEPTED_PER_POS}{sel})) != {k}",
          f"{{{{ $labels.model_name }}}}: the server does not draft k={k} tokens; these thresholds do not apply",
          for_="0s")
    alert("SpecDecodeMetricsAbsent", f"absent({DRAFT_TOKENS}{sel})",
          "no vllm:spec_decode counters: speculation is off or unwatched")
    for name, rec_name, plan_s, what in (("SpecDecodeTPOTRegression", "specdec:tpot_seconds:p99", plan.p99_tpot_s,
                                          "TPOT"),
                                         ("SpecDecodeTTFTRegression", "specdec:ttft_seconds:p99", plan.p99_ttft_s,
                                          "TTFT")):
        if plan_s is not None:
            limit = by_alert[name].value
            alert(name, f"{rec_name} > {limit!r}",
                  f"{{{{ $labels.model_name }}}}: P99 {what} above {limit * 1e3:.1f} ms (plan {plan_s * 1e3:.1f} ms "
                  f"+ {plan.latency_tolerance:.0%})")
    alert("VLLMPreemptions", f"sum {_by(GROUP_BY)} (increase({PREEMPTIONS}{sel}[{w}])) > 0",
          "{{ $labels.model_name }}: requests were preempted (KV cache exhausted)", for_="0s")
    alert("VLLMKVCachePressure", f"max {_by((*GROUP_BY, 'instance'))} ({KV_USAGE}{sel}) > {plan.kv_cache_usage_max!r}",
          f"{{{{ $labels.model_name }}}}: KV cache above {plan.kv_cache_usage_max:.0%}")
    alert("VLLMRequestsWaiting", f"sum {_by(GROUP_BY)} ({WAITING}{sel}) > 0",
          "{{ $labels.model_name }}: requests have been waiting the whole period")
    if plan.crossover_batch:
        alert("SpecDecodeAboveCrossover", f"max {_by(GROUP_BY)} ({RUNNING}{sel}) >= {plan.crossover_batch!r}",
              f"{{{{ $labels.model_name }}}}: running batch at or above the crossover ({plan.crossover_batch:g})")
    return [{"name": "specdec", "interval": plan.eval_interval, "rules": rules}]


def _yaml_scalar(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid YAML double-quoted scalar
    return repr(v)


def _yaml(obj, indent: int = 0) -> list[str]:
    """A small YAML writer for the rule file's shape (dicts of scalars, lists of dicts); keeps key order."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(obj, dict):
        for key, v in obj.items():
            if isinstance(v, (dict, list)):
                out.append(f"{pad}{key}:")
                out.extend(_yaml(v, indent + 2))
            else:
                out.append(f"{pad}{key}: {_yaml_scalar(v)}")
    else:
        for item in obj:
            lines = _yaml(item, indent + 2)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out.extend(lines[1:])
    return out


def rules_yaml(plan: WatchPlan) -> str:
    """The Prometheus rule file for the plan (recording + alerting rules); load it with ``rule_files:``."""
    head = [
        "# Generated by specdec_lib.monitoring.rules_yaml: speculative decoding on vLLM 0.32.",
        f"# k = {plan.num_speculative_tokens}; alpha bands {decision.ALPHA_OFF_BELOW} / {decision.ALPHA_WIN_ABOVE} "
        f"(the source's) read as V1 ratios {plan.v1_off_below:.4f} / {plan.v1_win_above:.4f}.",
        "# rate()/increase() absorb counter resets (restarts); ratios are ratios of sums over engines.",
    ]
    return "\n".join(head + _yaml({"groups": _rule_groups(plan)})) + "\n"


# ------------------------------------------------------------------------------------------- for the memo
@dataclass(frozen=True)
class MonitoringArtifacts:
    """What ships with the memo: the rule file, the dashboard, the thresholds, and what is left to the operator."""

    rules_yaml: str
    dashboard_json: str
    thresholds: tuple[Threshold, ...]
    operator_must_confirm: tuple[str, ...]

    def thresholds_table(self):
        """The thresholds as a pandas DataFrame (one row per alert)."""
        import pandas as pd

        return pd.DataFrame([t.__dict__ for t in self.thresholds])


def operator_must_confirm(plan: WatchPlan) -> tuple[str, ...]:
    """What the generated files cannot know; the memo prints this list next to them."""
    items = [
        f"The server runs with num_speculative_tokens = {plan.num_speculative_tokens} (the thresholds are for this "
        "k; SpecDecodeKMismatch fires otherwise).",
        "Prometheus scrapes every vLLM replica's /metrics and loads this rule file (promtool check rules passes).",
        "Alertmanager routes severity=critical to someone who can turn speculation off.",
        "Grafana has the Prometheus data source selected in the dashboard's 'datasource' variable.",
        "The acceptance bands are per-token alpha under an independence assumption; vLLM's counters carry no "
        "temperature label, so per-temperature acceptance needs per-request metrics or one deployment per class.",
    ]
    if plan.p99_tpot_s is None or plan.p99_ttft_s is None:
        items.append("No P99 TPOT/TTFT figure was planned for at least one of them: set the latency alert by hand.")
    else:
        items.append("The plan's P99 TPOT/TTFT are predictions: replace them with a measured baseline "
                     "without speculation once you have one.")
    if plan.model_name is None:
        items.append("Rules cover every served model (no model_name given): restrict them if several are served.")
    return tuple(items)


def artifacts_for(plan: WatchPlan) -> MonitoringArtifacts:
    """Rules, dashboard and thresholds for one plan: the one call the memo and the CLI make."""
    from specdec_lib import dashboard

    return MonitoringArtifacts(rules_yaml=rules_yaml(plan), dashboard_json=dashboard.dashboard_json(plan),
                               thresholds=thresholds(plan), operator_must_confirm=operator_must_confirm(plan))


def memo_rows(plan: WatchPlan) -> list[dict[str, str]]:
    """The memo's monitoring table (what / promql / threshold / why) from the same expressions and thresholds as
    the rule file; a drop-in for ``memo.monitoring_plan``'s rows."""
    sel, w, k = selector(plan), plan.rate_window, plan.num_speculative_tokens
    off, win, f = plan.v1_off_below, plan.v1_win_above, plan.alert_for
    a_off, a_win = decision.ALPHA_OFF_BELOW, decision.ALPHA_WIN_ABOVE

    def p99_limit(plan_s: float | None, what: str) -> str:
        if plan_s is None:
            return f"no planned P99 {what}: set the limit by hand (baseline without speculation)"
        return f"> {plan_s * (1 + plan.latency_tolerance) * 1e3:.1f} ms (plan {plan_s * 1e3:.1f} ms + " \
               f"{plan.latency_tolerance:.0%}) for {f}"

    rows = [
        {"what": "Acceptance ratio (V1: accepted / draft tokens)", "promql": v1_rate_expr(sel, w),
         "threshold": f"< {off:.4f} for {f} (= alpha {a_off} at k={k}): turn speculation off; "
                      f"{off:.4f}-{win:.4f} (alpha {a_off}-{a_win}): near break-even, check P99",
         "why": "The source's first signal; its bands are alpha, converted to V1's prefix-only ratio for this k."},
        {"what": "Mean acceptance length (tokens per verify step)", "promql": mean_length_expr(sel, w),
         "threshold": f"< {1 + k * off:.3f} (alpha {a_off} at k={k})",
         "why": "E = (1 - alpha^(k+1)) / (1 - alpha); alpha follows from it."},
        {"what": "Acceptance by draft position", "promql": per_position_expr(sel, w),
         "threshold": "last positions near 0: lower k",
         "why": "Shows whether k is too large; ratios of consecutive positions estimate alpha."},
        {"what": "TPOT P99 vs the plan", "promql": quantile_expr(TPOT_HIST, 0.99, sel, w),
         "threshold": p99_limit(plan.p99_tpot_s, "TPOT"),
         "why": "The gain speculation is for; P99 regresses first under mixed workloads."},
        {"what": "TTFT P99 vs the plan", "promql": quantile_expr(TTFT_HIST, 0.99, sel, w),
         "threshold": p99_limit(plan.p99_ttft_s, "TTFT"), "why": "The draft's prefill can raise TTFT."},
        {"what": "KV cache usage and preemptions",
         "promql": f"max {_by(GROUP_BY)} ({KV_USAGE}{sel}); sum {_by(GROUP_BY)} (increase({PREEMPTIONS}{sel}[{w}]))",
         "threshold": f"usage > {plan.kv_cache_usage_max:.2f} for {f}, or any preemption",
         "why": "The draft's weights and KV come out of the same budget (the squeeze)."},
        {"what": "Requests waiting", "promql": f"sum {_by(GROUP_BY)} ({WAITING}{sel})",
         "threshold": f"> 0 for {f}", "why": "A queue that never empties: the deployment is saturated."},
    ]
    if plan.crossover_batch:
        rows.append({"what": "Running requests vs the crossover batch",
                     "promql": f"max {_by(GROUP_BY)} ({RUNNING}{sel})",
                     "threshold": f">= {plan.crossover_batch:g} sustained (the load model's first batch "
                                  "without a gain)",
                     "why": "Above the crossover speculation costs throughput; the k schedule should turn it off."})
    rows.append({"what": "Acceptance per temperature bucket",
                 "promql": "(per request) --per-request-spec-decode-metrics summary; or one deployment per class",
                 "threshold": f"P10 of per-request alpha < {a_off}",
                 "why": "vLLM's counters carry no temperature label; the source asks for P10/P50/P90 by temperature."})
    return rows


def plan_from_scenario(scenario, p99_tpot_s: float | None = None, p99_ttft_s: float | None = None,
                       crossover_batch: float | None = None, model_name: str | None = None) -> WatchPlan:
    """A WatchPlan from a ``scenario.Scenario`` (k) plus the evaluation's predicted P99s and crossover batch."""
    return WatchPlan(num_speculative_tokens=scenario.num_speculative_tokens, p99_tpot_s=p99_tpot_s,
                     p99_ttft_s=p99_ttft_s, crossover_batch=crossover_batch, model_name=model_name)


def plan_for_evaluation(ev) -> WatchPlan:
    """The WatchPlan of an `evaluate.Evaluation` (``plan_for(ev.scenario, ev.load)``). The memo and ``specdec
    monitoring --scenario`` both call this, so their rule files are the same text for the same scenario."""
    return plan_for(ev.scenario, ev.load)


def plan_for(scenario, forecast) -> WatchPlan:
    """The WatchPlan of a scenario and its load forecast: k, the crossover batch, and P99 TPOT/TTFT.

    The load forecast predicts throughput and speedup, not latency percentiles, so the P99s stay None (the
    thresholds table and ``operator_must_confirm`` then say to set the latency alerts by hand) unless a forecast
    carries ``p99_tpot_s`` / ``p99_ttft_s``.
    """
    crossover = None if forecast is None or scenario.method == "none" else forecast.crossover_batch
    return plan_from_scenario(scenario, p99_tpot_s=getattr(forecast, "p99_tpot_s", None),
                              p99_ttft_s=getattr(forecast, "p99_ttft_s", None), crossover_batch=crossover)


def latency_note(plan: WatchPlan) -> str:
    """Where the plan's P99 limits came from, in one sentence (memo and decision)."""
    if plan.p99_tpot_s is None or plan.p99_ttft_s is None:
        return ("The load forecast predicts no P99 TPOT/TTFT, so the latency alerts have no planned limit: set them "
                "from a baseline measured without speculation.")
    return "The latency alerts compare with the load forecast's P99 TPOT/TTFT (+ the regression tolerance)."
