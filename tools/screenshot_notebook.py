"""The README's notebook screenshot: a notebook of the demo suite built and run on the page in headless Chromium.

    python tools/screenshot_notebook.py   # app.py offline on the demo suite; writes assets/screenshot-notebook.png

It builds what a user would: a note, a quants cell (F16 reference, Q8_0, Q4_K_M, Q2_K) and a steps cell, presses
Run all, waits for both cells' outputs and saves the top of the Notebook tab as a palette PNG (save_png of
tools/screenshot.py). The app uses a scratch run log and model cache.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from screenshot import CHROMIUM, CHROMIUM_ARGS, LONG_MS, ROOT, save_png, start_app  # noqa: E402


def main() -> int:
    from playwright.sync_api import sync_playwright

    out = ROOT / "assets" / "screenshot-notebook.png"
    with tempfile.TemporaryDirectory(prefix="pythia-compare-shot-") as scratch:
        proc, url = start_app(Path(scratch))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1700})
                page.goto(url)
                page.get_by_role("tab", name="Notebook").click()
                page.locator("#pc-nb-cell-0").wait_for(timeout=LONG_MS)
                page.locator("#pc-nb-title textarea, #pc-nb-title input").first.fill("Quants and steps on two probes")
                page.locator("#pc-nb-settings .label-wrap").first.click()
                page.locator("#pc-nb-max-tokens input").fill("8")
                page.locator("#pc-nb-max-tokens input").press("Tab")
                page.locator("#pc-nb-input-0 textarea").fill("Once upon a time, in a small village by the sea,")
                page.locator("#pc-nb-add-cmp-0").click()
                page.locator("#pc-nb-cell-1").wait_for(timeout=LONG_MS)
                page.locator("#pc-nb-input-1 textarea").fill("The capital of France is")
                page.locator("#pc-nb-opts-1 .label-wrap").first.click()
                page.locator("#pc-nb-own-1 textarea, #pc-nb-own-1 input").first.fill(
                    "demo@step0 demo@step25 demo@step100 demo")
                page.locator("#pc-nb-add-note-0").click()
                page.locator("#pc-nb-cell-2").wait_for(timeout=LONG_MS)
                page.locator("#pc-nb-input-1 textarea").fill(
                    "**Below:** the same quants; the next cell compares training steps instead.")
                page.locator("#pc-nb-up-1").click()
                page.wait_for_function("() => document.querySelector('#pc-nb-cell-0.pc-nb-note')", timeout=LONG_MS)
                page.locator("#pc-nb-run-all").click()
                page.wait_for_function("() => (document.querySelector('#pc-nb-progress') || {}).innerText"
                                       "?.includes('2 of 2 cells done')", timeout=LONG_MS)
                page.locator("#pc-nb-summary-2").wait_for(timeout=LONG_MS)
                page.wait_for_timeout(2000)
                raw = page.screenshot(full_page=False)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    size = save_png(raw, out, 300)
    print(f"wrote {out} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
