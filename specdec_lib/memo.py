"""The HTML decision memo: one self-contained file that opens offline, prints, and can be mailed or archived.

Jinja2 with autoescape on renders every piece of user text (scenario names, notes, run metadata) escaped; the
only unescaped inserts are plotly.js itself (inlined once, `plotly.offline.get_plotlyjs()`) and plotly's own
figure HTML (`fig.to_html(full_html=False, include_plotlyjs=False)`, which JSON-escapes `</`), and no user text
goes into a figure. The memo takes no API key: nothing here can write one, and run folders never hold one
(`runs.py` refuses secrets in metadata and records).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import plotly.offline

from specdec_lib import acceptance, display, plots, report, rules, vllm_command
from specdec_lib import decision as dec
from specdec_lib.scenario import Scenario, production_temperature_median

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "memo.html.j2"
GIB = display.GIB
LATENCY_COLUMNS = ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p99", "E2E p50", "E2E p99")
_LATENCY_KEYS = {"TTFT p50": "ttft_p50_s", "TTFT p99": "ttft_p99_s", "TPOT p50": "tpot_p50_s",
                 "TPOT p99": "tpot_p99_s", "ITL p99": "itl_p99_s", "E2E p50": "e2e_p50_s", "E2E p99": "e2e_p99_s"}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    return env


def _figure_html(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True, "displayModeBar": False})


format_value = display.format_reason_value  # the memo's, the CLI's and the pages' one formatter


def _gib(n: float | None) -> str:
    return "—" if n is None else f"{n / GIB:.2f} GiB"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def _scenario_rows(s: Scenario) -> list[tuple[str, str]]:
    return [
        ("target model", f"{s.target_model} ({s.target_precision})"),
        ("speculation", s.method if s.method != "draft_model"
         else f"draft model {s.draft_model} ({s.draft_precision})"),
        ("GPUs", f"{s.num_gpus} x {s.gpu}, tensor parallel {s.tensor_parallel_size}"
                 + (f", draft TP {s.draft_tensor_parallel_size}" if s.draft_model else "")),
        ("gpu_memory_utilization", f"{s.gpu_memory_utilization:g}"),
        ("KV cache dtype", s.kv_cache_dtype),
        ("context length (max_model_len)", f"{s.context_len:,} tokens"),
        ("draft tokens per step (k)", str(s.num_speculative_tokens)),
        ("load", f"{s.qps:g} requests/s"),
        ("primary SLO", s.slo),
        ("acceptance monitoring in place", "yes" if s.monitoring_in_place else "no"),
        ("acceptance validated at production temperature", "yes" if s.acceptance_validated_at_production_temperature
         else "no"),
        ("endpoint", s.endpoint_url or "none"),
        ("median temperature", f"{production_temperature_median(s):g}"),
    ]


def _memory_rows(plan) -> list[tuple[str, str, str]]:
    comps = plots.memory_components(plan)
    rows = [(name, _gib(comps["with draft"][name]), _gib(comps["without draft"][name]))
            for name in comps["with draft"]]
    rows.append(("KV cache capacity", f"{plan.kv_capacity_tokens:,} tokens",
                 f"{plan.kv_capacity_tokens_without_draft:,} tokens"))
    rows.append((f"concurrent requests of {plan.context_len:,} tokens (per replica)",
                 f"{plan.max_concurrent_seqs:,}", f"{plan.max_concurrent_seqs_without_draft:,}"))
    rows.append(("target weights share of GPU memory", f"{plan.target_weights_fraction_of_memory:.1%}", ""))
    if plan.draft:
        rows.append(("draft weights share of memory given to vLLM (the decision's 15% rule)",
                     f"{plan.draft_weights_fraction_of_usable:.1%}", ""))
        rows.append(("draft weights share of memory left after the target",
                     f"{plan.draft_fraction_of_available:.1%}", ""))
    return rows


def _run_metadata_rows(meta: dict) -> list[tuple[str, str]]:
    keys = ("run_id", "kind", "status", "created_utc", "finished_utc", "endpoint", "served_model", "vllm_version",
            "speculative", "parameters", "host", "workbook_version")
    rows = []
    for key in keys:
        if key in meta:
            value = meta[key]
            rows.append((key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)))
    return rows


def _measurement(run, role: str) -> dict:
    from specdec_lib import runs, speculation

    summary = runs.summarise(run)
    acceptance_rows, latency_rows = [], []
    for label, group in summary["groups"].items():
        acc, lat = group["acceptance"], group["latency"]
        k = acc.get("num_speculative_tokens")
        if acc.get("draft_tokens") and k:
            rate = acc["accepted_tokens"] / acc["draft_tokens"]
            alpha = speculation.alpha_from_v1_rate(rate, k)
            band = speculation.verdict_band(alpha).name.replace("_", " ")
            pcts = " / ".join("—" if acc.get(f"per_request_p{q}") is None else f"{acc[f'per_request_p{q}']:.2f}"
                              for q in (10, 50, 90))
            acceptance_rows.append((label, _fmt_t(group.get("temperature")), lat["succeeded"], f"{rate:.3f}", k,
                                    f"{alpha:.3f}", pcts, band))
        latency_rows.append((label, f"{lat['succeeded']} ({lat['errors']})",
                             *[_ms(lat.get(_LATENCY_KEYS[c])) for c in LATENCY_COLUMNS],
                             "—" if lat.get("output_tokens_per_s") is None else f"{lat['output_tokens_per_s']:.1f}"))
    return {"role": role, "run_id": run.metadata.get("run_id", run.path.name),
            "metadata_rows": _run_metadata_rows(run.metadata),
            "acceptance_rows": acceptance_rows, "latency_rows": latency_rows, "summary": summary, "note": ""}


def _fmt_t(t) -> str:
    return "—" if t is None else f"{t:g}"


def _overall_latency(run) -> dict[str, float | None]:
    """Latency percentiles over every request of a run, recomputed from its records (`runs.latency_summary`)."""
    from specdec_lib import runs

    summary = runs.latency_summary(list(run.records))
    return {column: summary.get(_LATENCY_KEYS[column])
            for column in ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p50", "E2E p99")}


def _risks(s: Scenario, decision: dec.Decision, plan, forecast) -> list[str]:
    risks = []
    for r in decision.reasons:
        if r.status == "failed":
            risks.append(f"{r.statement}: failed ({format_value(r.value, r.unit)}, {r.source}). {r.detail}".strip())
        elif r.status == "unknown":
            risks.append(f"{r.statement}: unknown. {r.detail}".strip())
    if s.target_precision.startswith("int4"):
        risks.append("INT4 target: the source reports a real acceptance penalty for INT4 targets; prefer INT8 and "
                     "measure acceptance before and after any quantization change (alert on a drop > 5 points).")
    risks += [
        "Temperature drift: acceptance falls as temperature rises (the source's example: 0.81 at T=0 to 0.38 at "
        "T=1.0). A greedy benchmark says nothing about T=0.8 traffic.",
        "Load: the vLLM team measured 1.4-1.8x slowdowns at high QPS with the same configurations that gave "
        "1.5-2.8x at QPS 1. Above the crossover, speculation costs throughput"
        + (f" (predicted crossover: {forecast.crossover_qps:.3g} requests/s)."
           if forecast is not None and forecast.crossover_qps else "."),
        "Mixed workloads: P50 can improve while P99 regresses; compare P99 with and without speculation at "
        "production concurrency before shipping.",
        "TTFT: the draft adds a prefill; TTFT can rise slightly even when TPOT improves.",
        "Metric definitions: vLLM V1's accepted/draft ratio is not the V0 gauge the source's thresholds were "
        "written for; at k=5, alpha 0.7 reads as 0.39 in V1. Convert before comparing.",
    ]
    if plan is not None and plan.draft:
        lost = plan.max_concurrent_seqs_without_draft - plan.max_concurrent_seqs
        risks.append(f"KV cache squeeze: the draft costs {lost:,} concurrent full-context requests per replica "
                     f"({plan.max_concurrent_seqs_without_draft:,} -> {plan.max_concurrent_seqs:,}).")
    return risks


def monitoring_plan(s: Scenario, crossover_batch: float | None = None) -> list[dict[str, str]]:
    """Metrics, PromQL over vLLM 0.32's counters, thresholds: `monitoring.memo_rows`, the same expressions and
    thresholds as the rule file the memo ships (one truth)."""
    from specdec_lib import monitoring

    return monitoring.memo_rows(monitoring.plan_from_scenario(s, crossover_batch=crossover_batch))


def _data_uri(text: str, mime: str) -> str:
    import base64

    return f"data:{mime};base64," + base64.b64encode(text.encode("utf-8")).decode("ascii")


def monitoring_block(ev) -> dict[str, Any]:
    """The memo's monitoring section: the table, the rule file and the dashboard (as downloadable data: links and
    inline text), the thresholds table and what the operator must still confirm. All from
    `monitoring.artifacts_for(monitoring.plan_for_evaluation(ev))`: `specdec monitoring --scenario` writes the
    same files."""
    from specdec_lib import monitoring

    plan = monitoring.plan_for_evaluation(ev)
    art = monitoring.artifacts_for(plan)
    table = art.thresholds_table()
    return {"rows": monitoring.memo_rows(plan), "rules_yaml": art.rules_yaml, "dashboard_json": art.dashboard_json,
            "rules_href": _data_uri(art.rules_yaml, "application/yaml"),
            "dashboard_href": _data_uri(art.dashboard_json, "application/json"),
            "thresholds_columns": list(table.columns),
            "thresholds_rows": [[_cell(v) for v in row] for row in table.itertuples(index=False)],
            "operator_must_confirm": list(art.operator_must_confirm), "latency_note": monitoring.latency_note(plan)}


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def predicted_vs_measured(ev) -> list[dict[str, str]]:
    """Per request class where both exist: the predicted and the measured acceptance side by side (issue 12)."""
    rows = []
    for c in ev.acceptance:
        used = [e for e in (c.chosen, *c.also_applicable) if e is not None]
        predicted = [e for e in used if e.source == "predicted"]
        measured = [e for e in used if e.source == "measured"]
        if predicted and measured:
            p, m = predicted[0], measured[0]
            rows.append({"request_class": c.request_class, "temperature": f"{c.temperature:g}",
                         "predicted": acceptance.describe_estimate(p), "measured": acceptance.describe_estimate(m),
                         "difference": f"{p.alpha - m.alpha:+.3f}",
                         "inside": ("yes" if p.alpha_low is not None and p.alpha_high is not None
                                    and p.alpha_low <= m.alpha <= p.alpha_high else "no")})
    return rows


def _figures(ev, run, baseline_run, measurements) -> dict[str, str | None]:
    from specdec_lib import speculation

    figures: dict[str, str | None] = dict.fromkeys(("memory", "alpha", "load", "acceptance", "histogram", "latency"))
    s, f = ev.scenario, ev.load
    if ev.memory is not None:
        figures["memory"] = _figure_html(plots.memory_figure(plots.memory_components(ev.memory),
                                                             memory_bytes_per_gpu=ev.memory.memory_bytes_per_gpu))
    curves = ev.speedup_vs_alpha()
    if curves:
        k = s.num_speculative_tokens
        alpha, _ = ev.workload_alpha
        figures["alpha"] = _figure_html(plots.speedup_vs_alpha_figure(
            [i / 100 for i in range(100)], curves,
            break_even_by_k={k: f.break_even_alpha} if f.break_even_alpha is not None else {}, marked_alpha=alpha))
    if f is not None and f.curve_x:
        figures["load"] = _figure_html(plots.speedup_vs_load_figure(
            f.curve_x, f.curves, x_label="requests per second (whole deployment)", crossover=f.crossover_qps,
            marked_x=s.qps, marked_label="scenario QPS", saturated_from=f.capacity_qps,
            title=f"Predicted speedup vs request rate ({f.prompt_tokens} in, {f.output_tokens} out per request)"))
    measured = [e for c in ev.acceptance for e in (c.chosen, *c.also_applicable)
                if e is not None and e.source == "measured"]
    if measured:
        unique = {(e.temperature, e.alpha): e for e in measured}
        figures["acceptance"] = _figure_html(plots.acceptance_by_temperature_figure(
            [t for t, _ in unique], [a for _, a in unique],
            v1_rates=[speculation.v1_rate_from_alpha(e.alpha, e.k) if e.k else None for e in unique.values()],
            production_temperatures=sorted({c.temperature for c in s.workload})))
    if run is not None:
        alphas_req = acceptance.per_request_alphas(run)
        if alphas_req:
            figures["histogram"] = _figure_html(plots.acceptance_histogram_figure(
                alphas_req, title="Per-request acceptance (alpha, converted from V1 per-request rates)"))
        with_lat = _overall_latency(run)
        without_lat = _overall_latency(baseline_run) if baseline_run is not None else None
        figures["latency"] = _figure_html(plots.latency_percentiles_figure(
            with_lat, without_lat, title="Latency percentiles" + (" with and without speculation"
                                                                  if without_lat else " (measurement run)")))
    return figures


def build_context(ev, *, baseline_run=None, generated_utc: str | None = None) -> dict[str, Any]:
    """Everything the template shows, from one `evaluate.Evaluation` (nothing is recomputed here)."""
    from specdec_lib import speculation

    scenario, decision, plan, run = ev.scenario, ev.decision, ev.memory, ev.run
    k = scenario.num_speculative_tokens
    measurements = []
    if run is not None:
        measurements.append(_measurement(run, "Measurement run"))
        used = [e for c in ev.acceptance for e in (c.chosen, *c.also_applicable)
                if e is not None and e.source == "measured"]
        if not used:
            measurements[0]["note"] = ("Not evidence for this scenario: "
                                       + decision.reason("evidence_applies").detail)
    if baseline_run is not None:
        measurements.append(_measurement(baseline_run, "Baseline run (speculation off)"))
    command = _command_block(ev)
    watch = monitoring_block(ev)
    return {
        "title": ev.title,
        "scenario": scenario,
        "scenario_rows": _scenario_rows(scenario),
        "workload_rows": report.class_rows(ev),
        "decision": decision,
        "deciding": decision.deciding,
        "evidence": ev.evidence,
        "memory_error": ev.memory_error,
        "memory_rows": _memory_rows(plan) if plan is not None else [],
        "memory_findings": list(plan.findings) if plan is not None else [],
        "memory_vllm_errors": list(plan.vllm_errors) if plan is not None else [],
        "load_error": ev.load_error,
        "speedup_rows": report.speedup_rows(ev),
        "figures": _figures(ev, run, baseline_run, measurements),
        "measurements": measurements,
        "latency_columns": LATENCY_COLUMNS,
        "risks": _risks(scenario, decision, plan, ev.load),
        "command": command,
        "legacy": _legacy_block(ev),
        "monitoring": watch["rows"],
        "monitoring_files": watch,
        "predicted_vs_measured": predicted_vs_measured(ev),
        "v1_off": f"{speculation.v1_rate_from_alpha(rules.ALPHA_OFF_BELOW, k):.3f}",
        "v1_win": f"{speculation.v1_rate_from_alpha(rules.ALPHA_WIN_ABOVE, k):.3f}",
        "generated_utc": generated_utc or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "workbook_version": _workbook_version(),
        "checked_vllm_version": vllm_command.CHECKED_VLLM_VERSION,
        "fmt_value": lambda r: format_value(r.value, r.unit),
        "methods": methods_block(ev),
    }


def methods_block(ev) -> dict:
    """The "Methods compared" section: `ev.methods` as report's rows, the pick, its reasons and its command.
    Published priors in these rows never reach the verdict above (the verdict uses the scenario's own evidence)."""
    c = ev.methods
    best = c.row(c.best) if c.best else None
    return {"comparison": c, "rows": report.method_rows(c), "columns": report.METHOD_COLUMNS,
            "pick": report.methods_pick(c), "reasons": list(c.reasons), "rule": c.rule,
            "command": best.command if best is not None else None,
            "verdict_method": ev.scenario.method}


def _command_block(ev) -> dict:
    """Today's command, or why there is none; `will_start` False (with the refusals) when vLLM would refuse it."""
    block = {"applies_to": vllm_command.TODAY.label(), "refusals": list(ev.refusals),
             "will_start": ev.command_will_start, "error": ev.command_error, "notes": []}
    cmd = ev.command
    if cmd is not None:
        block.update(shell=cmd.shell(), applies_to=cmd.applies_to.label(), notes=list(cmd.notes),
                     config=json.dumps(cmd.speculative_config, indent=2) if cmd.speculative_config else None)
        f = ev.load
        if ev.scenario.method != "none" and (f is None or f.crossover_batch is None):
            block["notes"].append(
                "No k schedule (num_speculative_tokens_per_batch_size): "
                + ("the load model needs alpha to find the crossover batch; measure acceptance."
                   if f is None or f.alpha is None else "the load model finds no crossover below the batch cap."))
    return block


def _legacy_block(ev) -> dict:
    cmd = ev.legacy_command
    if cmd is None:
        return {"error": ev.legacy_error, "applies_to": "vLLM <= 0.8.2"}
    flags = [(a, vllm_command.LEGACY_FLAG_VERSIONS[a].label(), vllm_command.LEGACY_FLAG_VERSIONS[a].evidence)
             for a in cmd.argv if a in vllm_command.LEGACY_FLAG_VERSIONS]
    return {"error": None, "shell": cmd.shell(), "applies_to": cmd.applies_to.label(), "flags": flags}


def _workbook_version() -> str:
    try:
        from importlib.metadata import version
        return version("specdec-workbook")
    except Exception:  # not installed (running from a checkout): say so rather than invent a number
        return "(not installed)"


def render_memo(scenario: Scenario | None = None, *, run=None, baseline_run=None, estimates=(), calibration=None,
                evaluation=None, generated_utc: str | None = None) -> str:
    """The memo as one HTML string (plotly.js inlined once), from `evaluation` or from `evaluate(scenario, ...)`."""
    from specdec_lib.evaluate import evaluate

    ev = evaluation if evaluation is not None else evaluate(scenario, estimates=estimates, run=run,
                                                            calibration=calibration)
    context = build_context(ev, baseline_run=baseline_run, generated_utc=generated_utc)
    template = _environment().get_template(TEMPLATE_NAME)
    return template.render(plotly_js=plotly.offline.get_plotlyjs(), **context)


def write_memo_html(ev, path: str | Path, *, baseline_run=None) -> Path:
    """Write the memo of an `Evaluation` (what a page shows is what the file says)."""
    html = render_memo(evaluation=ev, baseline_run=baseline_run)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def write_memo(scenario: Scenario, path: str | Path, *, run_dir: str | Path | None = None,
               baseline_run_dir: str | Path | None = None, estimates=(), calibration=None) -> Path:
    """Render and write the memo; run folders are read with `runs.load_run`."""
    from specdec_lib import runs

    run = runs.load_run(run_dir) if run_dir else None
    baseline = runs.load_run(baseline_run_dir) if baseline_run_dir else None
    html = render_memo(scenario, run=run, baseline_run=baseline, estimates=estimates, calibration=calibration)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
