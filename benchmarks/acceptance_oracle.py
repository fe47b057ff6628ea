"""Predicted acceptance (two ordinary servers) against measured acceptance (the pair with speculation on).

On real vLLM CPU servers with the tiny local models: the plain target and each plain draft give the prediction
(``oracle_client.run_prediction``); the same pair served with speculation on, swept over the same prompts and
temperatures with the workbook's counter deltas (``loadtest.run_temperature_sweep``), is the truth. Prints one row
per draft × draft sampling method × temperature (and n-gram and suffix decoding on a repetitive prompt set):
predicted α with its bounds (a draft's vocabulary tail; n-gram/suffix: 95 % across requests), measured α with its
95 % interval across requests, the error, whether they agree
(``prediction.AGREEMENT_ALPHA``), and the prediction's seconds. Writes the table as JSON beside the run folders.

    .venv/bin/python benchmarks/acceptance_oracle.py [--prompts 8] [--max-tokens 48]
    ... --drafts "" (the model-free rows only: n-gram and suffix, two speculative servers and the plain target)

About 11 server starts (30-80 s each here) plus the requests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from specdec_lib import loadtest, localserver, oracle_client, prediction, runs, suffix_replay
from specdec_lib.endpoint import EndpointClient

ROOT = Path(__file__).resolve().parent.parent
REPETITIVE = ROOT / "tests" / "data" / "repetitive_prompts.jsonl"
DRAFTS = ("draft_copy", "draft_noise05", "draft_noise20")
METHODS = ("greedy", "probabilistic")
TEMPERATURES = (0.0, 0.5, 1.0)
K = 4  # the named servers' k


def get(pool, key, model, spec=None, extra=()):
    """pool.get, retried when another process took the chosen port between free_port() and vLLM's bind."""
    for attempt in range(3):
        try:
            return pool.get(key, model, spec, extra)
        except localserver.HarnessError as exc:
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
            print(f"[oracle] {key}: port taken by another process, retrying", flush=True)


def truth(pool, key, spec, prompts, n_prompts, max_tokens, out, top_p=None) -> runs.Run:
    server = get(pool, key, "target", spec, ("--per-request-spec-decode-metrics", "detailed"))
    result = loadtest.run_temperature_sweep(
        EndpointClient(server.base_url), temperatures=TEMPERATURES, requests_per_temperature=n_prompts,
        prompts=prompts, max_tokens=max_tokens, concurrency=1, api="completions", runs_dir=out, progress=False,
        extra_body={"top_p": top_p} if top_p is not None else None)
    return runs.load_run(result.run_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="prompts per temperature")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "test-output" / "acceptance_oracle"))
    parser.add_argument("--drafts", default=",".join(DRAFTS))
    parser.add_argument("--methods", default=",".join(METHODS), help="draft sampling methods for the drafts' rows")
    parser.add_argument("--logprobs", type=int, default=20,
                        help="top-N per position; above 20 the plain servers get --max-logprobs N (tighter bounds)")
    parser.add_argument("--no-ngram", action="store_true")
    parser.add_argument("--no-suffix", action="store_true")
    parser.add_argument("--samples", type=int, default=oracle_client.DEFAULT_MODEL_FREE_SAMPLES,
                        help="texts sampled per prompt at T > 0 for the n-gram/suffix replays")
    parser.add_argument("--top-p", type=float, default=None,
                        help="production top_p for the drafts' rows (prediction and truth); needs enough --logprobs")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    models = localserver.ensure_tiny_models()
    pool = localserver.ServerPool(models, out / "servers", max_live=2)
    prompt_sets = ["chat", "code", "summarisation", "json_extraction"]
    tables = []
    try:
        drafts = [d for d in args.drafts.split(",") if d]
        predictions = {}
        extra = ("--max-logprobs", str(args.logprobs)) if args.logprobs > 20 else ()
        suffix = f"_lp{args.logprobs}" if extra else ""
        for draft in drafts:
            target = get(pool, f"baseline{suffix}", "target", None, extra)
            plain = get(pool, f"plain_{draft}{suffix}", draft, None, extra)
            started = time.perf_counter()
            predictions[draft] = oracle_client.run_prediction(
                EndpointClient(target.base_url), [EndpointClient(plain.base_url)], prompts=prompt_sets,
                n_prompts=args.prompts, temperatures=TEMPERATURES, ks=(K,), max_tokens=args.max_tokens,
                ngram=None, n_logprobs=args.logprobs, top_p=args.top_p, runs_dir=out, progress=False,
                methods=[m for m in args.methods.split(",") if m])
            print(f"[oracle] predicted {draft} in {time.perf_counter() - started:.1f} s", flush=True)
        free = [name for name, off in (("ngram", args.no_ngram), ("suffix", args.no_suffix)) if not off]
        if free:
            target = get(pool, f"baseline{suffix}", "target", None, extra)
            started = time.perf_counter()
            free_pred = oracle_client.run_prediction(
                EndpointClient(target.base_url), [], prompts=str(REPETITIVE), n_prompts=args.prompts,
                temperatures=TEMPERATURES, ks=(K,), max_tokens=args.max_tokens, n_logprobs=args.logprobs,
                ngram=oracle_client.DEFAULT_NGRAM if "ngram" in free else None,
                suffix=suffix_replay.SuffixConfig(max_model_len=target.max_model_len) if "suffix" in free else None,
                model_free_samples=args.samples, runs_dir=out, progress=False)
            free_pred.to_frame()  # the suffix replay runs here (timed with the prediction)
            print(f"[oracle] predicted {' and '.join(free)} in {time.perf_counter() - started:.1f} s", flush=True)
        for draft in drafts:
            for method in [m for m in args.methods.split(",") if m]:
                run = truth(pool, f"spec_{draft}_{method}", localserver.draft_spec(draft, method, K), prompt_sets,
                            args.prompts, args.max_tokens, out, args.top_p)
                pred = predictions[draft]
                name = pred.metadata["drafts"][0]["served_model"]
                tables.append(prediction.compare_with_measured(pred, run, name, method, K).assign(draft=draft))
                print(tables[-1].to_string(), flush=True)
        for name in free:  # a fresh server each: the suffix replay assumes an empty cache before the sweep
            spec = localserver.NGRAM_SPEC if name == "ngram" else localserver.SUFFIX_SPEC
            run = truth(pool, f"spec_{name}", spec, str(REPETITIVE), args.prompts, args.max_tokens, out)
            tables.append(prediction.compare_with_measured(free_pred, run, name, None, K).assign(draft=name))
            print(tables[-1].to_string(), flush=True)
    finally:
        pool.stop_all()
    table = pd.concat(tables, ignore_index=True)
    cols = ["draft", "draft_sample_method", "temperature", "predicted", "predicted_low", "predicted_high", "measured",
            "measured_low", "measured_high", "error", "agrees", "predict_seconds"]
    pd.set_option("display.width", 200)
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"agree: {int(table['agrees'].sum())} of {len(table)} (|error| <= {prediction.AGREEMENT_ALPHA} or inside "
          f"the measured 95 % interval)")
    print("\n| draft | sampling | T | predicted α [bounds] | measured α [95 % across requests] | error | agrees | s "
          "| bounds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.draft} | {r.draft_sample_method or '-'} | {r.temperature:g} | {r.predicted:.3f} "
              f"[{r.predicted_low:.3f}, {r.predicted_high:.3f}] | {r.measured:.3f} [{r.measured_low:.3f}, "
              f"{r.measured_high:.3f}] | {r.error:+.3f} | {'yes' if r.agrees else 'NO'} | {r.predict_seconds:.1f} "
              f"| {r.predicted_bounds} |")
    (out / "acceptance_oracle.json").write_text(json.dumps(table.to_dict(orient="records"), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
