"""The n-gram replay: a hand example, a brute-force search, and vLLM's own function run in the vLLM environment."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from specdec_lib import localserver, oracle, oracle_client, prediction, proposers, runs, suffix_replay
from specdec_lib.endpoint import EndpointClient


def brute_force(context: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """The documented rule, searched naively: the longest n in [min_n, max_n] whose suffix n-gram occurred earlier
    (any earlier start, overlaps allowed); the earliest such occurrence; the up to k tokens after it."""
    total = len(context)
    for n in range(min(max_n, total - 1), min_n - 1, -1):
        suffix = context[total - n:]
        for start in range(0, total - n):
            if context[start:start + n] == suffix:
                follow = start + n
                return context[follow:follow + min(k, total - follow)]
    return []


def test_hand_example_takes_the_earliest_of_the_longest_matches():
    # suffix "1 2 3" occurs at 0 and 4; the earliest (0) wins, followed by 4 1 2
    assert proposers.ngram_propose([1, 2, 3, 4, 1, 2, 3, 9, 1, 2, 3], 2, 4, 3) == [4, 1, 2]
    # only a 1-gram repeats and min_n is 2: nothing proposed
    assert proposers.ngram_propose([5, 6, 7, 5], 2, 4, 3) == []
    # max_model_len leaves room for one token only
    assert proposers.ngram_propose([1, 2, 3, 1, 2], 2, 4, 3, max_model_len=6) == [3]


def test_port_agrees_with_brute_force_on_random_sequences():
    rng = np.random.default_rng(5)
    for _ in range(3000):
        context = [int(x) for x in rng.integers(0, int(rng.integers(2, 6)), size=int(rng.integers(1, 30)))]
        min_n = int(rng.integers(1, 4))
        max_n = int(rng.integers(min_n, 6))
        k = int(rng.integers(1, 6))
        assert proposers.ngram_propose(context, min_n, max_n, k) == brute_force(context, min_n, max_n, k), \
            (context, min_n, max_n, k)


VLLM_SCRIPT = """
import json, sys
import numpy as np
from vllm.v1.spec_decode.ngram_proposer import _find_longest_matched_ngram_and_propose_tokens as f
cases = json.loads(sys.stdin.read())
print(json.dumps([f(np.array(c, dtype=np.int32), a, b, 1 << 20, k).tolist() for c, a, b, k in cases]))
"""


def test_port_agrees_with_vllms_own_proposer(vllm_venv):
    rng = np.random.default_rng(9)
    cases = []
    for _ in range(400):
        context = [int(x) for x in rng.integers(0, int(rng.integers(2, 5)), size=int(rng.integers(1, 40)))]
        min_n = int(rng.integers(1, 4))
        cases.append((context, min_n, int(rng.integers(min_n, 6)), int(rng.integers(1, 6))))
    done = subprocess.run([str(localserver.venv_python(vllm_venv)), "-c", VLLM_SCRIPT], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=300, env=localserver.quiet_env())
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [proposers.ngram_propose(c, a, b, k) for c, a, b, k in cases]
    assert ours == theirs
    assert sum(1 for x in ours if x) > 100  # the cases exercise proposals, not only empty answers


def test_proposals_follow_the_generated_text():
    config = proposers.NgramConfig(2, 3, 2)
    out = proposers.ngram_proposals([7, 8, 9, 7], [8, 5, 7, 8], config, max_tokens=5)
    # t=1: context 7 8 9 7 8 -> "7 8" seen at 0 -> propose 9 7; t=2: ... 8 5 -> none; t=3: ...5 7 -> none;
    # t=4: ...7 8 -> "7 8" earliest at 0 -> 9 7
    assert out == [[], [9, 7], [], [], [9, 7]]


def test_indicator_counts_by_hand():
    # text 1: step at t=1 drafts 11 12 = text[1:3] (2 accepted, +1 emitted: next step at 4); t=2, 3 are never step
    # starts; t=4 drafts 14 99: 14 accepted, 99 != 15 rejected (recovered 15): next step at 6 = max_tokens, done.
    text1 = [10, 11, 12, 13, 14, 15, 16, 17]
    drafts1 = [[], [11, 12], [99, 99], [99], [14, 99], [15, 16]]
    one = prediction.indicator_counts([drafts1], [text1], 2, 6)
    assert (one.drafts, one.draft_tokens, one.accepted_tokens, one.per_position, one.steps) == (2, 4, 3, (2, 1), 2)
    # text 2: no draft at t=1 (one token); t=2 drafts 21 22, both right (+ bonus): t=5 drafts 24, right: t=7.
    text2 = [10, 20, 21, 22, 23, 24, 25, 26]
    drafts2 = [[], [], [21, 22], [5], [5], [24]]
    two = prediction.indicator_counts([drafts2], [text2], 2, 6)
    assert (two.drafts, two.draft_tokens, two.accepted_tokens, two.per_position, two.steps) == (2, 3, 3, (2, 1), 3)
    mean = prediction.indicator_counts([drafts1, drafts2], [text1, text2], 2, 6)
    assert (mean.drafts, mean.draft_tokens, mean.accepted_tokens, mean.steps) == (2, 3.5, 3, 2.5)
    # k = 1 uses the first drafted token only: t=1 accepts 11 (next 3); t=3 drafts 99: rejected (next 4); t=4
    # accepts 14 (next 6).
    k1 = prediction.indicator_counts([drafts1], [text1], 1, 6)
    assert (k1.drafts, k1.draft_tokens, k1.accepted_tokens) == (3, 3, 2)


# A toy target: next-token probabilities given the last token (4 tokens), already at its temperature.
TOY = np.array([[0.50, 0.30, 0.15, 0.05], [0.10, 0.20, 0.60, 0.10], [0.55, 0.05, 0.15, 0.25],
                [0.25, 0.25, 0.25, 0.25]])
TOY_PROMPT = [0, 1, 2, 0, 1]


def _sample(rng, probs) -> int:
    return int(rng.choice(len(probs), p=probs))


def _speculative_run(rng, k: int, max_tokens: int, propose=None) -> tuple[int, int]:
    """vLLM's NO_DRAFT_PROBS rejection rule (rejection_random_sample_kernel, sample_recovered_tokens_kernel): draft
    token d accepted when p(d) >= u; else the recovered token is drawn from p with d zeroed; all accepted: bonus.
    ``propose(context, k)`` drafts (default: the n-gram proposer with lookup 1..2)."""
    propose = propose or (lambda context, kk: proposers.ngram_propose(context, 1, 2, kk))
    text = [_sample(rng, TOY[TOY_PROMPT[-1]])]
    drafted = accepted = 0
    while len(text) < max_tokens:
        draft = propose(TOY_PROMPT + text, k)
        drafted += len(draft)
        for token in draft:
            probs = TOY[text[-1]]
            if probs[token] >= rng.random():
                text.append(token)
                accepted += 1
                continue
            rest = probs.copy()
            rest[token] = 0.0
            text.append(_sample(rng, rest / rest.sum()))
            break
        else:
            text.append(_sample(rng, TOY[text[-1]]))
    return accepted, drafted


def test_counting_drafts_against_plainly_sampled_text_matches_vllms_rejection_sampler():
    """The rule behind the model-free prediction at T > 0: the speculative server's counters have the same
    distribution as 1[draft = emitted] replayed over text the target sampled WITHOUT speculation."""
    k, max_tokens, n = 3, 12, 3000
    rng = np.random.default_rng(11)
    spec = np.array([_speculative_run(rng, k, max_tokens) for _ in range(n)], dtype=float)
    plain, former = [], []
    for _ in range(n):
        text = [_sample(rng, TOY[TOY_PROMPT[-1]])]
        while len(text) < max_tokens + k:
            text.append(_sample(rng, TOY[text[-1]]))
        drafts = proposers.ngram_proposals(TOY_PROMPT, text, proposers.NgramConfig(1, 2, k), max_tokens)
        c = prediction.indicator_counts([drafts], [text], k, max_tokens)
        plain.append((c.accepted_tokens, c.draft_tokens))
        # The former rule: β = p(drafted token) at each position of the same text, chained by step_counts.
        full = TOY_PROMPT + text
        betas = [[float(TOY[full[len(TOY_PROMPT) + t + j - 1]][token]) for j, token in enumerate(row)]
                 for t, row in enumerate(drafts)]
        former.append(oracle.step_counts(betas, max_tokens, k).draft_tokens)
    plain = np.array(plain)
    for column, name in ((0, "accepted"), (1, "drafted")):
        diff = spec[:, column].mean() - plain[:, column].mean()
        se = np.sqrt(spec[:, column].var() / n + plain[:, column].var() / n)
        assert abs(diff) < 4 * se, (name, spec[:, column].mean(), plain[:, column].mean(), se)
    assert spec[:, 0].mean() > 1.0  # the case exercises acceptance, not only rejections
    # ... and the simulation tells the rules apart: the former one predicts too many drafted tokens here.
    se = np.sqrt(spec[:, 1].var() / n + np.var(former) / n)
    assert np.mean(former) - spec[:, 1].mean() > 4 * se, (np.mean(former), spec[:, 1].mean(), se)


# Recorded on a real vLLM 0.32.0 CPU server (tiny target, --speculative-config '{"method": "suffix",
# "num_speculative_tokens": 4}', --per-request-spec-decode-metrics detailed, 2026-11-28): the same prompt sent twice
# at T = 0 with max_tokens 32; the server's own per-step drafted/accepted lists. The second request drafts from the
# first one's cached response.
SERVER_PROMPT = [495, 858, 634, 374, 858, 634, 374, 858, 634, 374, 858]
SERVER_TEXT = [222, 598, 1511, 414, 1571, 506, 2014, 1961, 1127, 1802, 1638, 2014, 2014, 2014, 2014, 1638, 2014, 2014,
               1638, 2014, 501, 1227, 1378, 823, 541, 1209, 1792, 1227, 1378, 823, 1254, 1376]
SERVER_STEPS = [[(1, 0), (1, 0), (1, 1), (1, 1), (3, 0), (3, 1), (1, 1), (3, 0)],
                [(1, 1), (3, 3), (4, 4), (4, 4), (4, 4), (4, 4), (4, 4)]]


def test_suffix_replay_reproduces_the_steps_a_real_server_reported(vllm_venv):
    config = suffix_replay.SuffixConfig(max_model_len=512)
    worlds = [[(SERVER_PROMPT, SERVER_TEXT), (SERVER_PROMPT, SERVER_TEXT)]]
    replayed = suffix_replay.replay_runs(worlds, config, [4], 32, python=localserver.venv_python(vllm_venv))
    steps = [suffix_replay.steps(drafts, SERVER_TEXT, 32) for drafts in replayed[0][4]]
    assert steps == SERVER_STEPS


def test_a_prediction_recorded_before_the_indicator_rule_loads_and_is_recounted(tmp_path):
    """Old records carry n-gram β = p_T(proposed) ("betas"); the drafts and the text decide instead."""
    meta = {"served_model": "m", "endpoint": "http://127.0.0.1:1", "drafts": [],
            "parameters": {"temperatures": [0.5], "ks": [2], "methods": ["greedy"], "max_tokens": 6, "n_logprobs": 20,
                           "top_k": None, "seed": 0, "ngram": {"prompt_lookup_min": 2, "prompt_lookup_max": 4}}}
    writer = runs.RunWriter.create(tmp_path, "predict", meta)
    for index, (text, drafts) in enumerate(((
            [10, 11, 12, 13, 14, 15, 16, 17], [[], [11, 12], [99, 99], [99], [14, 99], [15, 16]]),
            ([10, 20, 21, 22, 23, 24, 25, 26], [[], [], [21, 22], [5], [5], [24]]))):
        rec = {f: None for f in runs.RECORD_FIELDS}
        rec.update(index=index, label="T=0.5", prompt_id=f"p{index}", temperature=0.5, max_tokens=6, e2e_s=1.0,
                   oracle={"prompt_ids": 3, "continuation": text, "drafts": {}, "tokens_sent": 20,
                           "ngram": {"proposals": drafts,
                                     "betas": [[[0.3, 0.3, 0.3]] * len(row) for row in drafts]}})
        writer.append_request(rec)
    writer.finish("complete")
    frame = prediction.load_prediction(writer.path).to_frame()
    row = frame.iloc[0]
    # by hand (test_indicator_counts_by_hand): 3 + 3 accepted of 4 + 3 drafted
    assert row["v1_rate"] == pytest.approx(6 / 7) and row["bounds_kind"] == prediction.BOUNDS_REQUESTS
    assert row["alpha_low"] <= row["alpha"] <= row["alpha_high"]


def test_suffix_without_arctic_inference_is_refused_before_anything_is_sent(monkeypatch, tmp_path):
    # Stands in for a workbook Python without the package (the check's own import), and an interpreter path that
    # does not exist: the refusal says what to install, before any request or run folder.
    monkeypatch.setattr(suffix_replay, "have_arctic_inference", lambda: False)
    monkeypatch.setenv("SPECDEC_SUFFIX_PYTHON", str(tmp_path / "no-such-python"))
    with pytest.raises(RuntimeError, match="arctic-inference==0.3.0") as info:
        oracle_client.run_prediction(EndpointClient("http://127.0.0.1:9"), [], ngram=None,
                                     suffix=suffix_replay.SuffixConfig(), runs_dir=tmp_path / "runs", progress=False)
    assert "no-such-python" in str(info.value)
    assert not (tmp_path / "runs").exists()


# A toy greedy draft: its argmax given the last token (deterministic, as vLLM's greedy draft is given the text).
TOY_DRAFT_ARGMAX = [0, 2, 0, 1]


def _greedy_draft(context: list[int], k: int) -> list[int]:
    """vLLM with a greedy draft at T > 0: the draft chains its argmax k times and sends no draft probabilities, so
    the same NO_DRAFT_PROBS rule applies (``_speculative_run``)."""
    draft, last = [], context[-1]
    for _ in range(k):
        last = TOY_DRAFT_ARGMAX[last]
        draft.append(last)
    return draft


def test_counting_a_greedy_drafts_argmax_against_plainly_sampled_text_matches_the_rejection_sampler():
    """Greedy drafts at T > 0 are counted like n-gram: the draft's teacher-forced argmax along text the target
    sampled without speculation, 1[argmax = emitted], chained per step, has the speculative server's distribution."""
    k, max_tokens, n = 3, 12, 3000
    rng = np.random.default_rng(23)
    spec = np.array([_speculative_run(rng, k, max_tokens, _greedy_draft) for _ in range(n)], dtype=float)
    plain = []
    for _ in range(n):
        text = [_sample(rng, TOY[TOY_PROMPT[-1]])]
        while len(text) < max_tokens + k:
            text.append(_sample(rng, TOY[text[-1]]))
        argmax = [TOY_DRAFT_ARGMAX[prev] for prev in [TOY_PROMPT[-1]] + text[:-1]]  # the draft at each position
        c = prediction.chain_indicator_counts([argmax], [text], k, max_tokens)
        plain.append((c.accepted_tokens, c.draft_tokens))
    plain = np.array(plain)
    for column, name in ((0, "accepted"), (1, "drafted")):
        diff = spec[:, column].mean() - plain[:, column].mean()
        se = np.sqrt(spec[:, column].var() / n + plain[:, column].var() / n)
        assert abs(diff) < 4 * se, (name, spec[:, column].mean(), plain[:, column].mean(), se)
    assert 1.0 < spec[:, 0].mean() < spec[:, 1].mean()  # acceptances and rejections both occur


def test_a_greedy_draft_is_counted_only_at_positive_temperature_and_where_recorded():
    part = {"continuation": [1, 2, 3], "draft_argmax": {"d": [[1, 2, 0]]}}
    assert prediction.counted_draft(part, "d", "greedy", 0.7) == [[1, 2, 0]]
    assert prediction.counted_draft(part, "d", "greedy", 0.0) is None  # T = 0: the β chain is already exact
    assert prediction.counted_draft(part, "d", "probabilistic", 0.7) is None  # the draft samples: no indicator
    assert prediction.counted_draft({"continuation": [1]}, "d", "greedy", 0.7) is None  # recorded before counting
    # By hand, k = 2, max_tokens 3: hits (1, 1, 0). Step at t = 1 drafts positions 1, 2: accepts 1 (hit), rejects 2;
    # emits 2 tokens, so t reaches 3 = max_tokens: one draft, 2 drafted tokens, 1 accepted.
    c = prediction.chain_indicator_counts([[1, 2, 0]], [[1, 2, 3]], 2, 3)
    assert (c.drafts, c.draft_tokens, c.accepted_tokens) == (1.0, 2.0, 1.0)
