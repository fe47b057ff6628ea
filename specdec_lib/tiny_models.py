"""Tiny Llama models built on this machine (no download) for real-vLLM tests and the demo endpoint.

Run as a script with the vLLM venv's python (it needs torch, transformers and tokenizers, which the workbook's
own environment does not have):

    <vllm venv>/bin/python specdec_lib/tiny_models.py OUT_DIR

It writes ``OUT_DIR/<name>/`` for every name in ``MODEL_NAMES`` (config.json, bf16 safetensors, tokenizer with a
chat template) and ``OUT_DIR/manifest.json``. ``specdec_lib.localserver.ensure_tiny_models`` calls it and caches
the result under ``.cache/tiny-models/<BUILDER_VERSION>/``. Importing this module needs only the standard
library (the workbook reads the constants below); torch and friends are imported inside ``build``.

The models (random weights, fixed seeds, so every build is identical for a given torch build):

- ``target``: Llama, 2 layers, hidden 128, 4 heads, 2 KV heads (GQA), head_dim 32, intermediate 256,
  vocabulary 2048, max_position_embeddings 2048, untied output head. KV bytes per token in bf16:
  2 (K and V) x 2 layers x 2 KV heads x 32 x 2 bytes = 512.
- ``draft_copy``: the target's weights unchanged (acceptance 1 at temperature 0).
- ``draft_noise05`` / ``draft_noise20``: the target plus Gaussian noise of 5 % / 20 % of each tensor's standard
  deviation (per tensor; constant tensors such as RMSNorm weights, whose std is 0, stay unchanged).
- ``draft_small``: a smaller architecture (1 layer, hidden 64, 2 heads, 2 KV heads, head_dim 32, intermediate
  128) with its own random weights and the same tokenizer: 256 KV bytes per token. Its proposals are unrelated
  to the target's (measured: 0 of 1,008 draft tokens accepted at temperature 0 and 0.8, k = 4, greedy draft
  sampling): use it for memory and KV-capacity checks, not for acceptance.

Why the output head is scaled: a randomly initialised Llama (weights ~ N(0, 0.02)) gives logits with a standard
deviation of about 0.02 x sqrt(hidden) ~ 0.2, i.e. a nearly flat distribution over 2048 tokens, so temperature
would make no difference. Multiplying ``lm_head`` by ``LM_HEAD_SCALE`` sharpens it to something a temperature
sweep can move (``manifest.json`` records the measured top-1 probability and entropy at temperature 1).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BUILDER_VERSION = "v1"
MODEL_NAMES = ("target", "draft_copy", "draft_noise05", "draft_noise20", "draft_small")
SEED = 1234
LM_HEAD_SCALE = 20.0
VOCAB_SIZE = 2048
CORPUS_DIR = Path(__file__).resolve().parent / "corpus"

SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
# Roles become marker tokens; the assistant's turn ends with <|end|>, which is also the EOS token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

TARGET_ARCH = dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=32, intermediate_size=256)
SMALL_ARCH = dict(num_hidden_layers=1, hidden_size=64, num_attention_heads=2, num_key_value_heads=2,
                  head_dim=32, intermediate_size=128)
NOISE_FRACTIONS = {"draft_noise05": 0.05, "draft_noise20": 0.20}


def corpus_text() -> list[str]:
    """The shipped corpus, one string per paragraph (blank-line separated), files in name order."""
    files = sorted(CORPUS_DIR.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no *.txt corpus files in {CORPUS_DIR}")
    return [p.strip() for f in files for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]


def build(out_dir: Path) -> dict:
    """Build every model into ``out_dir`` and return the manifest (also written to manifest.json)."""
    import time

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    # Tokenizer: byte-level BPE (any text round-trips) trained on the shipped corpus.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus_text(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|end|>",
                                        pad_token="<|endoftext|>", unk_token=None)
    tokenizer.chat_template = CHAT_TEMPLATE
    if len(tokenizer) > VOCAB_SIZE:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size {VOCAB_SIZE}")

    def config(arch: dict) -> LlamaConfig:
        return LlamaConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           torch_dtype="bfloat16", **arch)

    def random_model(arch: dict, seed: int) -> LlamaForCausalLM:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config(arch)).to(torch.float32).eval()
        with torch.no_grad():
            model.lm_head.weight.mul_(LM_HEAD_SCALE)
        return model

    def save(model: LlamaForCausalLM, name: str) -> Path:
        path = out_dir / name
        model.to(torch.bfloat16).save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
        model.to(torch.float32)
        return path

    target = random_model(TARGET_ARCH, SEED)
    target_state = {k: v.clone() for k, v in target.state_dict().items()}
    save(target, "target")
    save(target, "draft_copy")
    noise_gen = torch.Generator().manual_seed(SEED + 1)
    for name, fraction in NOISE_FRACTIONS.items():
        noisy = {}
        for key, tensor in target_state.items():
            std = tensor.float().std() if tensor.numel() > 1 else torch.tensor(0.0)
            noisy[key] = tensor + fraction * std * torch.randn(tensor.shape, generator=noise_gen)
        target.load_state_dict(noisy)
        save(target, name)
    save(random_model(SMALL_ARCH, SEED + 2), "draft_small")

    # What the output head scale does: the target's next-token distribution at temperature 1 over corpus text.
    target.load_state_dict(target_state)
    ids = tokenizer(corpus_text()[0], return_tensors="pt").input_ids[:, :128]
    with torch.no_grad():
        probs = torch.softmax(target.to(torch.bfloat16)(ids).logits.float(), dim=-1)[0]
    entropy_nats = float(-(probs * probs.clamp_min(1e-30).log()).sum(-1).mean())
    manifest = {
        "builder_version": BUILDER_VERSION, "seed": SEED, "lm_head_scale": LM_HEAD_SCALE,
        "vocab_size": VOCAB_SIZE, "tokenizer_tokens": len(tokenizer), "models": list(MODEL_NAMES),
        "noise_fractions": NOISE_FRACTIONS, "torch": torch.__version__,
        "target_top1_probability_t1": round(float(probs.max(-1).values.mean()), 4),
        "target_entropy_nats_t1": round(entropy_nats, 4),
        "build_seconds": round(time.monotonic() - started, 2),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# An engine-bound pair for validating the simulator (added for issue 14; the models above are unchanged)
#
# ``engine_target``: Llama, 8 layers, hidden 1024, 16 heads, 4 KV heads, head_dim 64, intermediate 2816, the tiny
# models' tokenizer and vocabulary (2048): about 94 M parameters, 188 MB in bf16, so a decode step on a small CPU
# is tens of milliseconds of engine time (reading the weights), not the ~2 ms of ``target``. KV bytes per token:
# 2 x 8 layers x 4 KV heads x 64 x 2 bytes = 8,192.
# ``engine_draft``: the target's first ``ENGINE_DRAFT_LAYERS`` layers with the target's embedding, final norm and
# output head, i.e. a truncated copy (about 1/8 of the target's layer cost). So that it predicts the target well,
# the target's later layers write into the residual stream through ``o_proj`` and ``down_proj`` scaled by
# ``ENGINE_LATE_LAYER_SCALE``: they still cost a full layer each but move the logits little. With greedy draft
# sampling, acceptance is high at temperature 0 and falls at temperature 1 (the target's probability of the draft's
# top token), the two-acceptance mix the source describes. The output head is scaled by ``ENGINE_LM_HEAD_SCALE``
# (7, less than the tiny models' 20): on corpus text the draft's top token is the target's 91 % of the time, and
# the target gives it probability 0.41 at temperature 1 (manifest.json records both for the build).
ENGINE_MODEL_NAMES = ("engine_target", "engine_draft")
ENGINE_TARGET_ARCH = dict(num_hidden_layers=8, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4,
                          head_dim=64, intermediate_size=2816)
ENGINE_DRAFT_LAYERS = 1
ENGINE_LATE_LAYER_SCALE = 0.01
ENGINE_LM_HEAD_SCALE = 7.0  # top-1 probability ~0.41 at temperature 1, so acceptance differs by temperature
ENGINE_SEED = 4321


def build_engine_bound(out_dir: Path, tokenizer_dir: Path) -> dict:
    """Build ``engine_target`` and ``engine_draft`` into ``out_dir`` with the tokenizer saved in ``tokenizer_dir``
    (a tiny model's folder); returns the manifest (also written to ``out_dir/manifest.json``)."""
    import time

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)

    def config(layers: int) -> LlamaConfig:
        arch = dict(ENGINE_TARGET_ARCH, num_hidden_layers=layers)
        return LlamaConfig(vocab_size=VOCAB_SIZE, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           torch_dtype="bfloat16", **arch)

    torch.manual_seed(ENGINE_SEED)
    target = LlamaForCausalLM(config(ENGINE_TARGET_ARCH["num_hidden_layers"])).to(torch.float32).eval()
    with torch.no_grad():
        target.lm_head.weight.mul_(ENGINE_LM_HEAD_SCALE)
        for layer in target.model.layers[ENGINE_DRAFT_LAYERS:]:
            layer.self_attn.o_proj.weight.mul_(ENGINE_LATE_LAYER_SCALE)
            layer.mlp.down_proj.weight.mul_(ENGINE_LATE_LAYER_SCALE)
    draft = LlamaForCausalLM(config(ENGINE_DRAFT_LAYERS)).to(torch.float32).eval()
    draft_state = {k: v for k, v in target.state_dict().items()
                   if not k.startswith("model.layers.") or int(k.split(".")[2]) < ENGINE_DRAFT_LAYERS}
    draft.load_state_dict(draft_state)
    for model, name in ((target, "engine_target"), (draft, "engine_draft")):
        model.to(torch.bfloat16).save_pretrained(out_dir / name, safe_serialization=True)
        tokenizer.save_pretrained(out_dir / name)

    # how often the draft's top token is the target's, and the target's top-1 probability, over corpus text
    ids = tokenizer(" ".join(corpus_text()[:4]), return_tensors="pt").input_ids[:, :256]
    with torch.no_grad():
        p_target = torch.softmax(target(ids).logits.float(), dim=-1)[0]
        p_draft = torch.softmax(draft(ids).logits.float(), dim=-1)[0]
    draft_top = p_draft.argmax(-1)
    manifest = {
        "engine_seed": ENGINE_SEED, "lm_head_scale": ENGINE_LM_HEAD_SCALE, "vocab_size": VOCAB_SIZE,
        "target_arch": ENGINE_TARGET_ARCH, "draft_layers": ENGINE_DRAFT_LAYERS,
        "late_layer_scale": ENGINE_LATE_LAYER_SCALE, "models": list(ENGINE_MODEL_NAMES),
        "target_params": sum(p.numel() for p in target.parameters()),
        "draft_params": sum(p.numel() for p in draft.parameters()),
        "draft_top1_matches_target_t0": round(float((draft_top == p_target.argmax(-1)).float().mean()), 4),
        "target_prob_of_draft_top1_t1": round(float(p_target.gather(-1, draft_top[:, None]).mean()), 4),
        "target_top1_probability_t1": round(float(p_target.max(-1).values.mean()), 4),
        "torch": torch.__version__, "build_seconds": round(time.monotonic() - started, 2),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--engine-bound":
        print(json.dumps(build_engine_bound(Path(sys.argv[2]), Path(sys.argv[3]))))
        sys.exit(0)
    if len(sys.argv) != 2:
        sys.exit("usage: python tiny_models.py OUT_DIR | --engine-bound OUT_DIR TOKENIZER_DIR")
    print(json.dumps(build(Path(sys.argv[1]))))
