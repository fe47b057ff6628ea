"""The Grafana dashboard for a planned deployment (pure): the same expressions as the Prometheus rules.

``dashboard(plan)`` returns the dashboard as a dict, ``dashboard_json(plan)`` the text to import (Grafana ->
Dashboards -> New -> Import). The data source is a template variable (``$datasource``, any Prometheus), the
served model another (``$model_name``, from the counters' labels); the rate window is Grafana's
``$__rate_interval``. Units: acceptance ratios and KV usage in ``percentunit`` (a 0-1 fraction shown as percent),
latencies in ``s``. Every query is built by ``monitoring``'s expression functions, so a dashboard line and an
alert can never disagree about what they measure; ``panel_queries`` substitutes the variables so a test can run
each query against a real Prometheus.
"""

from __future__ import annotations

import json

from specdec_lib import decision, monitoring
from specdec_lib.monitoring import WatchPlan

SCHEMA_VERSION = 39  # Grafana 10/11 dashboard schema
DS = {"type": "prometheus", "uid": "${datasource}"}
MODEL_SEL = '{model_name=~"$model_name"}'
WINDOW = "$__rate_interval"


def _thresholds(*steps: tuple[str, float | None]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], *, x: int, y: int,
           thresholds: dict | None = None, description: str = "", mappings: list | None = None) -> dict:
    defaults: dict = {"unit": unit, "custom": {"thresholdsStyle": {"mode": "line" if thresholds else "off"}}}
    if thresholds:
        defaults["thresholds"] = thresholds
    if mappings:
        defaults["mappings"] = mappings
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def dashboard(plan: WatchPlan) -> dict:
    """The dashboard as a dict (``dashboard_json`` for the text)."""
    k = plan.num_speculative_tokens
    off, win = plan.v1_off_below, plan.v1_win_above
    s, w = MODEL_SEL, WINDOW
    v1 = monitoring.v1_rate_expr(s, w)
    tol = plan.latency_tolerance

    def latency_limit(plan_s: float | None) -> dict | None:
        return None if plan_s is None else _thresholds(("green", None), ("red", plan_s * (1 + tol)))

    band_names = {"0": f"off (alpha < {decision.ALPHA_OFF_BELOW})", "1": "break-even",
                  "2": f"win (alpha > {decision.ALPHA_WIN_ABOVE})"}
    panels = [
        _panel(1, f"V1 acceptance ratio (accepted / draft tokens, k={k})", "percentunit",
               [(v1, "{{job}} {{model_name}}"),
                (monitoring.v1_rate_expr(s, w, monitoring.ENGINE_BY), "{{instance}} engine {{engine}}")],
               x=0, y=0, thresholds=_thresholds(("red", None), ("yellow", off), ("green", win)),
               description=f"Not alpha: V1 counts the accepted prefix only. Lines: alpha {decision.ALPHA_OFF_BELOW} "
                           f"= {off:.1%} and alpha {decision.ALPHA_WIN_ABOVE} = {win:.1%} at k={k}."),
        _panel(2, "Acceptance band (alpha, from the V1 ratio)", "none",
               [(monitoring.band_expr(f"({v1})", plan), "{{job}} {{model_name}}")], x=12, y=0,
               mappings=[{"type": "value", "options": {v: {"text": t} for v, t in band_names.items()}}],
               description="0: turn speculation off; 1: near break-even, check P99; 2: a genuine win (the source)."),
        _panel(3, "Mean acceptance length (tokens per verify step)", "none",
               [(monitoring.mean_length_expr(s, w), "{{job}} {{model_name}}")], x=0, y=8,
               description="1 + accepted / drafts (counts the bonus token); at most k + 1."),
        _panel(4, "Acceptance by draft position", "percentunit",
               [(monitoring.per_position_expr(s, w), "{{job}} {{model_name}} position {{position}}")], x=12, y=8,
               description="Share of drafts whose accepted prefix reaches position i; last positions near 0: lower k."),
        _panel(5, "TPOT P50 / P99", "s",
               [(monitoring.quantile_expr(monitoring.TPOT_HIST, 0.5, s, w), "P50 {{job}} {{model_name}}"),
                (monitoring.quantile_expr(monitoring.TPOT_HIST, 0.99, s, w), "P99 {{job}} {{model_name}}")],
               x=0, y=16, thresholds=latency_limit(plan.p99_tpot_s),
               description="A widening P50-P99 gap after enabling speculation is the mixed-workload signal."),
        _panel(6, "TTFT P50 / P99", "s",
               [(monitoring.quantile_expr(monitoring.TTFT_HIST, 0.5, s, w), "P50 {{job}} {{model_name}}"),
                (monitoring.quantile_expr(monitoring.TTFT_HIST, 0.99, s, w), "P99 {{job}} {{model_name}}")],
               x=12, y=16, thresholds=latency_limit(plan.p99_ttft_s)),
        _panel(7, "KV cache usage", "percentunit",
               [(f"max by (job, model_name, instance) ({monitoring.KV_USAGE}{s})", "{{instance}}")], x=0, y=24,
               thresholds=_thresholds(("green", None), ("red", plan.kv_cache_usage_max))),
        _panel(8, "Preemptions per window", "short",
               [(f"sum by (job, model_name) (increase({monitoring.PREEMPTIONS}{s}[{w}]))", "{{job}} {{model_name}}")],
               x=12, y=24),
        _panel(9, "Requests running / waiting", "short",
               [(f"sum by (job, model_name) ({monitoring.RUNNING}{s})", "running {{model_name}}"),
                (f"sum by (job, model_name) ({monitoring.WAITING}{s})", "waiting {{model_name}}")], x=0, y=32,
               thresholds=None if not plan.crossover_batch else
               _thresholds(("green", None), ("red", float(plan.crossover_batch)))),
        _panel(10, "Output throughput (tokens/s)", "short",
               [(f"sum by (job, model_name) (rate(vllm:generation_tokens_total{s}[{w}]))", "{{job}} {{model_name}}")],
               x=12, y=32),
    ]
    return {
        "title": f"Speculative decoding on vLLM (k={k})",
        "uid": f"specdec-k{k}",
        "tags": ["vllm", "speculative-decoding"],
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus"},
            {"type": "query", "name": "model_name", "label": "Model", "datasource": DS,
             "query": {"query": f"label_values({monitoring.DRAFT_TOKENS}, model_name)", "refId": "model_name"},
             "definition": f"label_values({monitoring.DRAFT_TOKENS}, model_name)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def dashboard_json(plan: WatchPlan) -> str:
    """The import-ready dashboard text."""
    return json.dumps(dashboard(plan), indent=2)


def panel_queries(dash: dict, *, model_name_regex: str = ".*", rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard's variables substituted) for every target of every panel."""
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$model_name", model_name_regex).replace("$__rate_interval", rate_interval)
            out.append((p["title"], expr))
    return out
