"""The trajectory viewer in a real headless browser (Debian's Chromium driven by Playwright): the
page written by `mucode view` for a real search run opens from disk, shows every entry, the
filters hide and show entries, and the browser logs no console error. Skipped where Chromium is
not installed (`apt-get install chromium`; `.ci/run` installs it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mucode.cli import main


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # without the networking flags Chromium keeps trying this closed network at start


def solved_and_unsolved_run(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A search folder with one entry the tiny model cannot solve and one edited to be solved."""
    problems = tmp_path / "problems.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "prompt": f"Write f{i}(x).",
            "public_tests": [f"assert f{i}(1) == 1"],
            "private_tests": [f"assert f{i}(2) == 2"],
        }
        for i in range(2)
    ]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "search"
    code = main(
        [
            "search",
            "--problems",
            str(problems),
            "--model",
            str(tiny_model_dir),
            "--n",
            "2",
            "--turns",
            "2",
            "--max-new-tokens",
            "8",
            "--out",
            str(out),
            "--workers",
            "1",
        ]
    )
    assert code == 0
    path = out / "searches.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["correct"] = True  # the tiny random model solves nothing: mark one entry solved for the filter
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def test_view_page_holds_every_entry_turn_and_candidate(tmp_path, tiny_model_dir):
    run = solved_and_unsolved_run(tmp_path, tiny_model_dir)
    assert main(["view", str(run), "--out", str(tmp_path / "view.html")]) == 0
    page = (tmp_path / "view.html").read_text()
    assert page.count('class="entry"') == 2 and 'data-outcome="solved"' in page and 'data-outcome="unsolved"' in page
    assert "<script src" not in page and "http://" not in page and "https://" not in page  # opens offline
    assert 'class="code"' in page and "verifier score" in page  # highlighted programs, candidate table


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_view_page_renders_and_filters_in_chromium(tmp_path, tiny_model_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    run = solved_and_unsolved_run(tmp_path, tiny_model_dir)
    page_path = tmp_path / "view.html"
    assert main(["view", str(run), "--out", str(page_path)]) == 0
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(page_path.as_uri())
        visible = lambda: page.locator(".entry:visible").count()  # noqa: E731
        assert visible() == 2 and page.locator("#visible-count").inner_text() == "2"
        page.uncheck("#f-solved")
        assert visible() == 1 and page.locator(".entry:visible").get_attribute("data-outcome") == "unsolved"
        page.check("#f-solved")
        page.uncheck("#f-unsolved")
        assert visible() == 1 and page.locator(".entry:visible").get_attribute("data-outcome") == "solved"
        page.check("#f-unsolved")
        page.select_option("#f-turns", "1")
        assert visible() == page.locator('.entry[data-turns="1"]').count()
        page.select_option("#f-turns", "any")
        page.fill("#f-query", "p1")
        assert visible() == 1 and page.locator(".entry:visible").get_attribute("data-problem") == "p1"
        page.fill("#f-query", "")
        page.locator(".entry summary").first.click()
        assert page.locator(".entry").first.locator(".turn").count() >= 1
        page.screenshot(path=str(tmp_path / "view.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "view.png").stat().st_size > 1000


def test_report_writes_the_viewer_next_to_report_md_and_links_it(tmp_path, tiny_model_dir):
    run = solved_and_unsolved_run(tmp_path, tiny_model_dir)
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert "[view.html](view.html)" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "view.html").read_text().count('class="entry"') == 2
