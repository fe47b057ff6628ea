"""The acceptance oracle's arithmetic (pure): hand-computed cases, full-vocabulary references, a Monte Carlo replay."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specdec_lib import oracle, speculation


def head_from_probs(probs: np.ndarray, n: int, actual: int | None = None) -> oracle.Head:
    """What vLLM returns for a distribution: the top-n by rank plus the actual token, raw log-probabilities."""
    order = np.argsort(-probs, kind="stable")
    entry = {str(int(t)): {"logprob": float(np.log(probs[t])), "rank": r + 1} for r, t in enumerate(order[:n])}
    if actual is not None:
        rank = int(np.where(order == actual)[0][0]) + 1
        entry[str(actual)] = {"logprob": float(np.log(probs[actual])), "rank": rank}
    return oracle.Head.from_vllm(entry, n, len(probs))


def full_pt(probs: np.ndarray, temperature: float) -> np.ndarray:
    w = probs ** (1.0 / temperature)
    return w / w.sum()


def test_greedy_target_accepts_only_its_argmax():
    target = head_from_probs(np.array([0.5, 0.3, 0.2]), 3)
    draft_same = head_from_probs(np.array([0.6, 0.1, 0.3]), 3)
    draft_other = head_from_probs(np.array([0.1, 0.6, 0.3]), 3)
    for method in oracle.DRAFT_SAMPLE_METHODS:
        assert oracle.draft_acceptance(target, draft_same, 0.0, method, 3) == (1.0, 1.0, 1.0)
        assert oracle.draft_acceptance(target, draft_other, 0.0, method, 3) == (0.0, 0.0, 0.0)


def test_complete_answers_give_the_textbook_values_by_hand():
    # p = (0.5, 0.3, 0.2), q = (0.2, 0.6, 0.2) at T = 1: sum of minima 0.2 + 0.3 + 0.2 = 0.7;
    # greedy draft proposes token 1 (q's argmax): accepted with p(1) = 0.3.
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.6, 0.2])
    target, draft = head_from_probs(p, 3), head_from_probs(q, 3)
    point, low, high = oracle.probabilistic_acceptance(target, draft, 1.0, 3)
    assert point == pytest.approx(0.7) and low == pytest.approx(0.7) and high == pytest.approx(0.7)
    assert oracle.draft_acceptance(target, draft, 1.0, "greedy", 3)[0] == pytest.approx(0.3)
    # T = 0.5 squares the probabilities: p_T = (.25, .09, .04)/.38, q_T = (.04, .36, .04)/.44.
    pt, qt = np.array([.25, .09, .04]) / .38, np.array([.04, .36, .04]) / .44
    assert oracle.probabilistic_acceptance(target, draft, 0.5, 3)[0] == pytest.approx(np.minimum(pt, qt).sum())
    assert oracle.draft_acceptance(target, draft, 0.5, "greedy", 3)[0] == pytest.approx(0.09 / 0.38)


def test_top_k_restricts_the_target_only():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    target, draft = head_from_probs(p, 3), head_from_probs(q, 3)
    # top_k = 2 at T = 1: p' = (0.625, 0.375, 0); the greedy draft proposes token 2, which top-k removed.
    assert oracle.draft_acceptance(target, draft, 1.0, "greedy", 3, top_k=2)[0] == pytest.approx(0.0)
    # probabilistic: min(.625,.2) + min(.375,.2) + min(0,.6) = 0.4
    assert oracle.probabilistic_acceptance(target, draft, 1.0, 3, top_k=2)[0] == pytest.approx(0.4)


def test_top_p_keeps_the_nucleus_by_hand():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    target, draft = head_from_probs(p, 3), head_from_probs(q, 3)
    # top_p = 0.7 at T = 1: above token 0 lies 0, above token 1 lies 0.5 (< 0.7, kept), above token 2 lies 0.8
    # (dropped): p' = (0.625, 0.375, 0). The greedy draft proposes token 2: never accepted.
    assert oracle.draft_acceptance(target, draft, 1.0, "greedy", 3, top_p=0.7)[0] == pytest.approx(0.0)
    assert oracle.probabilistic_acceptance(target, draft, 1.0, 3, top_p=0.7)[0] == pytest.approx(0.2 + 0.2)
    # top_p = 0.45: only token 0 (0.5 of mass already above token 1): accepted iff the proposal is token 0.
    assert oracle.token_acceptance(target, 0, 1.0, 3, top_p=0.45) == pytest.approx((1.0, 1.0, 1.0))
    # top-k first, then top-p on the renormalised top-k: top_k = 2 gives (0.625, 0.375); top_p = 0.6 drops token 1.
    assert oracle.token_acceptance(target, 1, 1.0, 3, top_k=2, top_p=0.6)[0] == pytest.approx(0.0)
    assert oracle.token_acceptance(target, 1, 1.0, 3, top_k=2, top_p=0.7)[0] == pytest.approx(0.375)
    # top_p = 1 is off.
    assert oracle.token_acceptance(target, 2, 1.0, 3, top_p=1.0)[0] == pytest.approx(0.2)


def vllm_top_p_reference(probs: np.ndarray, temperature: float, top_p: float, top_k: int | None = None) -> np.ndarray:
    """vLLM's own formulation, transcribed independently: sort ascending, cumulative sum, drop where it is
    <= 1 - top_p, keep the largest token (``apply_top_k_top_p_pytorch``), on softmax(log p / T) after top-k."""
    logits = np.log(probs) / temperature
    if top_k is not None:
        logits = np.where(logits >= np.sort(logits)[-top_k], logits, -np.inf)
    order = np.argsort(logits, kind="stable")
    sorted_p = np.exp(logits[order] - logits.max())
    sorted_p /= sorted_p.sum()
    mask = np.cumsum(sorted_p) <= 1.0 - top_p
    mask[-1] = False
    kept = np.where(mask, -np.inf, logits[order])
    out = np.zeros_like(probs)
    out[order] = np.exp(kept - kept.max())
    return out / out.sum()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.4])
def test_top_p_equals_vllms_ascending_cumsum_mask(temperature):
    rng = np.random.default_rng(11)
    vocab = 40
    for _ in range(30):
        p = rng.dirichlet(np.ones(vocab) * rng.uniform(0.05, 1.0))
        p = np.maximum(p, 1e-12)
        p /= p.sum()
        top_p, top_k = float(rng.uniform(0.3, 0.95)), (None, 10)[int(rng.integers(2))]
        ref = vllm_top_p_reference(p, temperature, top_p, top_k)
        target = head_from_probs(p, vocab)
        dist = oracle.temperature_dist(target, temperature, vocab, top_k, top_p)
        got = np.zeros(vocab)
        got[list(target.token_ids)] = dist.point
        assert got == pytest.approx(ref, abs=1e-9)
        assert (dist.low <= dist.point + 1e-12).all() and (dist.point <= dist.high + 1e-12).all()


def test_top_p_with_a_top_n_answer_brackets_the_full_value_or_asks_for_more_logprobs():
    rng = np.random.default_rng(5)
    vocab, n, checked, refused = 50, 8, 0, 0
    for _ in range(60):
        p = rng.dirichlet(np.ones(vocab) * rng.uniform(0.05, 0.5))
        p = np.maximum(p, 1e-12)
        p /= p.sum()
        target = head_from_probs(p, n)
        proposed = int(np.argsort(-p)[int(rng.integers(3))])
        try:
            point, low, high = oracle.token_acceptance(target, proposed, 0.8, vocab, top_p=0.6)
        except ValueError as exc:
            assert "--max-logprobs" in str(exc)
            # Refused only where the returned tokens may carry less than 0.6 of the mass at this temperature.
            assert full_pt(p, 0.8)[list(target.token_ids)].sum() < 0.6 + 0.2
            refused += 1
            continue
        exact = vllm_top_p_reference(p, 0.8, 0.6)[proposed]
        assert low - 1e-9 <= exact <= high + 1e-9 and low <= point <= high
        checked += 1
    assert checked >= 20 and refused >= 1, (checked, refused)


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.6])
def test_bounds_contain_the_full_vocabulary_value(temperature):
    rng = np.random.default_rng(7)
    vocab, n = 60, 5
    for _ in range(40):
        sharp = rng.uniform(0.5, 4.0)
        p = np.exp(sharp * rng.normal(size=vocab))
        p /= p.sum()
        q = np.exp(np.log(p) + rng.normal(scale=rng.uniform(0.1, 2.0), size=vocab))
        q /= q.sum()
        actual = int(rng.integers(vocab))
        target, draft = head_from_probs(p, n, actual), head_from_probs(q, n, actual)
        pt, qt = full_pt(p, temperature), full_pt(q, temperature)
        exact_prob = float(np.minimum(pt, qt).sum())
        point, low, high = oracle.probabilistic_acceptance(target, draft, temperature, vocab)
        assert low - 1e-9 <= exact_prob <= high + 1e-9 and low <= point <= high
        proposed = int(np.argmax(q))
        exact_greedy = float(pt[proposed])
        point, low, high = oracle.draft_acceptance(target, draft, temperature, "greedy", vocab)
        assert low - 1e-9 <= exact_greedy <= high + 1e-9 and low <= point <= high + 1e-12


def test_bounds_close_when_the_whole_vocabulary_is_returned():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(20) * 0.3)
    q = rng.dirichlet(np.ones(20) * 0.3)
    target, draft = head_from_probs(p, 20), head_from_probs(q, 20)
    point, low, high = oracle.probabilistic_acceptance(target, draft, 0.7, 20)
    assert low == pytest.approx(high, abs=1e-9)
    assert point == pytest.approx(np.minimum(full_pt(p, 0.7), full_pt(q, 0.7)).sum())


def test_tail_sums_match_their_closed_forms():
    # raw tail 0.3 over 10 tokens, each at most e^cap = 0.1, exponent 2 (T = 0.5):
    # concentrated = 3 * 0.1**2 = 0.03 (the maximum); even = 10 * 0.03**2 = 0.009 (the minimum).
    point, low, high = oracle._tail_sums(0.3, math.log(0.1), 10, 2.0)
    assert (low, high, point) == pytest.approx((0.009, 0.03, 0.009))
    point, low, high = oracle._tail_sums(0.3, math.log(0.1), 10, 0.5)  # T = 2: concave, extremes swap
    assert (low, high) == pytest.approx((3 * 0.1 ** 0.5, 10 * 0.03 ** 0.5))


def simulate_counts(betas: list[float], max_tokens: int, k: int, trials: int, seed: int) -> tuple[float, float]:
    """Monte Carlo of vLLM's verify loop along the text: per trial, (accepted, draft tokens)."""
    rng = np.random.default_rng(seed)
    accepted = drafted = 0
    for _ in range(trials):
        t = 1
        while t < max_tokens:
            row = [betas[t + j] if t + j < len(betas) else 0.0 for j in range(k)]
            drafted += k
            i = 0
            while i < k and rng.random() < row[i]:
                i += 1
            accepted += i
            t += i + 1
    return accepted / trials, drafted / trials


def test_step_counts_match_a_monte_carlo_replay_of_the_verify_loop():
    rng = np.random.default_rng(11)
    betas = list(rng.uniform(0.2, 1.0, size=60))
    counts = oracle.step_counts(oracle.chain_proposals(betas, 4), 40, 4)
    acc, drafted = simulate_counts(betas, 40, 4, trials=4000, seed=1)
    assert counts.accepted_tokens == pytest.approx(acc, rel=0.03)
    assert counts.draft_tokens == pytest.approx(drafted, rel=0.03)


def test_step_counts_at_temperature_zero_replays_steps_exactly():
    # accepted along the text: positions 1,2 yes, 3 no, 4.. yes. k = 4, max_tokens 8:
    # step at 1 accepts 2 then rejects (3 tokens, next at 4); step at 4 accepts 4 + bonus -> 9 >= 8, done.
    counts = oracle.step_counts(oracle.chain_proposals([1, 1, 1, 0, 1, 1, 1, 1, 1, 1], 4), 8, 4)
    assert (counts.drafts, counts.draft_tokens, counts.accepted_tokens) == (2, 8, 6)
    assert counts.per_position == (2, 2, 1, 1)
    assert counts.v1_rate == pytest.approx(6 / 8) and counts.mean_acceptance_length == pytest.approx(4.0)


def test_iid_positions_recover_the_closed_form():
    alpha, k = 0.7, 5
    counts = oracle.step_counts(oracle.chain_proposals([alpha] * 4000, k), 3990, k)
    assert counts.mean_acceptance_length == pytest.approx(speculation.expected_tokens_per_step(alpha, k), rel=1e-3)
    assert speculation.alpha_from_v1_rate(counts.v1_rate, k) == pytest.approx(alpha, abs=1e-3)
    assert oracle.chain_expected_tokens([alpha] * 400, k) == pytest.approx(
        speculation.expected_tokens_per_step(alpha, k), rel=0.02)


def test_a_step_without_proposal_is_not_a_draft():
    counts = oracle.step_counts([[], [], [1.0, 0.0], [], []], 5, 2)
    # t=1: nothing (1 token) -> t=2: accepts 1, rejects 1 (2 tokens) -> t=4: nothing -> t=5 stop
    assert (counts.drafts, counts.draft_tokens, counts.accepted_tokens, counts.steps) == (1, 2, 1, 3)


def test_ratio_interval_brackets_the_pooled_ratio():
    acc, drafted = [3, 5, 8, 2, 6], [10, 10, 10, 10, 10]
    low, high = oracle.ratio_interval(acc, drafted)
    assert low < sum(acc) / sum(drafted) < high
    assert oracle.ratio_interval([1], [4]) is None


def test_head_refuses_what_is_not_a_logprob_answer():
    with pytest.raises(ValueError, match="logprob"):
        oracle.Head.from_vllm({"3": {"logprob": 0.5, "rank": 1}}, 1)
    with pytest.raises(ValueError, match="not"):
        oracle.Head.from_vllm({"3": "x"}, 1)
    with pytest.raises(ValueError, match="non-empty"):
        oracle.Head.from_vllm(None, 1)


def test_at_temperature_zero_the_targets_own_token_decides_not_the_teacher_forced_argmax():
    # a near-tie: the teacher-forced pass ranks token 0 first, the target's own decode step emitted token 1
    target = head_from_probs(np.array([0.5001, 0.4999]), 2)
    assert oracle.token_acceptance(target, 1, 0.0, 2) == (0.0, 0.0, 0.0)
    assert oracle.token_acceptance(target, 1, 0.0, 2, greedy_token=1) == (1.0, 1.0, 1.0)
    draft = head_from_probs(np.array([0.1, 0.9]), 2)
    assert oracle.draft_acceptance(target, draft, 0.0, "probabilistic", 2, greedy_token=1) == (1.0, 1.0, 1.0)
