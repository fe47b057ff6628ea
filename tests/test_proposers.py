"""The n-gram replay: a hand example, a brute-force search, and vLLM's own function run in the vLLM environment."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from specdec_lib import localserver, proposers


def brute_force(context: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """The documented rule, searched naively: the longest n in [min_n, max_n] whose suffix n-gram occurred earlier
    (any earlier start, overlaps allowed); the earliest such occurrence; the up to k tokens after it."""
    total = len(context)
    for n in range(min(max_n, total - 1), min_n - 1, -1):
        suffix = context[total - n:]
        for start in range(0, total - n):
            if context[start:start + n] == suffix:
                follow = start + n
                return context[follow:follow + min(k, total - follow)]
    return []


def test_hand_example_takes_the_earliest_of_the_longest_matches():
    # suffix "1 2 3" occurs at 0 and 4; the earliest (0) wins, followed by 4 1 2
    assert proposers.ngram_propose([1, 2, 3, 4, 1, 2, 3, 9, 1, 2, 3], 2, 4, 3) == [4, 1, 2]
    # only a 1-gram repeats and min_n is 2: nothing proposed
    assert proposers.ngram_propose([5, 6, 7, 5], 2, 4, 3) == []
    # max_model_len leaves room for one token only
    assert proposers.ngram_propose([1, 2, 3, 1, 2], 2, 4, 3, max_model_len=6) == [3]


def test_port_agrees_with_brute_force_on_random_sequences():
    rng = np.random.default_rng(5)
    for _ in range(3000):
        context = [int(x) for x in rng.integers(0, int(rng.integers(2, 6)), size=int(rng.integers(1, 30)))]
        min_n = int(rng.integers(1, 4))
        max_n = int(rng.integers(min_n, 6))
        k = int(rng.integers(1, 6))
        assert proposers.ngram_propose(context, min_n, max_n, k) == brute_force(context, min_n, max_n, k), \
            (context, min_n, max_n, k)


VLLM_SCRIPT = """
import json, sys
import numpy as np
from vllm.v1.spec_decode.ngram_proposer import _find_longest_matched_ngram_and_propose_tokens as f
cases = json.loads(sys.stdin.read())
print(json.dumps([f(np.array(c, dtype=np.int32), a, b, 1 << 20, k).tolist() for c, a, b, k in cases]))
"""


def test_port_agrees_with_vllms_own_proposer(vllm_venv):
    rng = np.random.default_rng(9)
    cases = []
    for _ in range(400):
        context = [int(x) for x in rng.integers(0, int(rng.integers(2, 5)), size=int(rng.integers(1, 40)))]
        min_n = int(rng.integers(1, 4))
        cases.append((context, min_n, int(rng.integers(min_n, 6)), int(rng.integers(1, 6))))
    done = subprocess.run([str(localserver.venv_python(vllm_venv)), "-c", VLLM_SCRIPT], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=300, env=localserver.quiet_env())
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    ours = [proposers.ngram_propose(c, a, b, k) for c, a, b, k in cases]
    assert ours == theirs
    assert sum(1 for x in ours if x) > 100  # the cases exercise proposals, not only empty answers


def test_proposals_follow_the_generated_text():
    config = proposers.NgramConfig(2, 3, 2)
    out = proposers.ngram_proposals([7, 8, 9, 7], [8, 5, 7, 8], config, max_tokens=5)
    # t=1: context 7 8 9 7 8 -> "7 8" seen at 0 -> propose 9 7; t=2: ... 8 5 -> none; t=3: ...5 7 -> none;
    # t=4: ...7 8 -> "7 8" earliest at 0 -> 9 7
    assert out == [[], [9, 7], [], [], [9, 7]]


def test_suffix_decoding_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="arctic-inference"):
        proposers.replay("suffix", [1], [2], proposers.NgramConfig(1, 2, 2), 3)
