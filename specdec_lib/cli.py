"""`specdec`: the workbook from the command line (plan, measure, memo, scenario).

    specdec plan   [--scenario FILE] [--run RUN_DIR] [--prediction RUN_DIR ...] [--calibration FILE] [--json]
    specdec measure --url URL [--api-key-env VAR] [--sweep temps|load] [...]
    specdec memo   [--scenario FILE] [--run RUN_DIR] [--baseline-run RUN_DIR] [--prediction RUN_DIR ...]
                   [--calibration FILE] -o memo.html
    specdec scenario [-o FILE]          (write the built-in default scenario as TOML)
    specdec methods [--scenario FILE] [--json]   (every speculative method side by side)

Exit codes: 0 ok; 2 bad input (the message names the field or file); 3 endpoint unreachable (refused, DNS,
timeout); 4 the endpoint answered but not as a vLLM server should (HTTP error, not vLLM, broken stream);
130 interrupted. An API key is only ever read from the environment variable named by --api-key-env, never
from the command line (it would land in shell history and `ps`), and is never printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_ENDPOINT_ERROR = 4
EXIT_INTERRUPTED = 130
UNREACHABLE_KINDS = ("connection_refused", "dns_failure", "connection_error", "timeout")


class CliError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _scenario(path: str | None):
    from specdec_lib.scenario import DEFAULT_SCENARIO, load_scenario

    return DEFAULT_SCENARIO if path is None else load_scenario(path)


def _run(path: str | None, what: str = "--run"):
    if path is None:
        return None
    from specdec_lib import runs

    p = Path(path)
    if not (p / "metadata.json").is_file():
        raise ValueError(f"{what}={path!r} is not a run folder (no metadata.json)")
    return runs.load_run(p)


def resolve_inputs(args, scenario):
    """Prediction runs and a calibration named by flags or by the scenario, resolved once (`inputs.resolve`)."""
    from specdec_lib import inputs

    resolved = inputs.resolve(scenario, prediction_runs=args.prediction or (), calibration=args.calibration)
    for path in resolved.prediction_runs:
        print(f"[{args.command}] prediction run: {path}", file=sys.stderr)
    if resolved.calibration is not None:
        print(f"[{args.command}] calibration: {resolved.calibration.source}", file=sys.stderr)
    return resolved


def evaluate_args(args):
    """`evaluate` for a command's --scenario, --run (else the scenario's measurement_run), --prediction and
    --calibration: the one way plan, memo and monitoring turn arguments into an Evaluation."""
    from specdec_lib.evaluate import evaluate

    scenario = _scenario(args.scenario)
    run = _run(getattr(args, "run", None) or scenario.measurement_run)
    resolved = resolve_inputs(args, scenario)
    return evaluate(scenario, run=run, estimates=resolved.estimates, calibration=resolved.step_factors)


def add_evidence_args(p) -> None:
    p.add_argument("--prediction", metavar="RUN_DIR", action="append",
                   help="a prediction run folder (`specdec predict`) whose predicted alpha is evidence; repeatable "
                        "(added to the scenario's prediction_runs)")
    p.add_argument("--calibration", metavar="FILE",
                   help="a calibration file (`specdec calibrate`) for the load model (default: the scenario's "
                        "calibration, else the built-in H100 factors)")


# --- plan ----------------------------------------------------------------------------------------------------

def _plan_dict(ev) -> dict:
    """The plan as JSON-ready data: rendered from one `evaluate.Evaluation`, like the memo and the pages."""
    from specdec_lib.scenario import scenario_to_dict

    f, plan = ev.load, ev.memory
    cmd = ev.command
    today = ({"argv": list(cmd.argv), "shell": cmd.shell(), "notes": list(cmd.notes),
              "speculative_config": cmd.speculative_config} if cmd is not None else {"error": ev.command_error})
    today["will_start"] = ev.command_will_start
    today["refusals"] = list(ev.refusals)
    legacy = ev.legacy_command
    legacy_d = ({"argv": list(legacy.argv), "shell": legacy.shell(), "applies_to": legacy.applies_to.label()}
                if legacy is not None else {"error": ev.legacy_error})
    return {
        "title": ev.title,
        "scenario": scenario_to_dict(ev.scenario),
        "verdict": ev.verdict,
        "calibration": ev.calibration,
        "reasons": [{"condition": r.condition, "group": r.group, "statement": r.statement, "status": r.status,
                     "value": r.value, "unit": r.unit, "threshold": r.threshold, "source": r.source,
                     "effect": r.effect, "detail": r.detail, "deciding": r in ev.decision.deciding}
                    for r in ev.decision.reasons],
        "load": None if f is None else {
            "cost_ratio": f.cost_ratio, "break_even_alpha": f.break_even_alpha, "alpha": f.alpha,
            "replicas": f.replicas, "replicas_source": f.replicas_source, "capacity_qps": f.capacity_qps,
            "saturated": f.saturated, "replicas_needed": f.replicas_needed, "batch_at_qps": f.batch_at_qps,
            "speedup_at_qps": f.speedup_at_qps, "crossover_batch": f.crossover_batch,
            "crossover_qps": f.crossover_qps, "prompt_tokens": f.prompt_tokens, "output_tokens": f.output_tokens},
        "memory": None if plan is None else {
            "target_weights_bytes": plan.target_weights_bytes, "draft_weights_bytes": plan.draft_weights_bytes,
            "max_concurrent_full_context": plan.max_concurrent_seqs,
            "max_concurrent_full_context_without_draft": plan.max_concurrent_seqs_without_draft,
            "vllm_errors": list(plan.vllm_errors)},
        "acceptance": [{"request_class": c.request_class, "temperature": c.temperature, "alpha": c.alpha,
                        "source": c.source, "used": c.describe(), "rejected": [why for _, why in c.rejected]}
                       for c in ev.acceptance],
        "memory_error": ev.memory_error, "load_error": ev.load_error,
        "command": today,
        "legacy_command": legacy_d,
        "methods": _methods_dict(ev),
    }


def _methods_dict(ev) -> dict:
    """The methods compared (`ev.methods`, as the memo and page 03b show them): the pick and report's rows."""
    from specdec_lib import report

    c = ev.methods
    return {"best": c.best, "pick": report.methods_pick(c), "reasons": list(c.reasons),
            "rows": report.method_rows(c)}


def _print_plan(d: dict) -> None:
    from specdec_lib.display import format_reason_value

    print(f"Scenario: {d['title']}")
    print(f"Verdict:  {d['verdict'].upper()}")
    print(f"Calibration: {d['calibration']}")
    print()
    width = max(len(r["statement"]) for r in d["reasons"])
    for r in d["reasons"]:
        mark = {"passed": "ok  ", "failed": "FAIL", "unknown": "??  "}[r["status"]]
        value = format_reason_value(r["value"], r["unit"])
        star = "*" if r["deciding"] else " "
        print(f" {star}[{mark}] {r['statement']:<{width}}  {value:>16}  ({r['source']}; fails -> {r['effect']})")
    print("  (* = deciding)")
    print("\nAcceptance per request class:")
    for c in d["acceptance"]:
        print(f"  {c['request_class']} (T={c['temperature']:g}): {c['used']}")
        for why in c["rejected"]:
            print(f"      not used: {why}")
    load = d["load"]
    if load is not None:
        speed = ("SATURATED" if load["saturated"] else "alpha unknown" if load["speedup_at_qps"] is None
                 else f"{load['speedup_at_qps']:.2f}x")
        print(f"\nLoad model: {speed} at {d['scenario']['qps']:g} requests/s on {load['replicas']} replica(s) "
              f"({load['replicas_source']}); capacity {load['capacity_qps']:.3g} requests/s; crossover "
              f"{'none' if load['crossover_qps'] is None else round(load['crossover_qps'], 3)} requests/s, "
              f"batch {load['crossover_batch']}")
    m = d["methods"]
    print(f"\nMethods compared (specdec methods for the full table): pick {m['pick']}")
    for r in m["rows"]:
        figures = (f"{r['speedup_at_qps']:>9} at QPS, k {r['k']}, alpha {r['alpha']} ({r['source']}), "
                   f"+{r['extra_weights']}/GPU" if r["why_not"] == "—" else f"n/a: {r['why_not']}")
        print(f"  {'*' if r['best'] else ' '} {r['method']:<28} {figures}")
    print("\nCommand (today's vLLM):")
    if not d["command"]["will_start"]:
        print("  WILL NOT START: " + "; ".join(d["command"]["refusals"]))
    print("  " + d["command"].get("shell", d["command"].get("error", "")).replace("\n", "\n  "))
    print("\nLegacy V0 flags (" + d["legacy_command"].get("applies_to", "") + "):")
    print("  " + d["legacy_command"].get("shell", d["legacy_command"].get("error", "")).replace("\n", "\n  "))


def cmd_plan(args) -> int:
    d = _plan_dict(evaluate_args(args))
    if args.json:
        print(json.dumps(d, indent=2, default=str))
    else:
        _print_plan(d)
    return EXIT_OK


def register_plan(sub) -> None:
    p = sub.add_parser("plan", help="verdict, reasons, memory and load numbers, and the vLLM command")
    p.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: the built-in default scenario)")
    p.add_argument("--run", metavar="RUN_DIR", help="a measurement run folder to take acceptance from")
    add_evidence_args(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_plan)


# --- memo ----------------------------------------------------------------------------------------------------

def cmd_memo(args) -> int:
    from specdec_lib import memo

    baseline = _run(args.baseline_run, "--baseline-run")
    ev = evaluate_args(args)
    run = ev.run
    print(f"[memo] scenario: {ev.title}", file=sys.stderr)
    if run is not None:
        print(f"[memo] measurement run: {run.path}", file=sys.stderr)
    html = memo.render_memo(evaluation=ev, baseline_run=baseline)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    print(f"[memo] wrote {out} ({len(html) / 1e6:.1f} MB)", file=sys.stderr)
    print(str(out))
    return EXIT_OK


def register_memo(sub) -> None:
    o = sub.add_parser("memo", help="write the self-contained HTML decision memo")
    o.add_argument("--scenario", metavar="FILE", help="scenario TOML (default: the built-in default scenario)")
    o.add_argument("--run", metavar="RUN_DIR", help="measurement run folder (default: the scenario's measurement_run)")
    o.add_argument("--baseline-run", metavar="RUN_DIR", help="a run against the same server without speculation")
    add_evidence_args(o)
    o.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write memo.html")
    o.set_defaults(func=cmd_memo)


# --- measure -------------------------------------------------------------------------------------------------

def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not accepted: comma-separated numbers, e.g. 0,0.4,0.8") from None


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not accepted: comma-separated integers, e.g. 1,4,16") from None


def api_key_from_env(variable: str | None) -> str | None:
    """The API key named by ``--api-key-env`` (None when no variable is named): refused, without printing it,
    when the variable is unset or empty or the key holds whitespace such as a trailing CR/LF. The one reading
    of a key every command that talks to a server uses."""
    if not variable:
        return None
    from specdec_lib import redaction

    key = os.environ.get(variable)
    if not key:
        raise ValueError(f"--api-key-env={variable}: that environment variable is not set or empty")
    redaction.check_api_key(key, f"--api-key-env={variable}")
    return key


def _measure_secrets(args) -> tuple[str, ...]:
    """The credentials a measure command holds (the key from the environment, a URL password): masked in
    everything ``main`` prints."""
    from specdec_lib import redaction

    key = os.environ.get(args.api_key_env) if getattr(args, "api_key_env", None) else None
    password = redaction.url_credentials(args.url)[1] if getattr(args, "url", None) else None
    return tuple(s for s in (key, password) if s)


def _prompts_arg(text: str):
    """--prompts: a JSONL file (a path ending in .jsonl, or naming an existing file) or comma-separated sets."""
    from specdec_lib import loadtest

    if not text:
        return loadtest.BUILTIN_PROMPT_SETS
    if text.endswith(".jsonl") or "/" in text or Path(text).is_file():
        if not Path(text).is_file():
            what = "a directory" if Path(text).is_dir() else "missing"
            raise ValueError(f"--prompts={text!r}: no such file ({what})")
        return Path(text)
    return [p.strip() for p in text.split(",") if p.strip()]


def _positive(value, name: str, allow_none: bool = False):
    import math

    if value is None and allow_none:
        return None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is not accepted: a finite number > 0")
    return value


def cmd_measure(args) -> int:
    from specdec_lib import loadtest
    from specdec_lib.endpoint import EndpointClient

    api_key = api_key_from_env(args.api_key_env)
    _positive(args.timeout_s, "--timeout-s")
    _positive(args.max_duration_s, "--max-duration-s", allow_none=True)
    if args.resume and not Path(args.resume).is_dir():
        raise ValueError(f"--resume={args.resume!r}: not a run folder (no such directory)")
    client = EndpointClient(args.url, api_key=api_key, timeout_s=args.timeout_s)
    common = dict(prompts=_prompts_arg(args.prompts), max_tokens=args.max_tokens, runs_dir=args.runs_dir,
                  resume=args.resume, request_timeout_s=args.timeout_s, max_duration_s=args.max_duration_s,
                  progress=not args.no_progress, api=args.api, model=args.model)
    print(f"[measure] {args.sweep} against {client.base_url}; run folders under {args.runs_dir}", file=sys.stderr)
    if args.sweep == "temps":
        levels = _ints(args.concurrency, "--concurrency")
        if len(levels) != 1:
            raise ValueError(f"--concurrency={args.concurrency!r} is not accepted: "
                             "a temperature sweep takes one number")
        result = loadtest.run_temperature_sweep(
            client, temperatures=_floats(args.temperatures, "--temperatures"),
            requests_per_temperature=args.requests, concurrency=levels[0], **common)
        rows = [{"label": t.label, "succeeded": t.succeeded, "errors": t.errors, "k": t.num_speculative_tokens,
                 "v1_rate": t.v1_rate, "alpha": t.alpha, "band": t.band, "status": t.status}
                for t in result.temperatures]
    else:
        result = loadtest.run_load_test(
            client, concurrency_levels=_ints(args.concurrency, "--concurrency"),
            request_rates_qps=_floats(args.rates, "--rates") if args.rates else (),
            requests_per_level=args.requests, temperatures=_floats(args.temperatures, "--temperatures"), **common)
        rows = [_level_row(level) for level in getattr(result, "levels", ())]
    summary = {"run_path": str(result.run_path), "interrupted": result.interrupted, "rows": rows}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for row in rows:
            print("  " + "  ".join(f"{k}={_short(v)}" for k, v in row.items()))
        print(f"run folder: {result.run_path}")
        print(f"next: specdec memo --run {result.run_path} -o memo.html")
    return EXIT_INTERRUPTED if result.interrupted else EXIT_OK


def register_measure(sub) -> None:
    m = sub.add_parser("measure", help="measure acceptance (temperature sweep) or latency under load")
    m.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
    m.add_argument("--api-key-env", metavar="VAR", help="name of the environment variable holding the API key")
    m.add_argument("--model", help="which served model to measure (required when the server serves several)")
    m.add_argument("--sweep", choices=("temps", "load"), default="temps")
    m.add_argument("--temperatures", default="0,0.4,0.8,1.0", help="comma-separated (default: the source's)")
    m.add_argument("--requests", type=int, default=20, help="requests per temperature or per load level")
    m.add_argument("--concurrency", default="4", help="temps: one number; load: levels, e.g. 1,4,16")
    m.add_argument("--rates", default="", help="load: Poisson request rates in requests/s, e.g. 0.5,1,2")
    m.add_argument("--max-tokens", type=int, default=128)
    m.add_argument("--prompts", default="",
                   help="prompt sets (chat,code,summarisation,json_extraction) or a JSONL file")
    m.add_argument("--api", choices=("chat", "completions"), default="chat")
    m.add_argument("--runs-dir", default="data/runs", help="where run folders go (default: data/runs)")
    m.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    m.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    m.add_argument("--max-duration-s", type=float, default=None, help="stop the whole run after this long")
    m.add_argument("--no-progress", action="store_true")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_measure)


def _level_row(level) -> dict:
    from dataclasses import asdict, is_dataclass

    d = asdict(level) if is_dataclass(level) else dict(level)
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list, tuple))}


def _short(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# --- scenario ------------------------------------------------------------------------------------------------

def cmd_scenario(args) -> int:
    import tomli_w

    from specdec_lib.scenario import DEFAULT_SCENARIO, save_scenario, scenario_to_dict

    if args.output:
        print(str(save_scenario(DEFAULT_SCENARIO, args.output)))
    else:
        sys.stdout.write(tomli_w.dumps(scenario_to_dict(DEFAULT_SCENARIO)))
    return EXIT_OK


def register_scenario(sub) -> None:
    s = sub.add_parser("scenario", help="print or write the built-in default scenario (TOML)")
    s.add_argument("-o", "--output", metavar="FILE")
    s.set_defaults(func=cmd_scenario)


# --- wiring --------------------------------------------------------------------------------------------------

# A new subcommand is one `register_x(subparsers)` function and one entry here.
def register_methods(sub) -> None:
    from specdec_lib.methods_compare import register  # `specdec methods`

    register(sub)


def register_calibrate(sub) -> None:
    from specdec_lib.calibrate.command import register  # `specdec calibrate`

    register(sub)


def register_watch(sub) -> None:
    from specdec_lib import watch_cli  # `specdec watch`, `specdec monitoring`

    watch_cli.register(sub)


def register_predict(sub) -> None:
    from specdec_lib import predict_cli  # `specdec predict`: acceptance before deploying

    predict_cli.register(sub)


REGISTRARS = [register_plan, register_measure, register_memo, register_scenario, register_predict, register_methods,
              register_calibrate, register_watch]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specdec", description="Speculative decoding on vLLM: plan, measure, decide, and write the memo.",
        epilog="Exit codes: 0 ok, 2 bad input, 3 endpoint unreachable, 4 endpoint error, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from specdec_lib.endpoint import EndpointError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except EndpointError as exc:
        code = EXIT_UNREACHABLE if exc.kind in UNREACHABLE_KINDS else EXIT_ENDPOINT_ERROR
        print(f"error: {_redacted(exc, args)}", file=sys.stderr)
        if getattr(exc, "run_path", None):
            print(f"the run folder keeps what was recorded: {exc.run_path}", file=sys.stderr)
        return code
    except ValueError as exc:
        print(f"error: {_redacted(exc, args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # an unwritable output, a directory given as a file, a full disk: named, no traceback
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {_redacted(where + (exc.strerror or str(exc)), args)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _redacted(message, args) -> str:
    from specdec_lib import redaction

    return redaction.redact(str(message), _measure_secrets(args))


if __name__ == "__main__":
    sys.exit(main())
