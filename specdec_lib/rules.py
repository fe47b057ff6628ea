"""One home for the source's numbers, our readings of its words, and the bounds every module shares.

The source ("Speculative Decoding on vLLM: A Configuration and Decision Framework") states its thresholds in a
few sentences; each is a constant here, quoted. Modules import them from here rather than restating them
(decision, memory, plots, catalog, speculation, the pages and the memo). Pure: no imports from the library.
"""

from __future__ import annotations

# --- the source's numbers ----------------------------------------------------------------------------------------
USE_MAX_TEMPERATURE = 0.5             # "target temperature <= 0.5"
LEAVE_OFF_MEDIAN_TEMPERATURE = 0.7    # "your median temperature is above 0.7"
DRAFT_MAX_MEMORY_SHARE = 0.15         # "draft should consume no more than ~15% of total available VRAM"
TARGET_CONSTRAINED_MEMORY_SHARE = 0.70  # "if your target already uses more than 70% of your GPU memory"
LONG_CONTEXT_TOKENS = 32768           # "long-context requests (32K+ tokens)"
RATIO_MIN, RATIO_MAX = 8.0, 12.0      # "1:8-1:12 size ratio" (target params / draft params)
ALPHA_OFF_BELOW = 0.5                 # "below 0.5 ... disable it"
ALPHA_WIN_ABOVE = 0.65                # "above 0.65, you're likely seeing a genuine benefit"
LOW_ACCEPTANCE_TRAFFIC_MAX = 0.10     # "if P10 of your acceptance distribution is below 0.5": < 10% of traffic
SOURCE_TEMPERATURES = (0.0, 0.4, 0.8, 1.0)  # the temperatures the source asks to sweep

# --- our reading of the source's words -----------------------------------------------------------------------------
HOMOGENEOUS_TEMPERATURE_SPREAD = 0.3  # "temperature-homogeneous": classes within 0.3 of each other
WIDE_TEMPERATURE_SPREAD = 0.5         # "temperature varies widely": classes more than 0.5 apart
CONSISTENT_ALPHA_SPREAD = 0.2         # "dramatically different acceptance rates" (its example: 0.80 vs 0.35)
SIGNIFICANT_SHARE = 0.05              # request classes below 5% of traffic do not define the mix
MEASURED_TEMPERATURE_TOLERANCE = 0.05  # a measurement at T counts for a class at T +/- 0.05

# --- bounds ----------------------------------------------------------------------------------------------------------
MAX_TEMPERATURE = 2.0  # the OpenAI-compatible API's upper bound, which vLLM keeps (sampling_params.py)

ILLUSTRATIVE_ALPHAS = (ALPHA_OFF_BELOW, ALPHA_WIN_ABOVE, 0.8)  # curves drawn when acceptance is not known


def band_name(alpha: float) -> str:
    """The source's band for a per-token alpha: "off" (< 0.5), "borderline" (0.5-0.65), "likely win" (> 0.65)."""
    if alpha < ALPHA_OFF_BELOW:
        return "off"
    return "borderline" if alpha <= ALPHA_WIN_ABOVE else "likely win"


def check_temperatures(values, name: str = "temperatures", distinct: bool = False) -> list[float]:
    """The temperatures as floats, each in [0, MAX_TEMPERATURE] (the one bound every entry point checks against);
    ValueError naming ``name`` and what was expected otherwise."""
    temps = [float(t) for t in values]
    if not temps or any(not 0.0 <= t <= MAX_TEMPERATURE for t in temps) or (distinct and len(set(temps)) != len(temps)):
        kind = "distinct values" if distinct else "values"
        shown = values[0] if name == "temperature" and len(temps) == 1 else list(values)
        raise ValueError(f"{name}={shown}: need {kind} in 0..{MAX_TEMPERATURE:g}")
    return temps
