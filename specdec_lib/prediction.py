"""A prediction run read back: per-request and per-condition acceptance, ranked drafts, AcceptanceEstimates.

Everything is recomputed from the run folder's records (``oracle_client`` writes them): each record holds the
target's continuation and, per draft and draft sampling method, β per position as (point, low, high). The counters
vLLM would report are the expected ones of ``oracle.step_counts``; α is solved from the V1 rate with
``speculation.alpha_from_v1_rate`` (the same conversion the workbook applies to a measured V1 rate, so predicted
and measured α are comparable).

Model-free candidates (n-gram, suffix decoding) send no draft probabilities, so a drafted token is accepted exactly
where it equals the token the target emitted there (``oracle`` docstring): their counters are counted from the
drafts and the target's own texts (``indicator_counts``), averaged over the texts sampled for a request, and their
bounds are a 95 % bootstrap interval across requests (``bounds_kind`` says which kind a row has). n-gram drafts
are in the records (older records' stored β are ignored: recounted from drafts and text); suffix drafts are
replayed here, over all records in order, with the real arctic-inference cache (``suffix_replay``).
Greedy drafts at T > 0 are counted the same way (``chain_indicator_counts``: the draft's argmax along each text,
recorded as ``draft_argmax``); runs recorded before that keep the β chain.

    from specdec_lib.prediction import load_prediction
    p = load_prediction("runs/20260101T000000000Z-predict")
    p.to_frame()          # one row per temperature x candidate x method x k
    p.ranking(k=4)        # candidates ranked by predicted alpha
    p.estimates()         # list[evidence.AcceptanceEstimate], source "predicted"
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import pandas as pd

from specdec_lib import oracle, runs, speculation, suffix_replay
from specdec_lib.evidence import AcceptanceEstimate

BOUNDS = {"point": 0, "low": 1, "high": 2}
NGRAM = "ngram"
SUFFIX = "suffix"
MODEL_FREE = (NGRAM, SUFFIX)
BOUNDS_TAIL = "vocabulary tail"
BOUNDS_REQUESTS = "95 % across requests"
BOUNDS_NONE = "none (fewer than two requests with drafts)"


def _alpha(rate: float | None, k: int) -> float | None:
    return None if rate is None else speculation.alpha_from_v1_rate(min(max(rate, 0.0), 1.0), k)


def _request_counts(oracle_part: dict, candidate: str, method: str | None, k: int, max_tokens: int,
                    bound: str) -> oracle.StepCounts:
    betas = [beta[BOUNDS[bound]] for beta in oracle_part["drafts"][candidate][method]]
    return oracle.step_counts(oracle.chain_proposals(betas, k), max_tokens, k)


def texts(oracle_part: dict) -> list[list[int]]:
    """The target's texts for one request: its continuation, then the extra samples (model-free replays)."""
    return [list(oracle_part["continuation"])] + [list(c) for c in oracle_part.get("samples") or []]


def indicator_counts(drafts_per_text: Sequence[Sequence[Sequence[int]]], texts_: Sequence[Sequence[int]], k: int,
                     max_tokens: int) -> oracle.StepCounts:
    """Counters of a model-free proposer, averaged over the texts: β = 1[drafted token = the token emitted there].

    ``drafts_per_text[s][t]`` is the draft of a step starting after t generated tokens of ``texts_[s]``; the step
    loop (``oracle.step_counts``) is then deterministic: it is the replay of what the server counts.
    """
    total = oracle.ZERO_COUNTS
    for drafts, text in zip(drafts_per_text, texts_, strict=True):
        proposals = [[float(t + j < len(text) and token == text[t + j]) for j, token in enumerate(row)]
                     for t, row in enumerate(drafts)]
        total = total + oracle.step_counts(proposals, max_tokens, k)
    n = len(texts_)
    return oracle.StepCounts(total.drafts / n, total.draft_tokens / n, total.accepted_tokens / n,
                             tuple(x / n for x in total.per_position), total.steps / n)


def counted_draft(oracle_part: dict, candidate: str, method: str | None, temperature: float) -> list | None:
    """A greedy draft's argmax along each of the request's texts at T > 0 (None where the record has none: T = 0,
    probabilistic sampling, or a run recorded before drafts were counted, which keeps its β chain)."""
    if method != "greedy" or oracle.is_greedy(temperature):
        return None
    return (oracle_part.get("draft_argmax") or {}).get(candidate)


def chain_indicator_counts(argmax_per_text: Sequence[Sequence[int]], texts_: Sequence[Sequence[int]], k: int,
                           max_tokens: int) -> oracle.StepCounts:
    """Counters of a greedy draft, averaged over the texts: β_t = 1[the draft's argmax at t = the emitted token].

    vLLM's greedy draft proposes its argmax given the accepted text and sends no draft probabilities, so, as for
    n-gram, a drafted token is accepted exactly where the target emitted it; along the text, the draft's
    teacher-forced argmax at t is what it proposes there whenever the tokens before t were accepted.
    """
    # The step at t drafts the argmaxes at t .. t + k − 1; past the text's end (a stop token) the draft still
    # proposes k tokens, none of which can match: -1 stands for them.
    drafts = [[list(argmax[t:t + k]) + [-1] * max(0, t + k - len(argmax)) for t in range(len(argmax))]
              for argmax in argmax_per_text]
    return indicator_counts(drafts, texts_, k, max_tokens)


@dataclass(frozen=True)
class Prediction:
    """One prediction run: metadata and the successful records (errors stay in the folder, see ``errors``)."""

    path: Path
    metadata: dict
    records: tuple[dict, ...]
    errors: tuple[dict, ...]

    @property
    def run_id(self) -> str:
        return str(self.metadata.get("run_id", self.path.name))

    @property
    def candidates(self) -> list[tuple[str, str | None]]:
        """(candidate, draft_sample_method) pairs: each draft with each method, then ("ngram", None), ("suffix",
        None) when the run has them."""
        params = self.metadata["parameters"]
        out = [(d["served_model"], m) for d in self.metadata.get("drafts", []) for m in params["methods"]]
        out += [(name, None) for name in MODEL_FREE if params.get(name)]
        return out

    @cached_property
    def suffix_drafts(self) -> dict[int, dict[int, list]]:
        """record index -> k -> the suffix proposer's drafts along each of the request's texts.

        World s replays every record in order with its s-th text (its only one at T = 0) on a fresh cache, as a
        server would see them (``suffix_replay`` docstring); record r's s-th entry comes from world s.
        """
        params = self.metadata["parameters"]
        if not params.get(SUFFIX):
            return {}
        config = suffix_replay.SuffixConfig(**params[SUFFIX])
        ordered = sorted(self.records, key=lambda r: r["index"])
        n_worlds = max(len(texts(r["oracle"])) for r in ordered) if ordered else 0
        worlds = []
        for s in range(n_worlds):
            world = []
            for rec in ordered:
                options = texts(rec["oracle"])
                world.append((rec["oracle"]["prompt_token_ids"], options[s % len(options)]))
            worlds.append(world)
        replayed = suffix_replay.replay_runs(worlds, config, params["ks"], params["max_tokens"])
        return {rec["index"]: {k: [replayed[s][k][i] for s in range(n_worlds)] for k in params["ks"]}
                for i, rec in enumerate(ordered)}

    def model_free_counts(self, rec: dict, candidate: str, k: int) -> oracle.StepCounts:
        """The expected counters of n-gram or suffix decoding for one record (``indicator_counts``)."""
        part, max_tokens = rec["oracle"], self.metadata["parameters"]["max_tokens"]
        if candidate == NGRAM:
            ngram = part[NGRAM]
            drafts = [ngram["proposals"]] + list(ngram.get("sample_proposals") or [])
            return indicator_counts(drafts, texts(part), k, max_tokens)
        drafts = self.suffix_drafts[rec["index"]][k]
        options = texts(part)
        return indicator_counts(drafts, [options[s % len(options)] for s in range(len(drafts))], k, max_tokens)

    def request_frame(self) -> pd.DataFrame:
        """One row per request × candidate × method × k: expected counters and the V1 rate (point/low/high)."""
        params = self.metadata["parameters"]
        rows = []
        for rec in self.records:
            part = rec["oracle"]
            for cand, method in self.candidates:
                if cand not in MODEL_FREE and cand not in part["drafts"]:
                    continue
                for k in params["ks"]:
                    row = {"temperature": rec["temperature"], "prompt_id": rec["prompt_id"], "candidate": cand,
                           "draft_sample_method": method, "k": k}
                    argmax = None if cand in MODEL_FREE else counted_draft(part, cand, method, rec["temperature"])
                    free = self.model_free_counts(rec, cand, k) if cand in MODEL_FREE else (
                        None if argmax is None else chain_indicator_counts(argmax, texts(part), k,
                                                                           params["max_tokens"]))
                    row["counted"] = free is not None
                    for bound in BOUNDS:
                        c = free if free is not None else _request_counts(part, cand, method, k,
                                                                          params["max_tokens"], bound)
                        suffix = "" if bound == "point" else f"_{bound}"
                        row.update({f"drafts{suffix}": c.drafts, f"draft_tokens{suffix}": c.draft_tokens,
                                    f"accepted_tokens{suffix}": c.accepted_tokens, f"v1_rate{suffix}": c.v1_rate})
                        if bound == "point":
                            row["per_position"] = c.per_position
                            row["steps"] = c.steps
                    if cand not in MODEL_FREE:
                        betas = [beta[0] for beta in part["drafts"][cand][method]]
                        row["alpha_positions"] = sum(betas) / len(betas)
                        row["tokens_per_step_chain"] = oracle.chain_expected_tokens(betas[:params["max_tokens"]], k)
                    row["seconds"] = rec["e2e_s"]
                    row["tokens_sent"] = part["tokens_sent"]
                    rows.append(row)
        return pd.DataFrame(rows)

    def to_frame(self) -> pd.DataFrame:
        """One row per temperature × candidate × method × k, summed over requests as vLLM's counters sum.

        Columns: alpha (α solved from the predicted V1 rate), alpha_low/alpha_high and bounds_kind (a draft model's
        vocabulary-tail bounds; for n-gram and suffix, which have no tail to bound, the 95 % bootstrap interval of
        Σ accepted / Σ draft tokens across requests, ``oracle.ratio_interval``), v1_rate, mean_acceptance_length
        (= tokens per verify step, vLLM's figure), per_position_rates, alpha_positions (mean β: α if positions were
        independent), tokens_per_step_chain (every position a step start), per-request V1 rate P10/P50/P90,
        n_requests, and the cost (tokens sent, seconds).
        """
        frame = self.request_frame()
        if frame.empty:
            return frame
        rows = []
        for key, g in frame.groupby(["temperature", "candidate", "draft_sample_method", "k"], dropna=False,
                                    sort=False):
            temp, cand, method, k = key
            method = None if (isinstance(method, float) and math.isnan(method)) else method
            drafts = g["drafts"].sum()
            per_pos = [sum(p[i] for p in g["per_position"]) for i in range(int(k))]
            rate = {b: (g[f"accepted_tokens{s}"].sum() / g[f"draft_tokens{s}"].sum()
                        if g[f"draft_tokens{s}"].sum() > 0 else None)
                    for b, s in (("point", ""), ("low", "_low"), ("high", "_high"))}
            rates = g["v1_rate"].dropna()
            kind = BOUNDS_TAIL
            if g["counted"].all():
                interval = oracle.ratio_interval(list(g["accepted_tokens"]), list(g["draft_tokens"]))
                kind = BOUNDS_REQUESTS if interval else BOUNDS_NONE
                rate["low"], rate["high"] = interval if interval else (rate["point"], rate["point"])
            rows.append({
                "temperature": temp, "candidate": cand, "draft_sample_method": method, "k": int(k),
                "alpha": _alpha(rate["point"], int(k)), "alpha_low": _alpha(rate["low"], int(k)),
                "alpha_high": _alpha(rate["high"], int(k)), "bounds_kind": kind, "v1_rate": rate["point"],
                "v1_rate_low": rate["low"],
                "v1_rate_high": rate["high"],
                "mean_acceptance_length": 1 + g["accepted_tokens"].sum() / drafts if drafts > 0 else None,
                "per_position_rates": tuple(p / drafts for p in per_pos) if drafts > 0 else None,
                "alpha_positions": g["alpha_positions"].mean() if "alpha_positions" in g else None,
                "tokens_per_step_chain": g["tokens_per_step_chain"].mean() if "tokens_per_step_chain" in g else None,
                "v1_rate_p10": runs.percentile(rates, 10), "v1_rate_p50": runs.percentile(rates, 50),
                "v1_rate_p90": runs.percentile(rates, 90), "n_requests": len(g),
                "tokens_sent": int(g["tokens_sent"].sum()), "seconds": float(g["seconds"].sum()),
            })
        return pd.DataFrame(rows)

    def ranking(self, k: int, temperature: float | None = None) -> pd.DataFrame:
        """Candidates for this target ranked by predicted α at ``k`` (per temperature unless one is given)."""
        frame = self.to_frame()
        frame = frame[frame["k"] == k]
        if temperature is not None:
            frame = frame[frame["temperature"] == temperature]
        frame = frame.sort_values(["temperature", "alpha"], ascending=[True, False])
        frame = frame.assign(rank=frame.groupby("temperature").cumcount() + 1)
        return frame[["temperature", "rank", "candidate", "draft_sample_method", "alpha", "alpha_low", "alpha_high",
                      "bounds_kind", "v1_rate", "mean_acceptance_length", "n_requests"]].reset_index(drop=True)

    def best_k(self, cost_ratio: float) -> pd.DataFrame:
        """Per temperature × candidate × method: the k with the highest ``speculation.speedup(α_k, k, c)``.

        α_k is solved from the predicted V1 rate at k, so speedup(α_k, k, c) = E_k / (k c + 1) with E_k the
        chain's own tokens per step; ``cost_ratio`` c = draft step time / target step time (an input).
        """
        frame = self.to_frame()
        rows = []
        for key, g in frame.groupby(["temperature", "candidate", "draft_sample_method"], dropna=False, sort=False):
            speedups = {int(r.k): speculation.speedup(r.alpha, int(r.k), cost_ratio) for r in g.itertuples()
                        if r.alpha is not None and not math.isnan(r.alpha)}
            k = max(speedups, key=lambda kk: (speedups[kk], -kk)) if speedups else None
            rows.append({"temperature": key[0], "candidate": key[1], "draft_sample_method": key[2], "best_k": k,
                         "speedup": speedups.get(k) if k else None, "cost_ratio": cost_ratio})
        return pd.DataFrame(rows)

    def estimates(self) -> list[AcceptanceEstimate]:
        """One ``AcceptanceEstimate`` (source "predicted") per temperature × candidate × method × k; method
        "ngram"/"suffix" for the model-free candidates (their bounds: 95 % across requests, ``to_frame``)."""
        out = []
        target = self.metadata.get("served_model")
        for r in self.to_frame().itertuples():
            if r.alpha is None or (isinstance(r.alpha, float) and math.isnan(r.alpha)):
                continue
            free = r.candidate in MODEL_FREE
            out.append(AcceptanceEstimate(
                alpha=float(r.alpha), source="predicted", method=r.candidate if free else "draft_model",
                temperature=float(r.temperature), k=int(r.k), target_model=target,
                draft_model=None if free else r.candidate,
                draft_sample_method=None if free else r.draft_sample_method,
                alpha_low=min(float(r.alpha_low), float(r.alpha)), alpha_high=max(float(r.alpha_high), float(r.alpha)),
                n_requests=int(r.n_requests), origin=self.run_id))
        return out


def load_prediction(path: str | Path) -> Prediction:
    """Read a prediction run folder (kind "predict"); records with an error are kept apart in ``errors``."""
    run = runs.load_run(path)
    if run.metadata.get("kind") != "predict":
        raise ValueError(f"run folder {path}: kind is {run.metadata.get('kind')!r}, not 'predict'")
    ok = tuple(r for r in run.records if r.get("error") is None and isinstance(r.get("oracle"), dict))
    errors = tuple(r for r in run.records if r.get("error") is not None)
    return Prediction(Path(path), run.metadata, ok, errors)


def compare_with_measured(prediction: Prediction, sweep_run: runs.Run, candidate: str,
                          draft_sample_method: str | None, k: int) -> pd.DataFrame:
    """Predicted against measured per temperature: the truth is a temperature sweep of the same pair served with
    speculation on (``loadtest.run_temperature_sweep``), its α from the counter deltas and a 95 % interval across
    requests (``oracle.ratio_interval`` over per-request accepted/draft tokens, converted to α at k).

    ``agrees``: |predicted − measured| ≤ ``AGREEMENT_ALPHA`` or predicted inside the measured interval.
    """
    from specdec_lib.loadtest import sweep_results_from_run

    pred = prediction.to_frame()
    pred = pred[(pred["candidate"] == candidate) & (pred["k"] == k)]
    if candidate not in MODEL_FREE:
        pred = pred[pred["draft_sample_method"] == draft_sample_method]
    rows = []
    for t in sweep_results_from_run(sweep_run):
        match = pred[(pred["temperature"] - t.temperature).abs() < 1e-9]
        if match.empty:
            continue
        p = match.iloc[0]
        recs = [r for r in sweep_run.records if r.get("error") is None and r["label"] == t.label
                and r.get("draft_tokens")]
        interval = oracle.ratio_interval([r["accepted_tokens"] for r in recs], [r["draft_tokens"] for r in recs])
        low, high = (None, None) if interval is None else (_alpha(interval[0], k), _alpha(interval[1], k))
        error = None if t.alpha is None else p["alpha"] - t.alpha
        inside = low is not None and low - 1e-9 <= p["alpha"] <= high + 1e-9
        rows.append({"candidate": candidate, "draft_sample_method": draft_sample_method, "k": k,
                     "temperature": t.temperature, "predicted": p["alpha"], "predicted_low": p["alpha_low"],
                     "predicted_high": p["alpha_high"], "predicted_bounds": p["bounds_kind"], "measured": t.alpha,
                     "measured_low": low, "measured_high": high, "error": error,
                     "agrees": bool(error is not None and (abs(error) <= AGREEMENT_ALPHA or inside)),
                     "predicted_v1_rate": p["v1_rate"], "measured_v1_rate": t.v1_rate,
                     "measured_requests": t.succeeded, "predicted_requests": p["n_requests"],
                     "predict_seconds": p["seconds"]})
    return pd.DataFrame(rows)


AGREEMENT_ALPHA = 0.05  # issue 12's "Done when": within 0.05 of measured, or inside the measured 95 % interval
