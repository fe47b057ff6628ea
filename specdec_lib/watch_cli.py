"""The ``specdec watch`` and ``specdec monitoring`` subcommands (edge: arguments in, library calls, text out)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WATCH_EPILOG_TEMPLATE = """\
Reads vLLM's counters and histograms every --interval-s seconds, from the server's /metrics (--url) or from a
Prometheus server that scrapes it (--prometheus), for --duration-s seconds. Each read is one line in
RUN_DIR/intervals.jsonl, written and flushed at once: cumulative counters, the last interval's and the rolling
window's (--window-s) V1 acceptance ratio, alpha (solved for k), mean acceptance length, per-position rates (per
engine and summed), TPOT/TTFT P50/P90/P99 from vLLM's histograms, preemptions, KV-cache usage, and flags:
acceptance_off (alpha < {off}; engine_acceptance_off per engine), acceptance_break_even ({off}-{win}),
k_mismatch, position_drift (a per-position rate {drift:.2f} away from the first window), tpot/ttft
P99 above the plan (--p99-tpot-ms/--p99-ttft-ms + {tol:.0%}), preemptions, kv_cache_pressure (> {kv:.0%}).
Ctrl-C stops it between reads: the run folder keeps every record and is marked "interrupted" (exit 130).
Load a run with specdec_lib.watch.load_watch(RUN_DIR).
"""


def register(subparsers) -> None:
    """Add ``watch`` and ``monitoring`` to ``specdec``'s subcommands."""
    from specdec_lib import decision, monitoring
    from specdec_lib.watch import POSITION_DRIFT_MAX

    tol = monitoring.LATENCY_REGRESSION_TOLERANCE
    epilog = WATCH_EPILOG_TEMPLATE.format(off=decision.ALPHA_OFF_BELOW, win=decision.ALPHA_WIN_ABOVE, tol=tol,
                                          kv=monitoring.KV_CACHE_USAGE_MAX, drift=POSITION_DRIFT_MAX)
    w = subparsers.add_parser("watch", help="follow a live endpoint's acceptance and latency; flag regressions",
                              description="Follow a vLLM endpoint (or Prometheus) over time.", epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    src = w.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="the vLLM server's base URL, e.g. http://127.0.0.1:8000 (reads /metrics)")
    src.add_argument("--prometheus", metavar="URL",
                     help="a Prometheus server scraping vLLM, e.g. http://127.0.0.1:9090")
    w.add_argument("--k", type=int, required=True, help="the planned num_speculative_tokens (thresholds are for it)")
    w.add_argument("--model-name", help="only this served model (Prometheus label model_name)")
    w.add_argument("--duration-s", type=float, default=600.0, help="stop after this long (default 600)")
    w.add_argument("--interval-s", type=float, default=10.0, help="seconds between reads (default 10)")
    w.add_argument("--window-s", type=float, default=60.0, help="rolling window for the figures (default 60)")
    w.add_argument("--p99-tpot-ms", type=float, help=f"the plan's P99 TPOT in ms (flag above it + {tol * 100:.0f} %%)")
    w.add_argument("--p99-ttft-ms", type=float, help=f"the plan's P99 TTFT in ms (flag above it + {tol * 100:.0f} %%)")
    w.add_argument("--api-key-env", metavar="VAR", help="name of the environment variable holding the API key")
    w.add_argument("--runs-dir", default="data/runs", help="where run folders go (default: data/runs)")
    w.add_argument("--quiet", action="store_true", help="no line per read on stdout")
    w.set_defaults(func=cmd_watch)

    m = subparsers.add_parser("monitoring", help="write the Prometheus rules and Grafana dashboard for a plan")
    from specdec_lib.cli import add_evidence_args

    m.add_argument("--k", type=int, help="num_speculative_tokens of the deployment (or give --scenario)")
    m.add_argument("--scenario", metavar="FILE",
                   help="plan from a scenario TOML: k and the crossover batch from its evaluation, as the memo does "
                        "(same rules file as `specdec memo` for the same scenario and evidence)")
    m.add_argument("--run", metavar="RUN_DIR", help="with --scenario: a measurement run (default: its measurement_run)")
    add_evidence_args(m)
    m.add_argument("--p99-tpot-ms", type=float, help="the plan's P99 TPOT in ms")
    m.add_argument("--p99-ttft-ms", type=float, help="the plan's P99 TTFT in ms")
    m.add_argument("--model-name", help="restrict the rules to this served model")
    m.add_argument("-o", "--output-dir", required=True, help="writes specdec-rules.yml and specdec-dashboard.json")
    m.set_defaults(func=cmd_monitoring)


def _plan(args):
    from specdec_lib.monitoring import WatchPlan

    ms = lambda v: None if v is None else v / 1e3  # noqa: E731 - ms at the edge, seconds inside
    return WatchPlan(args.k, p99_tpot_s=ms(args.p99_tpot_ms), p99_ttft_s=ms(args.p99_ttft_ms),
                     model_name=args.model_name)


def _line(rec: dict) -> str:
    if rec["kind"] != "tick":
        return f"[{rec['elapsed_s']:7.1f} s] {rec['kind']}: {rec.get('detail', '')}"
    w = rec["window"]
    acc = w.get("acceptance") or {}
    lat = w.get("latency", {})
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    tpot = (lat.get("tpot_s") or {}).get("p99")
    ttft = (lat.get("ttft_s") or {}).get("p99")
    return (f"[{rec['elapsed_s']:7.1f} s] window {w['span_s']:.0f} s: V1 {fmt(acc.get('v1_rate'), '.3f')} "
            f"alpha {fmt(acc.get('alpha'), '.3f')} len {fmt(acc.get('mean_acceptance_length'), '.2f')} "
            f"TPOT p99 {fmt(None if tpot is None else tpot * 1e3, '.1f')} ms "
            f"TTFT p99 {fmt(None if ttft is None else ttft * 1e3, '.1f')} ms"
            + ("  FLAGS: " + "; ".join(rec["flags"]) if rec["flags"] else ""))


def cmd_watch(args) -> int:
    from specdec_lib import cli, watch
    from specdec_lib.endpoint import EndpointClient

    plan = _plan(args)
    if args.url:
        key = cli.api_key_from_env(args.api_key_env)
        source = watch.EndpointSource(EndpointClient(args.url, api_key=key))
    else:
        source = watch.PrometheusSource(args.prometheus, model_name=args.model_name)
    on_record = None if args.quiet else (lambda rec: print(_line(rec), flush=True))
    res = watch.watch(source, plan, runs_dir=args.runs_dir, duration_s=args.duration_s, interval_s=args.interval_s,
                      window_s=args.window_s, on_record=on_record)
    print(f"{res.status}: {res.records} records in {res.run_path}", file=sys.stderr)
    return 130 if res.status == "interrupted" else 0


def cmd_monitoring(args) -> int:
    from specdec_lib import monitoring

    if args.scenario:
        from specdec_lib.cli import evaluate_args

        if args.k is not None or args.p99_tpot_ms is not None or args.p99_ttft_ms is not None:
            raise ValueError("--scenario plans k and latency from the scenario: drop --k/--p99-tpot-ms/--p99-ttft-ms")
        plan = monitoring.plan_for_evaluation(evaluate_args(args))
    elif args.k is None:
        raise ValueError("--k or --scenario is required: the thresholds depend on num_speculative_tokens")
    else:
        plan = _plan(args)
    art = monitoring.artifacts_for(plan)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "specdec-rules.yml").write_text(art.rules_yaml)
    (out / "specdec-dashboard.json").write_text(art.dashboard_json)
    print(json.dumps({"rules": str(out / "specdec-rules.yml"), "dashboard": str(out / "specdec-dashboard.json"),
                      "operator_must_confirm": list(art.operator_must_confirm)}, indent=2))
    return 0
