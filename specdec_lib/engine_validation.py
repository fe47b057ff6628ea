"""The simulator against a real vLLM server whose engine dominates (I/O: builds models, drives servers).

The tiny test models' ~2 ms engine step is drowned by the API process on a small CPU, so a simulator of engine
steps cannot be judged against them (docs/simulation.md). Here the target is `tiny_models.build_engine_bound`'s
94 M-parameter Llama (tens of ms per step on two cores) and the draft its 1-layer truncated copy. The procedure:

1. calibrate each server with the same probe as `specdec calibrate` (`calibrate.probe.run_probe`, then
   `calibrate.fit.fit_simulator_step` on both servers' levels);
2. drive each server with Poisson arrivals (the workbook's `loadtest.run_load_test`) at several rates, for one
   class (temperature 0.1) and for the source's 60/40 mix (temperatures 0.1 and 1.0, cycled 3:2), every request
   generating exactly `max_tokens` tokens (`ignore_eos`), the probe's parts interleaved with the runs
   (`probe_and_drive`: the machine's speed drifts over minutes);
3. replay each measured run through the simulation with the same send times and token counts (one class per
   temperature, its alpha measured on the speculative server's runs), and compare P50/P95/P99 of TTFT, TPOT
   and E2E.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from specdec_lib import endpoint, loadtest, localserver, runs
from specdec_lib import simulate as sim
from specdec_lib.calibrate import fit, probe
from specdec_lib.calibrate.command import calibrate_endpoint

ONE_CLASS_TEMPERATURES = (0.1,)
MIX_TEMPERATURES = (0.1, 0.1, 0.1, 1.0, 1.0)  # the source's 60/40 structured / creative mix, cycled
# Served in float32: this AVX2 CPU has no bf16 units, and a bf16 step cost ~20 ms per sequence against ~4 ms in
# float32 (measured with this model), which made every step compute-bound; in float32 a small batch is bound by
# reading the weights, as on a GPU.
SERVER_EXTRA_ARGS = ("--dtype", "float32")
CPU_MAX_NUM_SEQS = 128  # vLLM 0.32's OpenAI-server defaults on CPU (vllm/engine/arg_utils.py get_batch_defaults)
CPU_MAX_NUM_BATCHED_TOKENS = 2048
CPU_REPLAY_SERVER = sim.ServerConfig(10**7, CPU_MAX_NUM_SEQS, CPU_MAX_NUM_BATCHED_TOKENS)  # for the probe's replay
P50_BAND = 0.15  # the goal: simulated P50 within +-15 % of measured
P99_BAND = 0.25  # and P99 within +-25 %
METRICS = ("ttft", "tpot", "e2e")
STATS = (("p50", 50), ("p95", 95), ("p99", 99))


@dataclass(frozen=True)
class EngineModels:
    root: Path
    target: Path
    draft: Path


def ensure_engine_models(venv: Path | None = None, cache_dir: Path | None = None) -> EngineModels:
    """Build the engine-bound pair once (a subprocess in the vLLM venv), cached beside the tiny models under
    `.cache/engine-models/<tiny models' version>/`; safe to call from several processes at once."""
    tiny = localserver.ensure_tiny_models(venv=venv)
    parent = Path(cache_dir) if cache_dir else localserver.project_root() / ".cache" / "engine-models"
    root = localserver.build_cached(parent / localserver.tiny_models_version(), ["--engine-bound", str(tiny.target)],
                                    "the engine-bound models", venv)
    return EngineModels(root, root / "engine_target", root / "engine_draft")


def draft_spec(models: EngineModels, k: int = 4) -> dict:
    """Greedy draft sampling: acceptance is the target's probability of the draft's token, so it falls with
    temperature (the two-acceptance mix)."""
    return localserver.draft_spec(str(models.draft), "greedy", k)


DRIVE_PROMPTS = ("chat", "code")  # the built-in sets with short prompts: prefill on a CPU costs ~10 ms a token


def capacity_qps(step_time: sim.AffineStepTime, prompt_tokens: float, output_tokens: int) -> float:
    """Requests per second a server can finish at most, from its calibrated step: at a large batch every sequence
    costs per_seq + per_token per decode step and per_token per prompt token (the fixed part vanishes)."""
    per_token = step_time.per_token_s
    per_request_s = output_tokens * (step_time.per_seq_s + per_token) + prompt_tokens * per_token
    if per_request_s <= 0:
        raise ValueError("the calibrated step has no per-sequence or per-token cost; capacity is unbounded")
    return 1.0 / per_request_s


def rates_from_probe(pr: probe.ProbeResult, fractions: Sequence[float], prompt_tokens: float,
                     output_tokens: int) -> list[float]:
    """Request rates at `fractions` of the capacity the probe calibrates (`capacity_qps` of its fitted step)."""
    step = sim.AffineStepTime(**calibrate_endpoint(pr, replay_server=CPU_REPLAY_SERVER)["simulator"]["step_time"])
    cap = capacity_qps(step, prompt_tokens, output_tokens)
    return [f * cap for f in fractions]


def drive(client, *, rates_qps: Sequence[float], requests_per_rate: int, temperatures: Sequence[float],
          max_tokens: int, runs_dir: Path, seed: int = 0, max_in_flight: int = 64,
          prompts: Sequence[str] = DRIVE_PROMPTS) -> list[dict]:
    """Poisson runs at each rate (one run folder per rate, the same seed, so two servers see the same send
    schedule), every prompt unique (no prefix-cache hits, which the simulator does not model); their records."""
    records: list[dict] = []
    for rate in rates_qps:
        res = loadtest.run_load_test(
            client, concurrency_levels=(), request_rates_qps=(rate,), requests_per_level=requests_per_rate,
            prompts=probe.unique_prompt_file(Path(runs_dir) / "drive-prompts", requests_per_rate, prompts),
            temperatures=tuple(temperatures), max_tokens=max_tokens, max_in_flight=max_in_flight,
            runs_dir=runs_dir, seed=seed, progress=False, extra_body={"ignore_eos": True})
        records += runs.load_run(res.run_path).records
    return records


@dataclass(frozen=True)
class Measured:
    """One server probed and driven (`probe_and_drive`)."""

    probe: probe.ProbeResult  # every part of the probe, merged
    rates_qps: tuple[float, ...]
    records: dict[str, list[dict]]  # workload -> the records of its runs at every rate
    order: tuple[str, ...]  # what ran, in order ("probe, 16 output tokens", "60/40 mix at 0.8 qps", ...)


def _merged(parts: Sequence[probe.ProbeResult]) -> probe.ProbeResult:
    first = parts[0]
    return probe.ProbeResult(first.kind, first.server, first.num_speculative_tokens,
                             tuple(p for part in parts for p in part.run_paths),
                             tuple(r for part in parts for r in part.records))


def interleaved(lengths: Sequence[int], runs: int) -> list[tuple[str, int]]:
    """The order of the probe's parts and the driven runs: ("probe", output length) and ("run", run index). The
    first part comes first; part i of P goes before run floor(i x runs / P), so the parts are spread evenly over the
    runs; parts left over (more parts than runs) come last."""
    if not lengths:
        raise ValueError("output_tokens: expected at least one probe length")
    slot = {i: i * runs // len(lengths) for i in range(1, len(lengths))}
    order = [("probe", int(lengths[0]))]
    for r in range(runs):
        order += [("probe", int(lengths[i])) for i in sorted(slot) if slot[i] == r]
        order.append(("run", r))
    return order + [("probe", int(lengths[i])) for i in sorted(slot) if slot[i] >= runs]


def probe_and_drive(client, *, workloads: Mapping[str, Sequence[float]],
                    rates_qps: Sequence[float] | Callable[[probe.ProbeResult], Sequence[float]],
                    requests_per_rate: int, max_tokens: int, runs_dir: Path,
                    probe_options: Mapping[str, Any] | None = None) -> Measured:
    """Probe one server as `specdec calibrate` does and drive it at each rate for each workload (name ->
    temperatures, `drive`), the probe's parts interleaved with the driven runs.

    Why interleaved: on the shared two-core machine the same server's step drifts by 10-20 % over a minute or two
    (a concurrency-1 step measured every 3 s on an idle machine ranged 68-93 ms; docs/simulation.md), so a probe
    run wholly before the drive calibrates the machine as it was then. The probe is split by output length (one
    part per length, each all concurrencies) and the parts are spread over the runs: with two lengths and two
    rates, probe 16 tokens, drive the low rate, probe 96 tokens, drive the high rate. The calibration then sees
    the machine over the same minutes as the runs it predicts. `rates_qps` may be a function of the probe (the
    first server's rates come from its own calibration): it gets the first part.
    """
    options = dict(probe_options or {})
    lengths = [int(n) for n in options.pop("output_tokens", probe.DEFAULT_OUTPUT_TOKENS)]
    parts: list[probe.ProbeResult] = []
    order: list[str] = []

    def probe_part(n: int) -> None:  # its levels' prompts as in one probe of every length
        order.append(f"probe, {n} output tokens")
        parts.append(probe.run_probe(client, runs_dir=runs_dir, progress=False, output_tokens=(n,),
                                     first_length_index=lengths.index(n), **options))

    probe_part(lengths[0])
    rates = tuple(float(r) for r in (rates_qps(parts[0]) if callable(rates_qps) else rates_qps))
    runs_to_do = [(w, r) for w in workloads for r in rates]
    records: dict[str, list[dict]] = {w: [] for w in workloads}
    for kind, what in interleaved(lengths, len(runs_to_do))[1:]:
        if kind == "probe":
            probe_part(what)
            continue
        workload, rate = runs_to_do[what]
        order.append(f"{workload} at {rate:.3g} qps")
        records[workload] += drive(client, rates_qps=[rate], requests_per_rate=requests_per_rate,
                                   temperatures=workloads[workload], max_tokens=max_tokens, runs_dir=runs_dir)
    return Measured(_merged(parts), rates, records, tuple(order))


def measure_server(models: EngineModels, spec: dict | None, out_dir: Path, *,
                   workloads: Mapping[str, Sequence[float]],
                   rates_qps: Sequence[float] | Callable[[probe.ProbeResult], Sequence[float]],
                   requests_per_rate: int, max_tokens: int, probe_options: Mapping[str, Any] | None = None,
                   timeout_s: float = 600.0, log: Callable[[str], None] | None = None) -> tuple[Measured, int]:
    """Start the engine-bound target (with `spec`, a speculative config, or without: the baseline), probe and drive
    it (`probe_and_drive`), stop it. Returns what was measured and the KV cache size (tokens) vLLM logged at
    startup, which the replay's server needs. The server's log and the runs go under `out_dir`."""
    kind = "speculative" if spec else "baseline"
    server = localserver.VLLMServer(models.target, speculative_config=spec, extra_args=SERVER_EXTRA_ARGS,
                                    log_path=Path(out_dir) / f"{kind}.log", served_model_name="engine-target")
    with server:
        if log:
            log(f"[{kind}] ready in {server.startup_s:.0f} s at {server.base_url}")
        m = probe_and_drive(endpoint.EndpointClient(server.base_url, timeout_s=timeout_s), workloads=workloads,
                            rates_qps=rates_qps, requests_per_rate=requests_per_rate, max_tokens=max_tokens,
                            runs_dir=Path(out_dir) / "runs", probe_options=probe_options)
        if log:
            log(f"[{kind}] rates {[round(r, 3) for r in m.rates_qps]}; order: {', '.join(m.order)}")
        kv_tokens = localserver.kv_cache_tokens_from_log(server.log_text())
    return m, kv_tokens


def alpha_by_temperature(records: Iterable[Mapping[str, Any]], k: int) -> dict[float, float]:
    """Per temperature, the alpha a replay needs: the one whose simulated decode steps, truncation at each request's
    length included, match the speculative server's (`simulate.alpha_from_steps`; the chunk-counted accepted /
    draft ratio under-reads requests cut by max_tokens)."""
    by_t: dict[float, list[Mapping[str, Any]]] = {}
    for r in records:
        if not r.get("error") and r.get("temperature") is not None:
            by_t.setdefault(float(r["temperature"]), []).append(r)
    return {t: sim.alpha_from_steps(rs, k) for t, rs in sorted(by_t.items())}


@dataclass(frozen=True)
class Row:
    server: str  # "baseline" | "speculative"
    workload: str  # "one class" | "60/40 mix"
    rate_qps: float
    metric: str
    stat: str
    measured_s: float
    simulated_s: float

    @property
    def error(self) -> float:
        return (self.simulated_s - self.measured_s) / self.measured_s

    @property
    def band(self) -> float:
        return P50_BAND if self.stat == "p50" else P99_BAND if self.stat == "p99" else P99_BAND

    @property
    def within_band(self) -> bool:
        return abs(self.error) <= self.band


SIMULATION_SEEDS = 16  # replicas of a speculative replay pooled per comparison (see compare_level)


def compare_level(records: Sequence[Mapping[str, Any]], *, server: str, workload: str, rate_qps: float,
                  server_config: sim.ServerConfig, step_time: Any, request_overhead_s: float,
                  speculation: sim.SpeculationConfig | None, alphas: Mapping[float, float], seed: int = 0,
                  seeds: int = SIMULATION_SEEDS) -> list[Row]:
    """Replay one rate's records through the simulation; measured and simulated P50/P95/P99 per metric.

    With speculation the simulation draws each step's accepted tokens at random, and one draw of a 30-request
    replay moves its E2E P50 by about +-10 % from seed to seed (measured on this validation's runs): as much as
    the error being judged. So a speculative replay is run `seeds` times (seeds seed, seed + 1, ...) and the
    simulated percentiles are those of all replicas' requests pooled: the simulator's own distribution, not one
    sample of it. Without speculation the simulation is deterministic and runs once."""
    ok = sorted((r for r in records if not r.get("error")), key=lambda r: r["sent_at_s"])
    temps = {float(r["temperature"]): alphas.get(float(r["temperature"]), 0.0) for r in ok}
    reqs = sim.requests_from_records(ok, alpha_by_temperature=temps)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for s in range(seed, seed + (max(1, int(seeds)) if speculation is not None else 1)):
        result = sim.simulate(reqs, server_config, step_time, speculation, seed=s)
        parts["ttft"].append(result.ttft_s + request_overhead_s)
        parts["tpot"].append(result.tpot_s)
        parts["e2e"].append(result.e2e_s + request_overhead_s)
    simulated = {m: np.concatenate(v) for m, v in parts.items()}
    rows = []
    for metric in METRICS:
        measured = np.array([np.nan if r.get(f"{metric}_s") is None else float(r[f"{metric}_s"]) for r in ok])
        for stat, q in STATS:
            rows.append(Row(server, workload, rate_qps, metric, stat, float(np.nanpercentile(measured, q)),
                            float(np.nanpercentile(simulated[metric], q))))
    return rows


def driven_runs(measured: Measured) -> list[tuple[str, float, list[dict]]]:
    """(workload, rate, that run's records) for every run of a server probed and driven (`probe_and_drive`)."""
    return [(workload, rate, [r for r in records if r["rate_qps"] == rate])
            for workload, records in measured.records.items() for rate in measured.rates_qps]


def compare_measured(measured: Measured, **kwargs: Any) -> list[Row]:
    """compare_level for every driven run (`driven_runs`); `kwargs`: compare_level's server, server_config,
    step_time, request_overhead_s, speculation, alphas."""
    return [row for workload, rate, records in driven_runs(measured)
            for row in compare_level(records, workload=workload, rate_qps=rate, **kwargs)]


def compare_at_run_speed(measured: Measured, *, step_time: sim.AffineStepTime, **kwargs: Any) -> list[Row]:
    """`compare_measured` with the step scaled, run by run, to the speed the engine ran during that run
    (`fit.at_run_speed`). A diagnostic, not a prediction (it reads each run's own mean step): what is left is the
    simulation's own error, the machine's drift between the probe and the run taken out. On the shared two-core
    machine the engine's speed moves 10-30 % within minutes (docs/simulation.md)."""
    spec = kwargs.get("speculation")
    k = spec.num_speculative_tokens if spec is not None else 0
    return [row for workload, rate, records in driven_runs(measured)
            for row in compare_level(records, workload=workload, rate_qps=rate,
                                     step_time=fit.at_run_speed(records, step_time, k), **kwargs)]


def step_checks(measured: Measured, *, server: str, step_time: sim.AffineStepTime, k: int = 0) -> list[dict[str, Any]]:
    """Per driven run, the calibration's step against the run's own observed steps (`fit.run_step_check`): where
    the simulation misses, was the engine slower or faster than calibrated during that run, or is the miss the
    simulation's own (queueing, batching)?"""
    return [{"server": server, "workload": workload, "rate_qps": rate, **fit.run_step_check(records, step_time, k)}
            for workload, rate, records in driven_runs(measured)]


def format_step_checks(checks: Sequence[Mapping[str, Any]]) -> str:
    """One line per run: observed mean step (its batch and tokens) -> the calibration's step for it."""
    lines = []
    for c in checks:
        lines.append(f"{c['server']:<12}{c['workload']:<11}{c['rate_qps']:>6.2f} qps  step "
                     f"{1e3 * c['observed_step_s']:6.1f} ms (batch {c['batch_size']:.1f}, {c['tokens_in_step']:.0f} "
                     f"tokens) -> calibrated {1e3 * c['predicted_step_s']:6.1f} ms ({100 * c['error']:+5.1f} %)")
    return "\n".join(lines)


def mix_effect_signs(rows: Sequence[Row], metric: str = "e2e", threshold: float = 0.05) -> list[dict[str, Any]]:
    """Speculation's effect in the 60/40 mix per rate and percentile, measured and simulated:
    speculative / baseline - 1. `shown` is False where the real server's effect is inside +-threshold (no sign
    to reproduce)."""
    get = {(r.server, r.workload, r.rate_qps, r.metric, r.stat): r for r in rows}
    out = []
    for (server, workload, rate, m, stat), base in sorted(get.items()):
        if server != "baseline" or workload != "60/40 mix" or m != metric:
            continue
        spec = get.get(("speculative", workload, rate, m, stat))
        if spec is None:
            continue
        measured = spec.measured_s / base.measured_s - 1
        simulated = spec.simulated_s / base.simulated_s - 1
        out.append({"rate_qps": rate, "stat": stat, "measured": measured, "simulated": simulated,
                    "shown": abs(measured) > threshold,
                    "reproduced": (measured > 0) == (simulated > 0) if abs(measured) > threshold else None})
    return out


def format_rows(rows: Sequence[Row]) -> str:
    """A plain table: one line per (server, workload, rate, metric), measured -> simulated (error) per stat."""
    lines = []
    key = None
    for r in rows:
        k = (r.server, r.workload, r.rate_qps, r.metric)
        if k != key:
            lines.append(f"{r.server:<12}{r.workload:<11}{r.rate_qps:>6.2f} qps  {r.metric:<5}")
            key = k
        lines[-1] += (f"  {r.stat} {r.measured_s * 1e3:8.1f} -> {r.simulated_s * 1e3:8.1f} ms "
                      f"({100 * r.error:+5.1f} %{'' if r.within_band else ' !'})")
    return "\n".join(lines)
