"""vLLM 0.32's suffix decoding replayed over the target's own texts, with the real ``arctic-inference`` cache.

vLLM's ``SuffixDecodingProposer`` (``vllm/v1/spec_decode/suffix_decoding.py``) keeps one
``arctic_inference.suffix_decoding.SuffixDecodingCache``: a suffix tree of each active request's prompt and
response, and a global tree of the responses of every request it served (up to ``max_cached_requests``, FIFO
eviction). After every step it appends the tokens the step emitted (``add_active_response``), then drafts with
``speculate(pattern = the last max_tree_depth tokens, max_spec_tokens = min(k, max_model_len − tokens − 1),
max_spec_factor, min_token_prob)``: the better-scoring of the prompt tree's and the global tree's path. Drafts
have a variable length (0 .. k); an empty one is a step without a draft.

``replay`` makes the same calls, with the same parameters, in the same order. Which tokens each step emits
follows from the acceptance rule of a proposal sent without draft probabilities (``oracle`` module docstring): a
draft token is accepted exactly when it equals the token the target emitted there, so along the target's own text
the step boundaries are known. The proposer also runs after the step that finishes a request (the request is still
in the batch), so the cached response holds the last step's tokens past ``max_tokens`` too: the continuation must
be at least max_tokens + k long (``oracle_client`` generates that many).

What the replay assumes about the server's cache:
- the requests reach the server one at a time, in the order given (a run folder's record order, which is the order
  ``loadtest.run_temperature_sweep`` sends the same prompts in);
- the server's global tree starts empty: a server that has already served other traffic has those responses
  cached too, and may draft more (or other) tokens than predicted. Replaying a production log before the prompts
  would model a warm cache; nothing here does that.

``arctic-inference`` is a compiled package. ``replay_in_subprocess`` runs this file with a Python that has it
(the vLLM virtual environment ``./run-tests`` installs, or ``$SPECDEC_SUFFIX_PYTHON``) when the workbook's own
interpreter does not: the file imports nothing from the workbook so it can run there as a script (JSON on stdin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class SuffixConfig:
    """vLLM's ``--speculative-config`` fields for method "suffix" (defaults: vLLM 0.32's ``SpeculativeConfig``)."""

    max_tree_depth: int = 24
    max_cached_requests: int = 10000
    max_spec_factor: float = 1.0
    min_token_prob: float = 0.1
    max_model_len: int = 1 << 30

    def __post_init__(self) -> None:
        if self.max_tree_depth < 1 or self.max_cached_requests < 0 or self.max_spec_factor < 0 \
                or not 0.0 <= self.min_token_prob <= 1.0:
            raise ValueError(f"{self}: need max_tree_depth >= 1, max_cached_requests >= 0, max_spec_factor >= 0, "
                             f"min_token_prob in [0, 1] (vLLM's own checks)")

    def speculative_config(self, k: int) -> dict:
        """The server's ``--speculative-config`` for this replay (``max_model_len`` is the server's own flag)."""
        return {"method": "suffix", "num_speculative_tokens": k,
                "suffix_decoding_max_tree_depth": self.max_tree_depth,
                "suffix_decoding_max_cached_requests": self.max_cached_requests,
                "suffix_decoding_max_spec_factor": self.max_spec_factor,
                "suffix_decoding_min_token_prob": self.min_token_prob}


def accepted_prefix(draft: Sequence[int], text: Sequence[int], t: int) -> int:
    """How many leading draft tokens equal the emitted text from position t (a proposal without draft
    probabilities is accepted exactly where it equals the token emitted there)."""
    i = 0
    while i < len(draft) and t + i < len(text) and draft[i] == text[t + i]:
        i += 1
    return i


def steps(drafts: Sequence[Sequence[int]], text: Sequence[int], max_tokens: int) -> list[tuple[int, int]]:
    """(drafted, accepted) of each step with a draft along ``text``: what vLLM's per-request detailed metrics list
    (``per_step_drafted``, ``per_step_accepted``)."""
    out, t = [], 1
    while t < min(max_tokens, len(drafts)):
        accepted = accepted_prefix(drafts[t], text, t)
        if drafts[t]:
            out.append((len(drafts[t]), accepted))
        t += accepted + 1
    return out


def replay(requests: Sequence[tuple[Sequence[int], Sequence[int]]], config: SuffixConfig, k: int,
           max_tokens: int) -> list[list[list[int]]]:
    """Drafts of vLLM's suffix proposer for each (prompt ids, continuation) served in order on a fresh server.

    Returns, per request, a list indexed by the step start t (generated tokens so far; index 0 is the prefill):
    the draft of the step starting at t, and [] where no step starts. Needs ``arctic_inference``.
    """
    from arctic_inference.suffix_decoding import SuffixDecodingCache

    cache = SuffixDecodingCache(max_tree_depth=config.max_tree_depth,
                                max_cached_requests=config.max_cached_requests)
    out = []
    for index, (prompt, text) in enumerate(requests):
        prompt, text = [int(x) for x in prompt], [int(x) for x in text]
        req_id = f"replay-{index}"
        cache.start_request(req_id, prompt)
        drafts: list[list[int]] = [[] for _ in range(min(max_tokens, len(text)))]
        t, emitted = 1, text[:1]  # the prefill emits token 0
        while True:
            cache.add_active_response(req_id, emitted)
            num_tokens = len(prompt) + t
            draft: list[int] = []
            if num_tokens < config.max_model_len:
                pattern = (prompt + text[:t])[max(0, num_tokens - config.max_tree_depth):]
                draft = list(cache.speculate(req_id, pattern,
                                             max_spec_tokens=min(k, config.max_model_len - num_tokens - 1),
                                             max_spec_factor=config.max_spec_factor,
                                             min_token_prob=config.min_token_prob).token_ids)
            if t >= max_tokens or t >= len(text):
                break  # the request finished with the last step: that draft is never verified
            drafts[t] = draft
            step = accepted_prefix(draft, text, t) + 1
            emitted, t = text[t:t + step], t + step
        cache.stop_request(req_id)
        out.append(drafts)
    return out


def have_arctic_inference() -> bool:
    try:
        import arctic_inference.suffix_decoding  # noqa: F401
    except ImportError:
        return False
    return True


def replay_runs(worlds: Sequence[Sequence[tuple[Sequence[int], Sequence[int]]]], config: SuffixConfig,
                ks: Sequence[int], max_tokens: int, python: str | Path | None = None) -> list[dict[int, list]]:
    """``replay`` for every world (one ordered pass over the requests each) and every k: ``out[w][k]``.

    Runs here when ``arctic_inference`` imports, else in ``python`` (default ``$SPECDEC_SUFFIX_PYTHON``, else the
    vLLM virtual environment's interpreter). Raises RuntimeError naming the interpreter when neither has it.
    """
    job = {"worlds": [[[list(p), list(c)] for p, c in world] for world in worlds], "config": asdict(config),
           "ks": [int(k) for k in ks], "max_tokens": int(max_tokens)}
    if python is None and have_arctic_inference():
        return _run_job(job)
    python = python or interpreter()
    done = _run_in(python, [str(Path(__file__).resolve())], json.dumps(job))
    if done.returncode != 0:
        raise RuntimeError(f"suffix decoding replay failed in {python}: {done.stderr[-1500:]}")
    return [{int(k): v for k, v in world.items()} for world in json.loads(done.stdout)]


def interpreter() -> Path:
    """The Python that runs the replay when this one lacks arctic-inference: ``$SPECDEC_SUFFIX_PYTHON``, else the
    vLLM virtual environment's."""
    from specdec_lib.vllm_venv import default_venv_path, venv_python

    return Path(os.environ.get("SPECDEC_SUFFIX_PYTHON") or venv_python(default_venv_path()))


def _run_in(python: str | Path, args: list[str], stdin: str = "") -> subprocess.CompletedProcess:
    try:
        return subprocess.run([str(python), *args], input=stdin, capture_output=True, text=True, timeout=600,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    except OSError as exc:
        return subprocess.CompletedProcess([str(python)], 127, "", str(exc))


def check_available() -> None:
    """Raise RuntimeError (saying how to fix it) unless this Python or ``interpreter()`` imports arctic-inference."""
    if have_arctic_inference():
        return
    from specdec_lib.vllm_venv import ARCTIC_DIST, ARCTIC_VERSION

    python = interpreter()
    done = _run_in(python, ["-c", "import arctic_inference.suffix_decoding"])
    if done.returncode != 0:
        raise RuntimeError(
            f"suffix decoding cannot be replayed: neither this Python nor {python} imports arctic_inference "
            f"({done.stderr.strip().splitlines()[-1:] or 'no output'}); install it with `pip install --no-deps "
            f"{ARCTIC_DIST}=={ARCTIC_VERSION}` (a C++ build from the source package: needs g++ and cmake)"
            f", or point $SPECDEC_SUFFIX_PYTHON at a Python that has it (./run-tests puts it in the vLLM venv)")


def _run_job(job: dict) -> list[dict[int, list]]:
    config = SuffixConfig(**job["config"])
    return [{k: replay(world, config, k, job["max_tokens"]) for k in job["ks"]} for world in job["worlds"]]


if __name__ == "__main__":  # run by replay_runs in an interpreter that has arctic-inference
    print(json.dumps(_run_job(json.loads(sys.stdin.read()))))
