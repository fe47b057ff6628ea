"""Faults a real vLLM server cannot be made to produce, against a DELIBERATELY MISBEHAVING fake (tests/oracle_fakes.py).

The tokenizer mismatch and a refused prompt_logprobs N are produced by real servers in test_oracle_live.py.
"""

from __future__ import annotations

import json

import pytest
from oracle_fakes import FakeOracleServer

from specdec_lib import cli, oracle_client, prediction, runs
from specdec_lib.endpoint import EndpointClient

KEY = "sk-oracle-secret-key"


def _predict(url: str, out, **kw):
    client = EndpointClient(url, api_key=KEY, timeout_s=10)
    return oracle_client.run_prediction(client, [EndpointClient(url, api_key=KEY, timeout_s=10)],
                                        prompts=["chat"], n_prompts=3, temperatures=(0.0, 1.0), ks=(2, 4),
                                        max_tokens=6, runs_dir=out, progress=False, **kw)


def test_a_server_without_prompt_logprobs_is_refused_naming_the_url(tmp_path):
    with FakeOracleServer("no_prompt_logprobs") as fake:
        with pytest.raises(oracle_client.OracleRefusal) as info:
            _predict(fake.url, tmp_path)
    exc = info.value
    assert exc.kind == "no_prompt_logprobs" and fake.url in str(exc) and "prompt log-probabilities" in str(exc)
    meta = runs.load_run(exc.run_path).metadata
    assert meta["status"] == "failed" and meta["error_kind"] == "no_prompt_logprobs" and fake.url in meta["error"]


def test_a_cut_answer_costs_one_record_and_a_resume_retries_it(tmp_path):
    with FakeOracleServer("cut") as fake:
        first = _predict(fake.url, tmp_path)
        assert first.errors, "the fake cuts every other teacher-forcing answer"
        assert all(r["error_kind"] == "stream_cut" and fake.url in r["error"] for r in first.errors)
        assert len(first.records) + len(first.errors) == 6  # 3 prompts x 2 temperatures: nothing dropped
        fake.set_behaviour("ok")
        resumed = _predict(fake.url, tmp_path, resume=first.path)
    assert resumed.path == first.path and not resumed.errors and len(resumed.records) == 6
    # The fake's draft is the target itself and T = 0 follows its argmax chain: everything is accepted.
    frame = resumed.to_frame()
    t0 = frame[(frame["temperature"] == 0.0) & (frame["k"] == 4) & (frame["candidate"] != "ngram")]
    assert set(t0["alpha"].round(9)) == {1.0} and set(t0["v1_rate"].round(9)) == {1.0}
    text = "".join(p.read_text() for p in first.path.iterdir())
    assert KEY not in text


def test_user_and_password_in_a_url_never_reach_the_run_folder(tmp_path):
    with FakeOracleServer("ok") as fake:
        url = fake.url.replace("http://", "http://alice:hunter2@")
        result = _predict(url, tmp_path)
    text = "".join(p.read_text() for p in result.path.iterdir())
    assert "hunter2" not in text and "alice" not in text and KEY not in text
    assert result.metadata["endpoint"] == fake.url
    est = result.estimates()
    assert est and all(e.source == "predicted" and e.origin == result.run_id for e in est)


def test_cli_predict_reports_the_refusal_with_the_url(tmp_path, capsys):
    with FakeOracleServer("no_prompt_logprobs") as fake:
        code = cli.main(["predict", "--target", fake.url, "--draft", fake.url, "--prompts", "chat", "--n-prompts", "2",
                         "--temperatures", "0", "--max-tokens", "4", "--runs-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ENDPOINT_ERROR and fake.url in err and "prompt log-probabilities" in err


def test_cli_predict_prints_the_table_and_the_run_folder(tmp_path, capsys):
    with FakeOracleServer("ok") as fake:
        code = cli.main(["predict", "--target", fake.url, "--draft", fake.url, "--prompts", "chat", "--n-prompts", "2",
                         "--temperatures", "0,1", "--k", "2,4", "--max-tokens", "4", "--runs-dir", str(tmp_path),
                         "--no-progress", "--json", "--cost-ratio", "0.1"])
    out = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK
    pred = prediction.load_prediction(out["run_path"])
    assert len(out["rows"]) == len(pred.to_frame()) == 2 * 3 * 2  # temps x (draft greedy, prob, ngram) x ks
    # alpha = 1 at T = 0 (the fake's draft is its target): speedup 3/1.2 = 2.5 at k = 2, 5/1.4 = 3.57 at k = 4
    best = [b for b in out["best_k"] if b["temperature"] == 0 and b["candidate"] != "ngram"]
    assert best and all(b["best_k"] == 4 and abs(b["speedup"] - 5 / 1.4) < 1e-9 for b in best)
