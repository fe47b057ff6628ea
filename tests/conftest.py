"""Shared fixtures: tiny local models, real vLLM servers (CPU build) and a kept output folder per test.

Fixtures (session-scoped unless said):

- ``vllm_venv`` -> Path of the ready vLLM virtual environment. Missing or incomplete: the test FAILS (never
  skips) telling you to run ``./run-tests``, which installs it.
- ``tiny_models`` -> ``specdec_lib.localserver.TinyModels`` with Path attributes ``target``, ``draft_copy``,
  ``draft_noise05``, ``draft_noise20``, ``draft_small`` (built once, cached in ``.cache/tiny-models/``).
- ``vllm_servers`` -> ``specdec_lib.localserver.ServerPool``:
      ``get(key, model="target", spec=None, extra_args=())`` starts a server on first use and caches it by key;
      ``get_named(name, extra_args=())`` for "baseline", "ngram", "draft_copy_prob", "draft_copy_greedy",
      "draft_noise05_prob", "draft_noise20_prob" (see ``localserver.NAMED_SERVERS``; k = 4 everywhere).
  At most ``POOL_MAX_LIVE`` (4) servers run at once (the least recently used is stopped first, and restarts on
  its next get); all are stopped at session end. The modules using the pool run last, in ``POOL_MODULE_ORDER``
  (fewest restarts). Servers run with ``--enforce-eager`` (same numbers, about half the start-up
  time). No server gets ``--per-request-spec-decode-metrics detailed`` unless asked:
      ``vllm_servers.get_named("draft_copy_prob", ("--per-request-spec-decode-metrics", "detailed"))``
  (the extra arguments become part of the key, so that is a separate server). Logs go to
  ``test-output/vllm-servers/<key>-port<port>.log`` and stay after the run.
- ``test_output_dir`` (per test) -> ``test-output/<test name>/``, emptied at the start of the test and kept after.

A test that uses ``vllm_servers`` is marked ``vllm`` automatically (``-m "not vllm"`` deselects them); mark
tests that start servers some other way with ``@pytest.mark.vllm`` yourself.
"""
from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

import pytest

from specdec_lib import localserver

TEST_OUTPUT_ROOT = localserver.project_root() / "test-output"


# Modules that share the session's server pool, in the order that restarts fewest servers (each start costs
# 30-80 s on 2 cores). Worked out from the servers each module asks for, in its own order (B = baseline, DCP =
# draft_copy_prob, [d] = with --per-request-spec-decode-metrics detailed):
#   faults B | notebooks_live DCP B | simulate_live B | vllm_kv_capacity B DCP draft_small_greedy |
#   endpoint_live B DCP[d] | prometheus_live DCP draft_noise20 | loadtest_live B DCP[d] noise05 noise20 ngram B |
#   oracle_live noise05 oracle_plain_noise05 B oracle_other_tokenizer ngram[d] B
# With POOL_MAX_LIVE = 4 this is 11 starts for the 10 distinct servers (alphabetical order and 2 live: 17).
# A new module using the pool: list it where the servers it asks for are already live. One not listed runs after
# these; every other module runs before them, while no pool server is up (the tests that start their own server
# then share the machine with none).
POOL_MODULE_ORDER = ("test_faults", "test_notebooks_live", "test_simulate_live", "test_vllm_kv_capacity",
                     "test_endpoint_live", "test_prometheus_live", "test_loadtest_live", "test_oracle_live")
# Each tiny server holds ~2.4 GB (PSS of its three processes, 1 GiB of it KV cache) and idles at ~1 % of a core:
# 4 of them plus one a test starts itself stay near 12 GB of a 24 GiB CI machine.
POOL_MAX_LIVE = 4


def pytest_collection_modifyitems(config, items):
    pool_modules = set()
    for item in items:
        if "vllm_servers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.vllm)
            pool_modules.add(item.module.__name__.rsplit(".", 1)[-1])

    def rank(item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1]
        if name in POOL_MODULE_ORDER:
            return 1 + POOL_MODULE_ORDER.index(name)
        return 1 + len(POOL_MODULE_ORDER) if name in pool_modules else 0

    items[:] = sorted(items, key=rank)  # stable: each module keeps its own order and stays contiguous


@pytest.fixture(scope="session")
def vllm_venv() -> Path:
    try:
        return localserver.require_venv()
    except localserver.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def tiny_models(vllm_venv) -> localserver.TinyModels:
    return localserver.ensure_tiny_models(venv=vllm_venv)


@pytest.fixture(scope="session")
def vllm_servers(tiny_models, vllm_venv):
    pool = localserver.ServerPool(tiny_models, TEST_OUTPUT_ROOT / "vllm-servers", venv=vllm_venv,
                                  max_live=POOL_MAX_LIVE)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def test_output_dir(request) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", request.node.name).strip("_")
    path = TEST_OUTPUT_ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in the main thread during the test, as in a terminal, even when the
    test process started with SIGINT ignored: a shell's background job (`./run-tests &`, nohup) inherits SIG_IGN,
    Python then installs no handler, and a test of Ctrl-C would find the signal ignored, not the code wrong."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
