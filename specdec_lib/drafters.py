"""Drafters that live beside a target: EAGLE / EAGLE-3 heads and MTP modules (data/drafters.csv, config.json).

A drafter row describes what vLLM 0.32 builds for it (``vllm/model_executor/models/llama_eagle3.py``,
``llama_eagle.py``, ``deepseek_mtp.py``): its decoder layer(s), the fc that mixes the target's hidden states into
the head's width (EAGLE-3: 3 auxiliary hidden states, 3h -> h; EAGLE-1 and MTP's eh_proj: 2h -> h), its lm_head
over the draft vocabulary (EAGLE-3: 32k tokens, mapped back to the target's vocabulary by a ``d2t`` offset table)
and the attention layout its KV cache takes in vLLM's shared pool ("gqa": K and V per KV head; "mla": one latent
vector of ``head_dim`` per token per layer, as DeepSeek's multi-head latent attention is cached).

What is counted in ``params`` (and so in the head's weights) is what vLLM keeps resident for the head:
``vllm/v1/spec_decode/llm_base_proposer.py`` (_maybe_share_embeddings / _maybe_share_lm_head) shares the target's
embedding with an EAGLE head whose checkpoint has none (or an identical copy), and shares both the embedding and
the lm_head with an MTP module; an EAGLE-3 head over a reduced draft vocabulary keeps its own lm_head.

Loaded and validated once (errors name the file, the line and the field), like the other catalogs; this module is
re-exported by ``catalog`` (``catalog.drafters()``, ``catalog.get_drafter``, ``catalog.drafter_from_hf_config``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .catalog import PARAM_TOLERANCE, ModelSpec, _build, _read_rows, _Row, data_dir

DRAFTER_METHODS = ("eagle", "eagle3", "mtp", "deepseek_mtp", "qwen3_next_mtp", "glm4_moe_mtp", "gemma4_mtp",
                   "mimo_mtp", "ernie_mtp", "qwen3_5_mtp")
"""Methods a drafter row may name: EAGLE heads and the MTP names of vLLM 0.32's MTPModelTypes (a subset)."""
ATTENTION_LAYOUTS = ("gqa", "mla")
D2T_BYTES_PER_ENTRY = 8  # vLLM keeps draft_id_to_target_id as an int64 parameter (llama_eagle3.py)

_DRAFTER_COLUMNS = (
    "name", "aliases", "method", "vllm_architecture", "targets", "attention", "num_layers", "hidden_size",
    "intermediate_size", "num_attention_heads", "num_kv_heads", "head_dim", "vocab_size", "draft_vocab_size",
    "has_d2t", "fc_input_multiple", "n_routed_experts", "experts_per_token", "n_shared_experts", "params",
    "params_source", "source",
)


@dataclass(frozen=True)
class DrafterSpec:
    """One EAGLE/EAGLE-3 head or MTP module as vLLM builds it."""

    name: str
    method: str  # vLLM's speculative-config method: "eagle", "eagle3", "deepseek_mtp", "mtp", ...
    targets: tuple[str, ...]  # catalog names of the targets it was trained for
    attention: str  # "gqa" | "mla"
    num_layers: int
    hidden_size: int
    intermediate_size: int  # dense MLP width; for MoE layers the width of one expert
    num_attention_heads: int
    num_kv_heads: int  # "mla": 1 (one latent per token)
    head_dim: int  # "mla": the latent width (kv_lora_rank + qk_rope_head_dim)
    vocab_size: int  # the target's vocabulary (the head's embedding rows)
    draft_vocab_size: int  # rows of the head's lm_head
    has_d2t: bool  # a draft-to-target token map (draft vocabulary smaller than the target's)
    fc_input_multiple: int  # fc input = multiple x hidden (EAGLE-3: 3; EAGLE-1 and MTP eh_proj: 2)
    params: int
    n_routed_experts: int = 0
    experts_per_token: int = 0
    n_shared_experts: int = 0
    vllm_architecture: str = ""
    params_source: str = ""
    source: str = ""

    @property
    def is_mtp(self) -> bool:
        return self.method not in ("eagle", "eagle3")

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def own_lm_head(self) -> bool:
        """vLLM keeps a separate lm_head only for EAGLE heads over their own (reduced) draft vocabulary."""
        return not self.is_mtp and self.draft_vocab_size != self.vocab_size

    def serves(self, target: str) -> bool:
        key = target.lower().split("/")[-1].removesuffix("-instruct")
        return any(t.lower().split("/")[-1].removesuffix("-instruct") == key for t in self.targets)

    def layer_params(self) -> int:
        """Dense GQA decoder layers as vLLM builds them (EAGLE-3's first layer reads 2h: embeds + hidden)."""
        h, q, kv = self.hidden_size, self.num_attention_heads * self.head_dim, self.num_kv_heads * self.head_dim
        total = 0
        for i in range(self.num_layers):
            qkv_in = 2 * h if (self.method == "eagle3" and i == 0) else h
            # input + post-attention norms, + EAGLE-3's hidden_norm; EAGLE-1 drops layer 0's input norm
            norms = 3 * h if self.method == "eagle3" else (h if i == 0 else 2 * h)
            total += qkv_in * (q + 2 * kv) + q * h + 3 * h * self.intermediate_size + norms
        return total

    def param_count(self) -> int:
        """Parameters recomputed from the architecture (dense GQA heads only; MoE/MLA modules carry their
        published count): layers + fc (multiple x h x h) + final norm + lm_head over the draft vocabulary."""
        if self.attention != "gqa" or self.is_moe:
            raise ValueError(f"drafter {self.name}: param_count() covers dense GQA heads; this one is "
                             f"{self.attention}{' MoE' if self.is_moe else ''}: use its published params")
        h = self.hidden_size
        lm_head = self.draft_vocab_size * h if self.own_lm_head else 0
        final_norm = h if self.method == "eagle3" else 0
        return self.layer_params() + self.fc_input_multiple * h * h + final_norm + lm_head

    def kv_model(self) -> ModelSpec:
        """The head's attention layers as a ModelSpec, for memory.kv_bytes_per_token / kv_capacity_tokens
        (GQA heads only: vLLM's MLA page holds one latent per token, no separate K and V)."""
        if self.attention != "gqa":
            raise ValueError(f"drafter {self.name}: attention {self.attention!r} is not a K/V layout")
        return ModelSpec(name=self.name, family="drafter", tokenizer="", num_layers=self.num_layers,
                         hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                         num_attention_heads=self.num_attention_heads, num_kv_heads=self.num_kv_heads,
                         head_dim=self.head_dim, vocab_size=self.draft_vocab_size, tie_word_embeddings=False,
                         max_position_embeddings=1, params=self.params, model_type="drafter")


def _validate(spec: DrafterSpec, where: str) -> DrafterSpec:
    if spec.method not in DRAFTER_METHODS:
        raise ValueError(f"{where}, field 'method': expected one of {', '.join(DRAFTER_METHODS)}, got {spec.method!r}")
    if spec.attention not in ATTENTION_LAYOUTS:
        raise ValueError(f"{where}, field 'attention': expected gqa or mla, got {spec.attention!r}")
    if spec.num_attention_heads % spec.num_kv_heads:
        raise ValueError(f"{where}, field 'num_kv_heads': {spec.num_kv_heads} must divide num_attention_heads "
                         f"{spec.num_attention_heads}")
    if spec.draft_vocab_size > spec.vocab_size:
        raise ValueError(f"{where}, field 'draft_vocab_size': {spec.draft_vocab_size} exceeds vocab_size "
                         f"{spec.vocab_size}")
    if spec.has_d2t != (spec.draft_vocab_size != spec.vocab_size):
        raise ValueError(f"{where}, field 'has_d2t': expected {str(spec.draft_vocab_size != spec.vocab_size).lower()}"
                         " (vLLM builds a d2t map exactly when the draft vocabulary differs from the target's)")
    if spec.attention == "gqa" and not spec.is_moe:
        computed = spec.param_count()
        if abs(spec.params - computed) > PARAM_TOLERANCE * computed:
            raise ValueError(f"{where}, field 'params': {spec.params:,} differs from {computed:,} recomputed from "
                             f"the architecture by more than {PARAM_TOLERANCE:.0%}")
    return spec


def _nonneg_int(row: _Row, field: str) -> int:
    value = row.raw(field)
    if not value.isdigit():
        raise row._fail(field, "an integer >= 0")
    return int(value)


def _drafter_from_row(row: _Row) -> tuple[DrafterSpec, tuple[str, ...]]:
    if None in row.values:
        raise ValueError(f"{row.path.name} line {row.line}: more fields than columns (quote a value holding a comma)")
    targets = tuple(t.strip() for t in row.text("targets").split(";") if t.strip())
    spec = DrafterSpec(
        name=row.text("name"), method=row.text("method"), targets=targets, attention=row.text("attention"),
        num_layers=row.positive_int("num_layers"), hidden_size=row.positive_int("hidden_size"),
        intermediate_size=row.positive_int("intermediate_size"),
        num_attention_heads=row.positive_int("num_attention_heads"), num_kv_heads=row.positive_int("num_kv_heads"),
        head_dim=row.positive_int("head_dim"), vocab_size=row.positive_int("vocab_size"),
        draft_vocab_size=row.positive_int("draft_vocab_size"), has_d2t=row.boolean("has_d2t"),
        fc_input_multiple=_nonneg_int(row, "fc_input_multiple"), params=row.positive_int("params"),
        n_routed_experts=_nonneg_int(row, "n_routed_experts"), experts_per_token=_nonneg_int(row, "experts_per_token"),
        n_shared_experts=_nonneg_int(row, "n_shared_experts"), vllm_architecture=row.text("vllm_architecture"),
        params_source=row.text("params_source"), source=row.text("source"),
    )
    return _validate(spec, f"{row.path.name} line {row.line}"), row.aliases()


@lru_cache(maxsize=None)
def _load(folder: str):
    path = Path(folder) / "drafters.csv"
    return _build([_drafter_from_row(r) for r in _read_rows(path, _DRAFTER_COLUMNS)], path)


def reload() -> None:
    _load.cache_clear()


def drafters() -> dict[str, DrafterSpec]:
    """Every drafter of data/drafters.csv by name."""
    return dict(_load(str(data_dir())).items)


def get_drafter(name: str) -> DrafterSpec:
    """A drafter by name or alias, or a local config.json / folder holding one (``drafter_from_hf_config``)."""
    if isinstance(name, str) and (name.endswith(".json") or os.sep in name) and \
            (Path(name).is_file() or (Path(name) / "config.json").is_file()):
        return drafter_from_hf_config(name)
    return _lookup_drafter(str(data_dir()), name)


def _lookup_drafter(folder: str, name: str) -> DrafterSpec:
    cat = _load(folder)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"drafter={name!r}: expected a non-empty name")
    key = name.strip().lower()
    for k in (key, key.split("/")[-1]):
        if k in cat.aliases:
            return cat.items[cat.aliases[k]]
    raise ValueError(f"drafter={name!r}: unknown; known: {', '.join(cat.items)}")


def drafters_for(target: str, method: str | None = None) -> list[DrafterSpec]:
    """Drafters in the catalog trained for ``target`` (catalog name, -Instruct variant accepted)."""
    return [d for d in drafters().values() if d.serves(target) and (method is None or d.method == method)]


# ----------------------------------------------------------------------------------------------------------------
# config.json
# ----------------------------------------------------------------------------------------------------------------


def _read_config(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> tuple[dict, str]:
    if isinstance(path_or_dict, Mapping):
        return dict(path_or_dict), "config"
    path = Path(path_or_dict)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"drafter config {path} not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def _field(cfg: Mapping[str, Any], key: str, where: str, default: Any = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}, field {key!r}: expected a positive integer, got {value!r}")
    return value


def drafter_from_hf_config(path_or_dict: str | os.PathLike | Mapping[str, Any], name: str | None = None,
                           *, targets: tuple[str, ...] = ()) -> DrafterSpec:
    """A DrafterSpec from an EAGLE/EAGLE-3 head's config.json: the flat EAGLE-3 form (``architectures``
    ``[...Eagle3...]`` with ``draft_vocab_size``) or the speculators form (``speculators_model_type`` eagle3/eagle
    and a nested ``transformer_layer_config``), as vLLM's ``transformers_utils/configs/speculators`` reads it."""
    cfg, where = _read_config(path_or_dict)
    spec_type = cfg.get("speculators_model_type")
    layer = cfg.get("transformer_layer_config") if spec_type else cfg
    if not isinstance(layer, Mapping):
        raise ValueError(f"{where}, field 'transformer_layer_config': expected an object")
    archs = " ".join(cfg.get("architectures") or [])
    if spec_type in ("eagle3", "eagle"):
        method = spec_type
    elif "eagle3" in archs.lower():
        method = "eagle3"
    elif "eagle" in archs.lower():
        method = "eagle"
    else:
        raise ValueError(f"{where}, field 'architectures': {archs!r} is not an EAGLE head (MTP modules live in their "
                         "target's config: add them to data/drafters.csv)")
    h = _field(layer, "hidden_size", where)
    heads = _field(layer, "num_attention_heads", where)
    vocab = _field(layer, "vocab_size", where)
    draft_vocab = cfg.get("draft_vocab_size") or layer.get("draft_vocab_size") or vocab
    eagle_cfg = cfg.get("eagle_config") or {}
    aux = eagle_cfg.get("eagle_aux_hidden_state_layer_ids") or cfg.get("eagle_aux_hidden_state_layer_ids")
    verifier = ((cfg.get("speculators_config") or {}).get("verifier") or {}).get("name_or_path")
    spec = DrafterSpec(
        name=name or cfg.get("_name_or_path") or where, method=method,
        targets=targets or ((verifier,) if verifier else ()), attention="gqa",
        num_layers=_field(layer, "num_hidden_layers", where), hidden_size=h,
        intermediate_size=_field(layer, "intermediate_size", where), num_attention_heads=heads,
        num_kv_heads=_field(layer, "num_key_value_heads", where, heads),
        head_dim=_field(layer, "head_dim", where, h // heads), vocab_size=vocab,
        draft_vocab_size=_field({"draft_vocab_size": draft_vocab}, "draft_vocab_size", where),
        has_d2t=draft_vocab != vocab, fc_input_multiple=(len(aux) if aux else 3) if method == "eagle3" else 2,
        params=1, vllm_architecture="Eagle3LlamaForCausalLM" if method == "eagle3" else "EagleLlamaForCausalLM",
        params_source="computed from config", source=where,
    )
    spec = DrafterSpec(**{**spec.__dict__, "params": spec.param_count()})
    return _validate(spec, where)
