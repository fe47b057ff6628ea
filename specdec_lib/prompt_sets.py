"""Prompts for sweeps and load tests: the built-in sets and a user's JSONL file (pure, reads package data).

User JSONL: one object per line, ``{"id": ..., "prompt": "..."}`` or ``{"id": ..., "messages": [...]}`` (optional
``"set"`` to group them). Errors name the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

BUILTIN_PROMPT_SETS = ("chat", "code", "summarisation", "json_extraction")


@dataclass(frozen=True)
class Prompt:
    prompt_set: str
    prompt_id: str
    text: str | None = None  # completion prompt, or the single user message for chat
    messages: tuple[dict, ...] | None = None  # a full chat conversation (user JSONL may give one)

    def chat_messages(self) -> list[dict]:
        return list(self.messages) if self.messages is not None else [{"role": "user", "content": self.text}]


def _parse_prompt_lines(lines: Iterable[str], set_name: str, where: str) -> list[Prompt]:
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{where}:{n}: not valid JSON ({exc})") from None
        if not isinstance(obj, dict) or ("prompt" in obj) == ("messages" in obj):
            raise ValueError(f"{where}:{n}: each line must be an object with exactly one of 'prompt' or 'messages'")
        if "prompt" in obj and (not isinstance(obj["prompt"], str) or not obj["prompt"].strip()):
            raise ValueError(f"{where}:{n}: 'prompt' must be a non-empty string")
        messages = obj.get("messages")
        if "messages" in obj and not (isinstance(messages, list) and all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages)):
            raise ValueError(f"{where}:{n}: 'messages' must be a list of {{'role', 'content'}} objects")
        out.append(
            Prompt(
                prompt_set=str(obj.get("set", set_name)),
                prompt_id=str(obj.get("id", f"{set_name}-{n}")),
                text=obj.get("prompt"),
                messages=tuple(obj["messages"]) if "messages" in obj else None,
            )
        )
    if not out:
        raise ValueError(f"{where}: no prompts")
    return out


def prompts_param(source: str | Path | Sequence[str]) -> str | list[str]:
    """How the prompt source is written in a run's metadata (a path as text, set names as a list)."""
    if isinstance(source, (str, Path)):
        return str(source)
    return [str(p) for p in source]


def load_prompts(source: str | Path | Sequence[str] = BUILTIN_PROMPT_SETS) -> list[Prompt]:
    """Prompts from built-in sets (names in BUILTIN_PROMPT_SETS) or a user JSONL file.

    User JSONL: one object per line, ``{"id": ..., "prompt": "..."}`` or ``{"id": ..., "messages": [...]}``
    (optional ``"set"`` to group them). Built-in sets are interleaved so any prefix mixes all of them.
    """
    if isinstance(source, Path) or (isinstance(source, str) and (source.endswith(".jsonl") or "/" in source)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"prompts file {path}: {'is a directory' if path.is_dir() else 'does not exist'}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"prompts file {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        return _parse_prompt_lines(text.splitlines(), path.stem, str(path))
    names = [source] if isinstance(source, str) else list(source)
    unknown = [n for n in names if n not in BUILTIN_PROMPT_SETS]
    if unknown or not names:
        raise ValueError(f"prompt sets {unknown or names}: choose from {BUILTIN_PROMPT_SETS} or give a .jsonl path")
    sets = []
    for name in names:
        text = resources.files("specdec_lib").joinpath("prompts", f"{name}.jsonl").read_text(encoding="utf-8")
        sets.append(_parse_prompt_lines(text.splitlines(), name, f"specdec_lib/prompts/{name}.jsonl"))
    mixed = []
    for i in range(max(len(s) for s in sets)):
        mixed.extend(s[i] for s in sets if i < len(s))
    return mixed
