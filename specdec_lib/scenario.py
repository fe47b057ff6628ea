"""A plan's inputs: the `Scenario` dataclass, its validation, TOML save/load, and the built-in default.

Every number a plan, a verdict or a memo uses comes from one `Scenario` (what the user states) plus, optionally,
a measurement run (what was measured). Scenarios are frozen: change one with `dataclasses.replace`, which
re-runs the validation.

The default is the source's production example: Llama-3.1-70B in INT8 as the target and Llama-3.1-8B in BF16 as
the draft on 2x H100 SXM, TP 2, `--gpu-memory-utilization 0.92`, k = 5 (the source's
`--num-speculative-tokens 5`). Two choices differ from the source's command line because vLLM 0.32 would
reject or ignore them:

- draft tensor parallel size 2, not the source's 1: vLLM 0.32's `SpeculativeConfig` accepts 1 or the target's TP,
  but the draft-model proposer (`vllm/v1/spec_decode/draft_model.py`, `_raise_if_draft_tp_mismatch`) refuses a
  draft TP different from the target's ("must be the same"), so 1 with a TP-2 target fails at start-up today.
- utilization 0.92 is both the source's command-line value and vLLM 0.32's default.

The default workload is a general chat endpoint, the source's "Chat / general, ShareGPT, QPS 1" row (the vLLM
team's benchmark that saw 1.5x at QPS 1 and a 1.4x slowdown at high QPS): one request class at temperature 0.7
(a common chat default, exactly on the source's "median temperature above 0.7" boundary), 512 prompt tokens and
256 output tokens (ShareGPT turns are a few hundred tokens each way), acceptance not yet measured, and no
acceptance monitoring yet. The framework's verdict for it is "leave off" (no monitoring: the source's last
leave-it-off condition) until monitoring is in place, then "measure more" (temperature 0.7 > 0.5, acceptance
unknown): what a plan made before any measurement should say.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project requires tomli there
    import tomli as tomllib

import tomli_w

from specdec_lib import rules

METHODS = ("draft_model", "ngram", "eagle", "eagle3", "none")
"""Speculation methods a scenario may name (`none` = speculation off, the baseline)."""
METHODS_WITH_DRAFT_MODEL = ("draft_model", "eagle", "eagle3")
SLO_KINDS = ("tpot", "throughput", "e2e", "ttft")
"""Which latency the deployment is judged on. The source: speculation helps TPOT/throughput, not TTFT."""
KV_CACHE_DTYPES = ("auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2")
MAX_TEMPERATURE = rules.MAX_TEMPERATURE
SHARE_SUM_TOLERANCE = 1e-6
MAX_NUM_SPECULATIVE_TOKENS = 64
"""Upper bound on k: far above any useful draft length (vLLM's examples use 2-10), low enough that every loop over
k stays instant (a huge k made `specdec memo` spin for minutes)."""


def _fail(field_name: str, value: Any, accepted: str) -> None:
    raise ValueError(f"{field_name}={value!r} is not accepted: {accepted}")


@dataclass(frozen=True)
class RequestClass:
    """One kind of request in the workload: its share of requests, temperature and lengths.

    `alpha` is the per-token acceptance probability (Leviathan et al.'s alpha, what vLLM V0's acceptance gauge
    estimated), not vLLM V1's accepted/draft-tokens ratio: convert a V1 rate with
    `speculation.alpha_from_v1_rate(rate, k)` before putting it here. None = not known.
    """

    name: str
    share: float
    temperature: float
    prompt_tokens: int
    output_tokens: int
    alpha: float | None = None

    def __post_init__(self) -> None:
        prefix = f"workload[{self.name!r}]"
        if not isinstance(self.name, str) or not self.name.strip():
            _fail("workload.name", self.name, "a non-empty string")
        if not _is_number(self.share) or not (0.0 < self.share <= 1.0):
            _fail(f"{prefix}.share", self.share, "a fraction in (0, 1]")
        if not _is_number(self.temperature) or not (0.0 <= self.temperature <= MAX_TEMPERATURE):
            _fail(f"{prefix}.temperature", self.temperature, f"a number in [0, {MAX_TEMPERATURE}]")
        if not _is_int(self.prompt_tokens) or self.prompt_tokens < 1:
            _fail(f"{prefix}.prompt_tokens", self.prompt_tokens, "an integer >= 1")
        if not _is_int(self.output_tokens) or self.output_tokens < 1:
            _fail(f"{prefix}.output_tokens", self.output_tokens, "an integer >= 1")
        if self.alpha is not None and (not _is_number(self.alpha) or not (0.0 <= self.alpha <= 1.0)):
            _fail(f"{prefix}.alpha", self.alpha, "None or a per-token acceptance probability in [0, 1]")


@dataclass(frozen=True)
class Scenario:
    """Every input of a plan. Units: tokens, seconds, requests per second; memory comes from the catalog.

    `title` is the user's name for the plan; empty means "derived from the scenario" (`display_title`), so a
    title never describes another configuration than the one below it.
    """

    target_model: str
    draft_model: str | None
    method: str
    target_precision: str
    draft_precision: str
    gpu: str
    num_gpus: int
    tensor_parallel_size: int
    draft_tensor_parallel_size: int
    gpu_memory_utilization: float
    kv_cache_dtype: str
    context_len: int
    num_speculative_tokens: int
    qps: float
    workload: tuple[RequestClass, ...]
    slo: str
    monitoring_in_place: bool
    acceptance_validated_at_production_temperature: bool
    endpoint_url: str = ""
    measurement_run: str | None = None
    prediction_runs: tuple[str, ...] = ()
    """Acceptance-oracle run folders (`specdec predict`) whose predicted alpha is evidence for this plan."""
    calibration: str | None = None
    """A calibration file (`specdec calibrate`) for the load model's step times; None: the built-in H100 one."""
    notes: str = ""
    prompt_lookup_max: int = 4
    """n-gram window (only used when method == "ngram")."""
    prompt_lookup_min: int = 2
    title: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.workload, list):  # accept a list from callers; store the immutable tuple
            object.__setattr__(self, "workload", tuple(self.workload))
        for name in ("title", "target_model", "target_precision", "draft_precision", "gpu", "endpoint_url", "notes"):
            if not isinstance(getattr(self, name), str):
                _fail(name, getattr(self, name), "a string")
        for name in ("target_model", "target_precision", "gpu"):
            if not getattr(self, name).strip():
                _fail(name, getattr(self, name), "a non-empty string")
        if self.method not in METHODS:
            _fail("method", self.method, f"one of {', '.join(METHODS)}")
        if self.method in METHODS_WITH_DRAFT_MODEL:
            if not isinstance(self.draft_model, str) or not self.draft_model.strip():
                _fail("draft_model", self.draft_model, f"a model name (method {self.method!r} needs a draft model)")
        elif self.draft_model is not None:
            _fail("draft_model", self.draft_model, f"None (method {self.method!r} runs no draft model)")
        for name in ("num_gpus", "tensor_parallel_size", "draft_tensor_parallel_size", "context_len",
                     "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                _fail(name, value, "an integer >= 1")
        if self.num_speculative_tokens > MAX_NUM_SPECULATIVE_TOKENS:
            _fail("num_speculative_tokens", self.num_speculative_tokens, f"at most {MAX_NUM_SPECULATIVE_TOKENS}")
        if self.tensor_parallel_size > self.num_gpus:
            _fail("tensor_parallel_size", self.tensor_parallel_size, f"at most num_gpus ({self.num_gpus})")
        if self.draft_tensor_parallel_size not in (1, self.tensor_parallel_size):
            # vLLM's own rule (SpeculativeConfig._verify_and_get_draft_tp): 1 or the target's TP.
            _fail("draft_tensor_parallel_size", self.draft_tensor_parallel_size,
                  f"1 or tensor_parallel_size ({self.tensor_parallel_size})")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            _fail("prompt_lookup_min", self.prompt_lookup_min, f"at most prompt_lookup_max ({self.prompt_lookup_max})")
        if not _is_number(self.gpu_memory_utilization) or not (0.0 < self.gpu_memory_utilization <= 1.0):
            _fail("gpu_memory_utilization", self.gpu_memory_utilization, "a fraction in (0, 1]")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            _fail("kv_cache_dtype", self.kv_cache_dtype, f"one of {', '.join(KV_CACHE_DTYPES)}")
        if not _is_number(self.qps) or not (self.qps > 0.0) or math.isinf(self.qps):
            _fail("qps", self.qps, "a finite number of requests per second > 0")
        if self.slo not in SLO_KINDS:
            _fail("slo", self.slo, f"one of {', '.join(SLO_KINDS)}")
        for name in ("monitoring_in_place", "acceptance_validated_at_production_temperature"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")
        if self.measurement_run is not None and not isinstance(self.measurement_run, str):
            _fail("measurement_run", self.measurement_run, "None or the path of a run folder")
        if isinstance(self.prediction_runs, (list, str)):  # a list from TOML; one path given as a string
            runs = [self.prediction_runs] if isinstance(self.prediction_runs, str) else self.prediction_runs
            object.__setattr__(self, "prediction_runs", tuple(runs))
        if not isinstance(self.prediction_runs, tuple) or not all(
                isinstance(p, str) and p.strip() for p in self.prediction_runs):
            _fail("prediction_runs", self.prediction_runs, "a list of prediction run folder paths")
        if self.calibration is not None and (not isinstance(self.calibration, str) or not self.calibration.strip()):
            _fail("calibration", self.calibration, "None or the path of a calibration file (specdec calibrate)")
        if not self.workload:
            _fail("workload", self.workload, "at least one request class")
        names = set()
        for request_class in self.workload:
            if not isinstance(request_class, RequestClass):
                _fail("workload", request_class, "RequestClass entries")
            if request_class.name in names:
                _fail("workload.name", request_class.name, "names unique within the workload")
            names.add(request_class.name)
            if request_class.prompt_tokens + request_class.output_tokens > self.context_len:
                _fail(f"workload[{request_class.name!r}].prompt_tokens + output_tokens",
                      request_class.prompt_tokens + request_class.output_tokens,
                      f"at most context_len ({self.context_len})")
        total_share = sum(c.share for c in self.workload)
        if abs(total_share - 1.0) > SHARE_SUM_TOLERANCE:
            _fail("workload.share (sum)", round(total_share, 9), "shares that sum to 1")

    @property
    def speculative(self) -> bool:
        return self.method != "none"

    @property
    def display_title(self) -> str:
        """The user's title, or one derived from the models, precisions and GPUs (`derived_title`)."""
        return self.title.strip() or derived_title(self)


def _short(name: str | None) -> str:
    return "" if not name else name.rstrip("/").split("/")[-1].removesuffix("-Instruct")


def derived_title(scenario: Scenario) -> str:
    """'Llama-3.1-70B INT8 + Llama-3.1-8B draft on 2x H100-SXM, TP 2' (what a scenario without a title shows)."""
    what = f"{_short(scenario.target_model)} {scenario.target_precision.upper()}"
    if scenario.method == "draft_model":
        what += f" + {_short(scenario.draft_model)} draft"
    elif scenario.method != "none":
        what += f" + {scenario.method}" + (f" ({_short(scenario.draft_model)})" if scenario.draft_model else "")
    else:
        what += ", no speculation"
    return f"{what} on {scenario.num_gpus}x {scenario.gpu}, TP {scenario.tensor_parallel_size}"


def with_changes(scenario: Scenario, **changes) -> Scenario:
    """`dataclasses.replace` that keeps a derived title derived: a title equal to the old scenario's derived
    title (a saved default) is dropped, so the new title describes the new configuration."""
    if scenario.title.strip() == derived_title(scenario) and "title" not in changes:
        changes["title"] = ""
    return dataclasses.replace(scenario, **changes)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


DEFAULT_WORKLOAD = (
    RequestClass(name="chat", share=1.0, temperature=0.7, prompt_tokens=512, output_tokens=256, alpha=None),
)

DEFAULT_SCENARIO = Scenario(
    target_model="meta-llama/Llama-3.1-70B-Instruct",
    draft_model="meta-llama/Llama-3.1-8B-Instruct",
    method="draft_model",
    target_precision="int8",
    draft_precision="bf16",
    gpu="H100-SXM",
    num_gpus=2,
    tensor_parallel_size=2,
    draft_tensor_parallel_size=2,
    gpu_memory_utilization=0.92,
    kv_cache_dtype="auto",
    context_len=8192,
    num_speculative_tokens=5,
    qps=1.0,
    workload=DEFAULT_WORKLOAD,
    slo="tpot",
    monitoring_in_place=False,
    acceptance_validated_at_production_temperature=False,
    endpoint_url="",
    measurement_run=None,
    notes="Acceptance not measured yet: run `specdec measure` against a staging server at the production "
          "temperature, then rebuild the memo with --run.",
)


DEFAULT = DEFAULT_SCENARIO  # the name docs/design.md uses


# --- TOML ------------------------------------------------------------------------------------------------------

_SCENARIO_FIELDS = {f.name: f for f in dataclasses.fields(Scenario)}
_CLASS_FIELDS = {f.name: f for f in dataclasses.fields(RequestClass)}


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    """A plain dict (None values dropped, workload as a list of tables): what goes into TOML or JSON."""
    out: dict[str, Any] = {}
    for name in _SCENARIO_FIELDS:
        value = getattr(scenario, name)
        if name == "workload":
            out[name] = [{k: v for k, v in dataclasses.asdict(c).items() if v is not None} for c in value]
        elif name == "prediction_runs":
            if value:
                out[name] = list(value)
        elif value is not None and not (name == "title" and not value.strip()):
            out[name] = value
    return out


def scenario_from_dict(data: dict[str, Any], *, origin: str = "scenario") -> Scenario:
    """Build and validate a Scenario from a dict; unknown or missing keys are ValueErrors naming the key."""
    if not isinstance(data, dict):
        raise ValueError(f"{origin}: expected a table of scenario fields, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SCENARIO_FIELDS))
    if unknown:
        raise ValueError(f"{origin}: unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_SCENARIO_FIELDS)}")
    required = [n for n, f in _SCENARIO_FIELDS.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
                and n != "draft_model"]
    missing = [n for n in required if n not in data]
    if missing:
        raise ValueError(f"{origin}: missing field(s) {', '.join(missing)}")
    kwargs = dict(data)
    kwargs.setdefault("draft_model", None)
    workload = kwargs.get("workload")
    if not isinstance(workload, list):
        raise ValueError(f"{origin}: workload={workload!r} is not accepted: a list of [[workload]] tables")
    classes = []
    for i, entry in enumerate(workload):
        if not isinstance(entry, dict):
            raise ValueError(f"{origin}: workload[{i}]={entry!r} is not accepted: a table")
        bad = sorted(set(entry) - set(_CLASS_FIELDS))
        if bad:
            raise ValueError(f"{origin}: workload[{i}] unknown field(s) {', '.join(bad)}; "
                             f"accepted: {', '.join(_CLASS_FIELDS)}")
        need = [n for n, f in _CLASS_FIELDS.items() if f.default is dataclasses.MISSING and n not in entry]
        if need:
            raise ValueError(f"{origin}: workload[{i}] missing field(s) {', '.join(need)}")
        entry = dict(entry)
        for float_field in ("share", "temperature", "alpha"):  # TOML writes 1 for 1.0; both mean the same
            if _is_int(entry.get(float_field)):
                entry[float_field] = float(entry[float_field])
        try:
            classes.append(RequestClass(**entry))
        except ValueError as exc:
            raise ValueError(f"{origin}: {exc}") from None
    kwargs["workload"] = tuple(classes)
    for float_field in ("gpu_memory_utilization", "qps"):
        if _is_int(kwargs.get(float_field)):
            kwargs[float_field] = float(kwargs[float_field])
    try:
        return Scenario(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{origin}: {exc}") from None


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write the scenario as TOML (what `specdec --scenario` and the notebooks read back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(scenario_to_dict(scenario)), encoding="utf-8")
    return path


def load_scenario(path: str | Path) -> Scenario:
    """Read a TOML scenario file; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"scenario file {str(path)!r} does not exist") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return scenario_from_dict(data, origin=str(path))


def production_temperature_median(scenario: Scenario) -> float:
    """Share-weighted median temperature of the workload (the source's "median temperature")."""
    ordered = sorted(scenario.workload, key=lambda c: c.temperature)
    cumulative = 0.0
    for request_class in ordered:
        cumulative += request_class.share
        if cumulative >= 0.5 - SHARE_SUM_TOLERANCE:
            return request_class.temperature
    return ordered[-1].temperature
