"""`specdec predict`: acceptance before deploying, from the target and candidate drafts served plainly (edge).

    specdec predict --target URL --draft URL [--draft URL ...] [--prompts chat,code | FILE.jsonl]
                    [--temperatures 0,0.5,1] [--k 1,2,...,8] [--methods greedy,probabilistic] [--json]

Registered into ``cli.build_parser`` by ``register(subparsers)``. Exit codes as ``specdec``'s: 4 when a server's
answers would give a wrong number (tokenizer mismatch, no prompt log-probabilities), with the URL named.
"""

from __future__ import annotations

import json
import sys

HELP = "predict acceptance of candidate drafts (and n-gram) before deploying, from plain servers"
DESCRIPTION = """Predict the acceptance a target would give each candidate draft with speculation on, from the
target and the drafts served WITHOUT speculation. The target writes its own continuation of each prompt at each
temperature; both models are teacher-forced over it by token ids (prompt_logprobs) and vLLM 0.32's rejection rule
is applied per position (greedy draft sampling: p_T(draft argmax); probabilistic: sum of min(p_T, q_T)). n-gram
(and suffix decoding with --suffix) is replayed with vLLM's own proposer over the target's sampled texts and its
drafts counted as accepted where they equal the emitted token (exact in distribution at every temperature).
Every draft model's figure comes with a lower and upper bound for the vocabulary tail the top-N answer leaves
out: raise the servers' --max-logprobs (default 20) and --logprobs here to tighten it.
Both servers must share a tokenizer (checked with /tokenize). Results go to a run folder (resumable)."""


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help=HELP, description=DESCRIPTION)
    p.add_argument("--target", required=True, metavar="URL", help="the target served without speculation")
    p.add_argument("--draft", action="append", default=[], metavar="URL",
                   help="a candidate draft served alone (repeat for several; same tokenizer as the target)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (all servers)")
    p.add_argument("--prompts", default="chat,code,summarisation,json_extraction",
                   help="built-in prompt sets, comma-separated, or a JSONL file ({'prompt': ...} lines)")
    p.add_argument("--n-prompts", type=int, default=8, help="prompts used (from the start of the list)")
    p.add_argument("--temperatures", default="0,0.5,1", help="comma-separated, as production uses them")
    p.add_argument("--k", default="1,2,3,4,5,6,7,8", help="speculative tokens per step to evaluate")
    p.add_argument("--methods", default="greedy,probabilistic",
                   help="vLLM draft_sample_method(s): greedy (vLLM's default) and/or probabilistic")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--logprobs", type=int, default=20, help="top-N per position (<= the servers' --max-logprobs)")
    p.add_argument("--top-k", type=int, default=None, help="production top_k (applied to the target, as vLLM does)")
    p.add_argument("--top-p", type=float, default=None,
                   help="production top_p (applied to the target after top-k, as vLLM does; 1 = off)")
    p.add_argument("--no-ngram", action="store_true", help="skip the n-gram replay")
    p.add_argument("--ngram-min", type=int, default=2, help="prompt_lookup_min")
    p.add_argument("--ngram-max", type=int, default=4, help="prompt_lookup_max")
    p.add_argument("--suffix", action="store_true",
                   help="also replay suffix decoding (vLLM's defaults; needs arctic-inference, see suffix_replay)")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="texts sampled per prompt at T > 0 for the counted candidates: n-gram, suffix, greedy "
                   "drafts (default 4)")
    p.add_argument("--cost-ratio", type=float, default=None,
                   help="draft step / target step time: adds the best k per candidate")
    p.add_argument("--runs-dir", default="data/runs", help="where run folders go (default: data/runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted prediction run")
    p.add_argument("--timeout-s", type=float, default=120.0, help="per request")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)


def _numbers(text: str, name: str, kind=float) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not accepted: comma-separated numbers") from None


def cmd_predict(args) -> int:
    from specdec_lib import cli, oracle_client, proposers, suffix_replay
    from specdec_lib.endpoint import EndpointClient

    api_key = cli.api_key_from_env(args.api_key_env)
    target = EndpointClient(args.target, api_key=api_key, timeout_s=args.timeout_s)
    drafts = [EndpointClient(u, api_key=api_key, timeout_s=args.timeout_s) for u in args.draft]
    prompts = args.prompts if args.prompts.endswith(".jsonl") or "/" in args.prompts else args.prompts.split(",")
    ks = _numbers(args.k, "--k", int)
    ngram = None if args.no_ngram else proposers.NgramConfig(args.ngram_min, args.ngram_max, max(ks))
    suffix = suffix_replay.SuffixConfig() if args.suffix else None
    samples = oracle_client.DEFAULT_MODEL_FREE_SAMPLES if args.samples is None else args.samples
    try:
        result = oracle_client.run_prediction(
            target, drafts, prompts=prompts, n_prompts=args.n_prompts,
            temperatures=_numbers(args.temperatures, "--temperatures"), ks=ks,
            methods=[m for m in args.methods.split(",") if m], max_tokens=args.max_tokens, n_logprobs=args.logprobs,
            top_k=args.top_k, top_p=args.top_p, ngram=ngram, suffix=suffix, model_free_samples=samples,
            runs_dir=args.runs_dir, resume=args.resume, progress=not args.no_progress)
    except oracle_client.OracleRefusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.run_path:
            print(f"the run folder keeps what was recorded: {exc.run_path}", file=sys.stderr)
        return cli.EXIT_ENDPOINT_ERROR
    frame = result.to_frame()
    columns = ["temperature", "candidate", "draft_sample_method", "k", "alpha", "alpha_low", "alpha_high",
               "bounds_kind", "v1_rate", "mean_acceptance_length", "n_requests"]
    shown = frame[columns] if not frame.empty else frame
    interrupted = result.metadata.get("status") == "interrupted"
    if args.json:
        out = {"run_path": str(result.path), "status": result.metadata.get("status"), "errors": len(result.errors),
               "rows": json.loads(shown.to_json(orient="records"))}
        if args.cost_ratio is not None:
            out["best_k"] = json.loads(result.best_k(args.cost_ratio).to_json(orient="records"))
        print(json.dumps(out, indent=2))
    else:
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if args.cost_ratio is not None:
            print(result.best_k(args.cost_ratio).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"alpha: per-token acceptance solved from the predicted V1 rate; alpha_low/high: bounds_kind says "
              f"which (a draft's vocabulary tail; n-gram/suffix: 95 % across requests)"
              f"\n{len(result.errors)} request(s) failed (kept in the run folder; --resume retries them)"
              f"\nrun folder: {result.path}")
    return cli.EXIT_INTERRUPTED if interrupted else cli.EXIT_OK
