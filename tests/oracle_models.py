"""A tiny model with a DIFFERENT tokenizer, for the oracle's tokenizer-mismatch test on a real vLLM server.

The target's weights (so vLLM loads it exactly like the target) with a byte-level BPE tokenizer trained on the same
corpus but with a smaller vocabulary (1024 instead of 2048): the merges differ, so the same text gets different ids.
Built once in the vLLM environment (it has ``tokenizers`` and ``transformers``) beside the tiny models' cache.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import textwrap
from pathlib import Path

from specdec_lib import localserver

OTHER_VOCAB = 1024

_BUILD = textwrap.dedent("""
    import shutil, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    import tiny_models as tm
    target, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (target / name).exists():
            shutil.copy(target / name, out / name)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size={vocab}, special_tokens=list(tm.SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(tm.corpus_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|end|>",
                                  pad_token="<|endoftext|>", unk_token=None)
    tok.chat_template = tm.CHAT_TEMPLATE
    tok.save_pretrained(out)
""").format(vocab=OTHER_VOCAB)


def ensure_other_tokenizer_model(models: localserver.TinyModels, venv: Path) -> Path:
    """The target's weights with another tokenizer, cached as ``<tiny models root>-other-tokenizer``."""
    out = models.root.parent / f"{models.root.name}-other-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    with open(models.root.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "tokenizer.json").is_file():
            return out
        staging = out.with_name(out.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        lib = Path(localserver.__file__).resolve().parent
        done = subprocess.run([str(localserver.venv_python(venv)), "-c", _BUILD, str(models.target), str(staging),
                               str(lib)], capture_output=True, text=True, env=localserver.quiet_env(), timeout=300)
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"building the other-tokenizer model failed:\n{done.stderr[-3000:]}")
        staging.rename(out)
    return out
