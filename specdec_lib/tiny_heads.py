"""A tiny EAGLE-3 head for the tiny Llama target (tiny_models.py), built here (random weights, no download).

Run with the vLLM venv's python (needs torch and safetensors):

    <vllm venv>/bin/python specdec_lib/tiny_heads.py OUT_DIR

It writes ``OUT_DIR/eagle3_head/`` in the flat EAGLE-3 checkpoint form vLLM 0.32 loads
(``architectures: ["LlamaForCausalLMEagle3"]``, weights ``midlayer.*``, ``fc``, ``norm``, ``lm_head``, ``d2t``;
``vllm/model_executor/models/llama_eagle3.py`` load_weights): one decoder layer of the target's attention shape
(4 heads, 2 KV heads, head_dim 32, hidden 128, MLP 256) whose QKV reads 2 x hidden, fc 2 x 128 -> 128 (see
AUX_LAYER_IDS), an lm_head over a draft vocabulary of ``DRAFT_VOCAB`` of the target's 2048 tokens, and the
int64 d2t offsets (0: draft token i is target token i). No embedding: vLLM shares the target's. The head's
proposals are random (acceptance near 0): it is for memory and KV-capacity checks, not for acceptance.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HEAD_NAME = "eagle3_head"
DRAFT_VOCAB = 1024
HEAD_ARCH = dict(num_hidden_layers=1, hidden_size=128, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=32, vocab_size=2048, draft_vocab_size=DRAFT_VOCAB)
SEED = 4321
# The tiny target has 2 layers: vLLM's default auxiliary layers (2, n // 2, n - 3) do not exist there, so the head
# names its own: the hidden states entering layers 0 and 1, and fc is 2 x hidden -> hidden.
AUX_LAYER_IDS = (0, 1)


def config() -> dict:
    return {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
            "rope_theta": 10000.0, "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(AUX_LAYER_IDS)},
            **HEAD_ARCH}


def build(out_dir: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(SEED)
    a = HEAD_ARCH
    h, i, d = a["hidden_size"], a["intermediate_size"], a["head_dim"]
    q, kv = a["num_attention_heads"] * d, a["num_key_value_heads"] * d

    def w(*shape):
        return (torch.randn(*shape) * 0.02).to(torch.bfloat16)

    tensors = {
        "midlayer.self_attn.q_proj.weight": w(q, 2 * h), "midlayer.self_attn.k_proj.weight": w(kv, 2 * h),
        "midlayer.self_attn.v_proj.weight": w(kv, 2 * h), "midlayer.self_attn.o_proj.weight": w(h, q),
        "midlayer.mlp.gate_proj.weight": w(i, h), "midlayer.mlp.up_proj.weight": w(i, h),
        "midlayer.mlp.down_proj.weight": w(h, i),
        "midlayer.input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        "midlayer.hidden_norm.weight": torch.ones(h, dtype=torch.bfloat16),
        "midlayer.post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
        "norm.weight": torch.ones(h, dtype=torch.bfloat16), "fc.weight": w(h, len(AUX_LAYER_IDS) * h),
        "lm_head.weight": w(a["draft_vocab_size"], h), "d2t": torch.zeros(a["draft_vocab_size"], dtype=torch.long),
    }
    path = Path(out_dir) / HEAD_NAME
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config(), indent=2) + "\n")
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tiny_heads.py OUT_DIR")
    print(build(Path(sys.argv[1])))
