"""Unit conversions for display only: bytes -> GiB/GB, seconds -> ms, counts with separators.

Inside the library everything is bytes, seconds and tokens; these helpers are the edge.
"""

from __future__ import annotations

GIB = 1024**3
MIB = 1024**2
GB = 10**9


def gib(n_bytes: float) -> float:
    """Bytes -> GiB (2**30 bytes), the unit vLLM's logs and nvidia-smi's MiB use."""
    return n_bytes / GIB


def gb(n_bytes: float) -> float:
    """Bytes -> decimal GB (10**9 bytes), the unit of spec sheets and the source's "80GB"."""
    return n_bytes / GB


def ms(seconds: float) -> float:
    return seconds * 1000.0


def format_gib(n_bytes: float, digits: int = 1) -> str:
    return f"{gib(n_bytes):,.{digits}f} GiB"


def format_gb(n_bytes: float, digits: int = 1) -> str:
    return f"{gb(n_bytes):,.{digits}f} GB"


def format_ms(seconds: float, digits: int = 1) -> str:
    return f"{ms(seconds):,.{digits}f} ms"


def format_count(n: float) -> str:
    """2097152 -> '2,097,152' (vLLM's own log style)."""
    return f"{int(n):,}"


def format_params(n_params: float) -> str:
    """70553706496 -> '70.55B'; 494032768 -> '494.0M'."""
    if n_params >= 1e9:
        return f"{n_params / 1e9:.2f}B"
    return f"{n_params / 1e6:.1f}M"


def format_ratio(ratio: float) -> str:
    """Target/draft size ratio as the source writes it: 8.79 -> '1:8.8'."""
    return f"1:{ratio:.1f}"


def format_percent(fraction: float, digits: int = 0) -> str:
    return f"{fraction * 100:.{digits}f}%"


def format_reason_value(value, unit: str) -> str:
    """A decision reason's number for display: fractions as %, bytes as GiB, ratios as 1:N, x as 1.23x."""
    if value is None:
        return "unknown"
    if isinstance(value, str):
        return value
    if unit == "fraction":
        return f"{value:.1%}"
    if unit == "bytes":
        return format_gib(value)
    if unit == "ratio":
        return f"1:{value:.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "requests":
        return f"{value:,.0f} requests"
    if unit == "requests/s":
        return f"{value:.3g} requests/s"
    if unit in ("alpha", "temperature"):
        return f"{value:.2f}"
    return f"{value:g} {unit}".strip()
