"""The probe: a short set of closed-loop levels against a running endpoint, recorded as ordinary runs (I/O).

Batch size is set through concurrency (c requests always in flight, released together; what each level's steps
then held, decodes and the prompts that landed in them, is read from the records by `fit.step_composition`), the
output length through `max_tokens` with `ignore_eos` (every request generates exactly that many tokens), on a
speculative server the verified positions through its k, and the context (the KV each step reads) through the
prompts: the levels take the built-in short and long prompt sets in turn (`PROMPT_CLASSES`, about 50 and 190
tokens), alternating over the concurrencies and starting with the other set at the next output length, so every
concurrency is measured at both contexts and each output length (or part of an interleaved probe) holds both.
Attention's cost grows with the context, and a probe of one context cannot tell it from the per-sequence cost;
a design that gave each output length one set would read the machine's drift between its parts as a KV cost
(docs/simulation.md). Temperature 0, each prompt made unique by a random tag at its start
(`unique_prompt_file`): vLLM caches prefixes by default, and a repeated prompt would prefill almost for free,
hiding the per-token cost the fit needs. Each (concurrency, output length) level is its own
`loadtest.run_load_test` run folder, so the raw records stay on disk and load back; a first level of a few
requests warms the server up and is discarded.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from specdec_lib import loadtest, runs
from specdec_lib.endpoint import EndpointClient

DEFAULT_CONCURRENCY = (1, 2, 4, 8)
DEFAULT_OUTPUT_TOKENS = (32, 128)
# The built-in prompt sets by length (vLLM CPU server's tokenizer: ~45-60 and ~170-220 tokens). Level (i-th output
# length, j-th concurrency) takes PROMPT_CLASSES[(i + j) % 2] (`level_prompt_sets`).
PROMPT_CLASSES: tuple[tuple[str, ...], ...] = (("chat", "code"), ("summarisation", "json_extraction"))
WARMUP_REQUESTS = 2


@dataclass(frozen=True)
class ProbeResult:
    kind: str  # "baseline" or "speculative"
    server: dict  # endpoint.ServerInfo.as_dict(): identity and speculative settings, no key
    num_speculative_tokens: int  # 0 for the baseline
    run_paths: tuple[Path, ...]
    records: tuple[dict, ...]  # every level's records (runs.py schema), warm-up excluded


def unique_prompt_file(directory: str | Path, count: int, sets: Sequence[str] = loadtest.BUILTIN_PROMPT_SETS) -> Path:
    """A JSONL prompt file of `count` built-in prompts (cycled), each opened by a fresh random tag, so no two requests
    share a cached prefix, within a run or with an earlier one. Written into `directory`; returns its path."""
    rng = random.Random()  # deliberately unseeded: tags must differ from any earlier run's
    prompts = loadtest.load_prompts(tuple(sets))
    lines = []
    for i in range(count):
        p = prompts[i % len(prompts)]
        tag = f"{rng.getrandbits(48):012x}"
        lines.append(json.dumps({"id": f"{p.prompt_id}-{tag}", "set": p.prompt_set, "prompt": f"[{tag}] {p.text}"}))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"prompts-{rng.getrandbits(32):08x}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def level_prompt_sets(prompt_classes: Sequence[Sequence[str]], length_index: int, concurrency_index: int
                      ) -> tuple[str, ...]:
    """The prompt sets of the probe level at the given output length and concurrency (indices in the probe's
    sorted order): the classes in turn over the concurrencies, shifted by one at each output length."""
    return tuple(prompt_classes[(length_index + concurrency_index) % len(prompt_classes)])


def requests_for_level(concurrency: int, requests_per_level: int | None) -> int:
    """Requests in one level: given, or twice the concurrency with at least 4 (enough for a median step)."""
    return int(requests_per_level) if requests_per_level else max(4, 2 * int(concurrency))


def run_probe(client: EndpointClient, *, concurrency: Sequence[int] = DEFAULT_CONCURRENCY,
              output_tokens: Sequence[int] = DEFAULT_OUTPUT_TOKENS, requests_per_level: int | None = None,
              prompt_classes: Sequence[Sequence[str]] = PROMPT_CLASSES, first_length_index: int = 0,
              runs_dir: str | Path = "data/runs", request_timeout_s: float = 300.0,
              stop_event: threading.Event | None = None, progress: bool = True) -> ProbeResult:
    """Run the probe's levels in turn (lowest concurrency first) and return their records.

    The server's kind is discovered: speculative when it exposes vLLM's spec-decode counters (k from them). The
    levels' prompts: `level_prompt_sets` (built-in sets; `first_length_index` is the first output length's index
    in a probe run in parts).
    """
    conc = [int(c) for c in concurrency]
    outs = [int(n) for n in output_tokens]
    if not conc or any(c < 1 for c in conc) or len(set(conc)) < 2:
        raise ValueError(f"concurrency = {list(concurrency)}; expected two or more distinct levels >= 1 (1 first)")
    if 1 not in conc:
        raise ValueError(f"concurrency = {list(concurrency)}; expected level 1 among them (the idle first token)")
    if not outs or any(n < 4 for n in outs):
        raise ValueError(f"output_tokens = {list(output_tokens)}; expected lengths >= 4 tokens")
    if not prompt_classes or any(not sets for sets in prompt_classes):
        raise ValueError(f"prompt_classes = {list(prompt_classes)}; expected one or more non-empty lists of sets")
    info = client.discover()
    k = int(info.num_speculative_tokens or 0) if info.speculation else 0
    common: dict[str, Any] = dict(temperatures=(0.0,), runs_dir=runs_dir, request_timeout_s=request_timeout_s,
                                  stop_event=stop_event, progress=progress, extra_body={"ignore_eos": True})
    prompt_dir = Path(runs_dir) / "probe-prompts"
    loadtest.run_load_test(client, concurrency_levels=(1,), requests_per_level=WARMUP_REQUESTS,
                           max_tokens=min(outs), prompts=unique_prompt_file(prompt_dir, WARMUP_REQUESTS), **common)
    paths, records = [], []
    for i, n in enumerate(outs, start=int(first_length_index)):
        for j, c in enumerate(sorted(conc)):
            sets = level_prompt_sets(prompt_classes, i, j)
            count = requests_for_level(c, requests_per_level)
            res = loadtest.run_load_test(client, concurrency_levels=(c,), requests_per_level=count, max_tokens=n,
                                         prompts=unique_prompt_file(prompt_dir, count, sets), **common)
            paths.append(res.run_path)
            records += runs.load_run(res.run_path).records
            if res.interrupted:
                raise KeyboardInterrupt(f"probe interrupted; recorded so far: {res.run_path}")
    return ProbeResult("speculative" if k else "baseline", info.as_dict(), k, tuple(paths), tuple(records))
