"""Scenario files: the default is the source's example, TOML round-trips, and bad input names the field."""

import dataclasses
from pathlib import Path

import pytest

from specdec_lib.scenario import (
    DEFAULT_SCENARIO,
    RequestClass,
    Scenario,
    load_scenario,
    production_temperature_median,
    save_scenario,
)

ROOT = Path(__file__).resolve().parent.parent


def test_default_is_the_sources_production_example():
    s = DEFAULT_SCENARIO
    # The source: "Target (70B INT8, ~70GB) + Draft (8B BF16, ~16GB)" on "2x H100 SXM5", TP 2,
    # --gpu-memory-utilization 0.92, --num-speculative-tokens 5.
    assert "Llama-3.1-70B" in s.target_model and s.target_precision == "int8"
    assert "Llama-3.1-8B" in s.draft_model and s.draft_precision == "bf16"
    assert (s.gpu, s.num_gpus, s.tensor_parallel_size) == ("H100-SXM", 2, 2)
    assert s.gpu_memory_utilization == 0.92
    assert s.num_speculative_tokens == 5 and s.qps == 1.0 and s.context_len == 8192
    # vLLM 0.32's draft-model proposer refuses draft TP != target TP, so the default is valid today.
    assert s.draft_tensor_parallel_size == s.tensor_parallel_size


def test_default_scenario_file_is_the_builtin_default():
    assert load_scenario(ROOT / "scenarios" / "default.toml") == DEFAULT_SCENARIO


@pytest.mark.parametrize("name", ["structured-extraction", "mixed-chat"])
def test_example_scenario_files_load(name):
    s = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    assert abs(sum(c.share for c in s.workload) - 1.0) < 1e-9


def test_save_then_load_round_trips(tmp_path):
    mixed = dataclasses.replace(
        DEFAULT_SCENARIO, title='quotes " and \\ and <b>', notes="multi\nline",
        workload=(RequestClass("a", 0.25, 0.0, 100, 50, alpha=0.9), RequestClass("b", 0.75, 1.3, 10, 1000)),
        measurement_run="data/runs/example", endpoint_url="http://127.0.0.1:8000")
    ngram = dataclasses.replace(DEFAULT_SCENARIO, method="ngram", draft_model=None, prompt_lookup_max=5)
    for s in (DEFAULT_SCENARIO, mixed, ngram):
        path = save_scenario(s, tmp_path / "s.toml")
        assert load_scenario(path) == s


def test_integers_in_a_hand_written_file_are_accepted_for_float_fields(tmp_path):
    text = (ROOT / "scenarios" / "default.toml").read_text().replace("qps = 1.0", "qps = 2")
    (tmp_path / "s.toml").write_text(text)
    assert load_scenario(tmp_path / "s.toml").qps == 2.0


@pytest.mark.parametrize("change, field", [
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
    (dict(draft_tensor_parallel_size=3), "draft_tensor_parallel_size"),
    (dict(tensor_parallel_size=4), "tensor_parallel_size"),
    (dict(num_speculative_tokens=0), "num_speculative_tokens"),
    (dict(qps=0.0), "qps"),
    (dict(slo="p99"), "slo"),
    (dict(method="medusa"), "method"),
    (dict(method="ngram"), "draft_model"),
    (dict(draft_model=None), "draft_model"),
    (dict(context_len=600), "prompt_tokens + output_tokens"),
    (dict(workload=()), "workload"),
    (dict(workload=(RequestClass("a", 0.5, 0.1, 10, 10),)), "share (sum)"),
    (dict(monitoring_in_place="yes"), "monitoring_in_place"),
])
def test_invalid_scenarios_name_the_field(change, field):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(DEFAULT_SCENARIO, **change)
    assert field in str(info.value)


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=2.5), "temperature"),
    (dict(share=0.0), "share"),
    (dict(prompt_tokens=0), "prompt_tokens"),
    (dict(alpha=1.2), "alpha"),
])
def test_invalid_request_classes_name_the_field(kwargs, field):
    base = dict(name="c", share=1.0, temperature=0.2, prompt_tokens=10, output_tokens=10)
    base.update(kwargs)
    with pytest.raises(ValueError, match=field):
        RequestClass(**base)


def test_file_errors_name_the_file_and_the_key(tmp_path):
    good = (ROOT / "scenarios" / "default.toml").read_text()
    cases = {
        "unknown.toml": (good + '\ncolour = "blue"\n', "colour"),
        "missing.toml": (good.replace("qps = 1.0", ""), "missing field.*qps"),
        "badtoml.toml": ("title = [", "not valid TOML"),
        "badclass.toml": (good.replace("temperature = 0.7", "temperature = 9.0"), r"temperature"),
        "extraclasskey.toml": (good.replace("temperature = 0.7", "temperature = 0.7\ntop_p = 0.9"), "top_p"),
    }
    for name, (text, pattern) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=pattern) as info:
            load_scenario(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ValueError, match="does not exist"):
        load_scenario(tmp_path / "nope.toml")


def test_median_temperature_is_share_weighted():
    # The source's mix: 60% low-temperature structured queries, 40% high-temperature creative requests.
    s = dataclasses.replace(DEFAULT_SCENARIO, workload=(
        RequestClass("structured", 0.6, 0.1, 100, 100), RequestClass("creative", 0.4, 1.0, 100, 100)))
    assert production_temperature_median(s) == 0.1
    s = dataclasses.replace(DEFAULT_SCENARIO, workload=(
        RequestClass("structured", 0.3, 0.1, 100, 100), RequestClass("creative", 0.7, 1.0, 100, 100)))
    assert production_temperature_median(s) == 1.0


def test_scenarios_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_SCENARIO.qps = 3.0  # type: ignore[misc]
    assert isinstance(DEFAULT_SCENARIO, Scenario)
