"""Predicting acceptance from two ordinary endpoints: the HTTP side and the run folder (I/O).

For each prompt and temperature: the target writes its own continuation (``/v1/completions`` with
``return_token_ids``, seen on vLLM 0.32), then the target and every candidate draft are teacher-forced over
prompt + continuation by token ids (``prompt`` as a list of ids, ``max_tokens`` 1, the smallest vLLM accepts, and
``prompt_logprobs`` N) and ``oracle.py`` turns their log-probabilities into per-position acceptance. Every
(prompt, temperature) is one record in a run folder (``runs.RunWriter``), appended as it completes, so a run can be
stopped (``stop_event``, Ctrl-C) and resumed; ``prediction.load_prediction`` reads it back.
For n-gram, suffix decoding and greedy drafts the target's texts are what matters (a drafted token is accepted
where it equals the emitted one): at T > 0 it samples ``model_free_samples`` − 1 more texts (no log-probabilities),
n-gram drafts are recorded along each, a greedy draft's argmax along each (``draft_argmax``, top-1 only), and the
record keeps the prompt's token ids for the suffix replay (run when the folder is read).

Refused, with the URL named, before a wrong number is written:
- the two models do not share a tokenizer: both servers' ``/tokenize`` must give the same ids for the same texts;
- a server returns no prompt log-probabilities (or refuses N: the message gives its ``--max-logprobs`` cap);
- an answer is cut or malformed: that record carries the error and the run goes on (one bad answer costs one
  record; a resumed run retries it).
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse, urlunparse

from specdec_lib import oracle, proposers, rules, runs, suffix_replay
from specdec_lib.endpoint import BODY_EXCERPT_CHARS, EndpointClient, EndpointError
from specdec_lib.loadtest import BUILTIN_PROMPT_SETS, Prompt, load_prompts

KIND = "predict"
DEFAULT_KS = tuple(range(1, 9))
DEFAULT_TEMPERATURES = (0.0, 0.5, 1.0)
DEFAULT_LOGPROBS = 20  # vLLM's default --max-logprobs
DEFAULT_NGRAM = proposers.NgramConfig(prompt_lookup_min=2, prompt_lookup_max=4, num_speculative_tokens=8)
# Texts sampled per prompt at T > 0 for the model-free replays (n-gram, suffix): each is an exact but single draw
# of what the speculative server would write; their mean counters narrow the per-request noise. No logprobs needed.
DEFAULT_MODEL_FREE_SAMPLES = 4
SAMPLE_SEED_STRIDE = 1_000_003  # extra samples' seeds: seed + index + s * stride, apart from every record's own
TOKENIZER_PROBES = ("The quick brown fox jumps over the lazy dog. 1234567890",
                    "def f(x):\n    return {'a': [1, 2.5, None]}\n", "Ünïcödé — naïve café, 東京, emoji 🙂")
_VOCAB_FROM_REFUSAL = re.compile(r"prompt logprobs of (\d+)")


class OracleRefusal(RuntimeError):
    """A prediction that would be wrong is refused. ``kind``: tokenizer_mismatch | no_prompt_logprobs |
    logprobs_refused; ``url`` the endpoint at fault."""

    def __init__(self, url: str, kind: str, detail: str):
        self.url, self.kind, self.detail = url, kind, detail
        self.run_path: Path | None = None
        super().__init__(f"{url}: {detail}")


def public_url(url: str) -> str:
    """The URL without ``user:password@`` (the only form that reaches a file, a message or a repr)."""
    parts = urlparse(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunparse(parts._replace(netloc=netloc))
    return url


# ------------------------------------------------------------------------------------------------- requests

def post_json(client: EndpointClient, path: str, body: dict, timeout_s: float | None = None) -> Any:
    """POST and read the whole JSON answer (``EndpointClient.post_json``: its key handling, deadline and error
    kinds; a body cut short is ``stream_cut``, a non-JSON one ``bad_response``)."""
    return client.post_json(path, body, timeout_s=timeout_s)


def served_model(client: EndpointClient) -> str:
    return str(client.models()[0]["id"])


def tokenize(client: EndpointClient, model: str, text: str) -> list[int]:
    data = post_json(client, "/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        raise EndpointError(public_url(client.url("/tokenize")), "bad_response",
                            f"/tokenize gave no token list: {str(data)[:BODY_EXCERPT_CHARS]!r}")
    return tokens


def check_same_tokenizer(target: EndpointClient, target_model: str, draft: EndpointClient, draft_model: str,
                         texts: Sequence[str]) -> int:
    """Both servers' ``/tokenize`` on the same texts; raises OracleRefusal at the first difference.

    Returns the number of tokens compared.
    """
    compared = 0
    for text in list(TOKENIZER_PROBES) + list(texts):
        a, b = tokenize(target, target_model, text), tokenize(draft, draft_model, text)
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise OracleRefusal(public_url(draft.base_url), "tokenizer_mismatch", (
                f"the draft {draft_model!r} does not share the target's tokenizer: /tokenize of {text[:60]!r} gives "
                f"{len(b)} tokens here and {len(a)} at the target {public_url(target.base_url)} "
                f"(first difference at token {at}: {b[at:at + 3]} vs {a[at:at + 3]}); acceptance cannot be "
                f"predicted position by position"))
        compared += len(a)
    return compared


def vocab_size(client: EndpointClient, model: str, ids: Sequence[int]) -> int | None:
    """The vocabulary size, from ``prompt_logprobs: -1`` (vLLM answers the whole vocabulary, or refuses naming its
    size against its ``--max-logprobs`` cap, seen on 0.32); None if the server says neither."""
    try:
        data = post_json(client, "/v1/completions", {"model": model, "prompt": list(ids[:2]), "max_tokens": 1,
                                                     "temperature": 0.0, "prompt_logprobs": -1})
    except EndpointError as exc:
        found = _VOCAB_FROM_REFUSAL.search(exc.detail) if exc.status == 400 else None
        return int(found.group(1)) if found else None
    try:
        return len(data["choices"][0]["prompt_logprobs"][1])
    except (KeyError, IndexError, TypeError):
        return None


def generate(client: EndpointClient, model: str, prompt: Prompt, temperature: float, max_tokens: int,
             seed: int, top_k: int | None, top_p: float | None = None) -> tuple[list[int], list[int], str | None]:
    """The target's own continuation: (prompt token ids, generated token ids, finish reason)."""
    url = public_url(client.url("/v1/completions"))
    if prompt.text is None:
        raise ValueError(f"prompt {prompt.prompt_id}: the oracle needs 'prompt' text, not 'messages'")
    body = {"model": model, "prompt": prompt.text, "max_tokens": max_tokens, "temperature": temperature,
            "seed": seed, "return_token_ids": True}
    if top_k:
        body["top_k"] = top_k
    if top_p is not None and top_p < 1.0:
        body["top_p"] = top_p
    data = post_json(client, "/v1/completions", body)
    try:
        choice = data["choices"][0]
        prompt_ids, token_ids = list(choice["prompt_token_ids"]), list(choice["token_ids"])
    except (KeyError, IndexError, TypeError):
        excerpt = str(data)[:BODY_EXCERPT_CHARS]
        raise EndpointError(url, "bad_response", "no prompt_token_ids/token_ids in the answer: the server ignored "
                            f"return_token_ids (vLLM >= 0.10 supports it): {excerpt!r}") from None
    if not token_ids:
        raise EndpointError(url, "bad_response", "the target generated no token")
    return prompt_ids, token_ids, choice.get("finish_reason")


def score(client: EndpointClient, model: str, ids: Sequence[int], n_logprobs: int,
          vocab: int | None) -> list[oracle.Head | None]:
    """Teacher-force ``ids``: element i is the model's answer for the token at position i (None for i = 0)."""
    url = public_url(client.url("/v1/completions"))
    body = {"model": model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": n_logprobs}
    try:
        data = post_json(client, "/v1/completions", body)
    except EndpointError as exc:
        if exc.kind == "http_status" and exc.status == 400 and "logprobs" in exc.detail:
            raise OracleRefusal(url, "logprobs_refused", f"prompt_logprobs={n_logprobs} refused: {exc.detail} "
                                "(ask for fewer, or start the server with a larger --max-logprobs)") from None
        raise
    try:
        entries = data["choices"][0].get("prompt_logprobs")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError(url, "bad_response", f"no choices in the answer: {str(data)[:BODY_EXCERPT_CHARS]!r}") \
            from None
    if not entries:
        raise OracleRefusal(url, "no_prompt_logprobs", "the server returned no prompt log-probabilities "
                            "(choices[0].prompt_logprobs is empty): the oracle needs a vLLM server that honours "
                            "'prompt_logprobs'")
    if len(entries) != len(ids):
        raise EndpointError(url, "bad_response", f"{len(entries)} prompt log-probability entries for {len(ids)} tokens")
    heads: list[oracle.Head | None] = [None]
    for i, entry in enumerate(entries[1:], 1):
        try:
            heads.append(oracle.Head.from_vllm(entry, n_logprobs if n_logprobs > 0 else 1 << 30, vocab))
        except ValueError as exc:
            raise EndpointError(url, "bad_response", f"prompt_logprobs[{i}]: {exc}") from None
        if str(ids[i]) not in entry:
            raise EndpointError(url, "bad_response", f"prompt_logprobs[{i}] lacks the prompt's own token {ids[i]}")
    return heads


# --------------------------------------------------------------------------------------------- one record

@dataclass(frozen=True)
class Settings:
    temperatures: tuple[float, ...]
    ks: tuple[int, ...]
    methods: tuple[str, ...]
    max_tokens: int
    n_logprobs: int
    top_k: int | None
    seed: int
    ngram: proposers.NgramConfig | None
    top_p: float | None = None  # production top_p, applied to the target as vLLM does (None: off)
    suffix: suffix_replay.SuffixConfig | None = None
    model_free_samples: int = 1

    def as_dict(self) -> dict:
        ngram = None if self.ngram is None else {
            "prompt_lookup_min": self.ngram.prompt_lookup_min, "prompt_lookup_max": self.ngram.prompt_lookup_max}
        return {"temperatures": list(self.temperatures), "ks": list(self.ks), "methods": list(self.methods),
                "max_tokens": self.max_tokens, "n_logprobs": self.n_logprobs, "top_k": self.top_k, "seed": self.seed,
                "ngram": ngram, **({"top_p": self.top_p} if self.top_p is not None else {}),
                **({"suffix": dataclasses.asdict(self.suffix)} if self.suffix is not None else {}),
                **({"model_free_samples": self.model_free_samples} if self.counted else {})}

    @property
    def model_free(self) -> bool:
        return self.ngram is not None or self.suffix is not None

    @property
    def counted(self) -> bool:
        """Candidates counted along sampled texts at T > 0: n-gram, suffix, greedy drafts (``prediction``)."""
        return self.model_free or "greedy" in self.methods


def _betas_for_draft(target_heads, draft_heads, ids, start: int, temperature: float, method: str,
                     vocab: int | None, top_k: int | None, top_p: float | None = None) -> list[list[float]]:
    out = []
    for i in range(start, len(ids)):
        beta = oracle.draft_acceptance(target_heads[i], draft_heads[i], temperature, method, vocab, top_k,
                                       greedy_token=ids[i], top_p=top_p)
        out.append([round(v, 6) for v in beta])
    return out


def _ngram_proposals(prompt_ids, continuation, settings: Settings) -> list[list[int]]:
    """The n-gram proposer's drafts at every step start along ``continuation`` (k = the largest evaluated).

    No β is stored: a proposal without draft probabilities is accepted exactly where it equals the token the target
    emitted there, so ``prediction`` counts acceptance from these drafts and the text itself (``oracle`` docstring).
    """
    config = proposers.NgramConfig(settings.ngram.prompt_lookup_min, settings.ngram.prompt_lookup_max,
                                   max(settings.ks))
    return proposers.ngram_proposals(prompt_ids, continuation, config, settings.max_tokens)


def predict_one(target: EndpointClient, target_model: str, drafts: Sequence[tuple[EndpointClient, str]],
                prompt: Prompt, temperature: float, settings: Settings, vocab: int | None, seed: int) -> dict:
    """Generate, teacher-force every model, compute β per position. Returns the record's "oracle" part."""
    started = time.perf_counter()
    n_gen = settings.max_tokens + max(settings.ks)
    prompt_ids, continuation, finish = generate(target, target_model, prompt, temperature, n_gen, seed,
                                                settings.top_k, settings.top_p)
    ids = prompt_ids + continuation
    start = len(prompt_ids)
    target_heads = score(target, target_model, ids, settings.n_logprobs, vocab)
    result: dict[str, Any] = {"prompt_ids": len(prompt_ids), "continuation": continuation, "finish_reason": finish,
                              "drafts": {}, "tokens_sent": len(prompt_ids) + len(ids) * (1 + len(drafts))}
    draft_heads = []
    for client, model in drafts:
        heads = score(client, model, ids, settings.n_logprobs, vocab)
        draft_heads.append(heads)
        result["drafts"][model] = {m: _betas_for_draft(target_heads, heads, ids, start, temperature, m, vocab,
                                                       settings.top_k, settings.top_p) for m in settings.methods}
    result["prompt_token_ids"] = prompt_ids
    samples = []
    greedy_drafts = bool(drafts) and "greedy" in settings.methods
    if settings.counted and not oracle.is_greedy(temperature):
        # More draws of the target's text for the counted candidates (at T = 0 there is one text).
        for s in range(1, settings.model_free_samples):
            samples.append(generate(target, target_model, prompt, temperature, n_gen, seed + s * SAMPLE_SEED_STRIDE,
                                    settings.top_k, settings.top_p)[1])
        result["samples"] = samples
        result["tokens_sent"] += len(prompt_ids) * len(samples)
    if greedy_drafts and not oracle.is_greedy(temperature):
        # A greedy draft's proposal is its argmax given the accepted text: counted like n-gram (``prediction``).
        result["draft_argmax"] = {}
        for (client, model), heads in zip(drafts, draft_heads):
            argmax = [[heads[i].top1 for i in range(start, len(ids))]]
            for sample in samples:
                sample_heads = score(client, model, prompt_ids + list(sample), 1, vocab)
                argmax.append([sample_heads[i].top1 for i in range(start, start + len(sample))])
                result["tokens_sent"] += len(prompt_ids) + len(sample)
            result["draft_argmax"][model] = argmax
    if settings.ngram is not None:
        result["ngram"] = {"proposals": _ngram_proposals(prompt_ids, continuation, settings),
                           "sample_proposals": [_ngram_proposals(prompt_ids, c, settings) for c in samples]}
    result["seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------------ the run

def _record(index: int, prompt: Prompt, temperature: float, settings: Settings) -> dict:
    rec: dict[str, Any] = {f: None for f in runs.RECORD_FIELDS}
    rec.update(index=index, label=f"T={temperature:g}", prompt_set=prompt.prompt_set, prompt_id=prompt.prompt_id,
               temperature=temperature, max_tokens=settings.max_tokens, itl_s=[])
    return rec


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True)


def run_prediction(target: EndpointClient, drafts: Sequence[EndpointClient] = (), *,
                   prompts: str | Path | Sequence[str] = BUILTIN_PROMPT_SETS, n_prompts: int | None = 8,
                   temperatures: Sequence[float] = DEFAULT_TEMPERATURES, ks: Sequence[int] = DEFAULT_KS,
                   methods: Sequence[str] = oracle.DRAFT_SAMPLE_METHODS, max_tokens: int = 64,
                   n_logprobs: int = DEFAULT_LOGPROBS, top_k: int | None = None, top_p: float | None = None,
                   seed: int = 0,
                   ngram: proposers.NgramConfig | None = DEFAULT_NGRAM,
                   suffix: suffix_replay.SuffixConfig | None = None,
                   model_free_samples: int = DEFAULT_MODEL_FREE_SAMPLES, runs_dir: str | Path = "runs",
                   resume: str | Path | None = None, stop_event: threading.Event | None = None,
                   progress: bool = True, on_progress: Callable[[int, int], None] | None = None):
    """Predict acceptance of every draft (and n-gram, suffix decoding) for ``target`` on ``prompts`` × ``temperatures``.

    ``model_free_samples``: texts the target samples per prompt at T > 0 for the counted candidates (n-gram, suffix,
    greedy drafts; their counters are averaged per request). ``suffix`` needs ``arctic-inference``
    (``suffix_replay``), checked first.

    Returns ``prediction.Prediction`` (run folder recorded as it goes). Raises OracleRefusal for a tokenizer
    mismatch or a server without prompt log-probabilities (the run folder, if already created, is marked "failed"
    and says why; ``exc.run_path`` points at it). ``on_progress(done, total)`` is called after every record
    (a notebook's progress bar); ``stop_event`` stops between requests (the run folder says "interrupted").
    """
    from specdec_lib.prediction import load_prediction

    temps = tuple(float(t) for t in temperatures)
    rules.check_temperatures(temps, distinct=True)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks={list(ks)}: integers >= 1")
    if any(m not in oracle.DRAFT_SAMPLE_METHODS for m in methods):
        raise ValueError(f"methods={list(methods)}: accepted {oracle.DRAFT_SAMPLE_METHODS}")
    if max_tokens < 2 or not (n_logprobs == -1 or n_logprobs >= 1):
        raise ValueError(f"max_tokens={max_tokens} (>= 2), n_logprobs={n_logprobs} (>= 1, or -1 for all)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p!r}: expected 0 < top_p <= 1 (1 or None: off)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k!r}: expected an integer >= 1 (None: off)")
    if not drafts and ngram is None and suffix is None:
        raise ValueError("nothing to predict: give a draft endpoint, an n-gram or a suffix configuration")
    if model_free_samples < 1:
        raise ValueError(f"model_free_samples={model_free_samples}: need >= 1")
    if suffix is not None:
        suffix_replay.check_available()
    prompt_list = load_prompts(prompts)[:n_prompts]
    if any(p.text is None for p in prompt_list):
        raise ValueError(f"prompts={prompts!r}: the oracle needs completion prompts ('prompt' lines), not 'messages'")
    settings = Settings(temps, tuple(sorted(set(ks))), tuple(methods), max_tokens, n_logprobs, top_k, seed, ngram,
                        None if top_p is None or top_p >= 1.0 else float(top_p), suffix=suffix,
                        model_free_samples=model_free_samples)
    target_model = served_model(target)
    draft_models = [(d, served_model(d)) for d in drafts]
    prompts_param = str(prompts) if isinstance(prompts, (str, Path)) else [str(p) for p in prompts]
    params = {**settings.as_dict(), "prompts": prompts_param,
              "n_prompts": len(prompt_list)}
    meta = {"endpoint": public_url(target.base_url), "served_model": target_model, "parameters": params,
            "drafts": [{"endpoint": public_url(d.base_url), "served_model": m} for d, m in draft_models]}
    writer = runs.RunWriter(Path(resume)) if resume else runs.RunWriter.create(runs_dir, KIND, meta)
    if resume and (writer.metadata.get("parameters") != json.loads(json.dumps(params))
                   or writer.metadata.get("drafts") != meta["drafts"]):
        raise ValueError(f"resume={resume}: parameters or drafts differ from the recorded run's")
    status = "failed"
    try:
        probe_ids = tokenize(target, target_model, prompt_list[0].text)
        checked = sum(check_same_tokenizer(target, target_model, d, m, [p.text for p in prompt_list[:4]])
                      for d, m in draft_models)
        vocab = vocab_size(target, target_model, probe_ids + [0, 0])
        writer.update_metadata(status="running", vocab_size=vocab, tokenizer_tokens_compared=checked)
        status = _drive(target, target_model, draft_models, prompt_list, settings, vocab, writer, stop_event,
                        progress, on_progress)
    except OracleRefusal as exc:
        writer.update_metadata(error=str(exc), error_kind=exc.kind)
        exc.run_path = writer.path
        raise
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        writer.finish(status)
    return load_prediction(writer.path)


def _drive(target, target_model, draft_models, prompt_list, settings: Settings, vocab, writer, stop_event,
           progress, on_progress) -> str:
    stop_event = stop_event or threading.Event()
    done = writer.completed_indices()
    jobs = [(ti * len(prompt_list) + pi, temp, prompt) for ti, temp in enumerate(settings.temperatures)
            for pi, prompt in enumerate(prompt_list)]
    bar = _progress(len(jobs), "predict", progress)
    finished = sum(1 for j in jobs if j[0] in done)
    bar.update(finished)
    errors = 0
    try:
        for index, temp, prompt in jobs:
            if index in done:
                continue
            if stop_event.is_set():
                return "interrupted"
            rec = _record(index, prompt, temp, settings)
            started = time.perf_counter()
            try:
                part = predict_one(target, target_model, draft_models, prompt, temp, settings, vocab,
                                   settings.seed + index)
                rec.update(oracle=part, status=200, prompt_tokens=part["prompt_ids"],
                           completion_tokens=len(part["continuation"]), finish_reason=part["finish_reason"])
            except EndpointError as exc:
                errors += 1
                rec.update(error=str(exc), error_kind=exc.kind, status=exc.status)
            rec["e2e_s"] = time.perf_counter() - started
            writer.append_request(rec)
            bar.update(1)
            finished += 1
            if on_progress is not None:
                on_progress(finished, len(jobs))
            if errors:
                bar.set_postfix_str(f"errors={errors}")
    finally:
        bar.close()
    return "complete"
