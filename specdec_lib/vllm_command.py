"""The configuration to run: today's `vllm serve ... --speculative-config '{json}'` and the source's V0 flags.

Pure: a scenario (and the load model's crossover batch, computed elsewhere) in, argv out. What today's vLLM
accepts was read from vLLM 0.32.0's source:

- `vllm/config/speculative.py` (`SpeculativeConfig`): keys `method`, `model`, `num_speculative_tokens`,
  `draft_tensor_parallel_size` (1 or the target's TP), `quantization` (the draft's), `prompt_lookup_max/min`
  (n-gram), and `num_speculative_tokens_per_batch_size`, a list of `[range_start, range_end, k]` with inclusive,
  non-overlapping ranges, the first starting at 1, k >= 0 (`vllm/v1/spec_decode/dynamic/utils.py`); each k is
  clamped to `num_speculative_tokens`, gaps and the tail carry the previous k forward. k = 0 turns speculation
  off for that batch-size range: today's replacement for V0's `--speculative-disable-by-batch-size`.
- `vllm/v1/spec_decode/draft_model.py`: the draft-model proposer refuses a draft TP different from the target's
  (`_raise_if_draft_tp_mismatch`), although `SpeculativeConfig` itself accepts 1.
- `vllm/model_executor/layers/quantization/__init__.py`: `bitsandbytes` (the source's example) is no longer a
  quantization method; INT8 dense models are served from a pre-quantized checkpoint (compressed-tensors W8A8),
  FP8 can be quantized on load from a BF16 checkpoint (`fp8`).

Version ranges of the legacy flags (evidence in `LEGACY_FLAG_VERSIONS`): the individual V0 flags
(`--speculative-model`, `--num-speculative-tokens`, `--speculative-draft-tensor-parallel-size`,
`--speculative-model-quantization`, `--speculative-disable-by-batch-size`) were folded into `--speculative-config`
by vLLM PR #14434 (merged 2025-03-07, released in 0.8.0, old flags deprecated) and deleted by PR #15466 (merged
2025-03-31): the last release that accepts them is 0.8.2. `disable_by_batch_size` lived on as a
`--speculative-config` key but only the V0 engine read it; V0 was removed in 0.10.0 (PR #35060, which deleted the
dead key in 2026-02, says so). `num_speculative_tokens_per_batch_size` (dynamic speculative decoding, PR #32374)
is present in 0.32.0, checked in its source.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass

from specdec_lib.scenario import Scenario

CHECKED_VLLM_VERSION = "0.32.0"
DEFAULT_MAX_NUM_SEQS = 1024
"""vLLM 0.32's default `max_num_seqs` for the API server on GPUs with >= 70 GiB (engine/arg_utils.py)."""

# Our precision names -> vLLM's `--quantization` / speculative-config `quantization` value.
VLLM_QUANTIZATION: dict[str, str | None] = {
    "bf16": None,
    "fp16": None,
    "fp8": "fp8",                      # quantized on load from a BF16 checkpoint
    "int8": "compressed-tensors",      # a pre-quantized W8A8 / W8A16 checkpoint (e.g. an llm-compressor export)
    "int4-awq": "awq_marlin",          # a pre-quantized AWQ checkpoint
    "int4": "awq_marlin",
    "int4-gptq": "gptq_marlin",        # a pre-quantized GPTQ checkpoint
}
PREQUANTIZED_CHECKPOINT = frozenset({"int8", "int4-awq", "int4", "int4-gptq"})
VLLM_DTYPE = {"fp16": "float16"}  # everything else computes in bfloat16 (the source's `--dtype bfloat16`)


@dataclass(frozen=True)
class VersionRange:
    """vLLM releases a flag or key applies to (inclusive; None = open end) and the evidence for the bounds."""

    first: str | None
    last: str | None
    evidence: str

    def label(self) -> str:
        if self.first and self.last:
            return f"vLLM {self.first} – {self.last}"
        if self.first:
            return f"vLLM >= {self.first}"
        if self.last:
            return f"vLLM <= {self.last}"
        return "any vLLM"


TODAY = VersionRange(
    "0.8.0", None,
    "--speculative-config JSON since PR #14434 (0.8.0); keys and rules checked in vLLM 0.32.0's source")
DYNAMIC_K = VersionRange(
    None, None,
    "num_speculative_tokens_per_batch_size: dynamic speculative decoding, PR #32374; present in vLLM 0.32.0 "
    "(checked); older servers reject the key")
LEGACY_FLAG_VERSIONS: dict[str, VersionRange] = {
    "--speculative-model": VersionRange("0.4.1", "0.8.2", "added with SpeculativeConfig (PR #3706); "
                                        "deprecated by PR #14434 (0.8.0), removed by PR #15466 (after 0.8.2)"),
    "--num-speculative-tokens": VersionRange("0.4.1", "0.8.2", "as --speculative-model"),
    "--speculative-draft-tensor-parallel-size": VersionRange("0.4.3", "0.8.2", "removed by PR #15466"),
    "--speculative-model-quantization": VersionRange("0.5.0", "0.8.2", "removed by PR #15466"),
    "--speculative-disable-by-batch-size": VersionRange(
        "0.4.3", "0.8.2", "added by PR #4592 (dynamic spec decode, V0 engine); removed by PR #15466"),
    "--ngram-prompt-lookup-max": VersionRange("0.4.3", "0.8.2", "removed by PR #15466"),
    "--ngram-prompt-lookup-min": VersionRange("0.4.3", "0.8.2", "removed by PR #15466"),
}
LEGACY_V0_ENGINE = VersionRange(
    "0.4.1", "0.9.2", "the V0 engine (the only one that honoured disable-by-batch-size) was removed in 0.10.0")


@dataclass(frozen=True)
class ServeCommand:
    """A server command line: argv, the `--speculative-config` dict (None = no speculation), what it needs."""

    argv: tuple[str, ...]
    speculative_config: dict | None
    applies_to: VersionRange
    notes: tuple[str, ...] = ()

    def shell(self) -> str:
        """One command, one option per line, quoted for a POSIX shell."""
        parts = [shlex.quote(a) for a in self.argv]
        lines: list[str] = []
        current: list[str] = []
        for token in parts:
            if token.startswith("--") and current:
                lines.append(" ".join(current))
                current = []
            current.append(token)
        lines.append(" ".join(current))
        return " \\\n    ".join(lines)


def k_schedule(crossover_batch: float | None, num_speculative_tokens: int, *,
               max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> list[list[int]] | None:
    """`num_speculative_tokens_per_batch_size` from the load model's crossover batch size.

    crossover_batch is `load.crossover_batch`: the smallest running batch at which speculation no longer pays.
    Speculate with k up to the batch before it (ceil(crossover) - 1) and with k = 0 (speculation off) from it on.
    None when there is no crossover below max_num_seqs (speculation predicted to help at every batch size: no
    schedule needed) and when the crossover is 1 (no batch size gains: the decision says leave it off).
    """
    if not isinstance(num_speculative_tokens, int) or num_speculative_tokens < 1:
        raise ValueError(f"num_speculative_tokens={num_speculative_tokens!r} is not accepted: an integer >= 1")
    if not isinstance(max_num_seqs, int) or max_num_seqs < 2:
        raise ValueError(f"max_num_seqs={max_num_seqs!r} is not accepted: an integer >= 2")
    if crossover_batch is None:
        return None
    if isinstance(crossover_batch, bool) or not isinstance(crossover_batch, (int, float)) \
            or math.isnan(crossover_batch):
        raise ValueError(f"crossover_batch={crossover_batch!r} is not accepted: None or a batch size")
    last_speculative_batch = math.ceil(crossover_batch) - 1
    if last_speculative_batch < 1 or last_speculative_batch >= max_num_seqs:
        return None
    return [[1, last_speculative_batch, num_speculative_tokens], [last_speculative_batch + 1, max_num_seqs, 0]]


def _quantization(precision: str, field_name: str) -> str | None:
    try:
        return VLLM_QUANTIZATION[precision]
    except KeyError:
        raise ValueError(f"{field_name}={precision!r} is not accepted: one of {', '.join(VLLM_QUANTIZATION)}") from None


def speculative_config(scenario: Scenario, *, crossover_batch: float | None = None,
                       draft_model_path: str | None = None,
                       max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> dict | None:
    """The `--speculative-config` dict for vLLM >= 0.8 (keys as in 0.32.0); None when method == "none"."""
    if scenario.method == "none":
        return None
    config: dict = {"method": scenario.method, "num_speculative_tokens": scenario.num_speculative_tokens}
    if scenario.method == "ngram":
        config["prompt_lookup_max"] = scenario.prompt_lookup_max
        config["prompt_lookup_min"] = scenario.prompt_lookup_min
    else:
        config["model"] = draft_model_path or scenario.draft_model
        if scenario.method == "draft_model" and scenario.draft_tensor_parallel_size != scenario.tensor_parallel_size:
            raise ValueError(
                f"draft_tensor_parallel_size={scenario.draft_tensor_parallel_size} is not accepted by vLLM "
                f"{CHECKED_VLLM_VERSION} for method 'draft_model': it must equal tensor_parallel_size "
                f"({scenario.tensor_parallel_size}) (vllm/v1/spec_decode/draft_model.py); the source's TP-1 draft "
                f"only ran on the V0 engine (<= 0.9)")
        config["draft_tensor_parallel_size"] = scenario.draft_tensor_parallel_size
        quantization = _quantization(scenario.draft_precision, "draft_precision")
        if quantization is not None:
            config["quantization"] = quantization
    schedule = k_schedule(crossover_batch, scenario.num_speculative_tokens, max_num_seqs=max_num_seqs)
    if schedule is not None:
        config["num_speculative_tokens_per_batch_size"] = schedule
    return config


def serve_command(scenario: Scenario, *, crossover_batch: float | None = None,
                  target_model_path: str | None = None, draft_model_path: str | None = None,
                  max_num_seqs: int = DEFAULT_MAX_NUM_SEQS) -> ServeCommand:
    """`vllm serve TARGET ... --speculative-config '{...}'` for today's vLLM (checked against 0.32.0)."""
    target_quantization = _quantization(scenario.target_precision, "target_precision")
    argv = ["vllm", "serve", target_model_path or scenario.target_model,
            "--tensor-parallel-size", str(scenario.tensor_parallel_size),
            "--gpu-memory-utilization", f"{scenario.gpu_memory_utilization:g}",
            "--max-model-len", str(scenario.context_len),
            "--dtype", VLLM_DTYPE.get(scenario.target_precision, "bfloat16")]
    notes = []
    if target_quantization is not None:
        argv += ["--quantization", target_quantization]
    if scenario.target_precision in PREQUANTIZED_CHECKPOINT:
        notes.append(f"target_precision {scenario.target_precision}: serve a pre-quantized checkpoint of "
                     f"{scenario.target_model} ({target_quantization}); vLLM {CHECKED_VLLM_VERSION} does not "
                     "quantize a "
                     f"dense model to {scenario.target_precision} on load.")
    if scenario.draft_model and scenario.draft_precision in PREQUANTIZED_CHECKPOINT:
        notes.append(f"draft_precision {scenario.draft_precision}: point `model` at a pre-quantized checkpoint of "
                     f"{scenario.draft_model}.")
    if scenario.kv_cache_dtype != "auto":
        argv += ["--kv-cache-dtype", scenario.kv_cache_dtype]
    if max_num_seqs != DEFAULT_MAX_NUM_SEQS:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    config = speculative_config(scenario, crossover_batch=crossover_batch, draft_model_path=draft_model_path,
                                max_num_seqs=max_num_seqs)
    if config is not None:
        argv += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
        if "num_speculative_tokens_per_batch_size" in config:
            first, off = config["num_speculative_tokens_per_batch_size"]
            notes.append(f"k = {first[2]} up to {first[1]} running requests, 0 (speculation off) above: the load "
                         f"model's crossover batch. Needs a vLLM with dynamic speculative decoding (0.32.0 has it).")
    return ServeCommand(tuple(argv), config, TODAY, tuple(notes))


def legacy_command(scenario: Scenario, *, crossover_batch: float | None = None,
                   target_model_path: str | None = None, draft_model_path: str | None = None) -> ServeCommand:
    """The source's V0 flags for servers up to vLLM 0.8.2 (`python -m vllm.entrypoints.openai.api_server`).

    `--speculative-disable-by-batch-size` is set to the last batch size that still gains (ceil(crossover) - 1):
    V0 stopped speculating for new requests once more than that many were queued (PR #4592).
    """
    argv = ["python", "-m", "vllm.entrypoints.openai.api_server",
            "--model", target_model_path or scenario.target_model]
    target_quantization = _quantization(scenario.target_precision, "target_precision")
    if target_quantization is not None:
        argv += ["--quantization", target_quantization]
    if scenario.method == "ngram":
        argv += ["--speculative-model", "[ngram]",
                 "--ngram-prompt-lookup-max", str(scenario.prompt_lookup_max),
                 "--ngram-prompt-lookup-min", str(scenario.prompt_lookup_min)]
    elif scenario.method == "draft_model":
        argv += ["--speculative-model", draft_model_path or scenario.draft_model or ""]
        draft_quantization = _quantization(scenario.draft_precision, "draft_precision")
        if draft_quantization is not None:
            argv += ["--speculative-model-quantization", draft_quantization]
        argv += ["--speculative-draft-tensor-parallel-size", str(scenario.draft_tensor_parallel_size)]
    elif scenario.method != "none":
        raise ValueError(f"method={scenario.method!r} has no V0 flag form here: use today's --speculative-config")
    if scenario.method != "none":
        argv += ["--num-speculative-tokens", str(scenario.num_speculative_tokens)]
        last_gain = None if crossover_batch is None else math.ceil(crossover_batch) - 1
        if last_gain is not None and 1 <= last_gain < DEFAULT_MAX_NUM_SEQS:
            argv += ["--speculative-disable-by-batch-size", str(last_gain)]
    argv += ["--tensor-parallel-size", str(scenario.tensor_parallel_size),
             "--gpu-memory-utilization", f"{scenario.gpu_memory_utilization:g}",
             "--max-model-len", str(scenario.context_len),
             "--dtype", VLLM_DTYPE.get(scenario.target_precision, "bfloat16")]
    used = [a for a in argv if a in LEGACY_FLAG_VERSIONS]
    notes = tuple(f"{flag}: {LEGACY_FLAG_VERSIONS[flag].label()} ({LEGACY_FLAG_VERSIONS[flag].evidence})"
                  for flag in used)
    last = "0.8.2" if used else None
    return ServeCommand(tuple(argv), None, VersionRange("0.4.1" if used else None, last,
                                                        "the V0 speculative flags' range"), notes)


# --- every method vLLM 0.32 accepts (added for the methods comparison) --------------------------------------------

MTP_METHODS = ("mtp", "deepseek_mtp", "qwen3_next_mtp", "qwen3_5_mtp", "glm4_moe_mtp", "gemma4_mtp", "mimo_mtp",
               "ernie_mtp")
"""A subset of vLLM 0.32's MTPModelTypes (`vllm/config/speculative.py`); "mtp" is the generic name."""
ALL_METHODS = ("draft_model", "eagle", "eagle3", "ngram", "suffix") + MTP_METHODS
SUFFIX_KEYS = ("suffix_decoding_max_tree_depth", "suffix_decoding_max_cached_requests",
               "suffix_decoding_max_spec_factor", "suffix_decoding_min_token_prob")


def method_speculative_config(method: str, *, num_speculative_tokens: int, model: str | None = None,
                              draft_tensor_parallel_size: int | None = None, quantization: str | None = None,
                              crossover_batch: float | None = None, max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
                              prompt_lookup_min: int | None = None, prompt_lookup_max: int | None = None,
                              parallel_drafting: bool = False, suffix: dict | None = None) -> dict:
    """`--speculative-config` for any method, with its own keys and the k schedule by batch size.

    draft_model / eagle / eagle3 carry `model` (the draft or the head's path/repo); an MTP method names no model
    (vLLM uses the target's own MTP layers); ngram carries prompt_lookup_min/max; suffix its
    suffix_decoding_* keys (vLLM needs `arctic-inference` installed to build a suffix config);
    `parallel_drafting` (P-EAGLE) only for eagle/eagle3 heads trained for it (vLLM loads their mask_hidden).
    """
    if method not in ALL_METHODS:
        raise ValueError(f"method={method!r} is not accepted: one of {', '.join(ALL_METHODS)}")
    if not isinstance(num_speculative_tokens, int) or num_speculative_tokens < 1:
        raise ValueError(f"num_speculative_tokens={num_speculative_tokens!r} is not accepted: an integer >= 1")
    config: dict = {"method": method, "num_speculative_tokens": num_speculative_tokens}
    if method in ("draft_model", "eagle", "eagle3"):
        if not model:
            raise ValueError(f"model={model!r} is not accepted: method {method!r} needs the draft's or head's path")
        config["model"] = model
        if draft_tensor_parallel_size is not None:
            config["draft_tensor_parallel_size"] = draft_tensor_parallel_size
        if quantization:
            config["quantization"] = quantization
    elif model:
        raise ValueError(f"model={model!r} is not accepted for method {method!r}: it runs no separate model")
    if method == "ngram":
        config["prompt_lookup_max"] = prompt_lookup_max or 4
        config["prompt_lookup_min"] = prompt_lookup_min or 2
        if config["prompt_lookup_min"] > config["prompt_lookup_max"]:
            raise ValueError(f"prompt_lookup_min={config['prompt_lookup_min']} is not accepted: at most "
                             f"prompt_lookup_max ({config['prompt_lookup_max']})")
    if method == "suffix":
        unknown = set(suffix or {}) - set(SUFFIX_KEYS)
        if unknown:
            raise ValueError(f"suffix={sorted(unknown)} is not accepted: keys among {', '.join(SUFFIX_KEYS)}")
        config.update(suffix or {})
    if parallel_drafting:
        if method not in ("eagle", "eagle3"):
            raise ValueError(f"parallel_drafting=True is not accepted for method {method!r}: EAGLE heads only")
        config["parallel_drafting"] = True
    schedule = k_schedule(crossover_batch, num_speculative_tokens, max_num_seqs=max_num_seqs)
    if schedule is not None:
        config["num_speculative_tokens_per_batch_size"] = schedule
    return config


def method_serve_command(scenario: Scenario, method: str, *, num_speculative_tokens: int, model: str | None = None,
                         crossover_batch: float | None = None, target_model_path: str | None = None,
                         max_num_seqs: int = DEFAULT_MAX_NUM_SEQS, **keys) -> ServeCommand:
    """`vllm serve` for the scenario's target with any method's `--speculative-config` (see
    `method_speculative_config`; `keys` are its method-specific keywords)."""
    import dataclasses

    base = serve_command(dataclasses.replace(scenario, method="none", draft_model=None),
                         target_model_path=target_model_path, max_num_seqs=max_num_seqs)
    quantization = None
    if method == "draft_model":
        quantization = _quantization(scenario.draft_precision, "draft_precision")
    config = method_speculative_config(
        method, num_speculative_tokens=num_speculative_tokens, model=model, quantization=quantization,
        draft_tensor_parallel_size=scenario.tensor_parallel_size if method in ("draft_model", "eagle", "eagle3")
        else None, crossover_batch=crossover_batch, max_num_seqs=max_num_seqs, **keys)
    notes = list(base.notes)
    if method == "suffix":
        notes.append("suffix decoding needs `pip install arctic-inference` in the server's environment "
                     "(vllm/config/speculative.py _validate_suffix_decoding).")
    argv = base.argv + ("--speculative-config", json.dumps(config, separators=(",", ":")))
    return ServeCommand(argv, config, TODAY, tuple(notes))
