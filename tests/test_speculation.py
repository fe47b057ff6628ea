"""The speculative-sampling arithmetic against hand calculation, the papers' statements and vLLM's definitions."""

import math

import pytest

from specdec_lib import speculation as s

# --- expected tokens per step -----------------------------------------------------------------------------------

def test_expected_tokens_matches_the_geometric_sum_by_hand():
    # alpha = 0.7, k = 5: 1 + .7 + .49 + .343 + .2401 + .16807
    assert s.expected_tokens_per_step(0.7, 5) == pytest.approx(2.94117, abs=1e-9)
    # alpha = 0.8, k = 4: (1 - 0.32768) / 0.2
    assert s.expected_tokens_per_step(0.8, 4) == pytest.approx(3.3616, abs=1e-12)


def test_nothing_accepted_still_emits_the_targets_own_token():
    for k in (1, 3, 8):
        assert s.expected_tokens_per_step(0.0, k) == 1.0


def test_everything_accepted_emits_k_plus_one_and_the_limit_is_continuous():
    for k in (1, 5, 16):
        assert s.expected_tokens_per_step(1.0, k) == k + 1
        assert s.expected_tokens_per_step(1 - 1e-9, k) == pytest.approx(k + 1, rel=1e-6)
        # either side of the internal switch between closed form and summation
        assert s.expected_tokens_per_step(0.998999, k) == pytest.approx(
            sum(0.998999 ** i for i in range(k + 1)), rel=1e-12)


def test_per_position_rates_reproduce_the_iid_case():
    # If every token is accepted independently with alpha, P(first i accepted) = alpha^i.
    alpha, k = 0.6, 4
    rates = [alpha ** i for i in range(1, k + 1)]  # .6, .36, .216, .1296
    assert s.expected_tokens_from_positions(rates) == pytest.approx(1 + 0.6 + 0.36 + 0.216 + 0.1296)
    assert s.expected_tokens_from_positions(rates) == pytest.approx(s.expected_tokens_per_step(alpha, k))
    assert s.conditional_acceptance_from_positions(rates) == pytest.approx([0.6] * 4)


def test_per_position_rates_need_no_iid_assumption():
    # vLLM counters over 1000 drafts, k = 3: 800 reached position 0, 500 position 1, 100 position 2.
    rates = [800 / 1000, 500 / 1000, 100 / 1000]
    assert s.expected_tokens_from_positions(rates) == pytest.approx(2.4)
    assert s.conditional_acceptance_from_positions(rates) == pytest.approx([0.8, 0.625, 0.2])


def test_per_position_rates_that_increase_are_rejected():
    with pytest.raises(ValueError, match=r"per_position_rates\[1\]"):
        s.expected_tokens_from_positions([0.5, 0.6])
    with pytest.raises(ValueError, match="at least one"):
        s.expected_tokens_from_positions([])


# --- speedup (Leviathan et al. 2023, Theorem 3.8) ---------------------------------------------------------------

def test_speedup_by_hand():
    # (1 - .8^5) / ((1 - .8)(4 * .1 + 1)) = 3.3616 / 1.4
    assert s.speedup(0.8, 4, 0.1) == pytest.approx(2.401142857, abs=1e-9)
    # free draft: speedup = expected tokens
    assert s.speedup(0.5, 3, 0.0) == pytest.approx(1 + 0.5 + 0.25 + 0.125)


def test_one_draft_token_gives_corollary_3_9s_factor():
    # Leviathan et al. 2023, Corollary 3.9: with gamma = 1 the improvement is (1 + alpha) / (1 + c).
    for alpha, c in ((0.6, 0.05), (0.75, 0.2), (0.3, 0.3)):
        assert s.speedup(alpha, 1, c) == pytest.approx((1 + alpha) / (1 + c))


def test_alpha_above_c_always_admits_some_speedup():
    # Corollary 3.9: if alpha > c there is a gamma with an improvement of at least (1 + alpha) / (1 + c).
    for alpha, c in ((0.2, 0.1), (0.5, 0.4), (0.9, 0.05)):
        k = s.best_k(alpha, c)
        assert k >= 1
        assert s.speedup(alpha, k, c) >= (1 + alpha) / (1 + c) - 1e-12


def test_leviathan_table_alphas_through_theorem_3_8():
    # alpha values from Leviathan et al. 2023, Table 3 (T5-XXL target, T=0): T5-small 0.75 on EnDe, T5-large 0.82.
    # Recalled from the paper, not re-read here; the speedups below are computed from those alphas with the
    # paper's formula (Theorem 3.8) at gamma = 7 and an assumed c, by hand, not taken from its Table 2.
    # alpha = 0.75, gamma = 7: E = (1 - 0.75^8) / 0.25 = (1 - 0.100112915) / 0.25
    e_small = (1 - 0.100112915) / 0.25
    assert s.expected_tokens_per_step(0.75, 7) == pytest.approx(e_small, rel=1e-8)
    assert s.speedup(0.75, 7, 0.02) == pytest.approx(e_small / 1.14, rel=1e-8)
    # alpha = 0.82, gamma = 7, 0.82^8 = 0.204414...
    assert s.speedup(0.82, 7, 0.1) == pytest.approx((1 - 0.82 ** 8) / 0.18 / 1.7, rel=1e-12)
    # The paper's own 3.4x (T5-small, EnDe, T=0, gamma 7) cannot exceed the c = 0 ceiling E = 3.60.
    assert 3.4 <= s.expected_tokens_per_step(0.75, 7)


def test_arithmetic_ops_factor_by_hand():
    # Theorem 3.11: (1 - a)(k c_hat + k + 1) / (1 - a^(k+1)); a = .5, k = 2, c_hat = .1: .5 * 3.2 / .875
    assert s.arithmetic_ops_factor(0.5, 2, 0.1) == pytest.approx(0.5 * 3.2 / 0.875)
    # nothing accepted: every step pays k draft runs and k+1 target positions for one token
    assert s.arithmetic_ops_factor(0.0, 4, 0.0) == pytest.approx(5.0)


# --- break-even and best k ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("k,c", [(1, 0.05), (3, 0.1), (5, 0.1), (5, 0.3), (8, 0.02), (4, 0.9)])
def test_break_even_round_trip(k, c):
    a = s.break_even_alpha(k, c)
    assert 0 < a < 1
    assert s.speedup(a, k, c) == pytest.approx(1.0, abs=1e-9)
    assert s.speedup(min(1.0, a + 0.01), k, c) > 1 > s.speedup(max(0.0, a - 0.01), k, c)


def test_break_even_for_one_token_is_c_itself():
    # gamma = 1: (1 + a) / (1 + c) = 1  <=>  a = c  (Corollary 3.9)
    assert s.break_even_alpha(1, 0.23) == pytest.approx(0.23, abs=1e-9)


def test_break_even_impossible_when_draft_costs_a_target_step():
    with pytest.raises(ValueError, match="c=1"):
        s.break_even_alpha(3, 1.0)
    assert s.break_even_alpha(3, 0.0) == 0.0


def test_best_k_by_exhaustive_hand_table():
    # alpha = .8, c = .1: speedups k=1..6 = 1.636, 2.033, 2.259, 2.401, 2.484, 2.525 ... peak then fall
    values = {k: sum(0.8 ** i for i in range(k + 1)) / (0.1 * k + 1) for k in range(1, 17)}
    assert s.best_k(0.8, 0.1) == max(values, key=values.get)
    assert s.best_k(0.8, 0.1, k_max=3) == 3
    assert s.best_k(0.1, 0.5) == 0  # nothing pays
    assert s.best_k(1.0, 0.0, k_max=16) == 16


# --- vLLM rates --------------------------------------------------------------------------------------------------

def test_v1_rate_reads_lower_than_alpha_as_docs_warn():
    # docs/vllm-today.md: at alpha = 0.7, k = 5, V1 reads 0.39 while V0 read about 0.70.
    assert s.v1_rate_from_alpha(0.7, 5) == pytest.approx((2.94117 - 1) / 5, abs=1e-9)
    assert round(s.v1_rate_from_alpha(0.7, 5), 2) == 0.39
    assert s.alpha_from_v0_rate(0.70) == 0.70


@pytest.mark.parametrize("alpha", [0.0, 0.05, 0.38, 0.5, 0.65, 0.81, 0.99, 1.0])
@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_alpha_v1_rate_round_trip(alpha, k):
    assert s.alpha_from_v1_rate(s.v1_rate_from_alpha(alpha, k), k) == pytest.approx(alpha, abs=1e-7)


def test_k_equal_one_v1_rate_is_alpha():
    assert s.alpha_from_v1_rate(0.42, 1) == pytest.approx(0.42, abs=1e-9)


def test_mean_acceptance_length_conversions():
    # vLLM: mean acceptance length = 1 + accepted/drafts = 1 + k * (accepted/draft tokens)
    # 36600 accepted of 48200 draft tokens at k = 5 (the source's "healthy" example, read as a V1 rate)
    rate = 36600 / 48200
    assert s.mean_acceptance_length_from_v1_rate(rate, 5) == pytest.approx(1 + 5 * 36600 / 48200)
    length = s.expected_tokens_per_step(0.6, 4)
    assert s.alpha_from_mean_acceptance_length(length, 4) == pytest.approx(0.6, abs=1e-7)
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        s.alpha_from_mean_acceptance_length(5.5, 4)


# --- the source's bands ------------------------------------------------------------------------------------------

def test_verdict_bands_follow_the_source():
    assert s.verdict_band(0.38).name == "off"
    assert s.verdict_band(0.4999).name == "off"
    assert s.verdict_band(0.5).name == "borderline"
    assert s.verdict_band(0.65).name == "borderline"
    assert s.verdict_band(0.76).name == "likely_win"
    assert "V1" in s.verdict_band(0.76).definition


def test_a_healthy_v1_reading_is_not_off_once_converted():
    # alpha 0.7 at k 5 reads 0.39 on V1: against the raw band it would look "off"; converted it is a likely win.
    v1 = s.v1_rate_from_alpha(0.7, 5)
    assert s.verdict_band(v1).name == "off"
    assert s.verdict_band(s.alpha_from_v1_rate(v1, 5)).name == "likely_win"


# --- validation -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,field", [
    (lambda: s.expected_tokens_per_step(1.2, 3), "alpha=1.2"),
    (lambda: s.expected_tokens_per_step(-0.1, 3), "alpha=-0.1"),
    (lambda: s.expected_tokens_per_step(math.nan, 3), "alpha=nan"),
    (lambda: s.expected_tokens_per_step(0.5, 2.5), "k=2.5"),
    (lambda: s.speedup(0.5, 0, 0.1), "k=0"),
    (lambda: s.speedup(0.5, 3, -0.1), "c=-0.1"),
    (lambda: s.alpha_from_v1_rate(1.5, 3), "rate=1.5"),
    (lambda: s.best_k(0.5, 0.1, k_max=0), "k=0"),
])
def test_bad_inputs_name_the_field_and_range(call, field):
    with pytest.raises(ValueError) as e:
        call()
    assert field in str(e.value)
    assert "expected" in str(e.value)
