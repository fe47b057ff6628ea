"""The acceptance oracle against real vLLM CPU servers: predicted from plain servers, measured with speculation on.

Economical on purpose (the whole suite has ~20 minutes on 2 cores): one noisy draft, few prompts, and the servers
of the pool shared with the other live tests ("baseline", "draft_noise05_prob"). The full table (three draft
qualities x three temperatures x both sampling methods, and n-gram) is printed by benchmarks/acceptance_oracle.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from oracle_models import ensure_other_tokenizer_model

from specdec_lib import loadtest, metrics, oracle_client, prediction, runs, suffix_replay
from specdec_lib.endpoint import EndpointClient

PROMPTS = ["chat", "code", "summarisation", "json_extraction"]
N_PROMPTS = 6
MAX_TOKENS = 40
TEMPERATURES = (0.0, 0.5, 1.0)


def test_predicted_alpha_agrees_with_the_pair_served_with_speculation(vllm_servers, test_output_dir):
    spec = EndpointClient(vllm_servers.get_named("draft_noise05_prob").base_url)
    sweep = loadtest.run_temperature_sweep(spec, temperatures=TEMPERATURES, requests_per_temperature=N_PROMPTS,
                                           prompts=PROMPTS, max_tokens=MAX_TOKENS, concurrency=1,
                                           api="completions", runs_dir=test_output_dir, progress=False)
    draft = EndpointClient(vllm_servers.get("oracle_plain_draft_noise05", "draft_noise05").base_url)
    target = EndpointClient(vllm_servers.get_named("baseline").base_url)
    predicted = oracle_client.run_prediction(target, [draft], prompts=PROMPTS, n_prompts=N_PROMPTS,
                                             temperatures=TEMPERATURES, ks=(4,), methods=("probabilistic",),
                                             max_tokens=MAX_TOKENS, ngram=None, runs_dir=test_output_dir,
                                             progress=False)
    assert predicted.metadata["status"] == "complete" and not predicted.errors
    assert predicted.metadata["vocab_size"] == 2048  # the tiny models' vocabulary, as the server's refusal names it
    # Resuming a complete run sends nothing and changes nothing.
    again = oracle_client.run_prediction(target, [draft], prompts=PROMPTS, n_prompts=N_PROMPTS,
                                         temperatures=TEMPERATURES, ks=(4,), methods=("probabilistic",),
                                         max_tokens=MAX_TOKENS, ngram=None, runs_dir=test_output_dir,
                                         resume=predicted.path, progress=False)
    assert len(runs.load_run(again.path).raw_records) == len(TEMPERATURES) * N_PROMPTS

    table = prediction.compare_with_measured(predicted, runs.load_run(sweep.run_path), "tiny-draft_noise05",
                                             "probabilistic", 4)
    print(table.to_string())
    assert list(table["temperature"]) == list(TEMPERATURES)
    assert table["agrees"].all(), table[["temperature", "predicted", "measured", "measured_low", "measured_high"]]
    # The bounds are honest: the point lies inside them, and at T = 0 there is no tail to bound.
    assert (table["predicted_low"] <= table["predicted"] + 1e-9).all()
    assert (table["predicted"] <= table["predicted_high"] + 1e-9).all()
    t0 = table[table["temperature"] == 0.0].iloc[0]
    assert t0["predicted_low"] == pytest.approx(t0["predicted_high"])
    estimates = predicted.estimates()
    assert {e.temperature for e in estimates} == set(TEMPERATURES)
    assert all(e.source == "predicted" and e.k == 4 and e.draft_model == "tiny-draft_noise05"
               and e.draft_sample_method == "probabilistic" and e.target_model == "tiny-target"
               and e.n_requests == N_PROMPTS and e.origin == predicted.run_id for e in estimates)


def test_a_draft_with_another_tokenizer_is_refused_by_the_servers_own_tokenization(vllm_servers, tiny_models,
                                                                                    vllm_venv, test_output_dir):
    other = vllm_servers.get("oracle_other_tokenizer", ensure_other_tokenizer_model(tiny_models, vllm_venv))
    target = EndpointClient(vllm_servers.get_named("baseline").base_url)
    with pytest.raises(oracle_client.OracleRefusal) as info:
        oracle_client.run_prediction(target, [EndpointClient(other.base_url)], prompts=PROMPTS, n_prompts=2,
                                     temperatures=(0.0,), ks=(4,), max_tokens=8, runs_dir=test_output_dir,
                                     progress=False)
    exc = info.value
    assert exc.kind == "tokenizer_mismatch" and other.base_url in str(exc) and target.base_url in str(exc)
    meta = runs.load_run(exc.run_path).metadata
    assert meta["status"] == "failed" and meta["error_kind"] == "tokenizer_mismatch"
    assert runs.load_run(exc.run_path).records == ()  # refused before any prediction was written


def test_a_logprobs_request_above_the_servers_cap_is_refused_with_the_cap(vllm_servers, test_output_dir):
    target = EndpointClient(vllm_servers.get_named("baseline").base_url)
    with pytest.raises(oracle_client.OracleRefusal) as info:
        oracle_client.run_prediction(target, [], prompts=PROMPTS, n_prompts=1, temperatures=(0.0,), ks=(2,),
                                     max_tokens=4, n_logprobs=50, runs_dir=test_output_dir, progress=False)
    assert info.value.kind == "logprobs_refused" and "max allowed: 20" in str(info.value)
    assert target.base_url in str(info.value)


def test_ngram_replay_reproduces_the_servers_own_counts_at_temperature_zero(vllm_servers, test_output_dir):
    """Exact at T = 0: wherever the speculative server wrote the same tokens as the plain target (they can differ
    only by floating-point ties between a one-token and a k + 1-token forward pass), the replayed n-gram proposer
    predicts that request's accepted and draft tokens exactly as the server itself reports them."""
    spec = EndpointClient(vllm_servers.get_named("ngram", ("--per-request-spec-decode-metrics", "detailed")).base_url)
    target = EndpointClient(vllm_servers.get_named("baseline").base_url)
    predicted = oracle_client.run_prediction(target, [], prompts=str(REPETITIVE), n_prompts=6, temperatures=(0.0,),
                                             ks=(4,), max_tokens=32, runs_dir=test_output_dir, progress=False)
    rows = predicted.request_frame().set_index("prompt_id")
    identical = 0
    for rec in predicted.records:
        prompt = {"model": "tiny-target", "prompt": _prompt_text(rec["prompt_id"]), "temperature": 0.0,
                  "return_token_ids": True}
        text = oracle_client.post_json(spec, "/v1/completions", {**prompt, "max_tokens": 36})
        if text["choices"][0]["token_ids"] != rec["oracle"]["continuation"]:
            continue
        identical += 1
        answer = oracle_client.post_json(spec, "/v1/completions", {**prompt, "max_tokens": 32})
        server = answer.get("metrics", {}).get("speculative_decoding") or answer["choices"][0]["metrics"]
        row = rows.loc[rec["prompt_id"]]
        assert (row["accepted_tokens"], row["draft_tokens"]) == (server["num_accepted_draft_tokens"],
                                                                 server["num_draft_tokens"]), rec["prompt_id"]
    print(f"n-gram replay exact on {identical} of {len(predicted.records)} requests with identical text")
    assert identical >= 1, "no request produced the same tokens with and without speculation"


def test_suffix_replay_reproduces_the_servers_own_steps_at_temperature_zero(vllm_servers, test_output_dir):
    """vLLM's suffix decoding (arctic-inference's cache, shared across requests) replayed over the plain target's
    texts, in the order the speculative server then serves the same prompts: every step's drafted and accepted
    counts are the server's own (``per_step_drafted``/``per_step_accepted``), for every request whose text, and every
    earlier request's text, is the plain target's (they feed the cache; texts differ only by floating-point ties).
    Later requests may draft from earlier responses: the replay holds the global tree, not only the prompt's."""
    server = vllm_servers.get_named("suffix", ("--per-request-spec-decode-metrics", "detailed"))
    spec = EndpointClient(server.base_url)
    # The replay starts from an empty cache: this server must not have served anything before this test.
    assert metrics.parse_metrics(spec.metrics_text()).requests_finished == 0, "the suffix server's cache is warm"
    target = EndpointClient(vllm_servers.get_named("baseline").base_url)
    max_tokens, n_prompts = 32, 6
    predicted = oracle_client.run_prediction(
        target, [], prompts=str(REPETITIVE), n_prompts=n_prompts, temperatures=(0.0,), ks=(4,), max_tokens=max_tokens,
        ngram=None, suffix=suffix_replay.SuffixConfig(max_model_len=server.max_model_len), runs_dir=test_output_dir,
        progress=False)
    rows = predicted.request_frame().set_index("prompt_id")
    exact = 0
    for rec in sorted(predicted.records, key=lambda r: r["index"]):
        text = rec["oracle"]["continuation"]
        answer = oracle_client.post_json(spec, "/v1/completions", {
            "model": "tiny-target", "prompt": _prompt_text(rec["prompt_id"]), "temperature": 0.0,
            "max_tokens": max_tokens, "return_token_ids": True})
        if answer["choices"][0]["token_ids"] != text[:max_tokens]:
            break  # this response (and so the cache of every later request) differs from the replayed text
        server_metrics = answer.get("metrics", {}).get("speculative_decoding") or answer["choices"][0]["metrics"]
        server_steps = list(zip(server_metrics["per_step_drafted"], server_metrics["per_step_accepted"]))
        replayed = suffix_replay.steps(predicted.suffix_drafts[rec["index"]][4][0], text, max_tokens)
        assert replayed == server_steps, rec["prompt_id"]
        row = rows.loc[rec["prompt_id"]]
        assert (row["accepted_tokens"], row["draft_tokens"]) == (server_metrics["num_accepted_draft_tokens"],
                                                                 server_metrics["num_draft_tokens"])
        exact += 1
    print(f"suffix replay exact on the first {exact} of {len(predicted.records)} requests")
    assert exact >= 2, "fewer than two requests produced the same tokens with and without speculation"


REPETITIVE = Path(__file__).parent / "data" / "repetitive_prompts.jsonl"


def _prompt_text(prompt_id: str) -> str:
    return next(p.text for p in loadtest.load_prompts(str(REPETITIVE)) if p.prompt_id == prompt_id)
