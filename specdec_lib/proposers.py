"""vLLM's model-free proposers replayed over a token sequence (pure; no vLLM import).

n-gram (prompt lookup): a line-by-line port of ``_find_longest_matched_ngram_and_propose_tokens`` in
``vllm/v1/spec_decode/ngram_proposer.py`` (vLLM 0.32.0): find the longest n-gram, n in
[prompt_lookup_min, prompt_lookup_max], that ends the context and occurred earlier in it (the earliest occurrence
among the longest), and propose the up to k tokens that followed it. ``tests/test_proposers.py`` checks the port
against a brute-force search and against vLLM's own function run in the vLLM environment.

Suffix decoding is replayed in ``suffix_replay`` with the real ``arctic-inference`` cache (not ported: its drafts
depend on a suffix tree shared across requests, so it replays a whole run in order, not one sequence).

Acceptance of these drafts is counted, not estimated: a drafted token is accepted exactly where it equals the
token the target emitted there, at every temperature (``oracle`` module docstring, ``prediction.indicator_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class NgramConfig:
    """vLLM's ``--speculative-config`` fields for method "ngram"."""

    prompt_lookup_min: int
    prompt_lookup_max: int
    num_speculative_tokens: int
    max_model_len: int = 1 << 30

    def __post_init__(self) -> None:
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(f"prompt_lookup_min={self.prompt_lookup_min}, prompt_lookup_max="
                             f"{self.prompt_lookup_max}: need 1 <= min <= max")
        if self.num_speculative_tokens < 1:
            raise ValueError(f"num_speculative_tokens={self.num_speculative_tokens}: must be >= 1")


def ngram_propose(context: Sequence[int], min_n: int, max_n: int, k: int, max_model_len: int = 1 << 30) -> list[int]:
    """The tokens vLLM's n-gram proposer drafts after ``context`` (the prompt plus every generated token).

    KMP over the reversed context: lps[i] is the longest prefix of the reversed context that is also a suffix of
    its first i + 1 tokens, capped at max_n; a match length reaching the current longest moves the position (so
    the earliest occurrence in the original order wins among equals).
    """
    total = len(context)
    if total < min_n:
        return []
    k = min(k, max_model_len - total)
    if k <= 0:
        return []
    tokens = list(reversed(context))
    lps = [0] * max_n
    longest = position = 0
    prev = 0
    i = 1
    while i < total:
        if tokens[prev] == tokens[i]:
            prev += 1
            if prev >= longest:
                longest, position = prev, i
            if i < max_n:
                lps[i] = prev
            if prev == max_n:
                prev = lps[max_n - 1]
            i += 1
        elif prev != 0:
            prev = lps[prev - 1]
        else:
            i += 1
    if longest < min_n:
        return []
    start = total - 1 - position + longest
    k = min(k, total - start)
    return list(context[start:start + k])


def ngram_proposals(prompt_ids: Sequence[int], continuation: Sequence[int], config: NgramConfig,
                    max_tokens: int) -> list[list[int]]:
    """What the proposer drafts at each step start t = 1 .. max_tokens − 1 (index t; index 0 is the prefill).

    The context at step start t is the prompt plus the first t generated tokens (``num_tokens_no_spec``).
    """
    out: list[list[int]] = [[]]
    for t in range(1, min(max_tokens, len(continuation) + 1)):
        context = list(prompt_ids) + list(continuation[:t])
        out.append(ngram_propose(context, config.prompt_lookup_min, config.prompt_lookup_max,
                                 config.num_speculative_tokens, config.max_model_len))
    return out

