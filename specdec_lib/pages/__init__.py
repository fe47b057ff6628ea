"""The notebook pages: one module per page, on shared mechanics (`base`), controls (`controls`) and renderers
(`render`). A page turns its controls into a `Scenario` and renders `evaluate(scenario)`; it computes nothing.

A new page is one module with a `*_page()` function plus one entry in `PAGES` below (and one in
`scripts/make_notebooks.py`, which writes its notebook).
"""

from __future__ import annotations

from specdec_lib.pages.base import SLOW_WAIT_S, Debouncer, FigureSlot, Page, update_figure_in_place
from specdec_lib.pages.break_even import break_even_page
from specdec_lib.pages.decision_memo import decision_memo_page
from specdec_lib.pages.draft_selection import draft_selection_page
from specdec_lib.pages.live import LOCAL_DEMO_COMMAND, endpoint_url_default, parse_float_list
from specdec_lib.pages.live_acceptance import live_acceptance_page
from specdec_lib.pages.load_test import load_test_page
from specdec_lib.pages.memory_budget import memory_budget_page
from specdec_lib.pages.methods_compared import methods_compared_page
from specdec_lib.pages.mixed_workload import mixed_workload_page
from specdec_lib.pages.predict_acceptance import predict_page
from specdec_lib.pages.production_watch import production_watch_page
from specdec_lib.pages.start_here import start_here_page

# notebook stem -> page function (what make_notebooks.py and the tests iterate over)
PAGES = {
    "00_start_here": start_here_page,
    "01_draft_selection": draft_selection_page,
    "01b_predict_acceptance": predict_page,
    "02_memory_budget": memory_budget_page,
    "03_break_even_and_load": break_even_page,
    "03b_methods_compared": methods_compared_page,
    "04_live_acceptance_by_temperature": live_acceptance_page,
    "05_load_test_with_and_without": load_test_page,
    "06_mixed_workload": mixed_workload_page,
    "07_decision_memo": decision_memo_page,
    "08_production_watch": production_watch_page,
}

__all__ = [
    "PAGES", "SLOW_WAIT_S", "Debouncer", "FigureSlot", "LOCAL_DEMO_COMMAND", "Page", "break_even_page",
    "decision_memo_page", "draft_selection_page", "endpoint_url_default", "live_acceptance_page", "load_test_page",
    "memory_budget_page", "methods_compared_page", "mixed_workload_page", "parse_float_list", "predict_page",
    "production_watch_page", "start_here_page", "update_figure_in_place",
]
