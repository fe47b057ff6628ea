"""``watch``'s arithmetic and its fault paths, without a server.

The quantile checks use hand arithmetic; the live comparison with Prometheus's own histogram_quantile is in
test_prometheus_live.py. ``ReplaySource`` below is a fake: it replays /metrics texts in the exposition format vLLM
0.32 writes, to produce the faults a healthy real server does not produce on demand (a restart between two reads,
a read that fails, a malformed payload).
"""

import math

import pytest

from specdec_lib import metrics, monitoring, runs, watch
from specdec_lib.watch import Histogram, histogram_quantile

INF = math.inf


def test_histogram_quantile_by_hand():
    # 100 observations: 50 <= 25 ms, 40 in (25, 50] ms, 10 in (50, 100] ms
    h = Histogram(((0.01, 0), (0.025, 50), (0.05, 90), (0.1, 100), (INF, 100)))
    # P99: rank 99 falls in (0.05, 0.1], which holds ranks 91..100: 0.05 + (99 - 90) / 10 x 0.05 = 0.095
    assert histogram_quantile(0.99, h) == pytest.approx(0.095)
    # P50: rank 50 in (0.01, 0.025] holding ranks 1..50: 0.01 + 50 / 50 x 0.015 = 0.025
    assert histogram_quantile(0.5, h) == pytest.approx(0.025)
    # rank in the lowest bucket starts from 0: 10 of 10 in (0, 0.01] -> P30 = 0.3 x 0.01
    assert histogram_quantile(0.3, Histogram(((0.01, 10), (INF, 10)))) == pytest.approx(0.003)
    # rank in the +Inf bucket: Prometheus returns the highest finite bound
    assert histogram_quantile(0.99, Histogram(((0.1, 1), (INF, 10)))) == 0.1
    assert histogram_quantile(0.5, Histogram(((0.1, 0), (INF, 0)))) is None  # no observations: NaN in PromQL
    with pytest.raises(ValueError, match="q="):
        histogram_quantile(1.5, h)


def exposition(drafts, draft_tokens, accepted, per_pos, tpot_buckets, engine="0", model="m"):
    """A /metrics text shaped like vLLM 0.32's (counters with _total, histogram with le labels)."""
    lab = f'engine="{engine}",model_name="{model}"'
    lines = [
        "# TYPE vllm:spec_decode_num_drafts counter", f"vllm:spec_decode_num_drafts_total{{{lab}}} {drafts}",
        "# TYPE vllm:spec_decode_num_draft_tokens counter",
        f"vllm:spec_decode_num_draft_tokens_total{{{lab}}} {draft_tokens}",
        "# TYPE vllm:spec_decode_num_accepted_tokens counter",
        f"vllm:spec_decode_num_accepted_tokens_total{{{lab}}} {accepted}",
        "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos counter",
        *[f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{lab},position="{i}"}} {a}'
          for i, a in enumerate(per_pos)],
        "# TYPE vllm:request_time_per_output_token_seconds histogram",
        *[f'vllm:request_time_per_output_token_seconds_bucket{{{lab},le="{le}"}} {c}' for le, c in tpot_buckets],
        f"vllm:request_time_per_output_token_seconds_count{{{lab}}} {tpot_buckets[-1][1]}",
        f"vllm:request_time_per_output_token_seconds_sum{{{lab}}} 1.0",
        "# TYPE vllm:kv_cache_usage_perc gauge", f"vllm:kv_cache_usage_perc{{{lab}}} 0.25",
        "# TYPE vllm:num_preemptions counter", f"vllm:num_preemptions_total{{{lab}}} 0",
    ]
    return "\n".join(lines) + "\n"


class ReplaySource:
    """A fake source replaying prepared texts (or raising) one per read, with a fixed clock step."""

    description = "replay (fake, for faults)"

    def __init__(self, items, step_s=1.0):
        self.items = list(items)
        self.t = 0.0
        self.step_s = step_s

    def read(self):
        self.t += self.step_s
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return watch.reading_from_text(item, self.t)


def test_reset_and_failures_cost_one_record_each_and_the_run_loads_back(tmp_path):
    b = (("0.025", 0), ("0.05", 0), ("+Inf", 0))
    texts = [
        exposition(0, 0, 0, (0, 0, 0, 0), b),
        # +100 drafts, +400 draft tokens, +40 accepted: V1 0.1 (alpha < 0.5 at k=4: off)
        exposition(100, 400, 40, (30, 8, 2, 0), (("0.025", 5), ("0.05", 10), ("+Inf", 10))),
        watch.WatchError("http://127.0.0.1:1/metrics: connection refused"),  # one failed read
        exposition(5, 20, 2, (2, 0, 0, 0), b),  # counters went down: the server restarted
        exposition(105, 420, 42, (32, 8, 2, 0), b),
        "this is not exposition text {",
    ]
    src = ReplaySource(texts)
    plan = monitoring.WatchPlan(4, p99_tpot_s=0.01)
    seen = []
    res = watch.watch(src, plan, runs_dir=tmp_path, duration_s=60, interval_s=0.01, window_s=0.01,
                      on_record=seen.append, stop_event=_StopAfter(len(texts)))
    kinds = [r["kind"] for r in seen]
    assert kinds == ["first", "tick", "error", "reset", "tick", "error"]
    tick = seen[1]
    acc = tick["window"]["acceptance"]
    assert acc["v1_rate"] == pytest.approx(0.1) and acc["mean_acceptance_length"] == pytest.approx(1.4)
    assert acc["per_position_rates"] == pytest.approx([0.3, 0.08, 0.02, 0.0])
    assert any(f.startswith("acceptance_off") for f in tick["flags"])
    # TPOT: 5 of 10 <= 25 ms, 5 in (25, 50]: P99 = 0.025 + (9.9 - 5)/5 x 0.025 = 0.0495 s > 0.01 x 1.2
    assert tick["window"]["latency"]["tpot_s"]["p99"] == pytest.approx(0.0495)
    assert any(f.startswith("tpot_p99_regression") for f in tick["flags"])
    # after the restart the window counts from the restarted counters: +100 / +400 / +40 again
    assert seen[4]["window"]["acceptance"]["draft_tokens"] == 400
    assert "connection refused" in seen[2]["detail"] and "malformed" not in seen[2]["detail"]
    meta, df = watch.load_watch(res.run_path)
    assert meta["status"] == "interrupted" and list(df["kind"]) == kinds
    assert len(runs.load_run(res.run_path).intervals) == 6


class _StopAfter:
    """A stop event that reports set after n waits (bounds the loop without timing)."""

    def __init__(self, n):
        self.n = n

    def is_set(self):
        return self.n <= 0

    def wait(self, _timeout):
        self.n -= 1
        return self.is_set()


def test_watch_rejects_bad_bounds(tmp_path):
    with pytest.raises(ValueError, match="window_s"):
        watch.watch(ReplaySource([]), monitoring.WatchPlan(4), runs_dir=tmp_path, duration_s=10, interval_s=5,
                    window_s=1)


def test_a_counter_reset_inside_the_histogram_is_a_reset():
    with pytest.raises(metrics.CounterResetError, match="le=0.1"):
        Histogram(((0.1, 1), (INF, 1))).minus(Histogram(((0.1, 3), (INF, 3))))


def test_credentials_in_a_url_reach_no_record_or_message(tmp_path):
    from specdec_lib import localserver

    secret = "s3cr3t-pass"
    src = watch.PrometheusSource(f"http://admin:{secret}@127.0.0.1:{localserver.free_port()}")  # nothing listens
    seen = []
    res = watch.watch(src, monitoring.WatchPlan(4), runs_dir=tmp_path, duration_s=60, interval_s=0.01,
                      window_s=0.01, on_record=seen.append, stop_event=_StopAfter(2))
    assert [r["kind"] for r in seen] == ["error", "error"]
    assert "127.0.0.1" in seen[0]["detail"]
    for p in res.run_path.iterdir():
        assert secret not in p.read_text() and "admin:" not in p.read_text()
    assert secret not in src.description and watch.redact_url("http://a:b@h:9/x") == "http://***@h:9/x"


def test_one_bad_engine_is_flagged_even_when_the_sum_is_healthy(tmp_path):
    b = (("0.05", 0), ("+Inf", 0))
    two = [exposition(0, 0, 0, (0, 0, 0, 0), b, engine="0") + exposition(0, 0, 0, (0, 0, 0, 0), b, engine="1"),
           # engine 0: 1200 draft tokens, 1200 accepted (alpha 1); engine 1: 400 draft tokens, 20 accepted
           # (V1 0.05, alpha < 0.5). Sum: 1220 / 1600 = 0.7625 at k = 4, alpha well above 0.65: no aggregate flag
           exposition(300, 1200, 1200, (300, 300, 300, 300), b, engine="0")
           + exposition(100, 400, 20, (15, 5, 0, 0), b, engine="1")]
    seen = []
    watch.watch(ReplaySource(two), monitoring.WatchPlan(4), runs_dir=tmp_path, duration_s=60, interval_s=0.01,
                window_s=0.01, on_record=seen.append, stop_event=_StopAfter(2))
    tick = seen[1]
    assert tick["window"]["acceptance"]["v1_rate"] == pytest.approx(1220 / 1600)
    assert [f.split(":")[0] for f in tick["flags"]] == ["engine_acceptance_off[1]"]
