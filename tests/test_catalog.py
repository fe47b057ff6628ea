"""Catalogs: every entry against its published config.json numbers, loading, validation, the hub."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from specdec_lib import catalog
from specdec_lib.catalog import get_gpu, get_model, get_precision, model_from_hf_config, model_from_hub

# Numbers copied from each model's published config.json:
# (layers, hidden, intermediate, heads, kv_heads, head_dim, vocab, tied, max_position_embeddings)
PUBLISHED_CONFIGS = {
    "meta-llama/Llama-3.1-8B": (32, 4096, 14336, 32, 8, 128, 128256, False, 131072),
    "meta-llama/Llama-3.1-70B": (80, 8192, 28672, 64, 8, 128, 128256, False, 131072),
    "meta-llama/Llama-3.1-405B": (126, 16384, 53248, 128, 8, 128, 128256, False, 131072),
    "meta-llama/Llama-3.2-1B": (16, 2048, 8192, 32, 8, 64, 128256, True, 131072),
    "meta-llama/Llama-3.2-3B": (28, 3072, 8192, 24, 8, 128, 128256, True, 131072),
    "meta-llama/Meta-Llama-3-70B": (80, 8192, 28672, 64, 8, 128, 128256, False, 8192),
    "Qwen/Qwen2.5-0.5B": (24, 896, 4864, 14, 2, 64, 151936, True, 32768),
    "Qwen/Qwen2.5-1.5B": (28, 1536, 8960, 12, 2, 128, 151936, True, 131072),
    "Qwen/Qwen2.5-7B": (28, 3584, 18944, 28, 4, 128, 152064, False, 131072),
    "Qwen/Qwen2.5-14B": (48, 5120, 13824, 40, 8, 128, 152064, False, 131072),
    "Qwen/Qwen2.5-32B": (64, 5120, 27648, 40, 8, 128, 152064, False, 131072),
    "Qwen/Qwen2.5-72B": (80, 8192, 29568, 64, 8, 128, 152064, False, 131072),
    "turboderp/Qwama-0.5B-Instruct": (24, 896, 4864, 14, 2, 64, 128256, True, 32768),
}

# Published parameter totals (Hugging Face safetensors metadata).
PUBLISHED_PARAMS = {
    "meta-llama/Llama-3.1-8B": 8_030_261_248,
    "meta-llama/Llama-3.1-70B": 70_553_706_496,
    "meta-llama/Llama-3.2-1B": 1_235_814_400,
    "meta-llama/Llama-3.2-3B": 3_212_749_824,
    "Qwen/Qwen2.5-0.5B": 494_032_768,
    "Qwen/Qwen2.5-7B": 7_615_616_512,
    "Qwen/Qwen2.5-72B": 72_706_203_648,
}


def test_every_model_the_source_names_is_in_the_catalog():
    for name in PUBLISHED_CONFIGS:
        assert get_model(name).name == name


@pytest.mark.parametrize("name", sorted(PUBLISHED_CONFIGS))
def test_catalog_entry_matches_its_published_config(name):
    m = get_model(name)
    got = (m.num_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_kv_heads, m.head_dim,
           m.vocab_size, m.tie_word_embeddings, m.max_position_embeddings)
    assert got == PUBLISHED_CONFIGS[name]


@pytest.mark.parametrize("name", sorted(catalog.models()))
def test_param_count_recomputed_from_architecture_within_one_percent(name):
    m = get_model(name)
    assert abs(m.param_count() - m.params) <= 0.01 * m.params


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_equals_published_safetensors_total(name):
    assert get_model(name).param_count() == PUBLISHED_PARAMS[name]


def test_llama_70b_param_count_by_hand():
    per_layer = 8192 * 8192 * 2 + 8192 * 1024 * 2 + 3 * 8192 * 28672 + 2 * 8192
    total = 80 * per_layer + 8192 + 2 * 128256 * 8192
    assert total == 70_553_706_496 == get_model("meta-llama/Llama-3.1-70B").param_count()


def test_tied_embeddings_are_counted_once():
    m = get_model("meta-llama/Llama-3.2-1B")
    per_layer = 2048 * 2048 * 2 + 2048 * 512 * 2 + 3 * 2048 * 8192 + 2 * 2048
    assert m.param_count() == 16 * per_layer + 2048 + 128256 * 2048  # one embedding matrix, not two


def test_qwen_biases_are_counted():
    m = get_model("Qwen/Qwen2.5-0.5B")
    bias = 896 + 2 * 128  # q bias + k bias + v bias per layer
    per_layer = 896 * 896 * 2 + 896 * 128 * 2 + 3 * 896 * 4864 + 2 * 896 + bias
    assert m.param_count() == 24 * per_layer + 896 + 151936 * 896 == 494_032_768


def test_qwen_vocab_differs_by_size_but_tokenizer_is_shared():
    small, large = get_model("Qwen2.5-1.5B"), get_model("Qwen2.5-7B")
    assert (small.vocab_size, large.vocab_size) == (151936, 152064)
    assert small.tokenizer == large.tokenizer


def test_names_without_org_instruct_and_alias_resolve():
    assert get_model("Llama-3.1-70B-Instruct").name == "meta-llama/Llama-3.1-70B"
    assert get_model("llama-3-70b").name == "meta-llama/Meta-Llama-3-70B"
    assert get_model("Qwen/Qwen2.5-7B-Instruct").name == "Qwen/Qwen2.5-7B"
    assert get_precision("int4").name == "int4-awq"


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match=r"model='Llama-3.1-7B'.*did you mean.*Llama-3.1-8B"):
        get_model("Llama-3.1-7B")


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(ValueError, match=r"gpu='H10-SXM'.*did you mean.*H100-SXM"):
        get_gpu("H10-SXM")


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision='int3'"):
        get_precision("int3")


def test_gpu_memory_is_what_the_driver_reports_not_the_marketing_figure():
    assert get_gpu("H100-SXM").memory_bytes == 85_017_493_504  # 79.18 GiB, not 80e9 or 80 GiB
    assert get_gpu("H200").memory_bytes == 150_109_880_320  # 139.80 GiB, not 141 GB
    for gpu in catalog.gpus().values():
        assert gpu.memory_bytes < gpu.nominal_memory_gb * 1e9 * 1.08
        assert gpu.memory_bytes % (1024 * 1024) == 0 or gpu.name in ("H100-SXM", "H200")


def test_gpu_rates_are_dense_not_sparse():
    h100 = get_gpu("H100-SXM")
    assert h100.bf16_flops_per_s == pytest.approx(989.4e12)  # the sparse sheet figure is 1979
    assert get_gpu("A100-80GB").fp8_flops_per_s is None
    assert get_gpu("A100-80GB").matmul_ops_per_s("fp8") == get_gpu("A100-80GB").bf16_flops_per_s


def test_awq_group_scales_cost_2_5_bytes_per_128_weights():
    awq = get_precision("int4-awq")
    assert awq.weight_bytes(128 * 1000) == 128 * 1000 // 2 + 1000 * 2.5
    assert awq.effective_bits_per_param == pytest.approx(4 + 2.5 * 8 / 128)


def test_hf_config_from_local_file(tmp_path):
    config = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048,
              "max_position_embeddings": 512, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    m = model_from_hf_config(tmp_path)
    per_layer = 128 * 128 * 2 + 128 * 64 * 2 + 3 * 128 * 256 + 2 * 128
    assert m.params == 2 * per_layer + 128 + 2 * 2048 * 128
    assert (m.num_kv_heads, m.head_dim, m.name) == (2, 32, tmp_path.name)


def test_a_config_path_works_wherever_a_catalog_name_does(tmp_path):
    # The 8B's published config, written out by hand: a path to it must plan and decide like the catalog entry.
    config = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
              "max_position_embeddings": 131072, "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_path = get_model(str(tmp_path / "config.json"))
    assert from_path == get_model(str(tmp_path))
    assert from_path.param_count() == pytest.approx(get_model("Llama-3.1-8B").params, rel=1e-3)
    with pytest.raises(ValueError, match="model"):
        get_model(str(tmp_path / "missing" / "config.json"))


def test_hf_config_head_dim_is_not_assumed_hidden_over_heads():
    # Mistral-Nemo: hidden 5120, 32 heads, but head_dim 128 (not 160).
    config = {"model_type": "mistral", "num_hidden_layers": 40, "hidden_size": 5120, "intermediate_size": 14336,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
              "max_position_embeddings": 1024000, "tie_word_embeddings": False}
    m = model_from_hf_config(config, name="mistralai/Mistral-Nemo-Base-2407")
    assert m.head_dim == 128
    assert m.params == get_model("Mistral-Nemo").params == 12_247_782_400


def test_hf_config_missing_field_names_file_and_field(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"config.json.*num_attention_heads"):
        model_from_hf_config(tmp_path)


def test_hf_config_moe_is_refused():
    with pytest.raises(ValueError, match="num_local_experts"):
        model_from_hf_config({"model_type": "mixtral", "num_local_experts": 8})


def test_bad_catalog_row_names_file_line_and_field(tmp_path, monkeypatch):
    for f in ("gpus.csv", "precisions.csv"):
        (tmp_path / f).write_text((catalog.data_dir() / f).read_text())
    lines = (catalog.data_dir() / "models.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",80,8192,", ",-80,8192,", 1)
    (tmp_path / "models.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(catalog.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=r"models.csv line 3, field 'num_layers'"):
        catalog.models()


def test_catalog_params_disagreeing_with_architecture_is_refused(tmp_path, monkeypatch):
    for f in ("gpus.csv", "precisions.csv"):
        (tmp_path / f).write_text((catalog.data_dir() / f).read_text())
    lines = (catalog.data_dir() / "models.csv").read_text().splitlines()
    lines[1] = lines[1].replace("8030261248", "7000000000")
    (tmp_path / "models.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv(catalog.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=r"models.csv line 2, field 'params'"):
        catalog.models()


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """A fake hub (named as such): a real hub cannot be reached from the test machines."""

    def do_GET(self):  # noqa: N802
        if self.path == "/org/tiny/resolve/main/config.json":
            body = json.dumps({"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 64,
                               "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
                               "vocab_size": 1000, "max_position_embeddings": 256,
                               "tie_word_embeddings": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(catalog.HF_ENDPOINT_ENV, f"http://127.0.0.1:{server.server_port}")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_model_from_hub_reads_config_by_repo_id(fake_hub):
    m = model_from_hub("org/tiny")
    assert (m.name, m.num_layers, m.head_dim, m.qkv_bias, m.tie_word_embeddings) == ("org/tiny", 2, 16, True, True)


def test_model_from_hub_missing_repo_names_url(fake_hub):
    with pytest.raises(ValueError, match=r"/org/none/resolve/main/config.json: HTTP 404"):
        model_from_hub("org/none")


def test_model_from_hub_offline_is_a_clear_connection_error(monkeypatch):
    monkeypatch.setenv(catalog.HF_ENDPOINT_ENV, "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ConnectionError, match=r"http://127.0.0.1:9/org/tiny/resolve/main/config.json"):
        model_from_hub("org/tiny", timeout_s=2)


def test_pairing_table_ratios_from_parameter_counts():
    table = {(p.draft, p.target): p for p in catalog.pairing_table()}
    p = table[("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B")]
    assert p.ratio == pytest.approx(70_553_706_496 / 8_030_261_248)  # 8.79: the source's ~1:9
    assert p.verdict == "in the 1:8-1:12 band"
    one_b = table[("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-70B")]
    assert one_b.ratio == pytest.approx(70_553_706_496 / 1_235_814_400)  # 57.1, not the source's ~1:70
    assert one_b.verdict == "draft too small"
    qwama = table[("turboderp/Qwama-0.5B-Instruct", "meta-llama/Meta-Llama-3-70B")]
    assert qwama.same_tokenizer and not qwama.same_family and qwama.ratio > 140


def test_pairing_flags_qwen_vocab_size_mismatch():
    p = catalog.pairing("Qwen2.5-0.5B", "Qwen2.5-72B")
    assert p.same_tokenizer and not p.same_vocab_size


def test_data_readme_documents_every_column():
    readme = (catalog.data_dir() / "README.md").read_text()
    for f in ("models.csv", "gpus.csv", "precisions.csv"):
        header = (catalog.data_dir() / f).read_text().splitlines()[0].split(",")
        for column in header:
            assert f"`{column}`" in readme, f"{f} column {column} undocumented"


def test_catalog_files_are_plain_csv():
    assert Path(catalog.data_dir(), "models.csv").read_text().startswith("name,")
