"""Time an EAGLE-3 head's draft step (fc 3h->h, one decoder layer reading 2h, lm_head over the draft vocabulary)
and the target's decode/verify steps on one GPU, with random weights (no download), for specdec_lib/methods.py.

Runs on the GPU machine beside scripts/calibrate_gpu.py, whose RandomDecoder, rotate, environment and microbench
it reuses (same CUDA-graph timing: warm-up replays, then the median of timed replays). The head's shapes are those
of yuhuili/EAGLE3-LLaMA3.1-Instruct-8B (data/drafters.csv): hidden 4096, MLP 14336, 32 heads, 8 KV heads,
head_dim 128, draft vocabulary 32000 of the target's 128256; its KV cache is its own (one layer), as in vLLM.

What a "head step" is here, as vLLM 0.32's llama_eagle3.py runs it: fc over the 3 auxiliary hidden states
(3h -> h), RMSNorm of the token embeddings and of the hidden state, their concatenation (2h) into fused QKV,
attention over the head's own cache, SwiGLU MLP, final norm, lm_head over the 32000 draft tokens; "+d2t" also
scatters the draft logits into a full-vocabulary tensor filled with -inf (compute_logits). q = 4 with
"parallel" is one pass over 4 positions per sequence (P-EAGLE's parallel drafting).

Usage:  python scripts/time_eagle_head.py --out $OUT/h100_eagle3_head_timings.json [--budget-s 300]
        python scripts/time_eagle_head.py --smoke --out /tmp/smoke.json     (CPU, tiny shapes)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(os.getcwd(), "scripts"))
from calibrate_gpu import RandomDecoder, environment, microbench, rotate  # noqa: E402

HEAD = dict(num_layers=1, hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_kv_heads=8,
            head_dim=128, vocab_size=32000, qkv_bias=False, target_vocab_size=128256)
TARGET = dict(num_layers=32, hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_kv_heads=8,
              head_dim=128, vocab_size=128256, qkv_bias=False)
SMOKE_HEAD = dict(num_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_kv_heads=2,
                  head_dim=16, vocab_size=50, qkv_bias=False, target_vocab_size=100)
SMOKE_TARGET = dict(num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_kv_heads=2,
                    head_dim=16, vocab_size=100, qkv_bias=False)


class RandomEagle3Head(RandomDecoder):
    """One Llama layer whose QKV reads 2h (embeds + hidden), plus fc (3h -> h), hidden_norm, draft lm_head."""

    def __init__(self, arch: dict, device: str, dtype: torch.dtype):
        super().__init__(arch, device, dtype)
        h, nh, nkv, d = arch["hidden_size"], arch["num_attention_heads"], arch["num_kv_heads"], arch["head_dim"]
        self.layers[0]["wqkv"] = torch.randn(2 * h, (nh + 2 * nkv) * d, device=device, dtype=dtype) * 0.02
        self.fc = torch.randn(3 * h, h, device=device, dtype=dtype) * 0.02
        self.hidden_norm = torch.ones(h, device=device, dtype=dtype)
        self.d2t_index = torch.randperm(arch["target_vocab_size"], device=device)[: arch["vocab_size"]]
        self.weight_bytes = sum(t.numel() * t.element_size() for L in self.layers for t in L.values()
                                if t is not None) + (self.fc.numel() + self.lm_head.numel() + 2 * h) * 2

    def head_forward(self, aux, emb, caches, cos, sin, ctx, q, mask, d2t):
        a = self.a
        nh, nkv, d = a["num_attention_heads"], a["num_kv_heads"], a["head_dim"]
        group = nh // nkv
        b = aux.shape[0] // q
        layer = self.layers[0]
        kc, vc = caches[0]
        hs = aux @ self.fc
        x = torch.cat([self.rms(emb, layer["ln1"]), self.rms(hs, self.hidden_norm)], dim=-1)
        qkv = (x @ layer["wqkv"]).view(b, q, nh + 2 * nkv, d)
        qh, kh, vh = qkv.split([nh, nkv, nkv], dim=2)
        qh, kh = rotate(qh, cos, sin), rotate(kh, cos, sin)
        kc[:, :, ctx:ctx + q].copy_(kh.transpose(1, 2))
        vc[:, :, ctx:ctx + q].copy_(vh.transpose(1, 2))
        qg = qh.reshape(b, q, nkv, group, d).permute(0, 2, 3, 1, 4).reshape(b, nkv, group * q, d)
        o = F.scaled_dot_product_attention(qg, kc, vc, attn_mask=mask)
        o = o.reshape(b, nkv, group, q, d).permute(0, 3, 1, 2, 4).reshape(b * q, nh * d)
        x = hs + o @ layer["wo"]
        g, u = (self.rms(x, layer["ln2"]) @ layer["wgu"]).chunk(2, dim=-1)
        x = x + (F.silu(g) * u) @ layer["wd"]
        logits = self.rms(x, self.norm) @ self.lm_head
        if d2t:
            full = logits.new_full((logits.shape[0], a["target_vocab_size"]), float("-inf"))
            full[:, self.d2t_index] = logits
            return full
        return logits


def _timed(step, device, warmup, reps):
    graph, mode = None, "eager"
    with torch.no_grad():
        if device == "cuda":
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
                mode = "cuda_graph"
            except Exception as exc:  # recorded, never silent
                graph, mode = None, f"eager (graph capture failed: {type(exc).__name__})"
        run = graph.replay if graph is not None else step
        for _ in range(warmup):
            run()
        times = []
        for _ in range(reps):
            if device == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                run()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1) / 1e3)
            else:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
    del graph
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "reps": reps,
            "mode": mode}


def _rope(q, ctx, d, device, dtype):
    pos = torch.arange(ctx, ctx + q, device=device, dtype=torch.float32)
    inv = 1.0 / (10000 ** (torch.arange(0, d // 2, device=device, dtype=torch.float32) / (d // 2)))
    ang = torch.cat([torch.outer(pos, inv)] * 2, dim=-1)
    return ang.cos().to(dtype)[:, None, :], ang.sin().to(dtype)[:, None, :]


def _mask(a, q, ctx, device):
    if q == 1:
        return None
    group = a["num_attention_heads"] // a["num_kv_heads"]
    row_tok = torch.arange(group * q, device=device) % q
    keys = torch.arange(ctx + q, device=device)
    return keys[None, :] <= (ctx + row_tok[:, None])


def time_head(head, b, q, ctx, d2t, device, dtype, warmup, reps):
    a = head.a
    h, nkv, d = a["hidden_size"], a["num_kv_heads"], a["head_dim"]
    caches = [(torch.randn(b, nkv, ctx + q, d, device=device, dtype=dtype),
               torch.randn(b, nkv, ctx + q, d, device=device, dtype=dtype))]
    aux = torch.randn(b * q, 3 * h, device=device, dtype=dtype)
    emb = torch.randn(b * q, h, device=device, dtype=dtype)
    cos, sin = _rope(q, ctx, d, device, dtype)
    mask = _mask(a, q, ctx, device)
    out = _timed(lambda: head.head_forward(aux, emb, caches, cos, sin, ctx, q, mask, d2t), device, warmup, reps)
    caches = None  # free the KV tensors before the next config
    return out


def time_target(model, b, q, ctx, device, dtype, warmup, reps):
    a = model.a
    nkv, d, h = a["num_kv_heads"], a["head_dim"], a["hidden_size"]
    caches = [(torch.randn(b, nkv, ctx + q, d, device=device, dtype=dtype),
               torch.randn(b, nkv, ctx + q, d, device=device, dtype=dtype)) for _ in model.layers]
    x = torch.randn(b * q, h, device=device, dtype=dtype)
    cos, sin = _rope(q, ctx, d, device, dtype)
    mask = _mask(a, q, ctx, device)
    model.attention = "packed"
    out = _timed(lambda: model.forward(x, caches, cos, sin, ctx, q, mask), device, warmup, reps)
    caches = None  # free the KV tensors before the next config
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--budget-s", type=float, default=300.0)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.bfloat16
    head_arch, target_arch = (SMOKE_HEAD, SMOKE_TARGET) if args.smoke else (HEAD, TARGET)
    warmup, reps = (1, 3) if args.smoke else (10, 25)
    started = time.monotonic()
    torch.manual_seed(0)
    result = {"command": " ".join(sys.argv), "environment": environment(device), "head": head_arch,
              "target": target_arch, "microbench": microbench(device, dtype), "records": [], "skipped": []}
    head = RandomEagle3Head(head_arch, device, dtype)
    result["head_weight_bytes"] = head.weight_bytes
    batches = (1, 4) if args.smoke else (1, 2, 4, 8, 16, 32, 64, 128, 256)
    contexts = (16,) if args.smoke else (512, 2048)
    grid = [("head", b, 1, c, False) for c in contexts for b in batches]
    grid += [("head", b, 1, contexts[0], True) for b in batches]
    grid += [("head", b, 4, contexts[0], False) for b in batches]  # parallel drafting: one pass, 4 positions
    grid += [("target", b, q, contexts[0], False) for q in (1, 5) for b in batches]
    target = None

    def save():
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    for kind, b, q, ctx, d2t in grid:
        if time.monotonic() - started > args.budget_s:
            result["skipped"].append({"kind": kind, "batch_size": b, "q": q, "context_len": ctx, "d2t": d2t,
                                      "reason": "time budget"})
            continue
        try:
            if kind == "head":
                t = time_head(head, b, q, ctx, d2t, device, dtype, warmup, reps)
            else:
                if target is None:
                    target = RandomDecoder(target_arch, device, dtype)
                    result["target_weight_bytes"] = target.weight_bytes
                t = time_target(target, b, q, ctx, device, dtype, warmup, reps)
        except torch.cuda.OutOfMemoryError as exc:
            result["skipped"].append({"kind": kind, "batch_size": b, "q": q, "context_len": ctx, "d2t": d2t,
                                      "reason": f"OOM: {str(exc)[:120]}"})
            torch.cuda.empty_cache()
            continue
        rec = {"kind": kind, "batch_size": b, "q": q, "context_len": ctx, "d2t": d2t, **t}
        result["records"].append(rec)
        print(json.dumps(rec), flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
        save()
    save()


if __name__ == "__main__":
    main()
