"""`specdec` as a user runs it: a subprocess, its output and its exit code.

The live path (measure against a real vLLM server that requires an API key, then memo from that run) is
tests/test_memo.py::test_a_run_with_an_api_key_leaves_no_key_in_memo_logs_or_files.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from specdec_lib.scenario import DEFAULT_SCENARIO, load_scenario

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_RUN = ROOT / "data" / "example-run"


def specdec(*args, cwd=None, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECDEC_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "specdec_lib.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def test_help_lists_the_commands_and_exit_codes():
    done = specdec("--help")
    assert done.returncode == 0
    for word in ("plan", "measure", "memo", "scenario", "Exit codes"):
        assert word in done.stdout
    for command in ("plan", "measure", "memo"):
        assert specdec(command, "--help").returncode == 0


def test_plan_on_the_default_scenario(tmp_path):
    done = specdec("plan", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Verdict:  LEAVE OFF" in done.stdout
    assert "vllm serve meta-llama/Llama-3.1-70B-Instruct" in done.stdout
    assert "--speculative-draft-tensor-parallel-size" in done.stdout


def test_plan_json_for_a_scenario_file():
    done = specdec("plan", "--json", "--scenario", ROOT / "scenarios" / "structured-extraction.toml")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["verdict"] == "use"
    assert all(r["status"] == "passed" for r in plan["reasons"])
    assert {r["source"] for r in plan["reasons"]} == {"assumed", "computed"}
    config = plan["command"]["speculative_config"]
    # the k schedule comes from the load model's crossover batch (first batch size without a gain)
    first, off = config["num_speculative_tokens_per_batch_size"]
    assert first == [1, plan["load"]["crossover_batch"] - 1, 5] and off[0] == plan["load"]["crossover_batch"]


def test_a_run_of_another_server_is_not_evidence_for_the_scenario(tmp_path):
    # Why 1 of issue 10: the example run was measured on the tiny demo model at k = 4; it must not count as
    # measured acceptance for the default Llama-3.1-70B k = 5 scenario, and must say why.
    done = specdec("plan", "--json", "--run", EXAMPLE_RUN)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    reasons = {r["condition"]: r for r in plan["reasons"]}
    assert reasons["acceptance_band"]["source"] != "measured" and reasons["acceptance_band"]["status"] == "unknown"
    assert reasons["acceptance_validated"]["status"] == "failed"
    assert reasons["evidence_applies"]["status"] == "failed"
    assert "tiny-target" in reasons["evidence_applies"]["detail"]
    assert plan["load"]["crossover_batch"] is None      # no k schedule built from a foreign measurement
    assert "num_speculative_tokens_per_batch_size" not in plan["command"]["speculative_config"]
    # A scenario of the run's own configuration (served model tiny-target, k = 4, T = 0.7) takes it as measured.
    text = (ROOT / "scenarios" / "default.toml").read_text()
    text = text.replace('target_model = "meta-llama/Llama-3.1-70B-Instruct"', 'target_model = "tiny-target"')
    text = text.replace("num_speculative_tokens = 5", "num_speculative_tokens = 4")
    (tmp_path / "tiny.toml").write_text(text)
    own = json.loads(specdec("plan", "--json", "--scenario", tmp_path / "tiny.toml", "--run", EXAMPLE_RUN).stdout)
    band = next(r for r in own["reasons"] if r["condition"] == "acceptance_band")
    assert band["source"] == "measured"
    assert own["acceptance"][0]["source"] == "measured"


def test_bad_input_exits_2_naming_the_field(tmp_path):
    text = (ROOT / "scenarios" / "default.toml").read_text().replace("temperature = 0.7", "temperature = 9.0")
    (tmp_path / "bad.toml").write_text(text)
    done = specdec("plan", "--scenario", tmp_path / "bad.toml")
    assert done.returncode == 2
    assert "temperature" in done.stderr and "bad.toml" in done.stderr
    missing = specdec("memo", "--scenario", tmp_path / "nope.toml", "-o", tmp_path / "m.html")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    not_a_run = specdec("memo", "--run", tmp_path, "-o", tmp_path / "m.html")
    assert not_a_run.returncode == 2 and "not a run folder" in not_a_run.stderr
    usage = specdec("plan", "--no-such-flag")
    assert usage.returncode == 2


def test_memo_on_a_fresh_setup_with_no_endpoint(tmp_path):
    out = tmp_path / "out" / "memo.html"
    done = specdec("memo", "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert 'id="verdict">leave off<' in html
    assert "No measurement run given" in html
    assert "[memo] wrote" in done.stderr             # progress on stderr, the path on stdout
    assert done.stdout.strip() == str(out)


def test_memo_with_a_recorded_run_includes_the_measurements(tmp_path):
    out = tmp_path / "memo.html"
    done = specdec("memo", "--run", EXAMPLE_RUN, "-o", out)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    metadata = json.loads((EXAMPLE_RUN / "metadata.json").read_text())
    assert metadata["run_id"] in html and "acceptance-table" in html
    # T=0 interval of the recorded run: 221 accepted of 308 draft tokens
    assert f"{221 / 308:.3f}" in html


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_measure_against_nothing_exits_3_and_never_prints_the_key(tmp_path):
    key = "sk-cli-test-never-printed-81f2"
    done = specdec("measure", "--url", f"http://127.0.0.1:{_free_port()}", "--api-key-env", "SPECDEC_KEY",
                   "--runs-dir", tmp_path / "runs", "--no-progress", env_extra={"SPECDEC_KEY": key})
    assert done.returncode == 3, done.stderr
    assert "refused" in done.stderr
    assert key not in done.stdout + done.stderr
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert key not in path.read_text()


def test_measure_without_the_named_key_variable_exits_2():
    done = specdec("measure", "--url", "http://127.0.0.1:9", "--api-key-env", "SPECDEC_UNSET_VARIABLE")
    assert done.returncode == 2 and "SPECDEC_UNSET_VARIABLE" in done.stderr


def test_scenario_command_writes_the_default(tmp_path):
    done = specdec("scenario", "-o", tmp_path / "s.toml")
    assert done.returncode == 0
    assert load_scenario(tmp_path / "s.toml") == DEFAULT_SCENARIO


@pytest.mark.parametrize("command", [
    ("measure", "--url", "http://127.0.0.1:9"),
    ("predict", "--target", "http://127.0.0.1:9", "--draft", "http://127.0.0.1:9"),
    ("watch", "--url", "http://127.0.0.1:9", "--k", "4", "--duration-s", "1"),
], ids=lambda c: c[0])
def test_every_command_refuses_a_key_with_a_line_break_without_printing_it(command, tmp_path):
    key = "sk-cli-crlf-never-printed-5e0c"
    done = specdec(*command, "--api-key-env", "SPECDEC_KEY", "--runs-dir", tmp_path / "runs",
                   env_extra={"SPECDEC_KEY": key + "\r\n"})
    assert done.returncode == 2, done.stderr
    assert "--api-key-env=SPECDEC_KEY" in done.stderr
    assert key not in done.stdout + done.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything was written
