"""The notebooks' logic, driven without a browser: move a control, read the figure's data or the message line."""
from __future__ import annotations

import asyncio
import json
import socket

import plotly.graph_objects as go
import pytest

from specdec_lib import widgets as ui

GIB = 1024**3
H100_BYTES = 85_017_493_504  # what vLLM sees on an "80GB" H100 (docs/vllm-today.md)


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def bar(fig, name, row):
    """Value (GiB) of one memory component in the row "with draft" or "without draft"."""
    t = trace(fig, name)
    return t.x[list(t.y).index(row)]


# --- memory page -------------------------------------------------------------------------------------------------
def test_lower_utilization_moves_exactly_that_memory_from_kv_cache_to_unused():
    page = ui.memory_budget_page()
    fig = page.figures["memory"]
    assert page.controls["gpu_memory_utilization"].value == pytest.approx(0.92)
    kv_before = bar(fig, "KV cache", "with draft")
    unused_before = bar(fig, "not given to vLLM", "with draft")
    weights_before = bar(fig, "target weights", "with draft")
    page.controls["gpu_memory_utilization"].value = 0.80
    moved_gib = 0.12 * H100_BYTES / GIB  # 9.50 GiB per GPU
    assert kv_before - bar(fig, "KV cache", "with draft") == pytest.approx(moved_gib, abs=1e-6)
    assert bar(fig, "not given to vLLM", "with draft") - unused_before == pytest.approx(moved_gib, abs=1e-6)
    assert bar(fig, "target weights", "with draft") == weights_before
    assert page.message.value == ""


def test_draft_weights_bar_is_8b_in_bf16_split_over_two_gpus():
    page = ui.memory_budget_page()
    # Llama-3.1-8B in bf16 (the source's "~16 GB" draft) over TP 2: every parameter is split in two except the
    # RMSNorm weights (32 layers x 2 norms x 4096 + the final 4096), which every rank holds whole.
    norms = 32 * 2 * 4096 + 4096
    per_gpu_bytes = (8_030_261_248 - norms) * 2 / 2 + norms * 2
    assert bar(page.figures["memory"], "draft weights", "with draft") == pytest.approx(per_gpu_bytes / GIB, rel=1e-12)
    assert bar(page.figures["memory"], "draft weights", "without draft") == 0


def test_bad_input_shows_the_library_message_and_keeps_the_last_chart():
    page = ui.memory_budget_page()
    before = page.figures["memory"].to_dict()["data"]
    page.controls["num_gpus"].value = 3  # TP 2 cannot split over 3 GPUs
    assert "num_gpus=3" in page.message.value
    assert "Traceback" not in page.message.value
    assert page.figures["memory"].to_dict()["data"] == before
    page.controls["num_gpus"].value = 2
    assert page.message.value == ""


def test_a_config_json_path_replaces_the_dropdown(tmp_path):
    # Llama-3.1-70B's published config.json (the fields the planner reads).
    config = {"model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 28672,
              "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256,
              "tie_word_embeddings": False, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
              "rms_norm_eps": 1e-5, "hidden_act": "silu"}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    page = ui.memory_budget_page()
    from_catalog = bar(page.figures["memory"], "target weights", "with draft")
    page.controls["target_config"].value = str(path)
    assert page.message.value == ""
    assert bar(page.figures["memory"], "target weights", "with draft") == pytest.approx(from_catalog, rel=1e-12)
    page.controls["target_config"].value = str(tmp_path / "missing.json")
    assert "no such config.json" in page.message.value


# --- break-even page -----------------------------------------------------------------------------------------------
def test_speedup_curve_follows_leviathan_formula():
    page = ui.break_even_page()
    curve = trace(page.figures["alpha"], "k = 5")
    alphas = list(curve.x)
    y0, y05 = curve.y[alphas.index(0.0)], curve.y[alphas.index(0.5)]
    # speedup = (1 - a^(k+1)) / ((1 - a)(k c + 1)): the ratio at a = 0.5 and a = 0 does not depend on c.
    assert y05 / y0 == pytest.approx((1 - 0.5**6) / 0.5, rel=1e-12)


def test_changing_k_redraws_the_curves_in_place():
    page = ui.break_even_page()
    fig = page.figures["alpha"]
    assert sorted(t.name for t in fig.data if t.name.startswith("k =")) == ["k = 3", "k = 5", "k = 7"]
    page.controls["num_speculative_tokens"].value = 2
    assert page.figures["alpha"] is fig
    assert sorted(t.name for t in fig.data if t.name.startswith("k =")) == ["k = 1", "k = 2", "k = 4"]


def test_the_assumed_alpha_point_sits_on_the_k_curve_and_follows_the_slider():
    page = ui.break_even_page()
    fig = page.figures["alpha"]
    assert not [t for t in fig.data if t.name == "assumed α"], "no alpha stated: no point"
    page.controls["alpha_known"].value = True
    page.controls["alpha"].value = 0.8
    point = trace(fig, "assumed α")
    curve = trace(fig, "k = 5")
    assert list(point.x) == [0.8]
    assert point.y[0] == pytest.approx(curve.y[list(curve.x).index(0.8)], rel=1e-12)


def test_lower_alpha_lowers_the_speedup_under_load():
    page = ui.break_even_page()
    page.controls["alpha_known"].value = True
    before = list(page.figures["qps"].data[0].y)
    page.controls["alpha"].value = 0.5
    after = list(page.figures["qps"].data[0].y)
    assert after[0] < before[0]
    assert page.figures["qps"].data[0].name == "α = 0.50, k = 5"


def test_no_draft_is_said_not_plotted():
    page = ui.break_even_page()
    page.controls["draft_model"].value = "(none)"
    assert "draft_model='(none)'" in page.message.value.replace("&#x27;", "'")


# --- draft selection ---------------------------------------------------------------------------------------------
def test_draft_table_shows_the_sources_ratios():
    page = ui.draft_selection_page()
    table = page.outputs["table"].value
    assert "1:8.8" in table    # 70,553,706,496 / 8,030,261,248 = 8.79 (the source: ~1:9)
    assert "1:57.1" in table   # / 1,235,814,400 for Llama-3.2-1B (the source says ~1:70 from nominal sizes)
    names = [n for t in page.figures["candidates"].data for n in t.text]
    assert "Llama-3.1-8B" in names


# --- mixed workload ----------------------------------------------------------------------------------------------
def test_the_sources_mix_averages_to_about_65_percent():
    page = ui.mixed_workload_page()
    # 0.6 x 0.82 + 0.4 x 0.38 = 0.644 (the source: "the weighted mean acceptance rate is ~65%")
    assert "<b>0.64</b>" in page.outputs["summary"].value


def test_a_homogeneous_high_acceptance_mix_tightens_p99():
    page = ui.mixed_workload_page()
    spec_p99 = dict(zip(trace(page.figures["tpot"], "with speculation").x,
                        trace(page.figures["tpot"], "with speculation").y))["all P99"]
    page.controls["creative_alpha"].value = 0.82
    after = dict(zip(trace(page.figures["tpot"], "with speculation").x,
                     trace(page.figures["tpot"], "with speculation").y))["all P99"]
    assert after < spec_p99


# --- start page and decision ---------------------------------------------------------------------------------------
def test_lowering_temperature_passes_the_temperature_condition():
    page = ui.start_here_page()
    row = "Target temperature &lt;= 0.5"
    assert f"<td>✗</td><td>use it when</td><td>{row}" in page.outputs["verdict"].value
    page.controls["temperature"].value = 0.2
    assert f"<td>✓</td><td>use it when</td><td>{row}" in page.outputs["verdict"].value


def test_scenario_file_round_trip_and_memo_export(tmp_path):
    page = ui.decision_memo_page()
    page.controls["scenario_path"].value = str(tmp_path / "plan.toml")
    page.controls["qps"].value = 4.0
    page.outputs["buttons"]["save"].click()
    page.controls["qps"].value = 1.0
    page.outputs["buttons"]["load"].click()
    assert page.controls["qps"].value == pytest.approx(4.0)
    assert "qps = 4.0" in (tmp_path / "plan.toml").read_text()
    page.controls["memo_path"].value = str(tmp_path / "memo.html")
    page.outputs["buttons"]["export"].click()
    assert page.message.value == ""
    assert (tmp_path / "memo.html").read_text().lstrip().lower().startswith("<!doctype html")
    page.controls["scenario_path"].value = str(tmp_path / "nope.toml")
    page.outputs["buttons"]["load"].click()
    assert "does not exist" in page.message.value


# --- live pages without a server -----------------------------------------------------------------------------------
def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_unreachable_endpoint_says_so_and_offers_the_demo_command(monkeypatch):
    monkeypatch.delenv("SPECDEC_AUTORUN", raising=False)
    url = _closed_port_url()
    monkeypatch.setenv("SPECDEC_ENDPOINT", url)
    page = ui.live_acceptance_page()
    assert page.controls["endpoint_url"].value == url
    page.outputs["run_button"].click()
    assert f"Nothing usable answers at {url}" in page.message.value
    assert ui.LOCAL_DEMO_COMMAND in page.message.value
    load_page = ui.load_test_page()
    load_page.outputs["run_button"].click()
    assert f"Nothing usable answers at {url}" in load_page.message.value


def test_endpoint_defaults_to_local_port_8000(monkeypatch):
    monkeypatch.delenv("SPECDEC_ENDPOINT", raising=False)
    assert ui.endpoint_url_default() == "http://127.0.0.1:8000"


def test_bad_temperature_list_names_the_field():
    with pytest.raises(ValueError, match="temperatures='0, hot'"):
        ui.parse_float_list("0, hot", "temperatures", 0, 2)


# --- mechanics ---------------------------------------------------------------------------------------------------
def test_debouncer_answers_at_once_then_coalesces_a_drag_into_one_trailing_call():
    values = []
    current = {"v": 0}
    debounced = ui.Debouncer(lambda: values.append(current["v"]), wait_s=0.05)

    async def drag():
        for v in range(1, 11):  # ten slider events in quick succession
            current["v"] = v
            debounced()
        assert values == [1], "the first event runs at once"
        await asyncio.sleep(0.2)

    asyncio.run(drag())
    assert values == [1, 10], "one trailing run with the last value"


def test_trailing_debouncer_waits_for_the_drag_to_stop():
    calls = []
    slow = ui.Debouncer(lambda: calls.append(1), wait_s=0.05, leading=False)

    async def drag():
        for _ in range(10):
            slow()
        assert calls == []
        await asyncio.sleep(0.2)

    asyncio.run(drag())
    assert calls == [1]


def test_debouncer_runs_at_once_without_a_loop():
    calls = []
    ui.Debouncer(lambda: calls.append(1), wait_s=10)()
    assert calls == [1]


def test_update_in_place_keeps_the_widget_and_replaces_the_data():
    fig = go.FigureWidget(go.Figure(go.Scatter(x=[0, 1], y=[1, 1], name="a")))
    ui.update_figure_in_place(fig, go.Figure([go.Scatter(x=[0, 1], y=[2, 3], name="a")]))
    assert list(fig.data[0].y) == [2, 3]
    ui.update_figure_in_place(fig, go.Figure([go.Bar(x=["p"], y=[1]), go.Bar(x=["p"], y=[2])]))
    assert [t.type for t in fig.data] == ["bar", "bar"]


def test_a_figure_slot_creates_its_chart_whole_then_updates_it_in_place():
    figures = {}
    slot = ui.FigureSlot(figures, "chart")
    assert slot.children == () and "chart" not in figures
    slot.show(go.Figure(go.Bar(x=["p50"], y=[1.0])))
    first = figures["chart"]
    assert slot.children == (first,) and list(first.data[0].y) == [1.0]
    slot.show(go.Figure(go.Bar(x=["p50"], y=[2.0])))
    assert figures["chart"] is first and list(first.data[0].y) == [2.0]


def test_a_live_run_shows_its_progress_and_cancels_from_the_page(tmp_path):
    """The live pages' background run, inside an event loop as in a kernel: the bar follows the run folder's
    records, Cancel sets the stop event the measurement watches, the page keeps what was recorded."""
    import threading

    from specdec_lib import runs
    from specdec_lib.pages.base import new_message
    from specdec_lib.pages.live import BackgroundRun

    record = dict.fromkeys(runs.RECORD_FIELDS)
    results, wrote_three = [], threading.Event()

    def work(stop_event):
        # what loadtest does: records go to a run folder under runs_dir, and the stop event ends the loop
        writer = runs.RunWriter.create(tmp_path, "sweep", {"endpoint": "http://127.0.0.1:1"})
        for index in range(10):
            if stop_event.is_set():
                break
            writer.append_request({**record, "index": index, "label": "T=0"})
            if index == 2:
                wrote_three.set()
                stop_event.wait(10)  # bounded: the test cancels long before
        return index

    background = BackgroundRun(new_message())

    async def drive():
        background.start(work, 10, tmp_path, lambda result: results.append(result))
        assert background.running and not background.cancel_button.disabled
        assert background.progress.layout.visibility == "visible" and background.progress.max == 10
        for _ in range(200):  # at most 10 s
            if wrote_three.is_set() and background.progress.value == 3:
                break
            await asyncio.sleep(0.05)
        assert background.progress.value == 3
        background.cancel_button.click()
        background.thread.join(10)

    asyncio.run(drive())
    assert results == [3]                      # stopped at the record after the cancel, not at 10
    assert background.cancel_button.disabled and not background.running


def test_a_change_that_fails_marks_the_results_on_screen_stale():
    page = ui.start_here_page()
    page.controls["prompt_tokens"].value = 9000          # + 256 output > context_len 8192: the Scenario refuses
    assert "prompt_tokens + output_tokens" in page.message.value and "8192" in page.message.value
    for name in ("verdict", "summary", "command"):
        assert "stale: the last change failed" in page.outputs[name].value, name
    page.controls["prompt_tokens"].value = 1000
    assert page.message.value == ""
    assert all("stale" not in page.outputs[n].value for n in ("verdict", "summary", "command"))


def test_a_saved_scenario_and_the_page_title_follow_the_models(tmp_path):
    from specdec_lib.scenario import load_scenario

    page = ui.decision_memo_page()
    page.controls["target_model"].value = "Qwen/Qwen2.5-72B"
    page.controls["draft_model"].value = "Qwen/Qwen2.5-7B"
    assert "Qwen2.5-72B" in page.outputs["title"].value and "Llama" not in page.outputs["title"].value
    page.controls["scenario_path"].value = str(tmp_path / "qwen.toml")
    page.outputs["buttons"]["save"].click()
    assert "title" not in (tmp_path / "qwen.toml").read_text()          # derived, so never stale
    loaded = load_scenario(tmp_path / "qwen.toml")
    assert loaded.display_title.startswith("Qwen2.5-72B INT8 + Qwen2.5-7B draft")
