#!/usr/bin/env python3
"""Write notebooks/*.ipynb (outputs cleared) from the text below, so the pages stay thin and consistent.

Every page cell imports `specdec_lib.pages` and calls one page function: the logic is in the library. Each
notebook ends with an "In code" section: the same what-if done through the library, as pandas DataFrames.
A new notebook is one entry in PAGES: (markdown cells, the page call[, the in-code cell]).
Run: .venv/bin/python scripts/make_notebooks.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

READING_ORDER = """**Reading order:** 00 start here · 01 draft selection · 02 memory budget · 03 break-even and load ·
03b methods compared ·
04 live acceptance by temperature · 05 load test with and without · 06 mixed workload · 07 decision memo"""

PAGES: dict[str, tuple] = {  # name -> (markdown cells, page call[, in-code cell])
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
        "page = pages.start_here_page()\npage.widget",
        """# What if monitoring were in place, at each of the source's temperatures? One evaluate() per scenario.
import dataclasses

import pandas as pd

from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, with_changes

rows = []
for temperature in (0.0, 0.4, 0.8, 1.0):
    chat = dataclasses.replace(DEFAULT_SCENARIO.workload[0], temperature=temperature)
    ev = evaluate(with_changes(DEFAULT_SCENARIO, workload=(chat,), monitoring_in_place=True))
    rows.append({"temperature": temperature, "verdict": ev.verdict,
                 "deciding": ", ".join(r.condition for r in ev.decision.deciding)})
pd.DataFrame(rows)""",
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
        "page = pages.draft_selection_page()\npage.widget",
        """# Every catalog draft for the 70B target, each with its own acceptance (unknown unless given): a DataFrame.
import dataclasses

import pandas as pd

from specdec_lib.pages.draft_selection import draft_candidates
from specdec_lib.scenario import DEFAULT_SCENARIO

pd.DataFrame([dataclasses.asdict(d) for d in draft_candidates(DEFAULT_SCENARIO)]).set_index("name")[
    ["ratio", "band", "same_family", "runs", "cost_ratio", "break_even_alpha", "acceptance"]]""",
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
        "page = pages.memory_budget_page()\npage.widget",
        """# The memory plan at three gpu_memory_utilization values, side by side (bytes; GiB = 2**30 bytes).
import pandas as pd

from specdec_lib.evaluate import plan_memory_for
from specdec_lib.scenario import DEFAULT_SCENARIO, with_changes

keys = ["kv_budget_bytes_per_gpu", "kv_capacity_tokens", "max_concurrent_seqs", "max_concurrent_seqs_without_draft"]
pd.DataFrame({u: {k: plan_memory_for(with_changes(DEFAULT_SCENARIO, gpu_memory_utilization=u)).to_dict()[k]
                  for k in keys} for u in (0.80, 0.90, 0.92)})""",
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
        "page = pages.break_even_page()\npage.widget",
        """# The load model per request class and for the mix, at alpha 0.75 and 30k-token requests.
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, RequestClass, with_changes

scenario = with_changes(DEFAULT_SCENARIO, context_len=32768, workload=(
    RequestClass("chat", 0.9, 0.2, 512, 256, alpha=0.75), RequestClass("long", 0.1, 0.2, 30000, 512, alpha=0.75)))
ev = evaluate(scenario)
print(ev)
ev.load.to_frame()""",
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
        "page = pages.live_acceptance_page()\npage.widget",
        """# A run folder as acceptance estimates, and whether each applies to the default scenario (no endpoint needed:
# the workbook's example run, measured on the tiny demo model at k = 4).
from pathlib import Path

import pandas as pd

import specdec_lib
from specdec_lib import acceptance, runs
from specdec_lib.scenario import DEFAULT_SCENARIO

run = runs.load_run(Path(specdec_lib.__file__).parent.parent / "data" / "example-run")
pd.DataFrame([{"temperature": e.temperature, "alpha": e.alpha, "k": e.k, "target": e.target_model,
               "applies to the default scenario": acceptance.mismatch(e, DEFAULT_SCENARIO, e.temperature) or "yes"}
              for e in acceptance.estimates_from_run(run)])""",
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
        "page = pages.load_test_page()\npage.widget",
        """# Latency percentiles per group of a run folder (recomputed from its request records), in milliseconds.
from pathlib import Path

import pandas as pd

import specdec_lib
from specdec_lib import runs

run = runs.load_run(Path(specdec_lib.__file__).parent.parent / "data" / "example-run")
summary = runs.summarise(run)
pd.DataFrame({label: {k: v * 1000 for k, v in g["latency"].items() if k.endswith("_s") and v is not None}
              for label, g in summary["groups"].items()}).T""",
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
        "page = pages.mixed_workload_page()\npage.widget",
        """# The source's 60/40 mix through the evaluation path: acceptance per class and the load model per class.
from pathlib import Path

import specdec_lib
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import load_scenario

ev = evaluate(load_scenario(Path(specdec_lib.__file__).parent.parent / "scenarios" / "mixed-chat.toml"))
print(ev)
ev.acceptance_frame()[["used", "rejected"]].join(ev.load.to_frame(), how="outer")""",
    ),
    "03b_methods_compared": (
        [
            """# 03b · Which method: draft model, EAGLE-3, MTP, n-gram or suffix?

The article compares a draft model with n-gram lookup. vLLM today also runs **EAGLE-3 heads** (one decoder layer
plus a small head over a 32k draft vocabulary, trained for one target), the target's own **multi-token-prediction
(MTP)** layers, and **suffix decoding** (CPU suffix trees, good for agent loops). This page puts every method that
applies to the target side by side, computed alike:
- **memory**: a head's or draft's weights and its KV layers come out of the same KV cache (tokens taken);
- **cost**: one draft step against one target step (*c*), from the calibrated step-time model;
- **acceptance**: measured or predicted when you have it, else a *published prior* with its citation
  (hover the label) — never shown as measured;
- **speedup at your QPS**, the crossover batch and QPS, and the k-by-batch-size schedule in the vLLM command.

The pick follows one rule over all methods (open *The rule* below the verdict). A method with no published
drafter for your target says so instead of guessing.
""",
            READING_ORDER,
        ],
        "page = pages.methods_compared_page()\npage.widget",
        """# Every method side by side as a DataFrame (the Evaluation's comparison), and what stating your own alpha
# for the configured draft model changes: its row carries the Evaluation's figures; the verdict ignores priors.
import dataclasses

from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, with_changes

for alpha in (None, 0.8):
    s = with_changes(DEFAULT_SCENARIO, workload=(dataclasses.replace(DEFAULT_SCENARIO.workload[0], alpha=alpha),))
    ev = evaluate(s)
    print(f"draft alpha {alpha}: verdict {ev.verdict}; pick {ev.methods.best}")
ev.methods.frame()[["method", "drafter", "alpha", "acceptance", "k", "speedup_at_qps", "crossover_qps",
                    "kv_tokens_taken"]]""",
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
        "page = pages.decision_memo_page()\npage.widget",
        """# The reasons as a DataFrame, and the verdict if monitoring were in place.
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO, with_changes

print(evaluate(with_changes(DEFAULT_SCENARIO, monitoring_in_place=True)))
evaluate(DEFAULT_SCENARIO).to_frame()[["status", "value", "source", "if_it_fails", "deciding"]]""",
    ),
    "08_production_watch": (
        [
            """# 08 · Production watch

The source makes monitoring a condition: *leave speculation off if you have not set up acceptance monitoring*,
and once it is on, watch acceptance and P99 latency. This page follows a live server over time: every few seconds
it reads vLLM's counters (from the server's `/metrics`, or from a Prometheus server that scrapes it), and charts
over a rolling window the per-token acceptance **alpha** (solved from vLLM V1's prefix-only ratio for your k),
the per-position rates, and P99 TPOT/TTFT from vLLM's histograms, against the source's bands (off below 0.5,
a win above 0.65) and your plan's P99s. Every read is written to a run folder at once: Stop keeps everything.

For the deployment itself, `specdec monitoring --scenario FILE -o DIR` (or `--k K`) writes the Prometheus rules
and Grafana dashboard with the same thresholds in the counters' own units (see `docs/monitoring.md`);
`specdec watch --help` is this page on the command line.
""",
        ],
        "page = pages.production_watch_page()\npage.widget",
        """# The rules, dashboard and thresholds for a scenario: what the memo ships and `specdec monitoring --scenario`
# writes (the same text).
from specdec_lib import monitoring
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO

artifacts = monitoring.artifacts_for(monitoring.plan_for_evaluation(evaluate(DEFAULT_SCENARIO)))
print(artifacts.rules_yaml[:400])
artifacts.thresholds_table()""",
    ),
}

# issue 12: page 01b, predicting acceptance before deploying (specdec_lib/pages/predict_acceptance.py).
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
would take. n-gram (and, ticked, suffix decoding) is replayed with vLLM's own proposer over the target's sampled
texts, a drafted token counted as accepted where it equals the token the target emitted: exact at every
temperature, its bounds the 95 % interval across requests. A draft's α has a **lower and upper bound** for the part
of the vocabulary a top-N answer leaves out; raise the servers' `--max-logprobs` (default 20) to tighten it.
Validated against the same pairs served with speculation on: `benchmarks/acceptance_oracle.py`, `docs/acceptance.md`.

**No server?** `python -m specdec_lib.localserver demo --spec none` serves the tiny target on port 8000; a draft
needs a second server. Nothing is sent until you press **Predict**; **Cancel** stops between requests.
""",
        READING_ORDER,
    ],
    "page = pages.predict_page()\npage.widget",
    """# Needs the servers, so shown as comments; `specdec predict --target URL --draft URL --json` from a shell:
# from specdec_lib import oracle_client
# from specdec_lib.endpoint import EndpointClient
# p = oracle_client.run_prediction(EndpointClient(TARGET_URL), [EndpointClient(DRAFT_URL)],
#                                  prompts=["chat", "code"], temperatures=(0, 0.5, 1), ks=range(1, 9))
# p.ranking(k=4); p.best_k(cost_ratio=0.1)
# p.estimates()  -> AcceptanceEstimate(source="predicted", alpha_low, alpha_high): the verdict's evidence, as in
# evaluate(scenario, estimates=p.estimates()) or `specdec plan --prediction RUN_DIR` / scenario.prediction_runs.
# load_prediction(RUN_DIR) reads a run folder back (resume with run_prediction(..., resume=RUN_DIR)).
from specdec_lib.evaluate import evaluate
from specdec_lib.scenario import DEFAULT_SCENARIO

prediction = page.state["prediction"]  # set once Predict has finished (None before)
estimates = prediction.estimates() if prediction is not None else ()
# Which acceptance the verdict uses per request class (a prediction for other models is listed as rejected, why):
evaluate(DEFAULT_SCENARIO, estimates=estimates).acceptance_frame()""",
)


IN_CODE_INTRO = """## In code

The same what-if through the library (`specdec_lib.evaluate`), as a pandas DataFrame: what a planner scripts."""


def build(name: str) -> nbformat.NotebookNode:
    markdowns, code, *in_code = PAGES[name]
    cells = [new_markdown_cell(text) for text in markdowns]
    cells.append(new_code_cell("from specdec_lib import pages"))
    cells.append(new_code_cell(code.replace("ui.", "pages.")))
    if in_code:
        cells += [new_markdown_cell(IN_CODE_INTRO), new_code_cell(in_code[0])]
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
