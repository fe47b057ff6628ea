"""What the engine is given besides the requests: scheduler limits and the speculation setting (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ServerConfig:
    """The scheduler limits: KV capacity in tokens, running-sequence cap, token budget per step."""

    kv_capacity_tokens: int
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192

    def __post_init__(self) -> None:
        for name in ("kv_capacity_tokens", "max_num_seqs", "max_num_batched_tokens"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"ServerConfig.{name} = {value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class SpeculationConfig:
    """k, and optionally vLLM 0.32's `num_speculative_tokens_per_batch_size` schedule [(start, end, k), ...]."""

    num_speculative_tokens: int
    per_batch_size: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        if int(self.num_speculative_tokens) != self.num_speculative_tokens or not (
            1 <= self.num_speculative_tokens <= 32
        ):
            raise ValueError(
                f"SpeculationConfig.num_speculative_tokens = {self.num_speculative_tokens!r}; expected 1..32"
            )
        if self.per_batch_size is not None:
            entries = sorted(tuple(int(x) for x in e) for e in self.per_batch_size)
            if not entries:
                raise ValueError("SpeculationConfig.per_batch_size is empty; expected [(start, end, k), ...]")
            previous_end = 0
            for start, end, k in entries:
                if start < 1 or end < start or k < 0:
                    raise ValueError(
                        f"SpeculationConfig.per_batch_size entry {(start, end, k)}; "
                        "expected 1 <= start <= end and k >= 0"
                    )
                if start <= previous_end:
                    raise ValueError(f"SpeculationConfig.per_batch_size ranges overlap at {(start, end, k)}")
                previous_end = end
            if entries[0][0] != 1:
                raise ValueError(
                    f"SpeculationConfig.per_batch_size starts at {entries[0][0]}; vLLM requires the first range "
                    "to start at 1"
                )

    def k_by_batch_size(self, max_num_seqs: int) -> np.ndarray:
        """Dense lookup: index = batch size (0..max_num_seqs), value = k; vLLM's gap and tail rules.

        Mirrors `build_dynamic_sd_schedule_lookup` in vLLM 0.32 (`vllm/v1/spec_decode/dynamic/utils.py`): inside a
        range its k (capped at num_speculative_tokens); in a gap or past the last range, the previous range's k.
        """
        k_max = int(self.num_speculative_tokens)
        table = np.full(max_num_seqs + 1, k_max, dtype=np.int64)
        if self.per_batch_size is None:
            return table
        entries = sorted(tuple(int(x) for x in e) for e in self.per_batch_size)
        for b in range(1, max_num_seqs + 1):
            # the range containing b, or in a gap or past the end, the latest range starting below b
            current = [k for start, _end, k in entries if start <= b][-1]
            table[b] = min(k_max, current)
        return table


def servers_from_memory_plan(plan: Any) -> tuple[ServerConfig, ServerConfig]:
    """(baseline, speculative) ServerConfig from a `memory.MemoryPlan`: the KV capacity without and with the
    draft (whose layers share every block), and the plan's max_num_seqs and max_num_batched_tokens."""
    if plan.kv_capacity_tokens < 1:
        raise ValueError(f"plan.kv_capacity_tokens = {plan.kv_capacity_tokens}; the deployment does not fit")
    return (
        ServerConfig(plan.kv_capacity_tokens_without_draft, plan.max_num_seqs, plan.max_num_batched_tokens),
        ServerConfig(plan.kv_capacity_tokens, plan.max_num_seqs, plan.max_num_batched_tokens),
    )

