"""Bad input from the user's side (command-line values, files, run folders, configs): a clear message naming the
field or file, within the documented exit codes, never a traceback. No server needed except where said."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from specdec_lib import cli, runs, scenario
from specdec_lib.catalog import model_from_hf_config
from specdec_lib.scenario import DEFAULT_SCENARIO

EXAMPLE_RUN = Path(__file__).resolve().parent.parent / "data" / "example-run"


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


def copy_of_example_run(tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(EXAMPLE_RUN, dest)
    return dest


# --------------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize("argv, words", [
    (["--concurrency", ""], "--concurrency=''"),
    (["--concurrency", "1,4"], "a temperature sweep takes one number"),
    (["--timeout-s", "nan"], "--timeout-s=nan"),
    (["--timeout-s", "-1"], "--timeout-s=-1"),
    (["--max-duration-s", "inf"], "--max-duration-s=inf"),
    (["--sweep", "load", "--rates", "inf"], "request_rates_qps=[inf]"),
])
def test_bad_measure_values_exit_2_naming_the_option(argv, words, capsys):
    # a closed port: every value above must be refused before anything is sent
    code, err = run_cli(capsys, "measure", "--url", "http://127.0.0.1:9", *argv)
    assert code == cli.EXIT_BAD_INPUT and words in err


def test_prompts_that_are_a_directory_or_not_utf8_are_named(tmp_path, capsys):
    folder = tmp_path / "set.jsonl"
    folder.mkdir()
    code, err = run_cli(capsys, "measure", "--url", "http://127.0.0.1:9", "--prompts", folder)
    assert code == cli.EXIT_BAD_INPUT and str(folder) in err and "directory" in err
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"prompt": "caf\xe9"}\n'.encode("latin-1"))
    from specdec_lib import loadtest

    with pytest.raises(ValueError, match=f"prompts file {latin}: not UTF-8"):
        loadtest.load_prompts(latin)


def test_an_unwritable_or_file_runs_dir_exits_2_naming_it(tmp_path, capsys):
    from hostile_server import HostileServer

    not_a_dir = tmp_path / "runs"
    not_a_dir.write_text("I am a file")
    with HostileServer() as srv:
        code, err = run_cli(capsys, "measure", "--url", srv.url, "--runs-dir", not_a_dir, "--no-progress")
        assert code == cli.EXIT_BAD_INPUT and str(not_a_dir) in err
        code, err = run_cli(capsys, "measure", "--url", srv.url, "--runs-dir", not_a_dir / "below",
                            "--no-progress")
        assert code == cli.EXIT_BAD_INPUT and str(not_a_dir) in err


def test_memo_output_that_is_a_directory_exits_2_naming_it(tmp_path, capsys):
    code, err = run_cli(capsys, "memo", "-o", tmp_path)
    assert code == cli.EXIT_BAD_INPUT and str(tmp_path) in err


# -------------------------------------------------------------------------------------------- run folders
@pytest.mark.parametrize("damage, words", [
    (lambda p: (p / "metadata.json").write_text("{not json"), "metadata.json: not valid JSON"),
    (lambda p: (p / "metadata.json").write_bytes(b'{"kind": "sw\xffeep"}'), "metadata.json: not UTF-8"),
    (lambda p: (p / "metadata.json").write_text("[1, 2]"), "metadata.json: expected a JSON object"),
    (lambda p: (p / "requests.jsonl").write_bytes(b'{"index": 0, "label": "T=0"}\n\xff\xfe\n{"index": 1}\n'),
     "requests.jsonl: not UTF-8"),
    (lambda p: (p / "requests.jsonl").write_text('{"index": 0, "label": "T=0"}\n{"cut"\n{"index": 1}\n'),
     "requests.jsonl:2: not valid JSON and not the last line"),
    (lambda p: (p / "requests.jsonl").write_text('{"label": "T=0"}\n'), "requests.jsonl:1: expected an object"),
    (lambda p: ((p / "requests.jsonl").unlink(), (p / "requests.jsonl").mkdir()), "requests.jsonl: expected a file"),
])
def test_a_damaged_run_folder_is_named_in_a_clear_error(damage, words, tmp_path, capsys):
    run = copy_of_example_run(tmp_path)
    damage(run)
    with pytest.raises(ValueError, match=words):
        runs.load_run(run)
    code, err = run_cli(capsys, "plan", "--run", run)
    assert code == cli.EXIT_BAD_INPUT and words.split(":")[0] in err
    code, err = run_cli(capsys, "measure", "--url", "http://127.0.0.1:9", "--resume", run)
    assert code in (cli.EXIT_BAD_INPUT, cli.EXIT_UNREACHABLE)


def test_a_run_given_as_a_file_is_refused_naming_it(tmp_path, capsys):
    not_a_run = tmp_path / "run.json"
    not_a_run.write_text("{}")
    with pytest.raises(ValueError, match="not a directory"):
        runs.load_run(not_a_run)
    code, err = run_cli(capsys, "measure", "--url", "http://127.0.0.1:9", "--resume", not_a_run)
    assert code == cli.EXIT_BAD_INPUT and str(not_a_run) in err


# ------------------------------------------------------------------------------------------ configs, scenario
BASE_CONFIG = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 256,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048,
               "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.mark.parametrize("field, value", [
    ("head_dim", -128), ("head_dim", 0), ("head_dim", "128"), ("num_key_value_heads", -2),
    ("tie_word_embeddings", "false"), ("attention_bias", "false"), ("mlp_bias", "false"),
])
def test_an_hf_config_with_an_impossible_field_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=f"field '{field}'"):
        model_from_hf_config({**BASE_CONFIG, field: value}, name="bad")


def test_an_hf_config_file_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "config.json").write_bytes(json.dumps(BASE_CONFIG).encode().replace(b"llama", b"ll\xe4ma"))
    with pytest.raises(ValueError, match="config.json: not UTF-8"):
        model_from_hf_config(tmp_path)


def test_a_huge_k_is_refused_where_the_scenario_is_read(tmp_path):
    with pytest.raises(ValueError, match="num_speculative_tokens=1000000 .*at most"):
        dataclasses.replace(DEFAULT_SCENARIO, num_speculative_tokens=1_000_000)
    bound = scenario.MAX_NUM_SPECULATIVE_TOKENS
    assert dataclasses.replace(DEFAULT_SCENARIO, num_speculative_tokens=bound).num_speculative_tokens == bound
    path = scenario.save_scenario(DEFAULT_SCENARIO, tmp_path / "s.toml")
    path.write_text(path.read_text().replace("num_speculative_tokens = 5", "num_speculative_tokens = 1000000"))
    with pytest.raises(ValueError, match="num_speculative_tokens"):
        scenario.load_scenario(path)


def test_every_entry_point_refuses_a_temperature_above_the_one_bound(tmp_path):
    """One bound (rules.MAX_TEMPERATURE) for the scenario, a request, a sweep, a load test and a prediction; each
    refuses before anything is sent (the client points at a closed port) and names the field."""
    from specdec_lib import loadtest, oracle_client, rules
    from specdec_lib.endpoint import EndpointClient

    too_hot = rules.MAX_TEMPERATURE + 0.5
    client = EndpointClient("http://127.0.0.1:9")  # the discard port: nothing may be sent
    calls = [
        ("temperature", lambda: client.stream(model="m", prompt="x", max_tokens=1, temperature=too_hot)),
        ("temperatures", lambda: loadtest.run_temperature_sweep(client, temperatures=(0.0, too_hot),
                                                                runs_dir=tmp_path, progress=False)),
        ("temperatures", lambda: loadtest.run_load_test(client, temperatures=(too_hot,), runs_dir=tmp_path,
                                                        progress=False)),
        ("temperatures", lambda: oracle_client.run_prediction(client, [], temperatures=(too_hot,),
                                                              runs_dir=tmp_path, progress=False)),
    ]
    for field, call in calls:
        with pytest.raises(ValueError, match=rf"{field}=.*{too_hot:g}.*0\.\.2"):
            call()
    assert list(tmp_path.iterdir()) == []  # refused before a run folder was created
    with pytest.raises(ValueError, match=r"temperature.*\[0, 2"):
        scenario.RequestClass("chat", 1.0, too_hot, 100, 100)
