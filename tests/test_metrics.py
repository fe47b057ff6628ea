"""metrics.py on real /metrics text captured from vLLM 0.32 (CPU build) and on hand-written V0 text.

tests/data/vllm032_draft_noise05_{before,after}.txt: one server (tiny Llama target, draft = target + 5 % noise,
k = 4, probabilistic draft sampling, --per-request-spec-decode-metrics detailed), scraped before and after six
completions; vllm032_draft_noise05_responses.json holds those six responses' own per-request counts.
tests/data/vllm032_baseline.txt: a server without speculation, after a few requests.
The expected numbers below were read off the files by eye (grep spec_decode), not produced by the code.
"""

import json
import math
from pathlib import Path

import pytest

from specdec_lib import metrics, speculation

DATA = Path(__file__).parent / "data"


def _text(name: str) -> str:
    return (DATA / name).read_text()


@pytest.fixture(scope="module")
def before():
    return metrics.parse_metrics(_text("vllm032_draft_noise05_before.txt"))


@pytest.fixture(scope="module")
def after():
    return metrics.parse_metrics(_text("vllm032_draft_noise05_after.txt"))


def test_real_capture_counters_are_read_per_engine(before, after):
    # grep: drafts 52 -> 102, draft tokens 208 -> 408, accepted 118 -> 239, per position (42,31,24,21) -> (83,64,49,43)
    assert before.is_vllm and before.has_spec_counters
    (b,) = before.spec_engines
    (a,) = after.spec_engines
    assert (b.engine, b.model_name) == ("0", "tiny-target")
    assert (b.drafts, b.draft_tokens, b.accepted_tokens) == (52, 208, 118)
    assert b.accepted_per_position == (42, 31, 24, 21)
    assert (a.drafts, a.draft_tokens, a.accepted_tokens) == (102, 408, 239)
    assert a.accepted_per_position == (83, 64, 49, 43)
    # request_success_total: stop 1 + length 5 before, stop 2 + length 10 after
    assert before.requests_finished == 6 and after.requests_finished == 12
    assert after.info[metrics.CACHE_CONFIG_INFO]["kv_cache_size_tokens"].isdigit()


def test_delta_gives_vllms_own_ratios(before, after):
    d = metrics.delta(before, after)
    assert (d.drafts, d.draft_tokens, d.accepted_tokens) == (50, 200, 121)
    assert d.per_position == (41, 33, 25, 22)
    assert d.num_speculative_tokens == 4
    assert d.requests_finished == 6
    # vLLM's formulas (vllm/v1/spec_decode/metrics.py): rate = accepted/draft; length = 1 + accepted/drafts
    assert d.v1_rate == pytest.approx(121 / 200)
    assert d.mean_acceptance_length == pytest.approx(1 + 121 / 50)
    assert d.per_position_rates == pytest.approx((41 / 50, 33 / 50, 25 / 50, 22 / 50))
    # prefix counting: the per-position counters sum to the accepted total
    assert sum(d.per_position) == d.accepted_tokens


def test_counter_delta_equals_sum_of_the_servers_per_request_figures(before, after):
    responses = json.loads((DATA / "vllm032_draft_noise05_responses.json").read_text())
    spec = [r["metrics"]["speculative_decoding"] for r in responses]
    d = metrics.delta(before, after)
    assert d.accepted_tokens == sum(s["num_accepted_draft_tokens"] for s in spec)
    assert d.draft_tokens == sum(s["num_draft_tokens"] for s in spec)
    assert d.drafts == sum(s["num_spec_steps"] for s in spec)


def test_alpha_is_solved_from_the_v1_rate_and_k(before, after):
    d = metrics.delta(before, after)
    alpha = d.alpha
    k = 4
    expected_tokens = (1 - alpha ** (k + 1)) / (1 - alpha)  # Leviathan et al. eq. 1, written out here
    assert (expected_tokens - 1) / k == pytest.approx(121 / 200, abs=1e-6)
    assert alpha > d.v1_rate  # V1 reads lower than alpha whenever 0 < alpha < 1
    assert alpha == pytest.approx(speculation.alpha_from_v1_rate(121 / 200, 4))
    assert d.alpha_with_k(4) == alpha


def test_report_labels_every_number_with_its_definition(before, after):
    rep = metrics.acceptance_report(metrics.delta(before, after))
    assert rep.status == "measured" and rep.available
    names = [v.name for v in rep.values]
    assert names[:3] == ["v1_rate", "alpha", "mean_acceptance_length"]
    assert all(v.definition for v in rep.values)
    assert "prefix" in rep.values[0].definition and "α" in rep.values[1].definition
    assert rep.get("position_0_rate") == pytest.approx(41 / 50)


def test_baseline_says_no_speculation_rather_than_zero():
    snap = metrics.parse_metrics(_text("vllm032_baseline.txt"))
    assert snap.is_vllm and not snap.has_spec_counters and snap.v0_acceptance_rate is None
    d = metrics.delta(snap, snap)
    assert not d.available
    assert d.v1_rate is None and d.alpha is None and d.mean_acceptance_length is None
    assert d.status.startswith("no speculation metrics")
    rep = metrics.acceptance_report(d)
    assert not rep.available and rep.get("v1_rate") is None


def test_counter_reset_is_reported_as_a_restart(before, after):
    with pytest.raises(metrics.CounterResetError, match="restarted"):
        metrics.delta(after, before)
    fresh = metrics.parse_metrics(_text("vllm032_draft_noise05_before.txt").replace(
        'vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny-target"} 52.0',
        'vllm:spec_decode_num_drafts_total{engine="0",model_name="tiny-target"} 3.0'))
    with pytest.raises(metrics.CounterResetError, match=r"spec_decode_num_drafts_total.*52 to 3"):
        metrics.delta(before, fresh)
    # speculation counters vanishing = restarted with another configuration
    with pytest.raises(metrics.CounterResetError, match="restarted"):
        metrics.delta(before, metrics.parse_metrics(_text("vllm032_baseline.txt")))


def _two_engines(text: str, engine1_scale: int) -> str:
    """The real capture plus a second engine (engine="1") whose spec counters are the first's times a factor."""
    extra = []
    for line in text.splitlines():
        if line.startswith("vllm:spec_decode_") and "_total{" in line:
            labels, value = line.rsplit(" ", 1)
            extra.append(labels.replace('engine="0"', 'engine="1"') + f" {float(value) * engine1_scale}")
    out = []
    for line in text.splitlines():
        out.append(line)
        if line.startswith("# TYPE vllm:spec_decode_"):
            name = line.split()[2]  # vLLM declares counters as "<name>_total" in its TYPE lines
            out.extend(x for x in extra if x.startswith(name + "{"))
    return "\n".join(out) + "\n"


def test_several_engines_are_summed_and_kept_apart():
    b = metrics.parse_metrics(_two_engines(_text("vllm032_draft_noise05_before.txt"), 2))
    a = metrics.parse_metrics(_two_engines(_text("vllm032_draft_noise05_after.txt"), 2))
    d = metrics.delta(b, a)
    assert [e.engine for e in d.per_engine] == ["0", "1"]
    assert (d.per_engine[0].drafts, d.per_engine[1].drafts) == (50, 100)
    assert (d.drafts, d.draft_tokens, d.accepted_tokens) == (150, 600, 363)
    assert d.per_position == (123, 99, 75, 66)
    assert d.v1_rate == pytest.approx(363 / 600)


V0_TEXT = """\
# HELP vllm:spec_decode_draft_acceptance_rate Speculative token acceptance rate.
# TYPE vllm:spec_decode_draft_acceptance_rate gauge
vllm:spec_decode_draft_acceptance_rate{model_name="meta-llama/Llama-3.1-70B-Instruct"} 0.76
# HELP vllm:spec_decode_efficiency Speculative decoding system efficiency.
# TYPE vllm:spec_decode_efficiency gauge
vllm:spec_decode_efficiency{model_name="meta-llama/Llama-3.1-70B-Instruct"} 0.52
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-70B-Instruct"} 3.0
"""


def test_old_v0_gauge_is_read_as_an_alpha_estimate():
    # the source's "healthy deployment" example: gauge 0.76
    snap = metrics.parse_metrics(V0_TEXT)
    assert snap.v0_acceptance_rate == pytest.approx(0.76)
    assert snap.v0_efficiency == pytest.approx(0.52)
    assert not snap.has_spec_counters
    rep = metrics.acceptance_report(metrics.delta(snap, snap), v0_gauge=snap.v0_acceptance_rate)
    assert rep.available and "V0" in rep.status
    assert rep.get("v0_gauge") == pytest.approx(0.76)
    assert "every accepted position" in [v for v in rep.values if v.name == "v0_gauge"][0].definition


_COUNTER = "# TYPE vllm:spec_decode_num_drafts_total counter\nvllm:spec_decode_num_drafts_total{engine=\"0\"} "


@pytest.mark.parametrize("text", [
    "vllm:spec_decode_num_drafts_total{engine=\"0\" 12\n",  # unterminated label set
    "this is not prometheus text at all {{{\n",
    _COUNTER + "-5\n",  # negative
    _COUNTER + "2.5\n",  # fractional
    _COUNTER + "+Inf\n",  # infinite
    _COUNTER + "NaN\n",
    "# TYPE vllm:spec_decode_draft_acceptance_rate gauge\nvllm:spec_decode_draft_acceptance_rate NaN\n",  # V0 gauge
    "# TYPE vllm:spec_decode_draft_acceptance_rate gauge\nvllm:spec_decode_draft_acceptance_rate 1.7\n",  # not a rate
    "# TYPE vllm:spec_decode_efficiency gauge\nvllm:spec_decode_efficiency -0.2\n",
])
def test_malformed_metrics_raise_a_metrics_error(text):
    with pytest.raises(metrics.MetricsError):
        metrics.parse_metrics(text)


def test_a_repeated_series_is_counted_once_and_a_conflicting_repeat_is_refused(before):
    text = _text("vllm032_draft_noise05_before.txt")
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm:spec_decode_num_drafts_total{"))
    assert line.endswith(" 52.0")  # read off the file
    repeated = metrics.parse_metrics(text.replace(line, line + "\n" + line))
    assert repeated.spec_engines[0].drafts == 52 == before.spec_engines[0].drafts
    with pytest.raises(metrics.MetricsError, match="appears twice with different values"):
        metrics.parse_metrics(text.replace(line, line + "\n" + line.replace(" 52.0", " 7.0")))


def test_non_vllm_exporter_is_recognised():
    snap = metrics.parse_metrics("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 1.5\n")
    assert not snap.is_vllm and not snap.has_spec_counters


def test_no_drafts_in_interval_is_not_a_rate_of_zero(before):
    d = metrics.delta(before, before)
    assert d.available and d.v1_rate is None and "no draft tokens" in d.status
    assert not math.isnan(d.drafts)


def test_server_info_names_the_method_k_and_draft_when_dev_mode_exposes_it():
    from specdec_lib.endpoint import speculative_settings

    cfg = json.loads((DATA / "vllm032_server_info_draft.json").read_text())["vllm_config"]["speculative_config"]
    method, k, draft, settings = speculative_settings(cfg)
    assert (method, k, draft) == ("draft_model", 3, "/tmp/w7/models/noise05")
    assert settings["draft_sample_method"] == "greedy" and settings["rejection_sample_method"] == "standard"
    assert "draft_model_config" not in settings
