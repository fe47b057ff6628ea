#!/usr/bin/env python3
"""Write notebooks/*.ipynb (outputs cleared) from the text below, so the pages stay thin and consistent.

Every code cell only imports `specdec_lib.widgets` and calls one page function: the logic is in the library.
Run: .venv/bin/python scripts/make_notebooks.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

READING_ORDER = """**Reading order:** 00 start here · 01 draft selection · 02 memory budget · 03 break-even and load ·
04 live acceptance by temperature · 05 load test with and without · 06 mixed workload · 07 decision memo"""

PAGES: dict[str, tuple[list[str], str]] = {
    "00_start_here": (
        [
            """# Will speculative decoding help this vLLM deployment?

This workbook turns the source article *Speculative Decoding on vLLM: A Configuration and Decision Framework*
into numbers you can move. Speculative decoding lets a small **draft model** propose *k* tokens that the
**target model** checks in one forward pass. The output is unchanged (the acceptance rule preserves the target's
distribution); only speed changes, and only when enough draft tokens are accepted.

The article's claims this page puts to work:
- It pays at **low query rates** on **low-temperature, structured** work (vLLM team, 4× H100: up to 2.8× on
  summarization, 1.5× on chat at QPS 1) and **costs** at high query rates (1.4–1.8× slower).
- The draft's weights come **straight out of the KV-cache budget**.
- Acceptance below about **0.5** means speculation adds latency; 0.5–0.65 is near break-even; above 0.65 it
  probably helps. (Those bands were written for vLLM V0's per-token acceptance; vLLM today reports a
  prefix-only rate that reads lower. The workbook converts before comparing.)

The defaults are the article's own setup: **Llama-3.1-70B INT8 target + Llama-3.1-8B BF16 draft on 2× H100 SXM**,
TP 2. Change any control: the memory bar, the speedup curve and the verdict follow. No endpoint is needed.
""",
            READING_ORDER,
        ],
        "page = ui.start_here_page()\npage.widget",
    ),
    "01_draft_selection": (
        [
            """# 01 · Which draft model?

The article calls the draft choice the most important decision, and the **size ratio** its main lever:
- Sweet spot **1:8 to 1:12**, same family, same training distribution (Llama-3.1-8B for Llama-3.1-70B is ~1:9).
- **Too small** (Llama-3.2-1B for 70B, ~1:70): cheap, but rejected too often.
- **Too large** (13B for 70B, ~1:5): accurate, but costs so much memory and compute that the break-even moves.
- **Same tokenizer**: mismatched vocabularies need re-encoding; vLLM checks vocab sizes.
- The vLLM team's own benchmark used a 1:140 draft (Qwama-0.5B for Llama-3-70B) and still got 1.5× at low QPS:
  *query rate matters more than ratio*.

Pick a target; the table scores every catalog model as its draft against the article's checklist, and the chart
shows the speedup each draft needs (its cost ratio *c* moves the break-even acceptance).
""",
        ],
        "page = ui.draft_selection_page()\npage.widget",
    ),
    "02_memory_budget": (
        [
            """# 02 · The memory budget

Running speculation means **two models in GPU memory**. vLLM sizes its KV cache at start-up:
total memory × `gpu_memory_utilization` − weights (− activations and non-torch memory) = KV-cache budget, so a
16 GB draft costs 16 GB of KV cache, one for one (the article). Fewer KV blocks mean shorter maximum context or
fewer requests in flight.

The article's table for 2× H100 (weights only): 70B BF16 + 8B BF16 ≈ 156 GB (doesn't fit, ~4 GB left);
70B INT8 + 8B BF16 ≈ 86 GB (the recommended baseline, ~74 GB for KV); INT8 + INT8 ≈ 78 GB; INT4 + BF16 ≈ 51 GB.
Its rules of thumb: the draft should take **no more than ~15 %** of the memory, and if the target alone uses
**more than 70 %**, adding a draft will cut how many requests you can serve at once.

Numbers here use what vLLM sees (an H100 80GB reports 79.18 GiB), today's default utilization (0.92), and the
draft's KV cache, which shares the target's block table.

Quantization is not free for acceptance (the article): quantizing the **target** shifts the distribution the
draft was trained to imitate, so acceptance falls (INT4 more than INT8); quantizing the **draft** is usually
safer. Measure acceptance before and after (page 04 on each server): a drop of more than 5 points means revisit
the choice, typically INT4 → INT8 on the target.
""",
        ],
        "page = ui.memory_budget_page()\npage.widget",
    ),
    "03_break_even_and_load": (
        [
            """# 03 · Break-even acceptance, and what load does to it

With per-token acceptance α and *k* draft tokens, one verify step emits (1 − α^(k+1)) / (1 − α) tokens on
average (Leviathan et al. 2023). It costs one target pass plus *k* draft passes, each *c* of a target pass.
Speculation wins when the first outweighs the second: the **break-even line** on the left chart.

The article's intuition: an 8B draft costs about 1/9 of a 70B target, so below roughly half the tokens accepted
the draft's compute and the wasted verification outweigh the gain. Under load the GPU is already busy: the
target's step is no longer memory-bound, verifying *k* + 1 positions per request costs real compute, and the
speedup shrinks and turns into a slowdown (vLLM team: 1.5× at QPS 1, 1.4× slower at high QPS). The right chart
shows that crossover for this scenario.
""",
        ],
        "page = ui.break_even_page()\npage.widget",
    ),
    "04_live_acceptance_by_temperature": (
        [
            """# 04 · Live: acceptance by temperature (needs an endpoint)

*Temperature destroys your benchmark numbers* (the article): at T = 0 the target always picks its top token and
the draft guesses it often; at T = 0.8–1.0 the target samples surprising tokens and more drafts are rejected. Most
published benchmarks run at T = 0. This page sends the same prompts at several temperatures to **your** server and
reads acceptance from its own `/metrics` counters, before and after each temperature.

Bands: below 0.5 turn it off; 0.5–0.65 measure P99 under real load before deciding; above 0.65 likely a win. The
chart shows vLLM's reported rate and the per-token α it implies (vLLM V1 counts only the accepted prefix, so its
raw rate reads lower than the article's V0 numbers).

**No server?** Start a tiny real vLLM demo endpoint on this machine (CPU, a few minutes the first time):

    python -m specdec_lib.localserver demo

The URL defaults to the environment variable `SPECDEC_ENDPOINT`, else `http://127.0.0.1:8000`.
Nothing is sent until you press **Run**.
""",
        ],
        "page = ui.live_acceptance_page()\npage.widget",
    ),
    "05_load_test_with_and_without": (
        [
            """# 05 · Load test: with and without speculation (needs an endpoint)

A single-request benchmark does not predict behaviour under concurrent production load (the article). Measure
TTFT and TPOT separately, at P50 and P99, at the concurrency you really see, **against a baseline without
speculation**. Speculation improves TPOT, not TTFT (the draft adds a small prefill step). A P50 win with a P99
regression points at the scheduler under a mixed workload.

Give the URL of the server with speculation and, if you have one, of the same model without it. Every request
is recorded in a run folder (`runs/`) so the percentiles can be recomputed later.

**No server?** `python -m specdec_lib.localserver demo` starts a tiny real vLLM endpoint on this machine.
""",
        ],
        "page = ui.load_test_page()\npage.widget",
    ),
    "06_mixed_workload": (
        [
            """# 06 · Mixed workloads: why the average lies

Every request in a batch shares the same verify pass. The article's example: 60 % low-temperature structured
queries at 82 % acceptance and 40 % creative ones at 38 %. The weighted average (~65 %) looks healthy, yet the
low-acceptance requests pay the draft's cost on every step and add tail latency to the whole batch: **P50 improves
while P99 regresses**. Speculation suits dedicated, homogeneous deployments (code completion, extraction, RAG)
better than general chat APIs.

This page simulates continuous batching of the mix below, with and without speculation, offline. Move the
shares and acceptances to see when the tail turns against you.
""",
        ],
        "page = ui.mixed_workload_page()\npage.widget",
    ),
    "07_decision_memo": (
        [
            """# 07 · The decision and the memo

The article's framework. **Use it when** temperature is homogeneous and ≤ 0.5; the draft takes ≤ ~15 % of
memory; the batch mix is consistent; acceptance was validated at production temperature; the SLO is TPOT or
throughput. **Leave it off when** temperature varies widely or its median is above 0.7; memory is tight and
context is long; the workload is TTFT-bound; or acceptance is not monitored.

Below: the verdict with its reasons for the current scenario, the vLLM command line that serves it today (one
`--speculative-config` JSON: the article's `--speculative-model`, `--num-speculative-tokens` and
`--speculative-disable-by-batch-size` flags are gone; k per batch size replaces the last), a one-click HTML memo
(self-contained, opens offline), and saving or loading the scenario as a TOML file to share it. Give the memo a
run folder from page 04 or 05 to include what you measured.
""",
        ],
        "page = ui.decision_memo_page()\npage.widget",
    ),
}

# issue 12: page 01b, predicting acceptance before deploying (its widgets live in specdec_lib/predict_page.py).
PAGES["01b_predict_acceptance"] = (
    [
        """# 01b · Predict acceptance before deploying (needs endpoints, not speculation)

The draft choice and every verdict turn on α, the per-token acceptance, at **your** temperatures on **your**
prompts. You do not need to deploy speculation to know it: serve the target and each candidate draft as ordinary
vLLM servers (same tokenizer), and this page predicts what vLLM's counters would read with speculation on.

How: the target writes its own continuation of each prompt at each temperature (the text a draft must guess);
both models are teacher-forced over it by token ids and return their log-probabilities (`prompt_logprobs`);
vLLM's own acceptance rule is applied per position — **greedy** draft sampling (vLLM's default) accepts with
p_T(draft's argmax), **probabilistic** with Σ min(p_T, q_T) — and the positions are chained into the steps vLLM
would take. n-gram is replayed with vLLM's matching rule. Every α has a **lower and upper bound** for the part of
the vocabulary a top-N answer leaves out; raise the servers' `--max-logprobs` (default 20) to tighten it.
Validated against the same pairs served with speculation on: `benchmarks/acceptance_oracle.py`, `docs/acceptance.md`.

**No server?** `python -m specdec_lib.localserver demo --spec none` serves the tiny target on port 8000; a draft
needs a second server. Nothing is sent until you press **Predict**; **Cancel** stops between requests.
""",
        READING_ORDER,
    ],
    "from specdec_lib.predict_page import predict_page\npage = predict_page()\npage.widget",
)
TRAILING: dict[str, list[tuple[str, str]]] = {
    "01b_predict_acceptance": [
        ("markdown", """## In code

    from specdec_lib import oracle_client
    from specdec_lib.endpoint import EndpointClient
    from specdec_lib.prediction import load_prediction
    p = oracle_client.run_prediction(EndpointClient(TARGET_URL), [EndpointClient(DRAFT_URL)],
                                     prompts=["chat", "code"], temperatures=(0, 0.5, 1), ks=range(1, 9))
    p.to_frame()            # temperature x candidate x method x k: alpha, bounds, V1 rate, tokens per step, P10-P90
    p.ranking(k=4)          # the drafts ranked by predicted alpha
    p.best_k(cost_ratio=0.1)
    p.estimates()           # AcceptanceEstimate(source="predicted", alpha_low, alpha_high, ...)
    load_prediction(p.path) # the same, later, from the run folder (resume with run_prediction(..., resume=p.path))

The same from a shell: `specdec predict --target URL --draft URL --json`."""),
        ("code", "prediction = page.state[\"prediction\"]  # set once Predict has finished\n"
                 "prediction.to_frame() if prediction is not None else \"press Predict first\""),
    ],
}


def build(name: str) -> nbformat.NotebookNode:
    markdowns, code = PAGES[name]
    cells = [new_markdown_cell(text) for text in markdowns]
    cells.append(new_code_cell("from specdec_lib import widgets as ui"))
    cells.append(new_code_cell(code))
    for kind, text in TRAILING.get(name, []):
        cells.append(new_markdown_cell(text) if kind == "markdown" else new_code_cell(text))
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    NOTEBOOKS.mkdir(exist_ok=True)
    for name in PAGES:
        nb = build(name)
        # Stable cell ids keep regenerated notebooks diff-free.
        for index, cell in enumerate(nb.cells):
            cell["id"] = f"{name[:2]}-{index}"
        nbformat.validate(nb)
        nbformat.write(nb, NOTEBOOKS / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


if __name__ == "__main__":
    main()
