"""The README's screenshot: a 7-variant run on the demo suite, taken by headless Chromium through Playwright.

    python tools/screenshot.py                      # starts app.py offline on the demo suite, writes assets/screenshot.png
    python tools/screenshot.py --url http://127.0.0.1:7860/ --out /tmp/shot.png   # against a running app

It chooses what a user would (quants F16, Q8_0, Q4_K_M, Q2_K and steps 0, 25, 100 of the demo suite, F16 as
the reference), presses Run, waits for the run's link and every figure, and saves the page as a palette PNG
(under --max-kb, 300 by default). Started here, the app uses a scratch run log and model cache, so the
screenshot never touches yours.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
QUANTS = ["F16", "Q8_0", "Q4_K_M", "Q2_K"]
STEPS = [0, 25, 100]
PROMPT = "Once upon a time, in a small village by the sea,"
LONG_MS = 600_000


def start_app(scratch: Path) -> tuple[subprocess.Popen, str]:
    """app.py offline on the bundled demo suite, with its own run log and cache in `scratch`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHIA_COMPARE_OFFLINE="1", PYTHIA_COMPARE_DB=str(scratch / "runs.db"),
               PYTHIA_COMPARE_HOME=str(scratch / "home"), HF_HUB_CACHE=str(scratch / "hf"),
               GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(scratch / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=str(ROOT), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited:\n{(scratch / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"app.py did not answer at {url}")


def choose_and_run(page, quants=QUANTS, steps=STEPS, prompt=PROMPT, max_tokens: int = 12) -> str:
    """Choose the variants on the page as a user would, press Run, wait for the finished run; its link."""
    demo = page.locator("#pc-family label", has_text="demo suite")
    if not demo.locator("input").is_checked():
        demo.click()
        page.wait_for_timeout(500)
    for label in page.locator("#pc-quants label").all():
        name = label.locator("input").get_attribute("name")
        if label.locator("input").is_checked() != (name in quants):
            label.click()
    for step in steps:
        page.locator("#pc-steps input").click()
        page.get_by_role("option", name=f"step {step}", exact=True).click()
    page.locator("#pc-prompt textarea").click()  # closes the list
    page.locator("#pc-reference input").click()
    page.get_by_role("option", name="demo:F16", exact=True).click()
    page.locator("#pc-settings .label-wrap").first.click()
    page.locator("#pc-max-tokens input").fill(str(max_tokens))
    page.locator("#pc-max-tokens input").press("Tab")
    page.locator("#pc-prompt textarea").fill(prompt)
    page.locator("#pc-run").click()
    n = len(quants) + len(steps)
    page.wait_for_function("() => (document.querySelector('#pc-link textarea') || {}).value?.includes('?run=')",
                           timeout=LONG_MS)
    page.wait_for_function(
        """(n) => ['next_token', 'ppl', 'surprisal', 'kld'].every(f => {
             const gd = document.querySelector('#pc-fig-' + f + ' .js-plotly-plot');
             return gd && gd.data && gd.data.length > 0 && gd.querySelector('.main-svg'); })
           && document.querySelectorAll('#pc-generations .pc-gen-col').length === n""", arg=n, timeout=LONG_MS)
    page.wait_for_timeout(1500)  # plotly's transitions
    return page.locator("#pc-link textarea").input_value()


def save_png(raw: bytes, out: Path, max_kb: int) -> int:
    """Save a screenshot as a palette PNG (fewer colours until it is under max_kb); returns its size in bytes."""
    from PIL import Image

    img = Image.open(io.BytesIO(raw)).convert("RGB")
    for colors in (256, 128, 64, 32):
        buf = io.BytesIO()
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
        if buf.tell() <= max_kb * 1024:
            break
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return buf.tell()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running app (default: start app.py offline on the demo suite)")
    ap.add_argument("--out", default=str(ROOT / "assets" / "screenshot.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-kb", type=int, default=300)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    proc = None
    with tempfile.TemporaryDirectory(prefix="pythia-compare-shot-") as scratch:
        try:
            if args.url:
                url = args.url
            else:
                proc, url = start_app(Path(scratch))
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": args.width, "height": 900})
                page.goto(url)
                page.locator("#pc-run").wait_for(timeout=LONG_MS)
                link = choose_and_run(page)
                raw = page.screenshot(full_page=True)
                browser.close()
            size = save_png(raw, Path(args.out), args.max_kb)
            print(f"wrote {args.out} ({size / 1024:.0f} KB) of run {link}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
