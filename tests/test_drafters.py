"""The drafter catalog (data/drafters.csv): rows recomputed from their config.json, read back from config.json
files in both published forms, and refused with file/line/field when wrong."""
from __future__ import annotations

import json
import shutil

import pytest

from specdec_lib import catalog, drafters

EAGLE3_8B = "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B"

# The published speculators-format config.json of the head (nm-testing/EAGLE3-LLaMA3.1-Instruct-8B-converted),
# keys the planner reads, values as published.
SPECULATORS_CONFIG = {
    "architectures": ["Eagle3Speculator"], "draft_vocab_size": 32000, "norm_before_residual": False,
    "speculators_model_type": "eagle3", "target_hidden_size": None,
    "speculators_config": {"algorithm": "eagle3", "verifier": {"architectures": ["LlamaForCausalLM"],
                                                               "name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}},
    "transformer_layer_config": {
        "attention_bias": False, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
        "intermediate_size": 14336, "max_position_embeddings": 2048, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 1, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
        "vocab_size": 128256},
}
# The flat form (SpecForge configs/llama3-8B-eagle3.json, the layout of yuhuili's own checkpoints).
FLAT_CONFIG = {
    "architectures": ["LlamaForCausalLMEagle3"], "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 14336, "max_position_embeddings": 2048, "model_type": "llama", "num_attention_heads": 32,
    "num_key_value_heads": 8, "num_hidden_layers": 1, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    "vocab_size": 128256, "draft_vocab_size": 32000,
}


def test_eagle3_head_parameters_match_hand_arithmetic():
    head = catalog.get_drafter(EAGLE3_8B)
    h, q, kv, inter, draft_vocab = 4096, 32 * 128, 8 * 128, 14336, 32000
    qkv = 2 * h * (q + 2 * kv)  # layer 0 reads embeddings and hidden state concatenated: 2h inputs
    o_proj = q * h
    mlp = 3 * h * inter
    norms = 3 * h + h  # input, hidden and post-attention norms, then the final norm
    fc = 3 * h * h  # three auxiliary hidden states of the target -> h
    lm_head = draft_vocab * h  # over the draft vocabulary only
    hand = qkv + o_proj + mlp + norms + fc + lm_head
    assert hand == 424_689_664
    assert head.params == hand == head.param_count()
    assert head.has_d2t and head.own_lm_head and head.method == "eagle3"
    assert head.serves("meta-llama/Llama-3.1-8B-Instruct") and not head.serves("meta-llama/Llama-3.1-70B")
    # The H100 timing script built this head in torch and summed its bf16 tensors: 849,379,328 bytes = 2 x params
    # (data/calibration/h100_eagle3_head_timings.json, "head_weight_bytes").
    timings = json.loads((catalog.data_dir() / "calibration" / "h100_eagle3_head_timings.json").read_text())
    assert timings["head_weight_bytes"] == 2 * hand


def test_config_json_in_both_published_forms_gives_the_catalog_row(tmp_path):
    row = catalog.get_drafter(EAGLE3_8B)
    (tmp_path / "head").mkdir()
    (tmp_path / "head" / "config.json").write_text(json.dumps(SPECULATORS_CONFIG))
    from_folder = catalog.get_drafter(str(tmp_path / "head"))  # a path is read as a config, like models
    from_flat = catalog.drafter_from_hf_config(FLAT_CONFIG, name="flat", targets=("meta-llama/Llama-3.1-8B",))
    for spec in (from_folder, from_flat):
        for field in ("method", "num_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                      "num_kv_heads", "head_dim", "vocab_size", "draft_vocab_size", "has_d2t", "fc_input_multiple",
                      "params"):
            assert getattr(spec, field) == getattr(row, field), field
    assert from_folder.targets == ("meta-llama/Llama-3.1-8B-Instruct",)


def test_mtp_module_and_other_rows_load_with_their_sources():
    rows = catalog.drafters()
    mtp = rows["deepseek-ai/DeepSeek-V3 (MTP module)"]
    assert mtp.is_mtp and mtp.is_moe and mtp.attention == "mla" and mtp.head_dim == 512 + 64
    assert not mtp.own_lm_head  # vLLM shares the target's lm_head with an MTP module
    assert all(d.source for d in rows.values()) and all(d.params_source for d in rows.values())
    assert catalog.drafters_for("meta-llama/Llama-3.1-70B-Instruct") == []


def _data_copy(tmp_path, monkeypatch, edit):
    folder = tmp_path / "data"
    shutil.copytree(catalog.data_dir(), folder, ignore=shutil.ignore_patterns("calibration", "example-run"))
    path = folder / "drafters.csv"
    path.write_text(edit(path.read_text()))
    monkeypatch.setenv(catalog.DATA_DIR_ENV, str(folder))
    drafters.reload()
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace(",424689664,", ",500000000,"), r"drafters.csv line 2, field 'params'"),
    (lambda s: s.replace("128256,32000,true", "128256,32000,false"), r"drafters.csv line 2, field 'has_d2t'"),
    (lambda s: s.replace("eagle3,Eagle3LlamaForCausalLM,meta", "eagle9,Eagle3LlamaForCausalLM,meta", 1),
     r"drafters.csv line 2, field 'method'"),
    (lambda s: s.replace("gqa,1,4096", "gqa,x,4096", 1), r"drafters.csv line 2, field 'num_layers'"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, monkeypatch, edit, message):
    _data_copy(tmp_path, monkeypatch, edit)
    try:
        with pytest.raises(ValueError, match=message):
            catalog.drafters()
    finally:
        monkeypatch.undo()
        drafters.reload()


def test_bad_config_json_names_the_field(tmp_path):
    bad = dict(FLAT_CONFIG, hidden_size=0)
    with pytest.raises(ValueError, match="field 'hidden_size'"):
        catalog.drafter_from_hf_config(bad)
    with pytest.raises(ValueError, match="not an EAGLE head"):
        catalog.drafter_from_hf_config(dict(FLAT_CONFIG, architectures=["LlamaForCausalLM"]))
    with pytest.raises(ValueError, match="unknown; known"):
        catalog.get_drafter("no-such-head")
