"""The figures and the generations' HTML as Chromium draws them (issue 20, item 2): labels that do not overlap,
bars that are not slivers, a generation that stays inside its card, on a phone (390 px) and a desktop width.

Each figure is drawn by plotly.js (the copy the plotly package ships, inlined: no network) in a page of its own;
the generations are drawn with the app's own assets/style.css. Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

import pytest

from pythia_compare.web import plots, sweepplots
from tests.plots_runs import make_run
from tests.support import ROOT
from tests.sweep_data import make_sweep
from tests.ui_support import chromium

WIDTHS = (390, 900)


def _boxes(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(selector, "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                               "return {x: r.x, y: r.y, w: r.width, h: r.height, t: e.textContent}; })")


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if a["x"] < b["x"] + b["w"] - 0.5 and b["x"] < a["x"] + a["w"] - 0.5 and \
                    a["y"] < b["y"] + b["h"] - 0.5 and b["y"] < a["y"] + a["h"] - 0.5:
                out.append((a["t"], b["t"]))
    return out


def _draw(browser, fig, width: int, shot):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_content(fig.to_html(include_plotlyjs=True, full_html=True, config={"responsive": True},
                                 default_width="100%", default_height="460px"))
    page.wait_for_selector(".main-svg")
    page.screenshot(path=str(shot))
    return page


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _quant_run() -> dict:
    """Six quants of one checkpoint, with files' bits per weight as a run measures them: sizes close together."""
    run = make_run(["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"], reference="F16", seed=4)
    for e, mb, bpw in zip([run["reference"], *run["variants"]], (813, 433, 335, 290, 267, 216, 174),
                          (16.03, 8.53, 6.59, 5.74, 4.93, 4.0, 3.35)):
        e["source"].update(bytes=mb * 1_000_000, bpw=bpw)
    return run


def test_the_labels_of_perplexity_against_size_do_not_overlap_on_a_phone_or_a_desktop(browser, tmp_path):
    fig = plots.ppl_figure(_quant_run())
    for width in WIDTHS:
        page = _draw(browser, fig, width, tmp_path / f"ppl-size-{width}.png")
        labels = _boxes(page, ".annotation-text-g")
        assert len(labels) == 7 and all("bpw" in b["t"] for b in labels)
        assert _overlaps(labels) == [], width
        page.close()


@pytest.mark.parametrize("specs", [["Q8_0", "Q2_K"], ["Q8_0", "Q6_K", "Q4_K_M", "Q2_K", "step1000"]],
                         ids=["grouped", "a panel per variant"])
def test_low_next_token_probabilities_draw_as_tall_bars_not_slivers(browser, tmp_path, specs):
    run = make_run(specs, reference="F16", seed=5)
    for e in [run["reference"], *run["variants"]]:
        for t in e["next_token"]:
            t["prob"] *= 0.1  # step 0's kind of spread: nothing above 0.09
    page = _draw(browser, plots.next_token_figure(run), 900, tmp_path / "next-token.png")
    areas = _boxes(page, ".nsewdrag")
    tallest = max(b["h"] for b in _boxes(page, ".bars .point path"))
    assert areas and all(tallest > 0.6 * a["h"] for a in areas), (tallest, areas)
    page.close()


def test_a_generation_without_spaces_stays_inside_its_card(browser, tmp_path):
    run = make_run(["step0", "step1000"], reference="step143000", seed=6)
    junk = "\x0e\x07" + "Qx" * 120  # step 0's kind of output: no space to break at, control bytes
    run["variants"][0]["generation"] = {"text": junk, "tokens": [
        {"id": 1, "text": junk[i:i + 8], "prob": 0.01, "top": [{"id": 1, "text": junk[i:i + 8], "prob": 0.01}]}
        for i in range(0, len(junk), 8)]}
    css = (ROOT / "assets" / "style.css").read_text(encoding="utf-8")
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.set_content(f"<html><head><style>{css}</style></head><body><div id='pc-generations'>"
                         f"{plots.generation_html(run)}</div></body></html>")
        page.screenshot(path=str(tmp_path / f"generation-{width}.png"), full_page=True)
        cols = page.eval_on_selector_all(".pc-gen-col", "els => els.map(e => ({x: e.getBoundingClientRect().x, "
                                                        "w: e.getBoundingClientRect().width, y: e.getBoundingClientRect().y,"
                                                        " h: e.getBoundingClientRect().height, sw: e.scrollWidth, "
                                                        "cw: e.clientWidth, t: e.className}))")
        assert len(cols) == 3
        for c in cols:
            assert c["sw"] <= c["cw"] + 1, (width, c)  # nothing spills sideways out of a card
            assert c["x"] >= 0 and c["x"] + c["w"] <= width + 1, (width, c)
        assert _overlaps([dict(c, t=str(k)) for k, c in enumerate(cols)]) == []
        page.close()


def test_the_quant_labels_of_perplexity_against_bits_per_weight_do_not_collide(browser, tmp_path):
    sweep = make_sweep()
    for c in sweep["cells"]:  # the demo files' own bits per weight: the low-bit ones close together
        c["bpw"] = {"F16": 16.3, "Q8_0": 8.9, "Q6_K": 7.0, "Q4_K_M": 5.38, "Q3_K_M": 4.9, "Q2_K": 4.6}[c["quant"]]
    fig = sweepplots.sweep_bpw_figure(sweep)
    for width in WIDTHS:
        page = _draw(browser, fig, width, tmp_path / f"sweep-bpw-{width}.png")
        labels = _boxes(page, ".textpoint text")
        assert len(labels) == 6
        assert _overlaps(labels) == [], width
        page.close()


def test_the_sweeps_percent_button_parts_the_quant_lines_in_the_browser(browser, tmp_path):
    fig = sweepplots.sweep_ppl_figure(make_sweep())
    page = _draw(browser, fig, 900, tmp_path / "sweep-ppl.png")
    page.get_by_text(sweepplots.DIFF_VIEW).click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "sweep-ppl-percent.png"))
    state = page.evaluate("""() => { const gd = document.querySelector('.js-plotly-plot');
        return {title: gd.layout.yaxis.title.text, type: gd.layout.yaxis.type,
                y: Object.fromEntries(gd.data.map(t => [t.name, t.y]))}; }""")
    assert state["type"] == "linear" and "%" in state["title"]
    assert all(v == 0 for v in state["y"]["F16"]) and min(state["y"]["Q2_K"]) > max(state["y"]["Q8_0"]) > 0
    page.close()
