"""Driving requests at a vLLM endpoint and recording them: temperature sweeps, load tests, A/B comparisons (I/O).

Concurrency model: threads running the synchronous ``requests`` client of ``endpoint.py`` (``_drive``). Why not
asyncio: requests spend their time blocked on sockets (GIL released), levels are tens of streams, and threads
work alike from a notebook (which runs an event loop) and a script; ``benchmarks/client_vs_vllm_bench.py``
measures the cost of that choice against ``vllm bench serve`` (asyncio + aiohttp) on the same server.

Every run is bounded: a fixed number of requests, a per-request timeout and an optional total duration. A
``threading.Event`` (or Ctrl-C / KeyboardInterrupt in the calling thread) stops it cleanly: requests in flight are
closed, every finished request is already on disk, the run folder is marked "interrupted" and can be resumed.

Counter intervals: ``/metrics`` is scraped before and after each group of requests (one temperature, one load
level), and only that group's requests run in between, so each delta belongs to exactly one condition. Another
client sending traffic to the same server at the same time would pollute the delta: measure on a quiet endpoint.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from specdec_lib import metrics, rules, runs
from specdec_lib.comparisons import (  # noqa: F401  (part of this module's public API)
    AB_DROP_THRESHOLD,
    ABRow,
    LatencyComparison,
    compare_load_tests,
    quantization_ab,
)
from specdec_lib.endpoint import EndpointClient, EndpointError, ServerInfo, request_acceptance
from specdec_lib.prompt_sets import BUILTIN_PROMPT_SETS, Prompt, load_prompts  # noqa: F401  (public API)
from specdec_lib.prompt_sets import prompts_param as _prompts_param

DEFAULT_TEMPERATURES = (0.0, 0.4, 0.8, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# One request -> one record
@dataclass(frozen=True)
class Job:
    index: int
    label: str
    prompt: Prompt
    temperature: float
    max_tokens: int
    seed: int | None
    concurrency: int | None
    rate_qps: float | None


def _execute(client: EndpointClient, job: Job, *, model: str, api: str, k: int | None, run_t0: float,
             timeout_s: float, stop_event: threading.Event, extra_body: dict | None) -> dict:
    """One request -> one record. Never raises: whatever goes wrong (an HTTP error, a wrong-shaped or impossible
    answer, a bug) becomes this record's error, so one bad answer costs this record only."""
    sent_at = time.perf_counter() - run_t0
    record: dict[str, Any] = {f: None for f in runs.RECORD_FIELDS}
    record.update(
        index=job.index, label=job.label, prompt_set=job.prompt.prompt_set, prompt_id=job.prompt.prompt_id,
        temperature=job.temperature, max_tokens=job.max_tokens, concurrency=job.concurrency, rate_qps=job.rate_qps,
        sent_at_s=sent_at, itl_s=[],
    )
    try:
        kwargs = {"messages": job.prompt.chat_messages()} if api == "chat" else {"prompt": job.prompt.text}
        res = client.stream(model=model, max_tokens=job.max_tokens, temperature=job.temperature, seed=job.seed,
                            timeout_s=timeout_s, stop_event=stop_event, extra_body=extra_body, **kwargs)
        acc = request_acceptance(res, k)
        record.update(
            ttft_s=res.ttft_s, tpot_s=res.tpot_s, e2e_s=res.e2e_s, itl_s=list(res.itl_s),
            prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens, chunks=res.chunks,
            finish_reason=res.finish_reason, spec_metrics=res.spec_metrics, status=200, timing_note=res.timing_note,
            accepted_tokens=acc.accepted_tokens if acc else None, draft_tokens=acc.draft_tokens if acc else None,
            acceptance_rate=acc.rate if acc else None, acceptance_source=acc.source if acc else None,
        )
    except EndpointError as exc:
        record.update(error=str(exc), error_kind=exc.kind, status=exc.status,
                      e2e_s=time.perf_counter() - run_t0 - sent_at)
    except Exception as exc:  # a bug or an unexpected library error: recorded, never hidden
        record.update(error=client.redact(f"{client.base_url}: {type(exc).__name__}: {exc}"), error_kind="client_error",
                      e2e_s=time.perf_counter() - run_t0 - sent_at)
    return record


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm  # notebook widget in Jupyter, text bar in a terminal

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True)


def _drive(client: EndpointClient, jobs: list[Job], writer: runs.RunWriter, *, model: str, api: str, k: int | None,
           concurrency: int, rate_qps: float | None, seed: int, stop_event: threading.Event, deadline: float | None,
           run_t0: float, timeout_s: float, progress: bool, desc: str,
           extra_body: dict | None) -> tuple[list[dict], bool]:
    """Run jobs closed-loop (``concurrency`` streams released together from a barrier, as ``vllm bench serve``
    sends its first requests at once, each stream sending its next request the moment its last one ends) or
    open-loop (Poisson arrivals, at most ``concurrency`` in flight); the calling thread writes the records as they
    come back (a slow disk must not hold a stream's next request). Returns (records, interrupted)."""
    records: list[dict] = []  # written, in the order they arrived (a failed write is noted, the run goes on)
    arrived: list[dict] = []  # as the streams finish them; never popped, so a Ctrl-C cannot lose one
    interrupted = False
    rng = random.Random(seed)
    bar = _progress(len(jobs), desc, progress)
    todo = deque(jobs)
    wake = threading.Condition()  # guards todo, taken and arrived; notified as a record arrives
    taken = 0  # jobs handed to a stream or a worker

    def take() -> Job | None:
        nonlocal taken
        with wake:
            if stop_event.is_set() or not todo:
                return None
            taken += 1
            return todo.popleft()

    def run(job: Job) -> None:
        rec = _execute(client, job, model=model, api=api, k=k, run_t0=run_t0, timeout_s=timeout_s,
                       stop_event=stop_event, extra_body=extra_body)
        with wake:
            arrived.append(rec)
            wake.notify()

    def write_arrived() -> None:
        while len(records) < len(arrived):  # interrupted mid-write, a record is written again: one line an index
            rec = arrived[len(records)]
            try:
                writer.append_request(rec)
            except OSError as exc:  # disk full or an I/O error: this record is lost, the file and the run go on
                writer.lost_records.append(rec["index"])
                print(f"[specdec] record {rec['index']} not written: {exc}", file=sys.stderr)
            records.append(rec)
            bar.update(1)
            if rec.get("error"):
                bar.set_postfix_str(f"errors={sum(1 for r in records if r.get('error'))}")

    def wait_arrival(timeout: float) -> bool:  # True when every job taken is back and written, and no more will be
        with wake:
            if len(arrived) == len(records):
                if (stop_event.is_set() or not todo) and len(arrived) == taken:
                    return True
                wake.wait(timeout)
            return False

    start = threading.Barrier(min(concurrency, len(jobs)) + 1) if rate_qps is None and jobs else None

    def stream() -> None:
        client.open_connection()  # before the release: the first requests then only write to their sockets
        try:
            start.wait()
        except threading.BrokenBarrierError:  # the caller was interrupted before the release
            return
        while (job := take()) is not None:
            run(job)

    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="specdec-load")
    next_arrival = time.perf_counter()
    try:
        if start is not None:
            for _ in range(start.parties - 1):
                pool.submit(stream)
            start.wait()
        while True:
            write_arrived()
            if deadline is not None and time.perf_counter() > deadline and not stop_event.is_set():
                stop_event.set()
            if stop_event.is_set():
                interrupted = interrupted or bool(todo)
            timeout = 0.25
            if rate_qps is not None and todo and not stop_event.is_set():
                wait_s = next_arrival - time.perf_counter()
                if taken - len(arrived) < concurrency:  # a slot is free: send at the arrival time
                    if wait_s <= 0:
                        job = take()
                        if job is not None:
                            pool.submit(run, job)
                            next_arrival += rng.expovariate(rate_qps)
                        continue
                    timeout = min(0.05, wait_s)
                else:  # every slot busy: the next arrival waits for a request to end
                    timeout = 0.05
            if wait_arrival(timeout):
                break
    except KeyboardInterrupt:
        stop_event.set()
        interrupted = True
        if start is not None:
            start.abort()
        while not wait_arrival(0.25):  # streams see the event between chunks and return cancelled records
            write_arrived()
    finally:
        pool.shutdown(wait=False)
        bar.close()
    return records, interrupted or any(r.get("error_kind") == "cancelled" for r in records)


# ---------------------------------------------------------------------------------------------------------------
# Counter intervals
def _interval(client: EndpointClient, label: str, temperature: float | None, before: metrics.Snapshot | None,
              indices: list[int], interrupted: bool, scrape_error: str | None) -> dict:
    iv: dict[str, Any] = {"label": label, "temperature": temperature, "indices": indices, "interrupted": interrupted,
                          "delta": None, "error": scrape_error}
    if before is None:
        return iv
    try:
        after = client.scrape()
        d = metrics.delta(before, after)
    except (EndpointError, metrics.CounterResetError) as exc:
        iv["error"] = str(exc)
        return iv
    except Exception as exc:  # an impossible value the parser let through: this interval's error, not the run's
        iv["error"] = client.redact(f"{client.url('/metrics')}: {type(exc).__name__}: {exc}")
        return iv
    iv["delta"] = _delta_dict(d)
    iv["v0_acceptance_rate_after"] = after.v0_acceptance_rate
    return iv


def _delta_dict(d: metrics.SpecDelta) -> dict:
    return {
        "available": d.available, "drafts": d.drafts, "draft_tokens": d.draft_tokens,
        "accepted_tokens": d.accepted_tokens,
        "per_position": list(d.per_position), "num_speculative_tokens": d.num_speculative_tokens,
        "per_engine": [asdict(e) for e in d.per_engine], "requests_finished": d.requests_finished,
        "generation_tokens": d.generation_tokens,
    }


def _safe_scrape(client: EndpointClient) -> tuple[metrics.Snapshot | None, str | None]:
    try:
        return client.scrape(), None
    except EndpointError as exc:
        return None, str(exc)


def _metadata(client: EndpointClient, info: ServerInfo, parameters: dict) -> dict:
    return {
        "model_choice": "explicit" if parameters.get("model") else "the only served model",
        "endpoint": client.base_url,
        "served_model": info.served_model,
        "vllm_version": info.vllm_version,
        "speculative": {
            "enabled": info.speculation, "method": info.method, "num_speculative_tokens": info.num_speculative_tokens,
            "draft_model": info.draft_model, "engines": info.engines,
        } if info.speculation else None,
        "server": info.as_dict(),
        "parameters": parameters,
    }


def _discover_or_record(client: EndpointClient, kind: str, runs_dir: str | Path, resume: str | Path | None,
                        parameters: dict) -> ServerInfo:
    """Discovery; when it fails, a run folder still records what was attempted and why it failed, then re-raise."""
    try:
        return client.discover(model=parameters.get("model"))
    except EndpointError as exc:
        meta = {"endpoint": client.base_url, "parameters": parameters, "error": str(exc), "error_kind": exc.kind}
        if resume is None:
            writer = runs.RunWriter.create(runs_dir, kind, meta, redact=client.redact_obj)
        else:
            writer = runs.RunWriter(Path(resume), redact=client.redact_obj)
            writer.update_metadata(error=str(exc), error_kind=exc.kind)
        writer.finish("failed")  # releases the run lock: the traceback that keeps this frame must not keep it
        exc.run_path = writer.path
        raise


def _open_writer(client: EndpointClient, info: ServerInfo, kind: str, runs_dir: str | Path, resume: str | Path | None,
                 parameters: dict) -> runs.RunWriter:
    if resume is None:
        return runs.RunWriter.create(runs_dir, kind, _metadata(client, info, parameters), redact=client.redact_obj)
    writer = runs.RunWriter(Path(resume), redact=client.redact_obj)
    try:
        _check_resumable(writer, client, info, kind, parameters)
    except BaseException:
        writer.close()
        raise
    for note in writer.set_aside:
        print(f"[specdec] resume: {note}", file=sys.stderr)
    if writer.set_aside:
        writer.update_metadata(set_aside=list(writer.metadata.get("set_aside", [])) + list(writer.set_aside))
    writer.update_metadata(status="running", resumed_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return writer


def _check_resumable(writer: runs.RunWriter, client: EndpointClient, info: ServerInfo, kind: str,
                     parameters: dict) -> None:
    resume = writer.path
    meta = writer.metadata
    if meta.get("kind") != kind:
        raise ValueError(f"resume={resume}: run kind is {meta.get('kind')!r}, not {kind!r}")
    if meta.get("parameters") != json.loads(json.dumps(parameters)):
        raise ValueError(f"resume={resume}: parameters differ from the interrupted run's: "
                         f"{meta.get('parameters')} vs {parameters}")
    if meta.get("endpoint") != client.base_url or meta.get("served_model") != info.served_model:
        raise ValueError(f"resume={resume}: recorded against {meta.get('endpoint')} / {meta.get('served_model')}, "
                         f"now {client.base_url} / {info.served_model}")


# ---------------------------------------------------------------------------------------------------------------
# Temperature sweep
@dataclass(frozen=True)
class TemperatureResult:
    """Acceptance at one temperature. Counter figures come from this temperature's intervals only."""

    temperature: float
    label: str
    requests: int
    succeeded: int
    errors: int
    status: str  # "measured" | "no speculation metrics ..." | "no counter interval ..." | ...
    num_speculative_tokens: int | None
    drafts: int
    draft_tokens: int
    accepted_tokens: int
    v1_rate: float | None  # Δaccepted / Δdraft tokens (V1: accepted prefix only)
    alpha: float | None  # per-token α solved from v1_rate and k (the source's thresholds apply to this)
    mean_acceptance_length: float | None  # 1 + Δaccepted / Δdrafts
    per_position_rates: tuple[float, ...] | None
    per_request_source: str | None  # "server" | "chunks" | "server+chunks" | None
    per_request_p10: float | None  # V1 definition, per request
    per_request_p50: float | None
    per_request_p90: float | None
    band: str | None  # the source's verdict band for alpha (speculation.verdict_band)
    v0_gauge: float | None  # an old server's cumulative gauge, when present


@dataclass(frozen=True)
class SweepResult:
    run_path: Path
    interrupted: bool
    server: dict
    temperatures: tuple[TemperatureResult, ...]


def _band(alpha: float | None) -> str | None:
    if alpha is None:
        return None
    from specdec_lib import speculation

    fn = getattr(speculation, "verdict_band", None)
    if fn is None:
        raise RuntimeError("specdec_lib.speculation.verdict_band is missing: cannot label the source's verdict band")
    band = fn(alpha)
    return band if isinstance(band, str) else getattr(band, "name", str(band))


def sweep_results_from_run(run: runs.Run) -> tuple[TemperatureResult, ...]:
    """Per-temperature results recomputed from a sweep's run folder (records + counter intervals)."""
    if run.metadata.get("kind") != "sweep":
        raise ValueError(f"run {run.path}: kind is {run.metadata.get('kind')!r}; "
                         "per-temperature results need a 'sweep' run")
    summary = runs.summarise(run)
    out = []
    for label, g in summary["groups"].items():
        acc = g["acceptance"]
        lat = g["latency"]
        ivs = [iv for iv in run.intervals if iv["label"] == label]
        v0 = next((iv.get("v0_acceptance_rate_after") for iv in reversed(ivs)
                   if iv.get("v0_acceptance_rate_after") is not None), None)
        k = acc["num_speculative_tokens"]
        d = metrics.SpecDelta(available=acc["speculation_metrics"], drafts=acc["drafts"],
                              draft_tokens=acc["draft_tokens"],
                              accepted_tokens=acc["accepted_tokens"], per_position=tuple(acc["per_position_accepted"]))
        if acc["intervals"] == 0:
            status = "no counter interval was recorded for this temperature (scrape failed or run interrupted early)"
        elif not acc["speculation_metrics"] and v0 is not None:
            status = "old (V0) server: only the cumulative acceptance gauge is available"
        else:
            status = d.status
        alpha = d.alpha_with_k(k) if k else None
        src = acc["per_request_sources"]
        out.append(TemperatureResult(
            temperature=g["temperature"], label=label, requests=lat["requests"], succeeded=lat["succeeded"],
            errors=lat["errors"], status=status, num_speculative_tokens=k, drafts=acc["drafts"],
            draft_tokens=acc["draft_tokens"], accepted_tokens=acc["accepted_tokens"], v1_rate=d.v1_rate, alpha=alpha,
            mean_acceptance_length=d.mean_acceptance_length, per_position_rates=d.per_position_rates,
            per_request_source="+".join(src) if src else None, per_request_p10=acc["per_request_p10"],
            per_request_p50=acc["per_request_p50"], per_request_p90=acc["per_request_p90"],
            band=_band(alpha if alpha is not None else v0), v0_gauge=v0,
        ))
    return tuple(sorted(out, key=lambda r: r.temperature))


@dataclass(frozen=True)
class _Phase:
    """One temperature of a sweep or one level of a load test: its jobs and its own /metrics delta."""
    label: str
    temperature: float | None  # recorded on the interval; None for a level that mixes temperatures
    concurrency: int  # most requests in flight
    rate_qps: float | None  # Poisson rate (open loop), None for closed loop
    seed: int  # the arrivals' seed
    jobs: list


def _run_phases(client: EndpointClient, info, writer, phases: Sequence[_Phase], *, api: str,
                stop_event: threading.Event | None, max_duration_s: float | None, request_timeout_s: float,
                progress: bool, extra_body: dict | None) -> bool:
    """Drive each phase in turn, skipping requests already recorded (resume), with a counter scrape before and an
    interval record after each; stop at the stop event or the deadline. The run folder is marked "complete" or
    "interrupted" whatever happens (an exception or Ctrl-C too). Returns whether the run was interrupted."""
    stop_event = stop_event or threading.Event()
    done_indices = writer.completed_indices()
    run_t0 = time.perf_counter()
    deadline = run_t0 + max_duration_s if max_duration_s else None
    interrupted = False
    finished = False
    try:
        for phase in phases:
            jobs = [j for j in phase.jobs if j.index not in done_indices]
            if not jobs:
                continue
            if stop_event.is_set():
                interrupted = True
                break
            before, err = _safe_scrape(client)
            recs, stopped = _drive(client, jobs, writer, model=info.served_model, api=api,
                                   k=info.num_speculative_tokens,
                                   concurrency=phase.concurrency, rate_qps=phase.rate_qps, seed=phase.seed,
                                   stop_event=stop_event, deadline=deadline, run_t0=run_t0, timeout_s=request_timeout_s,
                                   progress=progress, desc=phase.label, extra_body=extra_body)
            try:
                writer.append_interval(_interval(client, phase.label, phase.temperature, before,
                                                 [r["index"] for r in recs], stopped, err))
            except OSError as exc:
                print(f"[specdec] interval {phase.label} not written: {exc}", file=sys.stderr)
            if stopped:
                interrupted = True
                break
        finished = True
    finally:
        try:
            if writer.lost_records:
                writer.update_metadata(lost_records=sorted(writer.lost_records))
            writer.finish("complete" if finished and not interrupted else "interrupted")
        except OSError as exc:  # the disk is full: the records already written stay; say it, keep the cause
            writer.close()
            print(f"[specdec] could not update {writer.path / 'metadata.json'}: {exc}", file=sys.stderr)
    return interrupted


def run_temperature_sweep(
    client: EndpointClient,
    *,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    requests_per_temperature: int = 20,
    prompts: str | Path | Sequence[str] = BUILTIN_PROMPT_SETS,
    max_tokens: int = 128,
    concurrency: int = 4,
    api: str = "chat",
    seed: int = 0,
    runs_dir: str | Path = "runs",
    resume: str | Path | None = None,
    request_timeout_s: float = 120.0,
    max_duration_s: float | None = None,
    stop_event: threading.Event | None = None,
    progress: bool = True,
    extra_body: dict | None = None,
    model: str | None = None,
) -> SweepResult:
    """N requests per temperature, one isolated /metrics counter delta per temperature.

    The same prompts (in the same order) are used at every temperature, so temperature is the only change. Per
    request, acceptance comes from the response when the server runs with ``--per-request-spec-decode-metrics``,
    else from streamed chunk sizes (see ``endpoint.request_acceptance``). A server serving several models needs
    ``model`` (which one to measure).
    """
    if requests_per_temperature < 1 or concurrency < 1 or max_tokens < 1:
        raise ValueError(f"requests_per_temperature={requests_per_temperature}, concurrency={concurrency}, "
                         f"max_tokens={max_tokens}: each must be >= 1")
    temps = [float(t) for t in temperatures]
    rules.check_temperatures(temps, distinct=True)
    if api not in ("chat", "completions"):
        raise ValueError(f"api={api!r}: 'chat' or 'completions'")
    prompt_list = load_prompts(prompts)
    if api == "completions" and any(p.text is None for p in prompt_list):
        raise ValueError("api='completions' needs 'prompt' lines, not 'messages'")
    params = {"temperatures": temps, "requests_per_temperature": requests_per_temperature,
              "prompts": _prompts_param(prompts), "max_tokens": max_tokens,
              "concurrency": concurrency, "api": api, "seed": seed, "request_timeout_s": request_timeout_s,
              "extra_body": extra_body, **({"model": model} if model else {})}
    info = _discover_or_record(client, "sweep", runs_dir, resume, params)
    writer = _open_writer(client, info, "sweep", runs_dir, resume, params)
    phases = [
        _Phase(label=f"T={temp:g}", temperature=temp, concurrency=concurrency, rate_qps=None, seed=seed, jobs=[
            Job(index=ti * requests_per_temperature + i, label=f"T={temp:g}", prompt=prompt_list[i % len(prompt_list)],
                temperature=temp, max_tokens=max_tokens, seed=seed + i, concurrency=concurrency, rate_qps=None)
            for i in range(requests_per_temperature)])
        for ti, temp in enumerate(temps)
    ]
    interrupted = _run_phases(client, info, writer, phases, api=api, stop_event=stop_event,
                              max_duration_s=max_duration_s, request_timeout_s=request_timeout_s, progress=progress,
                              extra_body=extra_body)
    run = runs.load_run(writer.path)
    return SweepResult(run_path=writer.path, interrupted=interrupted, server=info.as_dict(),
                       temperatures=sweep_results_from_run(run))


# ---------------------------------------------------------------------------------------------------------------
# Load test
@dataclass(frozen=True)
class LoadLevelResult:
    label: str
    concurrency: int | None
    rate_qps: float | None
    latency: dict  # runs.latency_summary: counts, *_p50/p95/p99_s, output_tokens_per_s
    client_requests: int  # requests the client sent in this level (successes + errors)
    server_requests_finished: int | None  # Δ vllm:request_success_total (every finished_reason) over the level
    acceptance: dict


@dataclass(frozen=True)
class LoadTestResult:
    run_path: Path
    interrupted: bool
    server: dict
    levels: tuple[LoadLevelResult, ...]


def load_results_from_run(run: runs.Run) -> tuple[LoadLevelResult, ...]:
    summary = runs.summarise(run)
    out = []
    for label, g in summary["groups"].items():
        recs = [r for r in run.records if r["label"] == label]
        ivs = [iv for iv in run.intervals if iv["label"] == label and iv.get("delta")]
        out.append(LoadLevelResult(
            label=label, concurrency=recs[0]["concurrency"] if recs else None,
            rate_qps=recs[0]["rate_qps"] if recs else None, latency=g["latency"],
            client_requests=len([r for r in run.raw_records if r["label"] == label]),
            server_requests_finished=g["server_requests_finished"] if ivs else None, acceptance=g["acceptance"],
        ))
    return tuple(out)


def run_load_test(
    client: EndpointClient,
    *,
    concurrency_levels: Sequence[int] = (1, 4),
    request_rates_qps: Sequence[float] = (),
    requests_per_level: int = 32,
    temperatures: Sequence[float] = (0.0,),
    prompts: str | Path | Sequence[str] = BUILTIN_PROMPT_SETS,
    max_tokens: int = 128,
    max_in_flight: int = 64,
    api: str = "chat",
    seed: int = 0,
    runs_dir: str | Path = "runs",
    resume: str | Path | None = None,
    request_timeout_s: float = 120.0,
    max_duration_s: float | None = None,
    stop_event: threading.Event | None = None,
    progress: bool = True,
    extra_body: dict | None = None,
    model: str | None = None,
    request_seeds: bool = False,
) -> LoadTestResult:
    """Fixed concurrency levels (closed loop) then Poisson request rates (open loop, seeded, at most
    ``max_in_flight`` outstanding). ``temperatures`` are cycled over the requests: give several for a mixed
    workload (e.g. (0.1, 1.0) for the source's JSON-extraction + creative mix). ``seed`` fixes the Poisson arrivals;
    per-request sampling seeds are sent only with ``request_seeds=True`` (vLLM samples seeded requests on a slower
    per-request generator path, which would distort the latency being measured)."""
    if requests_per_level < 1 or max_tokens < 1 or max_in_flight < 1:
        raise ValueError(f"requests_per_level={requests_per_level}, max_tokens={max_tokens}, "
                         f"max_in_flight={max_in_flight}: each must be >= 1")
    if any(c < 1 for c in concurrency_levels) or any(not 0 < r < float("inf") for r in request_rates_qps):
        raise ValueError(f"concurrency_levels={list(concurrency_levels)} must be >= 1 and "
                         f"request_rates_qps={list(request_rates_qps)} finite and > 0")
    if not concurrency_levels and not request_rates_qps:
        raise ValueError("give at least one concurrency level or request rate")
    temps = rules.check_temperatures(temperatures)
    prompt_list = load_prompts(prompts)
    params = {"concurrency_levels": list(concurrency_levels),
              "request_rates_qps": [float(r) for r in request_rates_qps],
              "requests_per_level": requests_per_level, "temperatures": temps,
              "prompts": _prompts_param(prompts), "max_tokens": max_tokens,
              "max_in_flight": max_in_flight, "api": api, "seed": seed, "request_timeout_s": request_timeout_s,
              "extra_body": extra_body, "request_seeds": request_seeds, **({"model": model} if model else {})}
    info = _discover_or_record(client, "load", runs_dir, resume, params)
    writer = _open_writer(client, info, "load", runs_dir, resume, params)
    levels: list[tuple[str, int | None, float | None]] = [(f"concurrency={c}", c, None) for c in concurrency_levels]
    levels += [(f"rate={r:g}qps", None, float(r)) for r in request_rates_qps]
    phases = [
        _Phase(label=label, temperature=None, concurrency=conc or max_in_flight, rate_qps=rate, seed=seed + li, jobs=[
            Job(index=li * requests_per_level + i, label=label, prompt=prompt_list[i % len(prompt_list)],
                temperature=temps[i % len(temps)], max_tokens=max_tokens,
                seed=seed + i if request_seeds else None, concurrency=conc, rate_qps=rate)
            for i in range(requests_per_level)])
        for li, (label, conc, rate) in enumerate(levels)
    ]
    interrupted = _run_phases(client, info, writer, phases, api=api, stop_event=stop_event,
                              max_duration_s=max_duration_s, request_timeout_s=request_timeout_s, progress=progress,
                              extra_body=extra_body)
    return LoadTestResult(run_path=writer.path, interrupted=interrupted, server=info.as_dict(),
                          levels=load_results_from_run(runs.load_run(writer.path)))
