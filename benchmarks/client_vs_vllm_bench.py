"""The workbook's load test next to ``vllm bench serve`` on the same real server, same prompts, same concurrency.

    python benchmarks/client_vs_vllm_bench.py [--concurrency 4] [--num-prompts 32] [--output-len 64]
                                              [--spec draft|ngram|none] [--repeats 1]
    python benchmarks/client_vs_vllm_bench.py --base-url http://127.0.0.1:8000 --tokenizer MODEL_DIR

Without ``--base-url`` it starts a tiny local vLLM CPU server through ``specdec_lib.localserver`` (and stops it).
Both tools send the same prompts (the built-in prompt sets, given to vllm bench as a ShareGPT-format file) to
/v1/completions with
``ignore_eos`` and the same output length, temperature 0, ``max_concurrency`` in flight, all requests at once.

Prints the median TTFT and TPOT of each tool and their ratio (workbook / vllm bench), and the client-side overhead
per request: the client's mean E2E minus the server's own mean E2E (``vllm:e2e_request_latency_seconds`` sum/count
delta over that tool's requests), plus the workbook process's CPU seconds per request. Writes the figures as JSON
beside the printed table (``--out``).
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


def server_e2e(base_url: str) -> tuple[float, float]:
    """(sum of seconds, count) of vLLM's own end-to-end request latency histogram."""
    total = count = 0.0
    for fam in text_string_to_metric_families(requests.get(base_url + "/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "vllm:e2e_request_latency_seconds_sum":
                total += s.value
            elif s.name == "vllm:e2e_request_latency_seconds_count":
                count += s.value
    return total, count


def server_mean_e2e_s(before: tuple[float, float], after: tuple[float, float]) -> float:
    n = after[1] - before[1]
    if n <= 0:
        raise RuntimeError("the server's e2e latency histogram did not move: no requests were counted")
    return (after[0] - before[0]) / n


def run_vllm_bench(python: Path, base_url: str, model: str, tokenizer: str, dataset: Path, args, work: Path) -> dict:
    result_name = f"bench-{time.time_ns()}.json"
    cmd = [str(python), "-c", VLLM_BENCH_BOOTSTRAP,
           "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions", "--model", model,
           "--tokenizer", tokenizer, "--dataset-name", "sharegpt", "--dataset-path", str(dataset.with_suffix(".json")),
           "--disable-shuffle", "--sharegpt-output-len", str(args.output_len), "--ignore-eos",
           "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
           "--request-rate", "inf", "--temperature", "0", "--seed", "0", "--disable-tqdm",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--save-result", "--result-dir", str(work), "--result-filename", result_name]
    before = server_e2e(base_url)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    after = server_e2e(base_url)
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
        "server_mean_e2e_s": server_mean_e2e_s(before, after),
        "output_tokens_per_s": res["output_throughput"],
    }


def run_workbook(base_url: str, dataset: Path, args, work: Path) -> dict:
    client = EndpointClient(base_url)
    before = server_e2e(base_url)
    cpu0 = time.process_time()
    res = loadtest.run_load_test(client, concurrency_levels=(args.concurrency,), requests_per_level=args.num_prompts,
                                 temperatures=(0.0,), prompts=dataset, max_tokens=args.output_len, api="completions",
                                 runs_dir=work / "runs", progress=False, request_timeout_s=300,
                                 extra_body={"ignore_eos": True})
    cpu_s = time.process_time() - cpu0
    after = server_e2e(base_url)
    run = runs.load_run(res.run_path)
    ok = [r for r in run.records if r["error"] is None]
    (level,) = res.levels
    return {
        "completed": len(ok),
        "median_ttft_s": runs.percentile([r["ttft_s"] for r in ok], 50),
        "median_tpot_s": runs.percentile([r["tpot_s"] for r in ok], 50),
        "median_itl_s": runs.percentile([x for r in ok for x in r["itl_s"]], 50),
        "mean_e2e_s": statistics.fmean(r["e2e_s"] for r in ok),
        "server_mean_e2e_s": server_mean_e2e_s(before, after),
        "output_tokens_per_s": level.latency["output_tokens_per_s"],
        "client_cpu_s_per_request": cpu_s / max(1, len(run.records)),
        "run_path": str(res.run_path),
    }


def write_dataset(path: Path) -> None:
    """The built-in prompts twice: JSONL for the workbook, ShareGPT-style JSON for vllm bench (same order; the
    ShareGPT loader needs no pandas, which the vLLM CPU venv lacks)."""
    prompts = [p.text for p in loadtest.load_prompts()]
    with open(path, "w") as f:
        for text in prompts:
            f.write(json.dumps({"prompt": text}) + "\n")
    sharegpt = [{"conversations": [{"from": "human", "value": t}, {"from": "gpt", "value": "ok"}]} for t in prompts]
    path.with_suffix(".json").write_text(json.dumps(sharegpt))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="alternate the two tools this many times")
    ap.add_argument("--spec", choices=("draft", "ngram", "none"), default="draft")
    ap.add_argument("--base-url", help="an already running vLLM server (otherwise a tiny local one is started)")
    ap.add_argument("--tokenizer", help="tokenizer folder or name for vllm bench (with --base-url)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/client_vs_vllm_bench.json"))
    args = ap.parse_args(argv)
    venv = localserver.require_venv()
    python = localserver.venv_python(venv)
    with tempfile.TemporaryDirectory(prefix="specdec-bench-") as tmp:
        work = Path(tmp)
        dataset = work / "prompts.jsonl"
        write_dataset(dataset)
        server = None
        try:
            if args.base_url:
                if not args.tokenizer:
                    ap.error("--base-url needs --tokenizer")
                base_url, tokenizer = args.base_url.rstrip("/"), args.tokenizer
            else:
                models = localserver.ensure_tiny_models(venv=venv)
                spec = {"draft": localserver.draft_spec(str(models.draft_noise05), "probabilistic"),
                        "ngram": localserver.NGRAM_SPEC, "none": None}[args.spec]
                server = localserver.VLLMServer(models.target, speculative_config=spec, venv=venv,
                                                served_model_name="tiny-target", log_path=work / "server.log").start()
                base_url, tokenizer = server.base_url, str(models.target)
            info = EndpointClient(base_url).discover()
            model = info.served_model
            # warm-up: a few requests so neither tool pays first-request costs
            loadtest.run_load_test(EndpointClient(base_url), concurrency_levels=(2,), requests_per_level=4,
                                   max_tokens=8, api="completions", prompts=dataset, runs_dir=work / "warmup",
                                   progress=False)
            rows = {"vllm_bench": [], "workbook": []}
            for _ in range(args.repeats):
                rows["vllm_bench"].append(run_vllm_bench(python, base_url, model, tokenizer, dataset, args, work))
                rows["workbook"].append(run_workbook(base_url, dataset, args, work))
        finally:
            if server is not None:
                server.stop()

    def med(tool: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[tool])

    print(f"\nserver: {base_url}  model: {model}  vLLM {info.vllm_version}  speculation: {info.speculation} "
          f"(k={info.num_speculative_tokens})  concurrency {args.concurrency}, {args.num_prompts} prompts, "
          f"{args.output_len} output tokens, {args.repeats} repeat(s)")
    print(f"{'':28s}{'vllm bench serve':>18s}{'workbook':>12s}{'ratio':>8s}")
    summary = {}
    for key, label in (("median_ttft_s", "median TTFT (ms)"), ("median_tpot_s", "median TPOT (ms)"),
                       ("median_itl_s", "median ITL (ms)"), ("mean_e2e_s", "mean E2E (ms)")):
        a, b = med("vllm_bench", key), med("workbook", key)
        summary[key] = {"vllm_bench": a, "workbook": b, "ratio": b / a}
        print(f"{label:28s}{a * 1e3:18.2f}{b * 1e3:12.2f}{b / a:8.3f}")
    for tool in ("vllm_bench", "workbook"):
        over = [r["mean_e2e_s"] - r["server_mean_e2e_s"] for r in rows[tool]]
        summary[f"{tool}_client_overhead_s_per_request"] = statistics.median(over)
    print(f"{'client overhead/request (ms)':28s}{summary['vllm_bench_client_overhead_s_per_request'] * 1e3:18.2f}"
          f"{summary['workbook_client_overhead_s_per_request'] * 1e3:12.2f}"
          "   (client mean E2E - server's own mean E2E)")
    cpu = statistics.median(r["client_cpu_s_per_request"] for r in rows["workbook"])
    summary["workbook_client_cpu_s_per_request"] = cpu
    print(f"workbook client CPU per request: {cpu * 1e3:.2f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    parameters = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"parameters": parameters,
                                    "server": info.as_dict(), "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
