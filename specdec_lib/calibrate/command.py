"""`specdec calibrate`: probe a running endpoint (and its speculative twin), fit, write the calibration file.

    specdec calibrate --url URL [--spec-url URL] [--model NAME|DIR] [--draft-model NAME|DIR]
                      [--hardware NAME|FILE] [--precision bf16] [--tp 1] [-o FILE]

`calibrate_endpoint` is the library function behind it (it returns the file's content); `register(subparsers)`
adds the command to the `specdec` parser.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from specdec_lib import simulate
from specdec_lib.calibrate import fit, probe, replay
from specdec_lib.calibrate.files import FORMAT, redact_url, trimmed_records, write_calibration


def _model_spec(name_or_dir: str | None, served: dict | None) -> tuple[Any, str]:
    """A catalog ModelSpec for the load model: a config folder, a catalog name, or the served model's `root`."""
    from specdec_lib import catalog

    candidates = [name_or_dir] if name_or_dir else [c for c in ((served or {}).get("root"),
                                                                (served or {}).get("id")) if c]
    errors = []
    for c in candidates:
        if Path(c).joinpath("config.json").is_file() or Path(c).name == "config.json":
            return catalog.model_from_hf_config(c), f"config {c}"
        try:
            return catalog.get_model(c), f"catalog {c}"
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError("the model's architecture is unknown (give --model NAME|CONFIG_DIR): " + "; ".join(errors))


def hardware_spec(name_or_file: str) -> Any:
    """A catalog GPU by name, or a JSON file {name, bandwidth_bytes_per_s, bf16_flops_per_s[, memory_bytes]} for
    hardware the catalog lacks (a CPU server: the peaks the fitted efficiencies are relative to)."""
    from specdec_lib import catalog

    p = Path(name_or_file)
    if not p.is_file():
        return catalog.get_gpu(name_or_file)
    d = json.loads(p.read_text(encoding="utf-8"))
    for field in ("name", "bandwidth_bytes_per_s", "bf16_flops_per_s"):
        if field not in d:
            raise ValueError(f"{p}: field {field!r} is missing; expected name, bandwidth_bytes_per_s, "
                             "bf16_flops_per_s")
    rate = float(d["bf16_flops_per_s"])
    return catalog.GPU(name=str(d["name"]), memory_bytes=int(d.get("memory_bytes", 0)),
                       bandwidth_bytes_per_s=float(d["bandwidth_bytes_per_s"]), bf16_flops_per_s=rate,
                       fp8_flops_per_s=None, int8_ops_per_s=rate, interconnect_bytes_per_s=1.0,
                       memory_source=str(d.get("source", p.name)))


REPLAY_SERVER = simulate.ServerConfig(kv_capacity_tokens=10**7, max_num_seqs=1024, max_num_batched_tokens=8192)


def _replay_quality(sim: fit.SimulatorFit, base: probe.ProbeResult, spec: probe.ProbeResult | None,
                    streamed: dict[str, list[dict]], server: simulate.ServerConfig) -> dict[str, Any]:
    """The fit's replay loss on each probe (`replay.replay_loss`: 0 when the replayed probe matches its quartiles),
    and the alpha the speculative replay used (measured on the speculative probe). Replayed: each server's
    `streamed` records (those whose chunks came in one burst measure the held stream, not the engine)."""
    quality: dict[str, Any] = {"baseline_replay_loss": replay.replay_loss(
        sim.step_time, sim.request_overhead_s, streamed["baseline"], server=server)}
    if spec is not None:
        k = spec.num_speculative_tokens
        alpha = simulate.alpha_from_steps(spec.records, k)
        quality.update(probe_alpha=alpha, speculative_replay_loss=replay.replay_loss(
            sim.step_time, sim.speculative_request_overhead_s or 0.0, streamed["speculative"], server=server,
            speculation=simulate.SpeculationConfig(k), alpha=alpha))
    return quality


def calibrate_endpoint(base: probe.ProbeResult, spec: probe.ProbeResult | None = None, *, model: Any = None,
                       draft: Any = None, hardware: Any = None, precision: str = "bf16", tp: int = 1,
                       notes: Sequence[str] = (), replay_server: simulate.ServerConfig = REPLAY_SERVER
                       ) -> dict[str, Any]:
    """Fit both step models to probe results and return the calibration file's content (see `files.py`).

    The simulator's step: the staged fit (`fit.fit_simulator_step`); its quality also as the replay of the probe
    through the simulator on `replay_server`'s limits (`replay.replay_loss`). Without `model` and `hardware` the
    load model's factors are not fitted (said in `load_model.skipped`).
    """
    from specdec_lib import catalog

    base_levels = fit.level_observations(base.records, "baseline")
    spec_levels = fit.level_observations(spec.records, "speculative", spec.num_speculative_tokens) if spec else []
    idle = fit.idle_records(base.records)
    spec_idle = fit.idle_records(spec.records, spec.num_speculative_tokens) if spec else []
    sim = fit.fit_simulator_step(base_levels, spec_levels, idle, spec_idle)
    notes, streamed = list(sim.fallbacks), {}
    for server, pr in (("baseline", base), ("speculative", spec)):
        if pr is None:
            continue
        held = fit.burst_flags(pr.records, pr.num_speculative_tokens)
        streamed[server] = [r for r, burst in zip(pr.records, held) if not burst]
        if any(held):
            notes.append(f"left out: {sum(held)} {server} request(s) whose chunks came in one burst (a decode step "
                         f"under 1/{fit.STALL_FACTOR:g} of the server's median: the stream was held, not computed)")
    replay_quality = _replay_quality(sim, base, spec, streamed, replay_server)
    load_part: dict[str, Any] = {"skipped": "no model architecture or hardware given"}
    load_fit = None
    if model is not None and hardware is not None:
        # float32 is not a catalog precision (no GPU deployment serves it); a CPU server may
        prec = catalog.Precision("fp32", 32, None, 0.0, notes="CPU serving") if precision == "fp32" \
            else catalog.get_precision(precision)
        load_fit = fit.fit_load_factors(base_levels, spec_levels, model=model, precision=prec, hardware=hardware,
                                        tp=tp, draft=draft, draft_precision=prec)
        load_part = {"factors": {k: v for k, v in load_fit.factors.as_dict().items() if k != "source"},
                     "fitted": list(load_fit.fitted), "model": model.name,
                     "draft_model": draft.name if draft is not None else None, "precision": precision, "tp": tp,
                     "hardware": {"name": hardware.name, "bandwidth_bytes_per_s": hardware.bandwidth_bytes_per_s,
                                  "bf16_flops_per_s": hardware.bf16_flops_per_s}}
    servers = {"baseline": {**base.server, "base_url": redact_url(base.server["base_url"])}}
    if spec:
        servers["speculative"] = {**spec.server, "base_url": redact_url(spec.server["base_url"])}
    return {
        "format": FORMAT,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "server": servers,
        "num_speculative_tokens": spec.num_speculative_tokens if spec else None,
        "runs": [str(p) for p in (*base.run_paths, *(spec.run_paths if spec else ()))],
        "simulator": {"step_time": sim.step_time.__dict__, "request_overhead_s": sim.request_overhead_s,
                      "speculative_request_overhead_s": sim.speculative_request_overhead_s},
        "load_model": load_part,
        "fit_quality": {
            **replay_quality,
            "simulator_median_abs_pct_error": sim.median_abs_pct_error,
            "simulator_notes": notes,
            "load_model_median_abs_pct_error": load_fit.baseline_median_abs_pct_error if load_fit else None,
            "load_model_speculative_median_abs_pct_error": load_fit.speculative_median_abs_pct_error
            if load_fit else None,
        },
        "levels": fit.level_rows([*base_levels, *spec_levels], sim, load_fit),
        "observations": {"baseline": trimmed_records(list(base.records)),
                         "speculative": trimmed_records(list(spec.records)) if spec else []},
        "notes": list(notes),
    }


def probes_from_payload(payload: dict[str, Any]) -> tuple[probe.ProbeResult, probe.ProbeResult | None]:
    """The probe results a calibration file was fitted from (its raw observations), to refit them, e.g. with the
    model's architecture and the hardware's peaks for the load model, without probing the server again."""
    obs = payload.get("observations") or {}
    if not obs.get("baseline"):
        raise ValueError("calibration file: field 'observations.baseline' is empty; nothing to refit")
    k = payload.get("num_speculative_tokens")
    base = probe.ProbeResult("baseline", dict(payload["server"]["baseline"]), 0, (), tuple(obs["baseline"]))
    spec = None
    if obs.get("speculative") and k:
        spec = probe.ProbeResult("speculative", dict(payload["server"]["speculative"]), int(k), (),
                                 tuple(obs["speculative"]))
    return base, spec


def format_fit(payload: dict[str, Any]) -> str:
    """The fit quality as a small table (ms), one line per probe level."""
    lines = [f"{'server':<12}{'c':>4}{'N':>6}{'reqs':>6}{'steps':>9}{'batch*':>8}{'tokens*':>9}{'step ms':>10}"
             f"{'simulator':>11}{'load model':>12}"]
    for row in payload["levels"]:
        sim = row["simulator_step_s"]
        lm = row["load_model_step_s"]
        held = "+prompt" if row.get("prompt_in_step") else "decode"
        lines.append(f"{row['server']:<12}{row['concurrency']:>4}{row['max_tokens']:>6}{row['requests']:>6}"
                     f"{held:>9}{row['batch_size']:>8.2f}{row['tokens_in_step']:>9.1f}"
                     f"{row['step_s'] * 1e3:>10.1f}{'' if sim is None else f'{sim * 1e3:.1f}':>11}"
                     f"{'' if lm is None else f'{lm * 1e3:.1f}':>12}")
    q = payload["fit_quality"]

    def pct(v: float | None) -> str:
        return "not fitted" if v is None else f"{100 * v:.1f} %"

    lines.append("* the mean step as observed, apart for the level's steps that only decoded and those a prompt "
                 "landed in (+prompt): sequences in it and tokens computed (decodes, and prompts prefilled)")
    lines.append(f"replay of the probe through the simulation (mean squared log-ratio of TTFT and decode-time "
                 f"quartiles, 0 = exact): baseline {q['baseline_replay_loss']:.3f}"
                 + (f"; speculative {q['speculative_replay_loss']:.3f}" if "speculative_replay_loss" in q else ""))
    lines.append(f"median |error|: simulator {pct(q['simulator_median_abs_pct_error'])}; load model "
                 f"{pct(q['load_model_median_abs_pct_error'])} (baseline levels), "
                 f"{pct(q['load_model_speculative_median_abs_pct_error'])} (speculative levels, out of sample)")
    lines += [f"note: {text}" for text in q.get("simulator_notes", ())]
    return "\n".join(lines)


def _client(url: str, api_key_env: str | None, timeout_s: float):
    from specdec_lib.endpoint import EndpointClient

    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"--api-key-env={api_key_env}: that environment variable is not set or empty")
    return EndpointClient(url, api_key=key, timeout_s=timeout_s)


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not accepted: comma-separated integers, e.g. 1,2,4,8") from None


def check_runs(calibration_path: str | Path, run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """A calibration file's step against the steps of recorded runs on the same server (`fit.run_step_check`): one
    row per run, its folder, k (from the run's server info) and the check. Has the server kept the speed it was
    calibrated at? A run of a speculative server is checked with its k and the calibration's draft terms."""
    from specdec_lib import runs
    from specdec_lib.calibrate.files import load_calibration

    cal = load_calibration(calibration_path)
    if cal.step_time is None:
        raise ValueError(f"{calibration_path}: no simulator step in this calibration file (field "
                         "'simulator.step_time'); check runs against a file written by `specdec calibrate`")
    rows = []
    for d in run_dirs:
        run = runs.load_run(d)
        server = run.metadata.get("server") or {}
        k = int(server.get("num_speculative_tokens") or 0) if server.get("speculation") else 0
        try:
            check = fit.run_step_check(run.records, cal.step_time, k)
        except ValueError as exc:
            raise ValueError(f"run folder {d}: {exc}") from None
        rows.append({"run": str(d), "num_speculative_tokens": k, **check})
    return rows


def _check(args) -> int:
    if not args.calibration:
        raise ValueError("--check needs --calibration FILE (the calibration to check the runs against)")
    print(f"{'run':<44}{'k':>3}{'batch':>7}{'tokens':>8}{'step ms':>9}{'calibrated':>12}{'error':>9}")
    for row in check_runs(args.calibration, args.check):
        print(f"{Path(row['run']).name[:43]:<44}{row['num_speculative_tokens']:>3}{row['batch_size']:>7.2f}"
              f"{row['tokens_in_step']:>8.1f}{row['observed_step_s'] * 1e3:>9.1f}{row['predicted_step_s'] * 1e3:>12.1f}"
              f"{100 * row['error']:>+8.1f}%")
    print("step ms: the run's mean decode step; calibrated: the calibration's step for the same batch and tokens "
          "(error = calibrated / observed - 1)")
    return 0


def cmd_calibrate(args) -> int:
    if args.check:
        return _check(args)
    if args.from_file:
        return _refit(args)
    if not args.url:
        raise ValueError("--url is required (or --from-file to refit an existing calibration file)")
    base_client = _client(args.url, args.api_key_env, args.timeout_s)
    common = dict(concurrency=_ints(args.concurrency, "--concurrency"),
                  output_tokens=_ints(args.output_tokens, "--output-tokens"),
                  requests_per_level=args.requests_per_level, runs_dir=args.runs_dir,
                  request_timeout_s=args.timeout_s, progress=not args.no_progress)
    model = draft = hardware = None
    if args.hardware:
        hardware = hardware_spec(args.hardware)
        served = next(iter(base_client.models()), None)
        model, _ = _model_spec(args.model, served)
        if args.draft_model:
            draft, _ = _model_spec(args.draft_model, None)
    print(f"[calibrate] probing {redact_url(args.url)}", file=sys.stderr)
    base = probe.run_probe(base_client, **common)
    if base.kind != "baseline":
        raise ValueError(f"--url={redact_url(args.url)} runs speculative decoding; give the server without it as "
                         "--url and the speculative one as --spec-url")
    spec = None
    if args.spec_url:
        print(f"[calibrate] probing {redact_url(args.spec_url)}", file=sys.stderr)
        spec = probe.run_probe(_client(args.spec_url, args.api_key_env, args.timeout_s), **common)
        if spec.kind != "speculative":
            raise ValueError(f"--spec-url={redact_url(args.spec_url)} shows no speculative decoding counters")
    payload = calibrate_endpoint(base, spec, model=model, draft=draft, hardware=hardware,
                                 precision=args.precision, tp=args.tp)
    out = Path(args.output) if args.output else Path("data/calibration") / (
        "endpoint-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base.server["served_model"])
        + "-" + payload["created_utc"].replace(":", "").replace("-", "") + ".json")
    write_calibration(out, payload)
    print(format_fit(payload))
    print(f"calibration file: {out}")
    return 0


def _refit(args) -> int:
    old = json.loads(Path(args.from_file).read_text(encoding="utf-8"))
    base, spec = probes_from_payload(old)
    hardware = hardware_spec(args.hardware) if args.hardware else None
    model = _model_spec(args.model, None)[0] if args.model else None
    draft = _model_spec(args.draft_model, None)[0] if args.draft_model else None
    if hardware is not None and model is None:
        raise ValueError("--from-file with --hardware needs --model (the served model's architecture)")
    payload = calibrate_endpoint(base, spec, model=model, draft=draft, hardware=hardware, precision=args.precision,
                                 tp=args.tp, notes=old.get("notes", ()))
    payload["runs"] = old.get("runs", [])
    payload["created_utc"] = old.get("created_utc", payload["created_utc"])
    out = Path(args.output or args.from_file)
    write_calibration(out, payload)
    print(format_fit(payload))
    print(f"calibration file: {out}")
    return 0


def register(subparsers) -> None:
    """Add `calibrate` to the `specdec` command's subparsers."""
    c = subparsers.add_parser(
        "calibrate", help="fit the load model's and the simulator's step time to a running endpoint",
        description="Probe a running vLLM endpoint with closed-loop levels (batch size through concurrency, "
                    "tokens per step through output length and speculation), fit the load model's step factors "
                    "and the simulator's step time, print the fit quality and write a calibration file "
                    "(raw observations, fit, quality, server identity; never a key).")
    c.add_argument("--url", help="the server WITHOUT speculation, e.g. http://127.0.0.1:8000")
    c.add_argument("--spec-url", help="the same model WITH speculation, to fit the draft's cost (optional)")
    c.add_argument("--api-key-env", metavar="VAR", help="name of the environment variable holding the API key")
    c.add_argument("--hardware", metavar="NAME|FILE",
                   help="catalog GPU name (e.g. H100-SXM) or a JSON file of peaks; without it only the "
                        "simulator's step is fitted")
    c.add_argument("--model", metavar="NAME|DIR", help="target architecture (default: the served model's folder "
                                                       "or catalog name)")
    c.add_argument("--draft-model", metavar="NAME|DIR", help="draft architecture (load model's speculative check)")
    c.add_argument("--precision", default="bf16", help="weight precision (catalog name, or fp32 for a CPU server; "
                                                       "default bf16)")
    c.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the server (default 1)")
    c.add_argument("--concurrency", default=",".join(map(str, probe.DEFAULT_CONCURRENCY)),
                   help="closed-loop levels, 1 included (default %(default)s)")
    c.add_argument("--output-tokens", default=",".join(map(str, probe.DEFAULT_OUTPUT_TOKENS)),
                   help="output lengths, generated with ignore_eos (default %(default)s)")
    c.add_argument("--requests-per-level", type=int, default=None,
                   help="requests per level (default: twice the concurrency, at least 4)")
    c.add_argument("--runs-dir", default="data/runs", help="where the probe's run folders go (default data/runs)")
    c.add_argument("-o", "--output", metavar="FILE",
                   help="calibration file (default data/calibration/endpoint-<model>-<utc>.json)")
    c.add_argument("--from-file", metavar="FILE", help="refit an existing calibration file's observations instead of "
                                                       "probing (e.g. with --hardware and --model)")
    c.add_argument("--check", metavar="RUN_DIR", nargs="+", help="instead of probing: put these recorded runs' own "
                   "decode steps next to --calibration's step for the same batch and tokens (is the server still "
                   "as fast as when it was calibrated?)")
    c.add_argument("--calibration", metavar="FILE", help="the calibration file --check uses")
    c.add_argument("--timeout-s", type=float, default=300.0, help="per request (default 300)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_calibrate)
