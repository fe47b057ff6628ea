"""Tables of one `evaluate.Evaluation`, as rows of display strings: the memo, the pages and the CLI print these,
so a number reads the same on every face (units as the CLI shows them: percent, GiB, requests/s, x)."""

from __future__ import annotations

import html

from specdec_lib import acceptance, display, rules

VERDICT_COLOURS = {"use": "#1b5e20", "measure more": "#8a5a00", "leave off": "#b00020"}
MARKS = {"passed": "✓", "failed": "✗", "unknown": "?"}


def speedup_rows(ev) -> list[tuple[str, str]]:
    """The break-even and load numbers (one function: pages, memo and CLI print these rows)."""
    s, f = ev.scenario, ev.load
    k = s.num_speculative_tokens
    rows: list[tuple[str, str]] = [("draft tokens per step k", str(k)), ("calibration", ev.calibration)]
    if f is None or s.method == "none":
        return rows
    alpha, source = ev.workload_alpha
    rows += [("draft/target step cost c (batch 1)", f"{f.cost_ratio:.3f}"),
             (f"break-even alpha at k={k} (batch 1, computed)",
              "never (c >= 1)" if f.break_even_alpha is None else f"{f.break_even_alpha:.3f}"),
             ("the source's bands (alpha)", f"off below {rules.ALPHA_OFF_BELOW}, likely win above "
                                            f"{rules.ALPHA_WIN_ABOVE}; the stricter of band and break-even decides"),
             ("alpha used (share-weighted)", "unknown: curves for illustrative alphas" if alpha is None
              else f"{alpha:.3f} ({source})"),
             ("replicas", f"{f.replicas} ({f.replicas_source})"),
             ("request shape (share-weighted)", f"{f.prompt_tokens:,} prompt + {f.output_tokens:,} output tokens"),
             ("capacity without speculation", f"{f.capacity_qps:.3g} requests/s"
              + (f" - SATURATED at {s.qps:g} requests/s: {f.replicas_needed} replicas needed" if f.saturated else "")),
             ("running batch per replica at the scenario QPS", "saturated" if f.saturated
              else "—" if f.batch_at_qps is None else f"{f.batch_at_qps:.2f}"),
             ("predicted speedup at the scenario QPS", "saturated" if f.saturated
              else "—" if f.speedup_at_qps is None else f"{f.speedup_at_qps:.2f}x"),
             ("crossover batch size (first batch without a gain)", "needs alpha" if f.alpha is None
              else "none in range" if f.crossover_batch is None else f"{f.crossover_batch:g}"),
             ("crossover request rate", "needs alpha" if f.alpha is None else "none in range"
              if f.crossover_qps is None else f"{f.crossover_qps:.3g} requests/s")]
    return rows + [("note", n) for n in f.notes]


def class_rows(ev) -> list[dict[str, str]]:
    """One row per request class: shape, acceptance used (with bounds and the others that apply), capacity."""
    by_name = {c.name: c for c in (ev.load.classes if ev.load else ())}
    rows = []
    for request_class, choice in zip(ev.scenario.workload, ev.acceptance):
        cl = by_name.get(request_class.name)
        rows.append({
            "name": request_class.name, "share": display.format_percent(request_class.share),
            "temperature": f"{request_class.temperature:g}", "prompt_tokens": f"{request_class.prompt_tokens:,}",
            "output_tokens": f"{request_class.output_tokens:,}", "alpha": choice.describe(),
            "source": choice.source or "—",
            "also": "; ".join(acceptance.describe_estimate(e) for e in choice.also_applicable) or "—",
            "rejected": "; ".join(why for _, why in choice.rejected) or "—",
            "capacity": "—" if cl is None else f"{cl.capacity_qps:.3g} requests/s",
            "speedup": "—" if cl is None else ("saturated" if cl.saturated else "needs alpha"
                                               if cl.speedup_at_qps is None else f"{cl.speedup_at_qps:.2f}x"),
            "crossover_batch": "—" if cl is None or cl.crossover_batch is None else f"{cl.crossover_batch:g}",
        })
    return rows


def verdict_html(ev) -> str:
    """The verdict, its deciding reasons, and every reason with its number, source and "if it fails" (as the CLI
    and the memo show them; fractions in percent)."""
    decision = ev.decision
    deciding = decision.deciding
    items = "".join(f"<li><b>{html.escape(r.statement)}</b>: {r.status} "
                    f"({html.escape(display.format_reason_value(r.value, r.unit))}, {r.source})"
                    + (f": {html.escape(r.detail)}" if r.detail else "") + "</li>" for r in deciding)
    rows = []
    for r in decision.reasons:
        style = " style='font-weight:bold;background:#fff3cd'" if r in deciding else ""
        rows.append(
            f"<tr{style}><td>{MARKS[r.status]}</td><td>{html.escape(r.group)}</td><td>{html.escape(r.statement)}</td>"
            f"<td>{html.escape(display.format_reason_value(r.value, r.unit))}</td><td>{html.escape(r.threshold)}</td>"
            f"<td>{html.escape(r.source)}</td><td>{html.escape(r.effect)}</td></tr>")
    return (f"<h3 style='color:{VERDICT_COLOURS[decision.verdict]}'>Verdict: {html.escape(decision.verdict)}</h3>"
            + (f"<p>Deciding reasons:</p><ul>{items}</ul>" if items else "")
            + "<table class='specdec-reasons'><tr><th></th><th>group</th><th>condition</th><th>value</th>"
              "<th>passes when</th><th>source</th><th>if it fails</th></tr>" + "".join(rows) + "</table>"
            + f"<p style='color:#555'>Calibration: {html.escape(ev.calibration)}</p>")


# --- the methods compared (issue 13): one set of rows for the memo, the CLI and page 03b ----------------------------

METHOD_COLUMNS = (("method", "method"), ("drafter", "drafter"), ("extra_weights", "extra weights / GPU"),
                  ("kv_tokens_taken", "KV tokens taken / GPU"), ("max_seqs", "max seqs at context"),
                  ("cost_ratio", "cost ratio c"), ("alpha", "α"), ("source", "acceptance"),
                  ("citation", "acceptance from (citation)"), ("k", "k"), ("speedup_batch1", "speedup @ batch 1"),
                  ("speedup_at_qps", "speedup @ QPS"), ("crossover_batch", "crossover batch"),
                  ("crossover_qps", "crossover QPS"), ("why_not", "why not"))


def acceptance_kind(label: str) -> str:
    """'prior' / 'predicted' / 'measured' / 'assumed' / 'none' for a MethodRow's acceptance label."""
    for kind in ("prior", "predicted", "measured", "assumed"):
        if kind in label:
            return kind
    return "none"


def method_rows(comparison) -> list[dict[str, str]]:
    """One row of display strings per method of `Evaluation.methods` (units as the CLI prints them)."""
    def num(value, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    rows = []
    for r in comparison.rows:
        speed = ("saturated" if r.saturated else num(r.speedup_at_qps, ".2f") + ("x" if r.speedup_at_qps is not None
                                                                                else ""))
        rows.append({
            "method": r.method + (" (your scenario)" if r.own else ""), "drafter": r.drafter or "—",
            "extra_weights": "—" if r.extra_weights_bytes_per_gpu is None
            else display.format_gib(r.extra_weights_bytes_per_gpu, 2),
            "kv_tokens_taken": "—" if r.kv_tokens_taken is None else display.format_count(r.kv_tokens_taken),
            "max_seqs": "—" if r.max_concurrent_seqs is None else display.format_count(r.max_concurrent_seqs),
            "cost_ratio": num(r.cost_ratio, ".3f"), "alpha": num(r.alpha, ".3f"),
            "source": acceptance_kind(r.acceptance) if r.applies else "—",
            "citation": (f"{r.acceptance}: {r.acceptance_origin}" if r.acceptance_origin else r.acceptance) or "—",
            "k": num(r.k, "d"), "speedup_batch1": num(r.speedup_batch1, ".2f"),
            "speedup_at_qps": speed if r.applies else "—",
            "crossover_batch": num(r.crossover_batch, "g"),
            "crossover_qps": "—" if r.crossover_qps is None else f"{r.crossover_qps:.3g} requests/s",
            "why_not": r.why_not or "—", "best": r.method == comparison.best,
        })
    return rows


def methods_pick(comparison) -> str:
    """The pick in one line (memo, CLI and page print this)."""
    best = comparison.best
    if not comparison.rows:
        return comparison.reasons[0] if comparison.reasons else "methods not compared"
    if best is None:
        return f"leave speculation off: no method gains at QPS {comparison.qps:g}"
    row = comparison.row(best)
    return (f"{best}{f' ({row.drafter})' if row.drafter else ''}: predicted {row.speedup_at_qps:.2f}x at QPS "
            f"{comparison.qps:g}, k = {row.k}, α {row.alpha:.3f} ({acceptance_kind(row.acceptance)})")


def methods_html(comparison) -> str:
    """The comparison table (the pick in bold) for the notebook page; the memo's template prints the same rows."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in METHOD_COLUMNS)
    body = "".join(
        ("<tr style='font-weight:bold'>" if row["best"] else "<tr>")
        + "".join(f"<td>{html.escape(str(row[key]))}</td>" for key, _ in METHOD_COLUMNS) + "</tr>"
        for row in method_rows(comparison))
    reasons = "".join(f"<li>{html.escape(x)}</li>" for x in comparison.reasons)
    return (f"<p><b>Pick: {html.escape(methods_pick(comparison))}</b></p><ul>{reasons}</ul>"
            f"<table class='specdec-methods'><tr>{head}</tr>{body}</table>"
            f"<details><summary>The rule</summary><pre>{html.escape(comparison.rule)}</pre></details>")
