"""The memo in a real browser (headless Debian Chromium): opens offline, no console errors, charts drawn,
hostile names inert, printable. Screenshots and the memos stay under test-output/<test name>/."""

import dataclasses
from pathlib import Path

import pytest
from test_memo import HOSTILE, _write_run, hostile_scenario

from specdec_lib import memo
from specdec_lib.scenario import DEFAULT_SCENARIO

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (./run-tests does this)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install playwright (it is in the test extras)",
                    pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _open(browser, path: Path):
    """Open a memo from disk with every non-file request blocked and recorded; return page and the logs."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    log = {"console": [], "errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: log["console"].append((m.type, m.text)))
    page.on("pageerror", lambda e: log["errors"].append(str(e)))
    page.on("dialog", lambda d: (log["dialogs"].append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            log["requests"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.resolve().as_uri())
    page.wait_for_function("document.querySelectorAll('.plot .js-plotly-plot .main-svg').length > 0")
    page.wait_for_timeout(500)
    return page, log


def _plot_sizes(page):
    return page.eval_on_selector_all(
        ".plot .js-plotly-plot",
        "els => els.map(e => { const s = e.querySelector('.main-svg'); if (!s) return [0, 0];"
        " const r = s.getBoundingClientRect();"
        " return [r.width, r.height, e.querySelectorAll('.trace, .bars, .point, path').length]; })")


def test_default_memo_opens_offline_with_visible_charts(browser, test_output_dir):
    path = memo.write_memo(DEFAULT_SCENARIO, test_output_dir / "memo.html")
    page, log = _open(browser, path)
    try:
        assert log["errors"] == []
        assert [m for m in log["console"] if m[0] in ("error", "warning")] == []
        assert log["requests"] == []                      # nothing fetched: it opens offline
        sizes = _plot_sizes(page)
        assert len(sizes) == 3                            # memory, speedup vs alpha, speedup vs load
        for width, height, marks in sizes:
            assert width > 300 and height > 150 and marks > 0
        assert page.inner_text("#verdict").strip().lower() == "leave off"
        page.screenshot(path=str(test_output_dir / "memo.png"), full_page=True)
        page.locator("#memory").screenshot(path=str(test_output_dir / "memory-section.png"))
    finally:
        page.close()
    assert (test_output_dir / "memo.png").stat().st_size > 50_000


def test_memo_with_a_run_draws_the_measurement_charts(browser, test_output_dir, tmp_path):
    # a run of the scenario's own model at its k: the memo uses it as measured evidence and charts it
    run_path = _write_run(tmp_path, served_model=DEFAULT_SCENARIO.target_model)
    at_k4 = dataclasses.replace(DEFAULT_SCENARIO, num_speculative_tokens=4)
    path = memo.write_memo(at_k4, test_output_dir / "memo-with-run.html", run_dir=run_path)
    page, log = _open(browser, path)
    try:
        assert log["errors"] == [] and log["requests"] == []
        sizes = _plot_sizes(page)
        assert len(sizes) == 6
        assert all(w > 300 and h > 150 for w, h, _ in sizes)
        page.locator("#measurements").screenshot(path=str(test_output_dir / "measurements-section.png"))
    finally:
        page.close()


def test_hostile_names_render_as_text_and_never_run(browser, test_output_dir, tmp_path):
    run_path = _write_run(tmp_path, served_model="tiny" + HOSTILE)
    path = memo.write_memo(hostile_scenario(), test_output_dir / "memo-hostile.html", run_dir=run_path)
    page, log = _open(browser, path)
    try:
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert log["dialogs"] == [] and log["errors"] == []
        assert log["requests"] == []                      # the <img src=x> never became an element
        assert page.eval_on_selector_all("img", "els => els.length") == 0
        assert HOSTILE in page.inner_text("h1")            # shown literally, as text
        assert HOSTILE in page.inner_text("#measurements")
        page.screenshot(path=str(test_output_dir / "memo-hostile.png"))
    finally:
        page.close()


def test_memo_prints(browser, test_output_dir):
    path = memo.write_memo(DEFAULT_SCENARIO, test_output_dir / "memo.html")
    page, _ = _open(browser, path)
    try:
        page.emulate_media(media="print")
        assert page.eval_on_selector("nav", "e => getComputedStyle(e).display") == "none"
        page.pdf(path=str(test_output_dir / "memo.pdf"), format="A4", print_background=True)
    finally:
        page.close()
    pdf = (test_output_dir / "memo.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
