"""The report as a person sees it: opened from disk in a real headless Chromium (Debian's), driven by Playwright.

Needs the ``playwright`` package (the ``dev`` extra) and ``/usr/bin/chromium`` (``.ci/run`` installs it as root). In CI
(``CI`` set) a missing browser fails the test; elsewhere it skips. Screenshots go to ``GLOCAL_SCREENSHOTS`` when set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from glocal.report import write_report

CHROMIUM = os.environ.get("GLOCAL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def chromium() -> str:
    """The browser's path; checked before the report is built, so that a skip costs nothing."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install them (.ci/run does, as root)")
        pytest.skip(message)
    return CHROMIUM


def test_the_report_opens_from_disk_and_a_click_reveals_references(chromium: str, mnist_report, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    path = write_report(mnist_report.report, tmp_path / "report.html", title="MNIST report")
    shots = Path(os.environ.get("GLOCAL_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    console: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.on("requestfailed", lambda request: console.append(f"requestfailed: {request.url[:80]}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")

            assert page.title() == "MNIST report"
            assert page.locator("section.model h2").all_inner_texts() == ["MNIST CNN"]
            assert page.locator("article.image").count() == 2
            assert page.locator(".image .layer").count() == 2 * 2
            assert page.locator(".image .concept").count() == 2 * 2 * 4
            assert page.locator(".graph svg .node").count() == 2 * 7
            assert page.locator(".atlas .atlas-bar").count() == 2 * 8
            # every picture decoded and laid out (a broken data: URI has naturalWidth 0)
            broken = page.evaluate(
                "[...document.images].filter(i => !i.closest('dialog, [hidden]')"
                " && (!i.complete || i.naturalWidth === 0 || i.getBoundingClientRect().width === 0)).length"
            )
            assert broken == 0
            assert page.locator(".picture").first.is_visible()
            # the class name with a script tag is text, and the script never ran
            assert page.evaluate("window.hacked === undefined")
            assert "<script>window.hacked = 1</script>" in page.locator("article.image").nth(1).inner_text()
            page.screenshot(path=str(shots / "report-full.png"), full_page=True)

            dialog = page.locator("dialog.card").first
            assert not dialog.is_visible()
            page.locator("article.image").first.locator("button.open-card").first.click()
            opened = page.locator("dialog.card[open]")
            assert opened.count() == 1 and opened.is_visible()
            for mode in ("relmax", "actmax"):
                pictures = opened.locator(f".references.{mode} img")
                assert pictures.count() == 4 and pictures.first.is_visible()
            assert opened.locator(".classes tr").count() == 5
            page.screenshot(path=str(shots / "report-click.png"))
            page.keyboard.press("Escape")
            assert page.locator("dialog.card[open]").count() == 0

            graph = page.locator(".graph").first
            graph.locator(".node").nth(2).hover()
            shown = graph.locator(".node-info:not([hidden])")
            assert shown.count() == 1 and shown.locator("img").is_visible()
            assert "of the root's relevance" in shown.inner_text()
            graph.screenshot(path=str(shots / "report-graph.png"))
        finally:
            browser.close()
    assert console == []
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests
