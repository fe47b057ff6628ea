"""Time decode/verify steps of random-weight decoder-only models on one GPU, for calibrating specdec_lib/load.py.

Runs on the GPU machine. Self-contained (torch only; the workbook is not imported) so it can run on a bare
machine that has no network: the architectures are written below from their Hugging Face config.json files and
the weights are random (timing does not depend on weight values).

What one "step" is here: one forward pass of a Llama-style decoder (fused QKV, rotary, GQA attention over a
pre-filled KV cache of `context_len` tokens, SwiGLU MLP, final norm, LM head over every processed token) for
`batch_size` sequences that each process `tokens_per_seq` new tokens (1 = normal decode, k + 1 = verification
of k draft tokens). The new keys/values are written in place into the cache, as a paged engine does. Steps are
captured in a CUDA graph (as vLLM does for decode batches) and timed with CUDA events: warm-up replays, then the
median of timed replays.

What it is not: vLLM's kernels (FlashAttention/FlashInfer paged attention, fused RMSNorm/rotary, custom
all-reduce), nor multi-GPU communication: "Llama-3-70B-tp4-shard" is the per-GPU quarter of Llama-3-70B at
tensor parallel 4 (heads, KV heads, MLP width and vocabulary divided by 4), all 80 layers, without the two
all-reduces per layer that TP adds. load.py adds communication from its own model.

Usage:
    python scripts/calibrate_gpu.py --out $OUT/h100_step_timings.json [--budget-s 420]
    python scripts/calibrate_gpu.py --smoke --out /tmp/smoke.json      # tiny CPU run to check the code
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

# Architectures from each model's Hugging Face config.json (random weights; only the shapes matter).
ARCHITECTURES = {
    "Qwen/Qwen2.5-0.5B": dict(num_layers=24, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                              num_kv_heads=2, head_dim=64, vocab_size=151936, qkv_bias=True),
    "meta-llama/Llama-3.2-1B": dict(num_layers=16, hidden_size=2048, intermediate_size=8192,
                                    num_attention_heads=32, num_kv_heads=8, head_dim=64, vocab_size=128256,
                                    qkv_bias=False),
    "meta-llama/Llama-3.1-8B": dict(num_layers=32, hidden_size=4096, intermediate_size=14336,
                                    num_attention_heads=32, num_kv_heads=8, head_dim=128, vocab_size=128256,
                                    qkv_bias=False),
    # Llama-3-70B (80 layers, hidden 8192, MLP 28672, 64 heads, 8 KV heads, vocab 128256) cut for TP 4:
    "meta-llama/Meta-Llama-3-70B@tp4-shard": dict(num_layers=80, hidden_size=8192, intermediate_size=28672 // 4,
                                                  num_attention_heads=64 // 4, num_kv_heads=8 // 4, head_dim=128,
                                                  vocab_size=128256 // 4, qkv_bias=False),
}
SMOKE_ARCHITECTURES = {
    "tiny": dict(num_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_kv_heads=2,
                 head_dim=16, vocab_size=100, qkv_bias=False),
}


class RandomDecoder:
    """Llama-style decoder with random bf16 weights, one tensor per matrix per layer (as vLLM stores them)."""

    def __init__(self, arch: dict, device: str, dtype: torch.dtype):
        self.a = arch
        self.attention = "packed"
        h, i = arch["hidden_size"], arch["intermediate_size"]
        nh, nkv, d = arch["num_attention_heads"], arch["num_kv_heads"], arch["head_dim"]
        self.layers = []
        for _ in range(arch["num_layers"]):
            layer = {
                "ln1": torch.ones(h, device=device, dtype=dtype),
                "wqkv": torch.randn(h, (nh + 2 * nkv) * d, device=device, dtype=dtype) * 0.02,
                "bqkv": (torch.zeros((nh + 2 * nkv) * d, device=device, dtype=dtype) if arch["qkv_bias"] else None),
                "wo": torch.randn(nh * d, h, device=device, dtype=dtype) * 0.02,
                "ln2": torch.ones(h, device=device, dtype=dtype),
                "wgu": torch.randn(h, 2 * i, device=device, dtype=dtype) * 0.02,
                "wd": torch.randn(i, h, device=device, dtype=dtype) * 0.02,
            }
            self.layers.append(layer)
        self.norm = torch.ones(h, device=device, dtype=dtype)
        self.lm_head = torch.randn(h, arch["vocab_size"], device=device, dtype=dtype) * 0.02
        self.weight_bytes = sum(t.numel() * t.element_size() for L in self.layers for t in L.values()
                                if t is not None) + self.norm.numel() * 2 + self.lm_head.numel() * 2

    def rms(self, x, w):
        if hasattr(F, "rms_norm"):
            return F.rms_norm(x, (x.shape[-1],), w, 1e-5)
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5).to(x.dtype) * w

    def forward(self, x, caches, cos, sin, ctx: int, q: int, mask):
        a = self.a
        nh, nkv, d = a["num_attention_heads"], a["num_kv_heads"], a["head_dim"]
        group = nh // nkv
        b = x.shape[0] // q
        for layer, (kc, vc) in zip(self.layers, caches):
            h = self.rms(x, layer["ln1"])
            qkv = h @ layer["wqkv"]
            if layer["bqkv"] is not None:
                qkv = qkv + layer["bqkv"]
            qkv = qkv.view(b, q, nh + 2 * nkv, d)
            qh, kh, vh = qkv.split([nh, nkv, nkv], dim=2)
            qh = rotate(qh, cos, sin)
            kh = rotate(kh, cos, sin)
            kc[:, :, ctx:ctx + q].copy_(kh.transpose(1, 2))
            vc[:, :, ctx:ctx + q].copy_(vh.transpose(1, 2))
            if self.attention == "lower_right":
                # verification: causal mask aligned to the end of the cache, GQA inside the kernel
                o = F.scaled_dot_product_attention(qh.transpose(1, 2), kc, vc, attn_mask=mask, enable_gqa=True)
                o = o.transpose(1, 2).reshape(b * q, nh * d)
            else:
                # GQA without copying K/V: the `group` query heads sharing a KV head become extra query rows.
                qg = qh.reshape(b, q, nkv, group, d).permute(0, 2, 3, 1, 4).reshape(b, nkv, group * q, d)
                o = F.scaled_dot_product_attention(qg, kc, vc, attn_mask=mask)
                o = o.reshape(b, nkv, group, q, d).permute(0, 3, 1, 2, 4).reshape(b * q, nh * d)
            x = x + o @ layer["wo"]
            h = self.rms(x, layer["ln2"])
            g, u = (h @ layer["wgu"]).chunk(2, dim=-1)
            x = x + (F.silu(g) * u) @ layer["wd"]
        return self.rms(x, self.norm) @ self.lm_head


def rotate(t, cos, sin):
    """Rotary embedding (rotate-half form) for t of shape (b, q, heads, d); cos/sin of shape (q, 1, d)."""
    t1, t2 = t.chunk(2, dim=-1)
    return t * cos + torch.cat((-t2, t1), dim=-1) * sin


def time_config(model, batch_size, q, ctx, device, dtype, warmup, reps, use_graph, attention):
    a = model.a
    nkv, d, h = a["num_kv_heads"], a["head_dim"], a["hidden_size"]
    caches = [(torch.randn(batch_size, nkv, ctx + q, d, device=device, dtype=dtype),
               torch.randn(batch_size, nkv, ctx + q, d, device=device, dtype=dtype)) for _ in model.layers]
    x = torch.randn(batch_size * q, h, device=device, dtype=dtype)
    pos = torch.arange(ctx, ctx + q, device=device, dtype=torch.float32)
    inv = 1.0 / (10000 ** (torch.arange(0, d // 2, device=device, dtype=torch.float32) / (d // 2)))
    ang = torch.cat([torch.outer(pos, inv)] * 2, dim=-1)
    cos, sin = ang.cos().to(dtype)[:, None, :], ang.sin().to(dtype)[:, None, :]
    mask = None
    model.attention = "packed"
    if q > 1 and attention == "lower_right":
        from torch.nn.attention.bias import causal_lower_right
        mask = causal_lower_right(q, ctx + q)
        model.attention = "lower_right"
    elif q > 1:
        group = a["num_attention_heads"] // nkv
        row_tok = torch.arange(group * q, device=device) % q
        keys = torch.arange(ctx + q, device=device)
        mask = keys[None, :] <= (ctx + row_tok[:, None])

    def step():
        return model.forward(x, caches, cos, sin, ctx, q, mask)

    mode = "eager"
    graph = None
    with torch.no_grad():
        if device == "cuda" and use_graph:
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
            except Exception as exc:  # recorded in the output, never silent
                graph = None
                mode = f"eager (graph capture failed: {type(exc).__name__}: {exc})"[:200]
        run = graph.replay if graph is not None else step
        for _ in range(warmup):
            run()
        times = []
        if device == "cuda":
            torch.cuda.synchronize()
            for _ in range(reps):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                run()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1) / 1e3)
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
    kv_bytes = sum(c.numel() * c.element_size() for pair in caches for c in pair)
    caches = graph = None  # free the KV tensors and the graph before the next config (step() is done with them)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "reps": reps,
            "mode": mode, "attention": model.attention, "kv_cache_bytes_allocated": kv_bytes}


def microbench(device, dtype):
    """Achieved copy bandwidth and dense bf16 matmul throughput: the ceilings the step model's factors divide."""
    out = {}
    if device != "cuda":
        return out
    n = 1 << 30  # elements -> 2 GiB per bf16 buffer
    src = torch.empty(n, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        dst.copy_(src)
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    out["copy_bytes_moved"] = 2 * n * 2
    out["copy_median_s"] = statistics.median(ts)
    out["copy_bandwidth_bytes_per_s"] = 2 * n * 2 / statistics.median(ts)
    del src, dst
    torch.cuda.empty_cache()
    m = 8192
    a = torch.randn(m, m, device=device, dtype=dtype)
    b = torch.randn(m, m, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    out["matmul_shape"] = [m, m, m]
    out["matmul_median_s"] = statistics.median(ts)
    out["matmul_bf16_flops_per_s"] = 2 * m ** 3 / statistics.median(ts)
    del a, b
    torch.cuda.empty_cache()
    return out


def environment(device):
    env = {"utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cudnn": (torch.backends.cudnn.version() if device == "cuda" else None)}
    try:
        import transformers  # noqa: F401  (recorded only; not used)
        env["transformers"] = transformers.__version__
    except Exception as exc:
        env["transformers"] = f"not importable: {type(exc).__name__}"
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu_name=p.name, gpu_memory_bytes=p.total_memory, gpu_sm_count=p.multi_processor_count,
                   gpu_capability=f"{p.major}.{p.minor}")
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit",
                 "--format=csv"], capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception as exc:
            env["nvidia_smi"] = f"failed: {exc}"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new configuration after this")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU, to check the code")
    ap.add_argument("--attention", choices=["lower_right", "packed"], default="lower_right",
                    help="verification attention: lower-right causal mask with GQA in the kernel (flash-capable), "
                         "or GQA packed into query rows with an explicit boolean mask (the first run's choice)")
    ap.add_argument("--max-gpu-bytes", type=float, default=66e9, help="skip configs whose weights+KV exceed this")
    args = ap.parse_args()
    t_start = time.monotonic()
    device = "cpu" if args.smoke else "cuda"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    archs = SMOKE_ARCHITECTURES if args.smoke else ARCHITECTURES
    batches = [1, 4] if args.smoke else [1, 4, 16, 64, 128, 256]
    qs = [1, 6] if args.smoke else [1, 4, 6]
    ctxs = [32] if args.smoke else [512, 2048]
    # a held-out grid (longer context, other batch sizes and k) that the fit never sees: validation only
    holdout = [(64, 1), (64, 5)] if args.smoke else [(8192, 1), (8192, 5), (1024, 3), (1024, 8)]
    holdout_batches = [2] if args.smoke else [2, 8, 32, 96]
    result = {"schema": "specdec-calibration-step-timings/1", "environment": environment(device),
              "command": " ".join(sys.argv), "attention_for_verification": args.attention,
              "step_definition": __doc__.split("What one")[1].split("Usage:")[0].strip(),
              "architectures": archs, "dtype": str(dtype), "microbench": {}, "records": [], "skipped": []}

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)

    result["microbench"] = microbench(device, dtype)
    save()
    print(json.dumps(result["environment"], indent=1), flush=True)
    print(json.dumps(result["microbench"], indent=1), flush=True)
    for name, arch in archs.items():
        torch.manual_seed(0)
        model = RandomDecoder(arch, device, dtype)
        kv_per_token = arch["num_layers"] * 2 * arch["num_kv_heads"] * arch["head_dim"] * (2 if not args.smoke else 4)
        grid = [("fit", ctx, b, q) for ctx in ctxs for b in batches for q in qs]
        grid += [("holdout", ctx, b, q) for ctx, q in holdout for b in holdout_batches]
        for n_cfg, (subset, ctx, b, q) in enumerate(grid):
            if True:
                if True:
                    cfg = {"model": name, "batch_size": b, "tokens_per_seq": q, "context_len": ctx, "set": subset}
                    need = model.weight_bytes + kv_per_token * b * (ctx + q)
                    if need > args.max_gpu_bytes:
                        reason = f"weights+KV {need:.3g} B > {args.max_gpu_bytes:.3g}"
                        result["skipped"].append({**cfg, "reason": reason})
                        continue
                    if time.monotonic() - t_start > args.budget_s:
                        result["skipped"].append({**cfg, "reason": "time budget spent"})
                        continue
                    try:
                        r = time_config(model, b, q, ctx, device, dtype, warmup=5 if args.smoke else 10,
                                        reps=5 if args.smoke else 25, use_graph=not args.smoke,
                                        attention=args.attention)
                    except torch.cuda.OutOfMemoryError as exc:
                        result["skipped"].append({**cfg, "reason": f"OOM: {str(exc)[:120]}"})
                        torch.cuda.empty_cache()
                        continue
                    rec = {**cfg, "weight_bytes": model.weight_bytes, **r}
                    result["records"].append(rec)
                    print(f"{name:40s} {subset:7s} L={ctx:5d} B={b:4d} q={q} {r['median_s'] * 1e3:9.3f} ms  "
                          f"{r['mode']} {r['attention']}", flush=True)
                    if device == "cuda":
                        torch.cuda.empty_cache()
                if n_cfg % 12 == 11:
                    save()
        save()
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    result["wall_s"] = time.monotonic() - t_start
    save()
    print(f"done: {len(result['records'])} records, {len(result['skipped'])} skipped, {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
