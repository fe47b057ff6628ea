"""The simulator against a real vLLM server whose engine dominates, calibrated by `specdec calibrate`'s probe.

The engine-bound pair (`tiny_models.build_engine_bound`, served in float32: ~28 ms a step at batch 1, ~50 ms at 8,
on two cores) is started twice, without and with speculation (k = 4, its 1-layer truncated draft, greedy draft
sampling), one server at a time. Each is probed as `specdec calibrate` does while it is driven
(closed-loop levels at concurrency 1, 2, 4 and 8, the batch sizes the drive reaches, x 16 and 96 output tokens,
short and long prompts alternating: `probe.level_prompt_sets`; each level fitted apart for its decode steps and
the steps a prompt landed in) and driven with
Poisson arrivals of the source's 60/40 mix (temperatures 0.1 and 1.0), 50 requests at each of two rates: 0.2 and
0.45 of the capacity the baseline's first probe part calibrates, the same rates for both servers. Each measured run is
replayed through the simulation (same send times and token counts, alpha per temperature measured on the
speculative runs; a speculative replay pooled over 16 seeds of its acceptance draws) with the step the probes
calibrated, and the simulated percentiles are compared with the measured ones. Everything is written to
test-output/<this test>/.

The probe and the drive are interleaved (`engine_validation.probe_and_drive`): probe 16 tokens, drive the low
rate, probe 96 tokens, drive the high rate. On the shared two-core machine the same server's step drifts by
10-20 % over a minute or two, as much as the band being asserted; a calibration taken wholly before the drive
measured the machine as it was then.

What it covers of issue 14's validation: the 60/40 mix, with and without speculation, at two rates (the
benchmark, benchmarks/simulate_engine_bound.py, covers four rates and the one-class workload too; this test must
stay near 6 minutes on two cores).

Asserted: issue 14's goal bands, E2E P50 within +-15 % and E2E P99 within +-25 % of the measured values for
both servers at both rates, and a measured acceptance higher at temperature 0.1 than at
1.0 (the mix has two acceptances). The bands are not widened. Printed, not asserted: the calibration against each
run's own steps (`step_checks`) and the replays at each run's own engine speed (`compare_at_run_speed`), which tell
a miss caused by the machine's drift (this shared machine's speed moves 10-30 % within minutes at times: such a
run can fail) from one of the simulation.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from specdec_lib import engine_validation as ev
from specdec_lib import simulate as sim
from specdec_lib.calibrate.command import calibrate_endpoint, format_fit
from specdec_lib.calibrate.files import load_calibration, write_calibration

K = 4
MAX_TOKENS = 32
REQUESTS_PER_RATE = 50
LOAD_FRACTIONS = (0.2, 0.45)
PROBE = dict(concurrency=(1, 2, 4, 8), output_tokens=(16, 96))


def _measure(models, spec, out_dir, rates):
    """One server probed and driven, the probe's two output lengths interleaved with the two rates. Without
    `rates` (the baseline) they are LOAD_FRACTIONS of the capacity its own probe's first part calibrates."""
    m, kv = ev.measure_server(models, spec, out_dir, workloads={"60/40 mix": ev.MIX_TEMPERATURES},
                              rates_qps=rates if rates is not None else
                              (lambda pr: ev.rates_from_probe(pr, LOAD_FRACTIONS, 40.0, MAX_TOKENS)),
                              requests_per_rate=REQUESTS_PER_RATE, max_tokens=MAX_TOKENS, probe_options=PROBE,
                              timeout_s=300)
    assert not any(r.get("error") for r in m.records["60/40 mix"])
    return m, kv


@pytest.mark.engine_bound  # selects it alone: ./run-tests -m engine_bound
@pytest.mark.vllm
def test_simulated_percentiles_match_an_engine_bound_server(vllm_venv, test_output_dir):
    models = ev.ensure_engine_models(venv=vllm_venv)
    base, base_kv = _measure(models, None, test_output_dir, None)
    spec, spec_kv = _measure(models, ev.draft_spec(models, K), test_output_dir, base.rates_qps)
    payload = calibrate_endpoint(base.probe, spec.probe, replay_server=ev.CPU_REPLAY_SERVER)
    cal = load_calibration(write_calibration(test_output_dir / "calibration.json", payload))
    alphas = ev.alpha_by_temperature(spec.records["60/40 mix"], K)
    rows, at_speed = [], []
    for kind, m, kv, speculation, overhead in (
        ("baseline", base, base_kv, None, cal.request_overhead_s),
        ("speculative", spec, spec_kv, sim.SpeculationConfig(K), cal.speculative_request_overhead_s),
    ):
        common = dict(server=kind, server_config=sim.ServerConfig(kv, ev.CPU_MAX_NUM_SEQS,
                                                                  ev.CPU_MAX_NUM_BATCHED_TOKENS),
                      step_time=cal.step_time, request_overhead_s=overhead, speculation=speculation, alphas=alphas)
        rows += ev.compare_measured(m, **common)
        at_speed += ev.compare_at_run_speed(m, **common)  # printed to read a miss by, not asserted
    checks = (ev.step_checks(base, server="baseline", step_time=cal.step_time)
              + ev.step_checks(spec, server="speculative", step_time=cal.step_time, k=K))
    (test_output_dir / "rows.json").write_text(json.dumps(
        {"rates_qps": base.rates_qps, "alphas": alphas, "fit": format_fit(payload),
         "order": {"baseline": base.order, "speculative": spec.order},
         "rows": [{**asdict(r), "error": r.error} for r in rows], "mix_effect": ev.mix_effect_signs(rows),
         "step_checks": checks, "at_run_speed": [{**asdict(r), "error": r.error} for r in at_speed]}, indent=1))
    print(format_fit(payload))
    print(ev.format_rows(rows))
    print("the calibration's step against each run's own steps:\n" + ev.format_step_checks(checks))
    print("diagnostic, not asserted: the replays with the step scaled to each run's own engine speed (a miss that "
          "is gone here was the machine's drift since the probe, not the simulation):\n" + ev.format_rows(at_speed))
    assert alphas[0.1] > alphas[1.0], alphas
    e2e = [r for r in rows if r.metric == "e2e" and r.stat in ("p50", "p99")]
    assert len(e2e) == 2 * 2 * len(LOAD_FRACTIONS)
    outside = [(r.server, round(r.rate_qps, 2), r.stat, round(100 * r.error, 1)) for r in e2e if not r.within_band]
    assert not outside, f"outside the goal bands (P50 +-15 %, P99 +-25 %): {outside}\n{ev.format_rows(rows)}"
