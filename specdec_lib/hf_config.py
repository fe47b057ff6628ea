"""Hugging Face config.json -> ModelSpec: a model outside the catalog, from a file, a folder or the hub.

Validated field by field, with errors naming the file and the field. Reachable as `catalog.model_from_hf_config`
too (catalog.get_model reads a config path through it).
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from specdec_lib.catalog import ModelSpec

HF_ENDPOINT_ENV = "SPECDEC_HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"

# Model types whose config.json defaults we know (transformers' LlamaConfig, Qwen2Config, MistralConfig
# all default tie_word_embeddings to False; Qwen2 has q/k/v biases, Llama/Mistral none unless attention_bias).
_KNOWN_MODEL_TYPES = {"llama", "qwen2", "mistral"}


def _tokenizer_identity(model_type: str, vocab_size: int) -> str:
    if vocab_size == 128256:
        return "llama-3-128k"
    if model_type == "qwen2" and vocab_size in (151936, 152064):
        return "qwen2.5-151k"  # same tokenizer; the embedding is padded to 151,936 or 152,064 rows
    return f"{model_type}-{vocab_size}"


def _family(model_type: str, vocab_size: int) -> str:
    if model_type == "llama" and vocab_size == 128256:
        return "llama-3"
    if model_type == "qwen2" and vocab_size in (151936, 152064):
        return "qwen2.5"
    return model_type


def model_from_hf_config(path_or_dict: str | os.PathLike | Mapping[str, Any], name: str | None = None,
                         *, family: str | None = None, tokenizer: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json (a file, a model folder, or the parsed dict).

    Dense decoder-only models of type llama, qwen2 or mistral (and others that state every field
    explicitly). head_dim is taken from the config when present (it is not always hidden/heads);
    params is computed from the architecture. MoE and MLP-bias configs are refused, not approximated.
    """
    if isinstance(path_or_dict, Mapping):
        config = dict(path_or_dict)
        where = name or "config dict"
    else:
        path = Path(path_or_dict)
        if path.is_dir():
            path = path / "config.json"
        where = str(path)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{where}: no such config.json") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except IsADirectoryError:
            raise ValueError(f"{where}: is a directory, expected a config.json file") from None
        if name is None:
            name = path.parent.name
    if not isinstance(config, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(config).__name__}")
    if "text_config" in config and not isinstance(config["text_config"], dict):
        raise ValueError(f"{where}, field 'text_config': expected an object, got {config['text_config']!r}")
    if "text_config" in config and "num_hidden_layers" not in config:
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
    model_type = str(config.get("model_type", ""))

    def need(field: str) -> int:
        value = config.get(field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}, field {field!r}: expected a positive integer, got {value!r}")
        return value

    def optional_positive(field: str) -> int | None:
        value = config.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}, field {field!r}: expected a positive integer or null, got {value!r}")
        return value

    for flag in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
        if config.get(flag) is not None and not isinstance(config[flag], bool):
            raise ValueError(f"{where}, field {flag!r}: expected true or false, got {config[flag]!r}")
    for moe_field in ("num_local_experts", "num_experts", "n_routed_experts"):
        if config.get(moe_field):
            raise ValueError(f"{where}, field {moe_field!r}: mixture-of-experts models are not supported")
    if config.get("mlp_bias"):
        raise ValueError(f"{where}, field 'mlp_bias': MLP biases are not supported")

    heads = need("num_attention_heads")
    hidden = need("hidden_size")
    kv_heads = optional_positive("num_key_value_heads") or heads
    head_dim = optional_positive("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ValueError(f"{where}, field 'head_dim': missing and hidden_size {hidden} is not a multiple "
                             f"of num_attention_heads {heads}")
        head_dim = hidden // heads
    if "tie_word_embeddings" in config:
        tied = bool(config["tie_word_embeddings"])
    elif model_type in _KNOWN_MODEL_TYPES:
        tied = False  # transformers' default for these model types
    else:
        raise ValueError(f"{where}, field 'tie_word_embeddings': missing, and model_type {model_type!r} has no "
                         f"known default (known: {sorted(_KNOWN_MODEL_TYPES)})")
    attention_bias = bool(config.get("attention_bias", False))
    qkv_bias = model_type == "qwen2" or attention_bias
    vocab = need("vocab_size")
    spec = ModelSpec(
        name=name or "unnamed",
        family=family or _family(model_type, vocab),
        tokenizer=tokenizer or _tokenizer_identity(model_type, vocab),
        num_layers=need("num_hidden_layers"),
        hidden_size=hidden,
        intermediate_size=need("intermediate_size"),
        num_attention_heads=heads,
        num_kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        vocab_size=vocab,
        tie_word_embeddings=tied,
        max_position_embeddings=need("max_position_embeddings"),
        params=0,
        qkv_bias=qkv_bias,
        o_proj_bias=attention_bias and model_type != "qwen2",
        model_type=model_type or "unknown",
    )
    if spec.num_kv_heads <= 0 or spec.num_attention_heads % spec.num_kv_heads:
        raise ValueError(f"{where}, field 'num_key_value_heads': {kv_heads!r} must be a positive divisor of "
                         f"num_attention_heads {heads}")
    return replace(spec, params=spec.param_count())


def hub_config_url(repo_id: str, revision: str = "main") -> str:
    endpoint = os.environ.get(HF_ENDPOINT_ENV, DEFAULT_HF_ENDPOINT).rstrip("/")
    return f"{endpoint}/{repo_id}/resolve/{revision}/config.json"


def model_from_hub(repo_id: str, *, revision: str = "main", timeout_s: float = 10.0) -> ModelSpec:
    """Fetch config.json by repo id from the hub (base URL: $SPECDEC_HF_ENDPOINT, default huggingface.co).

    A token in $HF_TOKEN is sent for gated repos (never logged). Offline: ConnectionError naming the URL;
    a missing or gated repo: ValueError naming the URL and the HTTP status.
    """
    import requests

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id={repo_id!r}: expected 'owner/name'")
    url = hub_config_url(repo_id, revision)
    headers = {}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = requests.get(url, headers=headers, timeout=timeout_s)
    except requests.RequestException as e:
        raise ConnectionError(f"cannot fetch {url}: {type(e).__name__} (offline or hub unreachable)") from None
    if response.status_code in (401, 403):
        raise ValueError(f"{url}: HTTP {response.status_code} (gated or private repo: set HF_TOKEN)")
    if response.status_code != 200:
        raise ValueError(f"{url}: HTTP {response.status_code}")
    try:
        config = response.json()
    except ValueError:
        raise ValueError(f"{url}: response is not JSON") from None
    if not isinstance(config, dict):
        raise ValueError(f"{url}: expected a JSON object")
    return model_from_hf_config(config, name=repo_id)
