"""Models, GPUs and precisions: the catalogs in data/*.csv, and Hugging Face config.json files.

Everything here is validated once, at load, with errors that name the file, the line and the field.
The dataclasses are frozen; the arithmetic that uses them lives in memory.py (pure).

Data directory: ``data/`` beside the package (a source checkout), or the folder named by the
environment variable ``SPECDEC_DATA_DIR``.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from specdec_lib.rules import RATIO_MAX, RATIO_MIN

DATA_DIR_ENV = "SPECDEC_DATA_DIR"


# --------------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer as its config.json describes it (dense, full attention)."""

    name: str
    family: str  # same family = same training distribution ("llama-3", "qwen2.5")
    tokenizer: str  # tokenizer identity ("llama-3-128k", "qwen2.5-151k")
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int  # rows of the embedding matrix (may exceed the tokenizer's real vocabulary)
    tie_word_embeddings: bool
    max_position_embeddings: int
    params: int  # published (safetensors total) where known, else computed from the config
    qkv_bias: bool = False  # Qwen2/2.5: q, k and v projections carry biases
    o_proj_bias: bool = False  # Llama with attention_bias=true also biases o_proj
    model_type: str = "llama"

    # -- parameter groups (exact counts, used by memory.py for weights per precision and per TP rank) --
    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_params_per_layer(self) -> int:
        """Weights of the 7 projection matrices of one layer (the part AWQ/GPTQ/FP8/INT8 quantize)."""
        h = self.hidden_size
        attn = h * self.q_size + 2 * h * self.kv_size + self.q_size * h
        mlp = 3 * h * self.intermediate_size  # gate, up, down (SwiGLU)
        return attn + mlp

    def bias_params_per_layer(self) -> int:
        n = 0
        if self.qkv_bias:
            n += self.q_size + 2 * self.kv_size
        if self.o_proj_bias:
            n += self.hidden_size
        return n

    def norm_params(self) -> int:
        """RMSNorm weights: two per layer plus the final norm."""
        return (2 * self.num_layers + 1) * self.hidden_size

    def embedding_params(self) -> int:
        """Input embedding plus, when untied, the lm_head (tied embeddings are stored once)."""
        emb = self.vocab_size * self.hidden_size
        return emb if self.tie_word_embeddings else 2 * emb

    def param_count(self) -> int:
        """Parameters recomputed from the architecture.

        layers x (q, k, v, o, gate, up, down weights + biases) + norms + embedding (+ lm_head if untied).
        """
        per_layer = self.linear_params_per_layer() + self.bias_params_per_layer()
        return self.num_layers * per_layer + self.norm_params() + self.embedding_params()

    @property
    def short_name(self) -> str:
        return self.name.split("/")[-1]


@dataclass(frozen=True)
class GPU:
    """One accelerator as the inference engine sees it."""

    name: str
    memory_bytes: int  # as the driver / torch.cuda reports it (not the marketing "80GB")
    bandwidth_bytes_per_s: float  # HBM/GDDR peak
    bf16_flops_per_s: float  # dense (not the 2:4-sparse figure)
    fp8_flops_per_s: float | None  # dense; None: no FP8 tensor cores (A100)
    int8_ops_per_s: float  # dense
    interconnect_bytes_per_s: float  # per direction, GPU to GPU (NVLink / xGMI / PCIe), for TP all-reduce
    nominal_memory_gb: float = 0.0  # the marketing figure, decimal GB
    interconnect: str = ""
    memory_source: str = ""

    def matmul_ops_per_s(self, compute: str) -> float:
        """Dense tensor-core rate for a precision's compute type ("bf16", "fp8", "int8").

        A GPU without FP8 tensor cores runs FP8 checkpoints as weight-only (Marlin W8A16) in bf16,
        so its FP8 rate is its bf16 rate; the choice is said here, not hidden.
        """
        if compute == "bf16":
            return self.bf16_flops_per_s
        if compute == "fp8":
            return self.fp8_flops_per_s if self.fp8_flops_per_s is not None else self.bf16_flops_per_s
        if compute == "int8":
            return self.int8_ops_per_s
        raise ValueError(f"compute={compute!r}: expected one of 'bf16', 'fp8', 'int8'")


@dataclass(frozen=True)
class Precision:
    """How one weight is stored. Quantized formats apply to the decoder's linear layers only."""

    name: str
    bits_per_param: float
    group_size: int | None  # weights sharing one scale (None: per-tensor/per-channel, not counted)
    scale_bytes_per_group: float  # bytes of scale (+ zero point) per group
    compute: str = "bf16"  # tensor-core type of the matmuls: "bf16", "fp8" or "int8"
    vllm_quantization: str = ""
    notes: str = ""

    @property
    def is_quantized(self) -> bool:
        return self.bits_per_param < 16

    @property
    def effective_bits_per_param(self) -> float:
        """Bits per weight including group scales: 4 + 2.5*8/128 = 4.156 for AWQ/GPTQ at group 128."""
        if not self.group_size:
            return self.bits_per_param
        return self.bits_per_param + 8 * self.scale_bytes_per_group / self.group_size

    def weight_bytes(self, n_params: int) -> int:
        """Bytes for n_params weights in this format: n * bits / 8 + ceil(n / group) * scale bytes."""
        if n_params < 0:
            raise ValueError(f"n_params={n_params}: expected >= 0")
        data = n_params * self.bits_per_param / 8
        scales = math.ceil(n_params / self.group_size) * self.scale_bytes_per_group if self.group_size else 0
        return int(math.ceil(data + scales))


# --------------------------------------------------------------------------------------------------
# CSV loading and validation
# --------------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """Folder of the catalogs: $SPECDEC_DATA_DIR, else data/ beside the package."""
    env = os.environ.get(DATA_DIR_ENV)
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"catalog folder {path} not found: set {DATA_DIR_ENV} to the folder holding models.csv, "
            "gpus.csv and precisions.csv"
        )
    return path


class _Row:
    """One CSV row; every accessor names the file, line and field in its error."""

    def __init__(self, path: Path, line: int, values: Mapping[str, str]):
        self.path, self.line, self.values = path, line, values

    def _fail(self, field: str, expected: str) -> ValueError:
        got = self.values.get(field)
        return ValueError(f"{self.path.name} line {self.line}, field {field!r}: expected {expected}, got {got!r}")

    def raw(self, field: str) -> str:
        value = self.values.get(field)
        if value is None:
            raise ValueError(f"{self.path.name} line {self.line}: missing column {field!r}")
        return value.strip()

    def text(self, field: str, required: bool = True) -> str:
        value = self.raw(field)
        if required and not value:
            raise self._fail(field, "a non-empty value")
        return value

    def positive_int(self, field: str) -> int:
        value = self.raw(field)
        try:
            number = int(value)
        except ValueError:
            raise self._fail(field, "a positive integer") from None
        if number <= 0:
            raise self._fail(field, "a positive integer")
        return number

    def positive_float(self, field: str, optional: bool = False) -> float | None:
        value = self.raw(field)
        if optional and value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            raise self._fail(field, "a positive number" + (" or empty" if optional else "")) from None
        if not (number > 0 and math.isfinite(number)):
            raise self._fail(field, "a positive number")
        return number

    def non_negative_float(self, field: str) -> float:
        value = self.raw(field)
        try:
            number = float(value)
        except ValueError:
            raise self._fail(field, "a number >= 0") from None
        if not (number >= 0 and math.isfinite(number)):
            raise self._fail(field, "a number >= 0")
        return number

    def boolean(self, field: str) -> bool:
        value = self.raw(field).lower()
        if value in ("true", "1", "yes"):
            return True
        if value in ("false", "0", "no"):
            return False
        raise self._fail(field, "true or false")

    def aliases(self, field: str = "aliases") -> tuple[str, ...]:
        return tuple(a.strip() for a in self.raw(field).split(";") if a.strip())


def _read_rows(path: Path, required: tuple[str, ...]) -> list[_Row]:
    if not path.is_file():
        raise FileNotFoundError(f"catalog file {path} not found")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path.name}: missing columns {missing}; header is {header}")
        rows = [_Row(path, reader.line_num, row) for row in reader]
    names = [r.raw("name") for r in rows]
    for row in rows:
        if names.count(row.raw("name")) > 1:
            raise ValueError(f"{path.name} line {row.line}, field 'name': duplicate name {row.raw('name')!r}")
    return rows


_MODEL_COLUMNS = (
    "name", "aliases", "family", "tokenizer", "model_type", "num_layers", "hidden_size", "intermediate_size",
    "num_attention_heads", "num_kv_heads", "head_dim", "vocab_size", "tie_word_embeddings", "qkv_bias",
    "max_position_embeddings", "params",
)
_GPU_COLUMNS = (
    "name", "memory_bytes", "bandwidth_bytes_per_s", "bf16_flops_per_s", "fp8_flops_per_s", "int8_ops_per_s",
    "interconnect_bytes_per_s",
)
_PRECISION_COLUMNS = ("name", "aliases", "bits_per_param", "group_size", "scale_bytes_per_group", "compute")

PARAM_TOLERANCE = 0.01  # a catalog's params must agree with param_count() within 1 %


def _validate_model(spec: ModelSpec, where: str) -> ModelSpec:
    if spec.num_attention_heads % spec.num_kv_heads != 0:
        raise ValueError(
            f"{where}, field 'num_kv_heads': {spec.num_kv_heads} must divide num_attention_heads "
            f"{spec.num_attention_heads}"
        )
    computed = spec.param_count()
    if abs(spec.params - computed) > PARAM_TOLERANCE * computed:
        raise ValueError(
            f"{where}, field 'params': {spec.params:,} differs from {computed:,} recomputed from the "
            f"architecture by more than {PARAM_TOLERANCE:.0%}"
        )
    return spec


def _model_from_row(row: _Row) -> tuple[ModelSpec, tuple[str, ...]]:
    spec = ModelSpec(
        name=row.text("name"),
        family=row.text("family"),
        tokenizer=row.text("tokenizer"),
        num_layers=row.positive_int("num_layers"),
        hidden_size=row.positive_int("hidden_size"),
        intermediate_size=row.positive_int("intermediate_size"),
        num_attention_heads=row.positive_int("num_attention_heads"),
        num_kv_heads=row.positive_int("num_kv_heads"),
        head_dim=row.positive_int("head_dim"),
        vocab_size=row.positive_int("vocab_size"),
        tie_word_embeddings=row.boolean("tie_word_embeddings"),
        max_position_embeddings=row.positive_int("max_position_embeddings"),
        params=row.positive_int("params"),
        qkv_bias=row.boolean("qkv_bias"),
        model_type=row.text("model_type"),
    )
    return _validate_model(spec, f"{row.path.name} line {row.line}"), row.aliases()


def _gpu_from_row(row: _Row) -> GPU:
    return GPU(
        name=row.text("name"),
        memory_bytes=row.positive_int("memory_bytes"),
        bandwidth_bytes_per_s=row.positive_float("bandwidth_bytes_per_s"),
        bf16_flops_per_s=row.positive_float("bf16_flops_per_s"),
        fp8_flops_per_s=row.positive_float("fp8_flops_per_s", optional=True),
        int8_ops_per_s=row.positive_float("int8_ops_per_s"),
        interconnect_bytes_per_s=row.positive_float("interconnect_bytes_per_s"),
        nominal_memory_gb=(row.positive_float("nominal_memory_gb", optional=True) or 0.0)
        if "nominal_memory_gb" in row.values else 0.0,
        interconnect=row.values.get("interconnect", "").strip(),
        memory_source=row.values.get("memory_source", "").strip(),
    )


def _precision_from_row(row: _Row) -> tuple[Precision, tuple[str, ...]]:
    group = row.raw("group_size")
    if group:
        group_size: int | None = row.positive_int("group_size")
    else:
        group_size = None
    bits = row.positive_float("bits_per_param")
    if bits > 32:
        raise row._fail("bits_per_param", "a number in (0, 32]")
    compute = row.text("compute")
    if compute not in ("bf16", "fp8", "int8"):
        raise row._fail("compute", "one of bf16, fp8, int8")
    precision = Precision(
        name=row.text("name"),
        bits_per_param=bits,
        group_size=group_size,
        scale_bytes_per_group=row.non_negative_float("scale_bytes_per_group"),
        compute=compute,
        vllm_quantization=row.values.get("vllm_quantization", "").strip(),
        notes=row.values.get("notes", "").strip(),
    )
    return precision, row.aliases()


@dataclass(frozen=True)
class _Catalog:
    items: dict[str, Any]
    aliases: dict[str, str]  # lower-case alias -> canonical name


def _build(items: list[tuple[Any, tuple[str, ...]]], path: Path) -> _Catalog:
    by_name: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    for item, extra in items:
        by_name[item.name] = item
        keys = {item.name.lower(), item.name.split("/")[-1].lower(), *(a.lower() for a in extra)}
        for key in keys:
            if key in aliases and aliases[key] != item.name:
                raise ValueError(f"{path.name}: name or alias {key!r} used by both {aliases[key]} and {item.name}")
            aliases[key] = item.name
    return _Catalog(by_name, aliases)


@lru_cache(maxsize=None)
def _load(kind: str, folder: str) -> _Catalog:
    path = Path(folder) / f"{kind}.csv"
    if kind == "models":
        return _build([_model_from_row(r) for r in _read_rows(path, _MODEL_COLUMNS)], path)
    if kind == "gpus":
        return _build([(_gpu_from_row(r), ()) for r in _read_rows(path, _GPU_COLUMNS)], path)
    return _build([_precision_from_row(r) for r in _read_rows(path, _PRECISION_COLUMNS)], path)


def _catalog(kind: str) -> _Catalog:
    return _load(kind, str(data_dir()))


def reload() -> None:
    """Forget cached catalogs (after editing data/*.csv in a running notebook)."""
    _load.cache_clear()


def _lookup(kind: str, field: str, name: str, normalise: Callable[[str], list[str]]) -> Any:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{field}={name!r}: expected a non-empty name")
    cat = _catalog(kind)
    for key in normalise(name.strip().lower()):
        if key in cat.aliases:
            return cat.items[cat.aliases[key]]
    close = difflib.get_close_matches(name.strip().lower(), list(cat.aliases), n=3, cutoff=0.5)
    suggestions = sorted({cat.aliases[c] for c in close})
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    raise ValueError(f"{field}={name!r}: unknown; known: {', '.join(cat.items)}{hint}")


def _model_keys(key: str) -> list[str]:
    keys = [key, key.split("/")[-1]]
    for suffix in ("-instruct", "-chat"):
        if key.endswith(suffix):
            keys += [key[: -len(suffix)], key.split("/")[-1][: -len(suffix)]]
    return keys


def get_model(name: str) -> ModelSpec:
    """A catalog model by repo id, name without org, alias, or its -Instruct variant (same architecture).

    Note: Qwen2.5 -Instruct configs say max_position_embeddings 32768 where some base configs say 131072;
    the catalog keeps the base model's value.

    A local path to a Hugging Face config.json (or the model folder holding one) is read with
    `model_from_hf_config`, so scenarios, plans and verdicts work for models outside the catalog.
    """
    if _looks_like_config_path(name):
        from specdec_lib.hf_config import model_from_hf_config

        return model_from_hf_config(name)
    return _lookup("models", "model", name, _model_keys)


def _looks_like_config_path(name: str) -> bool:
    if not isinstance(name, str) or not (name.endswith(".json") or os.sep in name or name.startswith(".")):
        return False
    path = Path(name).expanduser()
    return path.is_file() or (path / "config.json").is_file()


def get_gpu(name: str) -> GPU:
    return _lookup("gpus", "gpu", name, lambda k: [k, k.replace(" ", "-"), k.replace("_", "-")])


def get_precision(name: str) -> Precision:
    """"bf16", "fp16", "fp8", "int8", "int4-awq", "int4-gptq"; "int4" means "int4-awq"."""
    return _lookup("precisions", "precision", name, lambda k: [k])


def models() -> dict[str, ModelSpec]:
    return dict(_catalog("models").items)


def gpus() -> dict[str, GPU]:
    return dict(_catalog("gpus").items)


def precisions() -> dict[str, Precision]:
    return dict(_catalog("precisions").items)


# --------------------------------------------------------------------------------------------------
# The source's draft-pairing table
# --------------------------------------------------------------------------------------------------

SWEET_SPOT_RATIO = (RATIO_MIN, RATIO_MAX)  # the source: "a 1:8 to 1:12 size ratio" (rules.py)

# (draft, target, the source's stated ratio) in the order of the source's table, plus the vLLM blog's pair.
SOURCE_PAIRINGS: tuple[tuple[str, str, float], ...] = (
    ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", 9),
    ("Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-72B", 10),
    ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-70B", 70),
    ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-405B", 50),
    ("turboderp/Qwama-0.5B-Instruct", "meta-llama/Meta-Llama-3-70B", 140),
)


@dataclass(frozen=True)
class Pairing:
    draft: str
    target: str
    draft_params: int
    target_params: int
    ratio: float  # target params / draft params ("1:ratio")
    source_ratio: float | None
    verdict: str  # "in the 1:8-1:12 band", "draft too small", "draft too large"
    same_family: bool
    same_tokenizer: bool
    same_vocab_size: bool  # vLLM 0.32's draft_model refuses unequal vocab sizes unless use_heterogeneous_vocab

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pairing(draft: str | ModelSpec, target: str | ModelSpec, source_ratio: float | None = None) -> Pairing:
    """Size ratio and the source's checklist for one draft/target pair (ratio from parameter counts)."""
    d = draft if isinstance(draft, ModelSpec) else get_model(draft)
    t = target if isinstance(target, ModelSpec) else get_model(target)
    ratio = t.params / d.params
    low, high = SWEET_SPOT_RATIO
    if ratio < low:
        verdict = "draft too large"
    elif ratio > high:
        verdict = "draft too small"
    else:
        verdict = "in the 1:8-1:12 band"
    return Pairing(
        draft=d.name, target=t.name, draft_params=d.params, target_params=t.params, ratio=ratio,
        source_ratio=source_ratio, verdict=verdict, same_family=d.family == t.family,
        same_tokenizer=d.tokenizer == t.tokenizer, same_vocab_size=d.vocab_size == t.vocab_size,
    )


def pairing_table() -> list[Pairing]:
    """The source's draft-pairing table (plus the vLLM blog's Qwama/Llama-3-70B pair), recomputed."""
    return [pairing(d, t, r) for d, t, r in SOURCE_PAIRINGS]


def same_model(a: str | None, b: str | None) -> bool:
    """True when two model names mean the same weights: the same catalog entry, or the same name once the org,
    case and an -Instruct/-Chat suffix are set aside (a served name outside the catalog). None matches nothing."""
    if not a or not b:
        return False
    keys_a, keys_b = _model_keys(a.strip().lower()), _model_keys(b.strip().lower())
    if set(keys_a[1:]) & set(keys_b[1:]) or keys_a[0] == keys_b[0]:
        return True
    try:
        return get_model(a).name == get_model(b).name
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------
# Drafters (EAGLE / EAGLE-3 heads, MTP modules): data/drafters.csv, loaded in drafters.py
# --------------------------------------------------------------------------------------------------

_DRAFTER_NAMES = ("DrafterSpec", "drafter_from_hf_config", "drafters", "drafters_for", "get_drafter")
_HF_CONFIG_NAMES = ("model_from_hf_config", "model_from_hub", "hub_config_url", "HF_ENDPOINT_ENV",
                    "DEFAULT_HF_ENDPOINT")


def __getattr__(name: str):
    """Drafters (drafters.py) and Hugging Face configs (hf_config.py) are reachable through the catalog too:
    `catalog.get_drafter(...)`, `catalog.model_from_hf_config(...)`. Both modules import this one, hence lazily."""
    if name in _DRAFTER_NAMES:
        from specdec_lib import drafters

        return getattr(drafters, name)
    if name in _HF_CONFIG_NAMES:
        from specdec_lib import hf_config

        return getattr(hf_config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
