"""The workbook's load test next to ``vllm bench serve`` on the same real server, same prompts, at several
concurrency levels (issue 14 item 3: 16, 64 and 256 streams; goal: medians within 5 % at every level).

    python benchmarks/client_vs_vllm_bench.py [--concurrency 16,64,256] [--num-prompts N[,N,N]] [--output-len 64]
                                              [--spec draft|ngram|none] [--repeats 1] [--run-timeout 300]
    python benchmarks/client_vs_vllm_bench.py --base-url http://127.0.0.1:8000 --tokenizer MODEL_DIR

Without ``--base-url`` it starts one tiny local vLLM CPU server through ``specdec_lib.localserver`` for all the
levels (and stops it). At each level both tools send the same prompts in the same order (the built-in prompt sets,
cycled; given to vllm bench as a ShareGPT-format file) to /v1/completions with ``ignore_eos`` and the same output
length, temperature 0, that many requests in flight, all requests at once. ``--num-prompts`` is one count for every
level or one per level; by default max(4 x level, 128): with two waves only (32 prompts at 16 streams, the former
default) the median TTFT sat on the boundary between the first wave's burst and the second, and vllm bench's own
median moved 154 -> 232 ms between two runs, far more than the 5 % being judged. Each tool run is bounded by
``--run-timeout`` seconds (a run that does not finish in time is an error, not a truncated result).

Prints one table: per level the median TTFT and TPOT of each tool, their ratios (workbook / vllm bench), whether
both are within 5 %, vllm bench against itself (the spread of its medians over the repeats, max / min - 1: the
noise floor the 5 % is judged against), the client-side overhead per request of each tool (the client's mean E2E
minus the server's own mean E2E, from the ``vllm:e2e_request_latency_seconds`` sum/count delta over that tool's
requests) and the workbook process's CPU seconds per request; then the server's own mean TTFT, TPOT and queue
time over each tool's requests (its histograms' sum/count deltas), which say whether the two tools put the server
in the same state or measure the same state differently. Writes the figures as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from specdec_lib import loadtest, localserver, runs  # noqa: E402
from specdec_lib.endpoint import EndpointClient  # noqa: E402

VLLM_BENCH_BOOTSTRAP = (
    "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))"
)
GOAL = 0.05  # |ratio - 1| for both medians at every level


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers expected") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more integers >= 1 expected")
    return values


def prompts_per_level(levels: list[int], num_prompts: list[int] | None) -> list[int]:
    if num_prompts is None:
        return [max(4 * c, 128) for c in levels]
    if len(num_prompts) == 1:
        return num_prompts * len(levels)
    if len(num_prompts) != len(levels):
        raise ValueError(f"--num-prompts has {len(num_prompts)} values for {len(levels)} concurrency levels")
    return num_prompts


SERVER_HISTOGRAMS = {  # vLLM's own per-request latency histograms (seconds), read as a mean over a tool's requests
    "e2e": "vllm:e2e_request_latency_seconds",
    "ttft": "vllm:time_to_first_token_seconds",
    "tpot": "vllm:request_time_per_output_token_seconds",
    "queue": "vllm:request_queue_time_seconds",
}


def server_histograms(base_url: str) -> dict[str, list[float]]:
    """name -> [sum of seconds, count] of vLLM's own latency histograms (`SERVER_HISTOGRAMS`)."""
    out = {name: [0.0, 0.0] for name in SERVER_HISTOGRAMS}
    by_metric = {metric: name for name, metric in SERVER_HISTOGRAMS.items()}
    for fam in text_string_to_metric_families(requests.get(base_url + "/metrics", timeout=10).text):
        for s in fam.samples:
            metric, _, part = s.name.rpartition("_")
            if part in ("sum", "count") and metric in by_metric:
                out[by_metric[metric]][part == "count"] += s.value
    return out


def server_means_s(before: dict, after: dict) -> dict[str, float | None]:
    """name -> the server's mean over the requests counted between two reads (None where a histogram did not move;
    the e2e one must: it counts every finished request)."""
    means: dict[str, float | None] = {}
    for name in SERVER_HISTOGRAMS:
        n = after[name][1] - before[name][1]
        means[name] = (after[name][0] - before[name][0]) / n if n > 0 else None
    if means["e2e"] is None:
        raise RuntimeError("the server's e2e latency histogram did not move: no requests were counted")
    return means


def run_vllm_bench(python: Path, target: dict, dataset: Path, concurrency: int, num_prompts: int, args,
                   work: Path) -> dict:
    result_name = f"bench-{time.time_ns()}.json"
    cmd = [str(python), "-c", VLLM_BENCH_BOOTSTRAP,
           "--backend", "openai", "--base-url", target["base_url"], "--endpoint", "/v1/completions",
           "--model", target["model"], "--tokenizer", target["tokenizer"],
           "--dataset-name", "sharegpt", "--dataset-path", str(dataset.with_suffix(".json")),
           "--disable-shuffle", "--sharegpt-output-len", str(args.output_len), "--ignore-eos",
           "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
           "--request-rate", "inf", "--temperature", "0", "--seed", "0", "--disable-tqdm",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--save-result", "--result-dir", str(work), "--result-filename", result_name]
    before = server_histograms(target["base_url"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout)
    after = server_histograms(target["base_url"])
    if proc.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    res = json.loads((work / result_name).read_text())
    return {
        "completed": res["completed"],
        "median_ttft_s": res["median_ttft_ms"] / 1e3,
        "median_tpot_s": res["median_tpot_ms"] / 1e3,
        "median_itl_s": res["median_itl_ms"] / 1e3,
        "mean_e2e_s": res["mean_e2el_ms"] / 1e3,
        "server_mean_s": server_means_s(before, after),
        "output_tokens_per_s": res["output_throughput"],
    }


def run_workbook(target: dict, dataset: Path, concurrency: int, num_prompts: int, args, work: Path) -> dict:
    base_url = target["base_url"]
    before = server_histograms(base_url)
    cpu0 = time.process_time()
    res = loadtest.run_load_test(EndpointClient(base_url), concurrency_levels=(concurrency,),
                                 requests_per_level=num_prompts, temperatures=(0.0,), prompts=dataset,
                                 max_tokens=args.output_len, api="completions", runs_dir=work / "runs",
                                 progress=False, request_timeout_s=args.run_timeout,
                                 max_duration_s=args.run_timeout, extra_body={"ignore_eos": True})
    cpu_s = time.process_time() - cpu0
    after = server_histograms(base_url)
    if res.interrupted:
        raise RuntimeError(f"the workbook's run at {concurrency} streams passed --run-timeout {args.run_timeout} s")
    run = runs.load_run(res.run_path)
    ok = [r for r in run.records if r["error"] is None]
    (level,) = res.levels
    return {
        "completed": len(ok),
        "median_ttft_s": runs.percentile([r["ttft_s"] for r in ok], 50),
        "median_tpot_s": runs.percentile([r["tpot_s"] for r in ok], 50),
        "median_itl_s": runs.percentile([x for r in ok for x in r["itl_s"]], 50),
        "mean_e2e_s": statistics.fmean(r["e2e_s"] for r in ok),
        "server_mean_s": server_means_s(before, after),
        "output_tokens_per_s": level.latency["output_tokens_per_s"],
        "client_cpu_s_per_request": cpu_s / max(1, len(run.records)),
        "run_path": str(res.run_path),
    }


def write_dataset(path: Path, n: int) -> None:
    """The built-in prompts as JSONL for the workbook (which cycles them itself) and, cycled to ``n`` in the same
    order, as ShareGPT-style JSON for vllm bench (whose oversampling would draw at random; the ShareGPT loader needs
    no pandas, which the vLLM CPU venv lacks)."""
    prompts = [p.text for p in loadtest.load_prompts()]
    with open(path, "w") as f:
        for text in prompts:
            f.write(json.dumps({"prompt": text}) + "\n")
    sharegpt = [{"conversations": [{"from": "human", "value": prompts[i % len(prompts)]},
                                   {"from": "gpt", "value": "ok"}]} for i in range(n)]
    path.with_suffix(".json").write_text(json.dumps(sharegpt))


def start_target(args, ap, venv: Path, work: Path) -> tuple[localserver.VLLMServer | None, dict]:
    """The server to measure: ``--base-url`` as given, or a tiny local one (returned so the caller stops it)."""
    if args.base_url:
        if not args.tokenizer:
            ap.error("--base-url needs --tokenizer")
        return None, {"base_url": args.base_url.rstrip("/"), "tokenizer": args.tokenizer}
    models = localserver.ensure_tiny_models(venv=venv)
    spec = {"draft": localserver.draft_spec(str(models.draft_noise05), "probabilistic"),
            "ngram": localserver.NGRAM_SPEC, "none": None}[args.spec]
    server = localserver.VLLMServer(models.target, speculative_config=spec, venv=venv,
                                    served_model_name="tiny-target", log_path=work / "server.log").start()
    return server, {"base_url": server.base_url, "tokenizer": str(models.target)}


def measure_levels(python: Path, target: dict, dataset: Path, levels: list[int], counts: list[int], args,
                   work: Path) -> list[dict]:
    """Both tools at each level, alternating ``--repeats`` times, after a short warm-up."""
    loadtest.run_load_test(EndpointClient(target["base_url"]), concurrency_levels=(2,), requests_per_level=4,
                           max_tokens=8, api="completions", prompts=dataset, runs_dir=work / "warmup", progress=False)
    out = []
    for concurrency, n in zip(levels, counts):
        rows = {"vllm_bench": [], "workbook": []}
        for _ in range(args.repeats):
            rows["vllm_bench"].append(run_vllm_bench(python, target, dataset, concurrency, n, args, work))
            rows["workbook"].append(run_workbook(target, dataset, concurrency, n, args, work))
        out.append({"concurrency": concurrency, "num_prompts": n, "runs": rows, "summary": summarise(rows)})
    return out


def summarise(rows: dict) -> dict:
    def med(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[tool])

    summary = {}
    for key in ("median_ttft_s", "median_tpot_s", "median_itl_s", "mean_e2e_s"):
        a, b = med("vllm_bench", key), med("workbook", key)
        summary[key] = {"vllm_bench": a, "workbook": b, "ratio": b / a}
    for tool in ("vllm_bench", "workbook"):
        summary[f"{tool}_client_overhead_s_per_request"] = statistics.median(
            r["mean_e2e_s"] - r["server_mean_s"]["e2e"] for r in rows[tool])
        for name in ("ttft", "tpot", "queue"):  # the server's own view of the same requests
            values = [r["server_mean_s"][name] for r in rows[tool] if r["server_mean_s"][name] is not None]
            summary[f"{tool}_server_mean_{name}_s"] = statistics.median(values) if values else None
    summary["workbook_client_cpu_s_per_request"] = med("workbook", "client_cpu_s_per_request")
    for key in ("median_ttft_s", "median_tpot_s"):  # vllm bench against itself over the repeats: the noise floor
        values = [r[key] for r in rows["vllm_bench"]]
        summary[key]["vllm_bench_spread"] = max(values) / min(values) - 1 if len(values) > 1 else None
    summary["within_goal"] = all(abs(summary[k]["ratio"] - 1) <= GOAL for k in ("median_ttft_s", "median_tpot_s"))
    return summary


def print_table(results: list[dict], info, args) -> None:
    print(f"\nserver: {info.base_url}  model: {info.served_model}  vLLM {info.vllm_version}  speculation: "
          f"{info.speculation} (k={info.num_speculative_tokens})  {args.output_len} output tokens, "
          f"{args.repeats} repeat(s); ratio = workbook / vllm bench; goal: both ratios within 1 +/- {GOAL:.0%}")
    print(f"{'':16s}{'median TTFT (ms)':>28s}{'median TPOT (ms)':>28s}{'':9s}{'bench self':>12s}"
          f"{'overhead/request (ms)':>22s}{'workbook CPU':>14s}")
    print(f"{'streams':>8s}{'prompts':>8s}" + f"{'vllm bench':>11s}{'workbook':>10s}{'ratio':>7s}" * 2
          + f"{'in 5 %':>9s}{'TTFT/TPOT':>12s}{'vllm bench':>12s}{'workbook':>10s}{'ms/request':>14s}")

    def spread(value) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    for res in results:
        s = res["summary"]
        cells = "".join(f"{s[k]['vllm_bench'] * 1e3:11.2f}{s[k]['workbook'] * 1e3:10.2f}{s[k]['ratio']:7.3f}"
                        for k in ("median_ttft_s", "median_tpot_s"))
        self_spread = "/".join(spread(s[k]["vllm_bench_spread"]) for k in ("median_ttft_s", "median_tpot_s"))
        print(f"{res['concurrency']:8d}{res['num_prompts']:8d}{cells}{'yes' if s['within_goal'] else 'no':>9s}"
              f"{self_spread:>12s}"
              f"{s['vllm_bench_client_overhead_s_per_request'] * 1e3:12.2f}"
              f"{s['workbook_client_overhead_s_per_request'] * 1e3:10.2f}"
              f"{s['workbook_client_cpu_s_per_request'] * 1e3:14.2f}")
    print("bench self = vllm bench's medians over the repeats, max / min - 1 (its own noise at that level); "
          "overhead = the client's mean E2E minus the server's own mean E2E over the same requests")

    def ms(value) -> str:
        return f"{value * 1e3:10.2f}" if value is not None else f"{'-':>10s}"

    print("the server's own means over each tool's requests (vLLM's histograms), ms:")
    print(f"{'streams':>8s}" + "".join(f"{tool + ' ' + name:>22s}" for tool in ("vllm bench", "workbook")
                                       for name in ("TTFT", "TPOT", "queue")))
    for res in results:
        s = res["summary"]
        print(f"{res['concurrency']:8d}" + "".join(f"{ms(s[f'{tool}_server_mean_{name}_s']):>22s}"
                                                   for tool in ("vllm_bench", "workbook")
                                                   for name in ("ttft", "tpot", "queue")))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int_list, default=[16, 64, 256], help="levels, comma-separated")
    ap.add_argument("--num-prompts", type=int_list, help="one count, or one per level (default max(4 x level, 128))")
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two tools this many times per level")
    ap.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed to each tool run")
    ap.add_argument("--spec", choices=("draft", "ngram", "none"), default="draft")
    ap.add_argument("--base-url", help="an already running vLLM server (otherwise a tiny local one is started)")
    ap.add_argument("--tokenizer", help="tokenizer folder or name for vllm bench (with --base-url)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/client_vs_vllm_bench.json"))
    args = ap.parse_args(argv)
    try:
        counts = prompts_per_level(args.concurrency, args.num_prompts)
    except ValueError as e:
        ap.error(str(e))
    venv = localserver.require_venv()
    with tempfile.TemporaryDirectory(prefix="specdec-bench-") as tmp:
        work = Path(tmp)
        dataset = work / "prompts.jsonl"
        write_dataset(dataset, max(counts))
        server = None
        try:
            server, target = start_target(args, ap, venv, work)
            info = EndpointClient(target["base_url"]).discover()
            target["model"] = info.served_model
            results = measure_levels(localserver.venv_python(venv), target, dataset, args.concurrency, counts,
                                     args, work)
        finally:
            if server is not None:
                server.stop()
    print_table(results, info, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"parameters": {**parameters, "num_prompts": counts},
                                    "server": info.as_dict(), "levels": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
