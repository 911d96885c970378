"""Tests for pythia_compare.web.plots: the figures' data, the generations' HTML and the tables, on run dicts
shaped like the run JSON (docs/run.md) (built by the factory in tests/plots_runs.py)."""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from pythia_compare.web import plots, sweepplots
from pythia_compare.runs import report
from pythia_compare.runs.run import GenToken, Run

from tests.plots_runs import corpus_run, make_run, partial_run, prompt_run, quant_series_run, step_series_run
from tests.sweep_data import DEMO_STEPS, cell, make_sweep


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return found[0]


def _entries(run):
    return [run["reference"]] + run["variants"] if run.get("reference") else list(run["variants"])


# ------------------------------------------------------------------------------------- next token

def test_next_token_bars_have_one_trace_per_variant_and_the_reference_with_their_topk_probabilities():
    run = prompt_run()
    fig = plots.next_token_figure(run)
    names = [t.name for t in fig.data]
    assert names == ["step143000 F16 (reference)", "Q8_0", "Q4_K_M", "Q2_K"]
    assert all(t.type == "bar" for t in fig.data)
    cats = list(fig.data[0].x)
    union = {t["id"] for v in _entries(run) for t in v["next_token"]}
    assert len(cats) == len(union) == len(set(cats))
    for v, trace in zip(_entries(run), fig.data):
        assert list(trace.x) == cats
        ids = [c[1] for c in trace.customdata]
        heights = dict(zip(ids, trace.y))
        for t in v["next_token"]:
            assert heights[t["id"]] == t["prob"]
        mine = {t["id"] for t in v["next_token"]}
        assert all(heights[i] is None for i in union - mine), "a token outside the top-k must have no bar"


def test_next_token_categories_show_whitespace_visibly_and_are_ordered_by_highest_probability():
    run = prompt_run()
    fig = plots.next_token_figure(run)
    cats = list(fig.data[0].x)
    assert "␣the" in cats and "\\n" in cats
    best = {}
    for v in _entries(run):
        for t in v["next_token"]:
            best[t["id"]] = max(best.get(t["id"], 0), t["prob"])
    ids = [c[1] for c in fig.data[0].customdata]
    assert [best[i] for i in ids] == sorted(best.values(), reverse=True)
    assert fig.layout.xaxis.type == "category"


def test_next_token_markup_in_token_text_is_escaped_for_plotly():
    run = prompt_run()
    run["variants"][0]["next_token"][0].update(id=99_999, text="<b>x</b>")
    cats = list(plots.next_token_figure(run).data[0].x)
    assert "&lt;b&gt;x&lt;/b&gt;" in cats and not any("<b>" in c for c in cats)


# ------------------------------------------------------------------------------------- perplexity

def test_mixed_variants_get_perplexity_bars_with_their_errors():
    run = make_run(["Q8_0", "step3000:Q4_K_M", "./models/my model.gguf"], reference="F16")
    assert plots.ppl_axis_mode(run) == "label"
    fig = plots.ppl_figure(run)
    for v in _entries(run):
        name = v["label"] + (" (reference)" if v is run["reference"] else "")
        t = _trace(fig, name)
        assert t.type == "bar"
        assert list(t.y) == [v["ppl"]]
        assert list(t.error_y.array) == [v["ppl_err"]]


def test_a_step_series_is_plotted_against_step_on_an_axis_that_places_step_zero():
    run = step_series_run()
    assert plots.ppl_axis_mode(run) == "step"
    fig = plots.ppl_figure(run)
    points = {}
    for v in _entries(run):
        name = v["label"] + (" (reference)" if v is run["reference"] else "")
        t = _trace(fig, name)
        assert list(t.error_y.array) == [v["ppl_err"]] and list(t.y) == [v["ppl"]]
        points[int(v["spec"].removeprefix("step").split(":")[0])] = t.x[0]
    assert points[0] == 0.0
    steps = sorted(points)
    xs = [points[s] for s in steps]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    assert all(math.isclose(points[s], math.log10(s + 1)) for s in steps)
    ticks = dict(zip(fig.layout.xaxis.ticktext, fig.layout.xaxis.tickvals))
    assert ticks["0"] == 0.0 and math.isclose(ticks["1k"], math.log10(1001))
    assert fig.layout.xaxis.range[0] < 0 < fig.layout.xaxis.range[1]


def test_a_reference_that_is_not_a_step_is_a_horizontal_line_on_the_step_axis():
    run = step_series_run(reference="Q8_0")
    fig = plots.ppl_figure(run)
    t = _trace(fig, "Q8_0 (reference)")
    assert t.mode == "lines" and len(set(t.y)) == 1 and t.y[0] == run["reference"]["ppl"]


def test_a_quant_series_is_plotted_against_file_size_with_bits_per_weight():
    run = quant_series_run()
    assert plots.ppl_axis_mode(run) == "quant"
    fig = plots.ppl_figure(run)
    for v in _entries(run):
        name = v["label"] + (" (reference)" if v is run["reference"] else "")
        t = _trace(fig, name)
        assert t.x[0] == v["source"]["bytes"] / 1e6
        assert list(t.error_y.array) == [v["ppl_err"]]
        q = v["source"]["quant"]
        label = next(a for a in fig.layout.annotations if a.name == name)  # the point's label, on a pointer
        # the file's own bits per weight, as the run measured it (variants.bits_per_weight), not the type's
        assert label.x == label.ax == t.x[0] and f"{q}<br>{v['source']['bpw']:.2f} bpw" == label.text
        assert label.ay > max(fig.data[k].y[0] for k in range(len(fig.data)))  # above every point
    assert fig.layout.xaxis.title.text == "file size (MB)"


# ------------------------------------------------------------------------------------- surprisal

def test_the_surprisal_heatmap_holds_bits_per_token_with_token_text_and_p_on_hover():
    run = prompt_run()
    fig = plots.surprisal_heatmap(run)
    (hm,) = fig.data
    assert list(hm.y) == ["step143000 F16 (reference)", "Q8_0", "Q4_K_M", "Q2_K"]
    for v, row in zip(_entries(run), hm.z):
        np.testing.assert_allclose(row, -np.asarray(v["token_logprobs"]) / math.log(2), rtol=1e-12)
    tokens = run["input"]["tokens"]
    lp = run["variants"][0]["token_logprobs"]
    for j in range(len(lp)):
        cell = hm.text[1][j]
        assert repr(tokens[j + 1]) in cell
        assert f"p = {math.exp(lp[j]):.4f}" in cell or f"p = {math.exp(lp[j]):.2e}" in cell
    assert list(fig.layout.xaxis.ticktext) == [report.show_token(t) for t in tokens[1:]]


def test_a_long_corpus_heatmap_is_capped_and_says_so():
    run = corpus_run(ctx=64, n_chunks=20)
    n = run["variants"][0]["n_scored"]
    assert n > plots.MAX_HEATMAP_COLUMNS
    fig = plots.surprisal_heatmap(run)
    assert len(fig.data[0].z[0]) == plots.MAX_HEATMAP_COLUMNS
    assert f"first {plots.MAX_HEATMAP_COLUMNS} of {n}" in fig.layout.title.text


def test_corpus_mode_aligns_scored_tokens_with_the_second_half_of_each_chunk():
    run = corpus_run(ctx=8, n_chunks=3)
    tokens = run["input"]["tokens"]
    assert plots.scored_token_texts(run) == [tokens[i] for i in (5, 6, 7, 13, 14, 15, 21, 22, 23)]
    run["input"]["tokens"] = tokens[:-3]  # a stored token list that disagrees: fall back to positions
    assert plots.scored_token_texts(run) is None
    assert plots.surprisal_heatmap(run).layout.xaxis.title.text == "scored position"


# ------------------------------------------------------------------------------------- KL

def test_kld_boxes_hold_each_variants_per_token_divergence():
    run = prompt_run()
    fig = plots.kld_figure(run)
    assert [t.name for t in fig.data] == ["Q8_0", "Q4_K_M", "Q2_K"]
    for v, t in zip(run["variants"], fig.data):
        assert t.type == "box" and list(t.y) == v["kld"]["per_token"]
    assert plots.kld_figure(run, log_y=True).layout.yaxis.type == "log"


def test_the_kl_table_has_llama_perplexitys_statistics_per_variant():
    run = prompt_run()
    columns, rows = report.kl_table(run)
    assert columns == ["statistic", "Q8_0", "Q4_K_M", "Q2_K"]
    by_name = {r[0]: r[1:] for r in rows}
    for key, stat in [("mean", "Mean KLD"), ("max", "Maximum KLD"), ("p99_9", "99.9% KLD"), ("median", "Median KLD"),
                      ("same_top", "Same top p %"), ("ppl_ratio", "Mean PPL(Q)/PPL(base)"), ("dp_rms", "RMS Δp %")]:
        assert by_name[stat] == [v["kld"][key] for v in run["variants"]]
    assert by_name["Mean PPL(base)"] == [run["reference"]["ppl"]] * 3
    shown = {r[0]: r[1:] for r in report.format_table(columns, rows)}
    assert shown["Same top p %"] == [f"{100 * v['kld']['same_top']:.3f}" for v in run["variants"]]


def test_a_run_without_reference_has_no_kl_boxes_and_an_empty_kl_table():
    run = make_run(["Q8_0", "Q2_K"], reference=None)
    fig = plots.kld_figure(run)
    assert len(fig.data) == 0 and "choose a reference" in fig.layout.annotations[0].text
    columns, rows = report.kl_table(run)
    assert columns == ["statistic"] and all(len(r) == 1 for r in rows)


# ------------------------------------------------------------------------------------- summary

def test_summary_rows_carry_the_runs_own_numbers_reference_first():
    run = prompt_run()
    columns, rows = report.summary_table(run)
    assert columns == report.SUMMARY_COLUMNS
    assert [r[columns.index("role")] for r in rows] == ["reference", "variant", "variant", "variant"]
    for v, r in zip(_entries(run), rows):
        cell = dict(zip(columns, r))
        assert cell["variant"] == v["label"] and cell["spec"] == v["spec"]
        assert cell["quant"] == v["source"]["quant"] and cell["bpw"] == v["source"]["bpw"]
        assert cell["size MB"] == v["source"]["bytes"] / 1e6
        # 10 scored tokens: too few for a standard error, so the ± cells say n/a (the JSON keeps its number)
        assert v["n_scored"] == 10
        assert (cell["PPL"], cell["PPL ±"], cell["n scored"]) == (v["ppl"], "n/a", v["n_scored"])
        assert cell["top-1 next token"] == v["next_token"][0]["text"]
        assert cell["load s"] == v["timings"]["load_s"] and cell["score s"] == v["timings"]["score_s"]
        kld = v.get("kld") or {}
        assert (cell["mean KLD"], cell["KLD ±"], cell["same top %"]) == (kld.get("mean"), "n/a" if kld else None,
                                                                       kld.get("same_top"))
    corpus = corpus_run(ctx=64, n_chunks=20)  # enough tokens: the ± cells hold the run's own numbers
    columns, rows = report.summary_table(corpus)
    for v, r in zip(_entries(corpus), rows):
        cell = dict(zip(columns, r))
        assert (cell["PPL ±"], cell["KLD ±"]) == (v["ppl_err"], (v.get("kld") or {}).get("mean_err"))


def test_formatted_summary_cells_round_consistently_and_show_tokens_visibly():
    run = prompt_run()
    columns, rows = report.summary_table(run)
    shown = report.format_table(columns, rows)
    ref, q8 = dict(zip(columns, shown[0])), dict(zip(columns, shown[1]))
    assert ref["mean KLD"] == "–"
    assert q8["top-1 next token"] == report.show_token(run["variants"][0]["next_token"][0]["text"])
    assert q8["PPL"] == report.fmt_num(run["variants"][0]["ppl"])
    assert q8["size MB"] == f"{run['variants'][0]['source']['bytes'] / 1e6:.1f}"
    assert q8["n scored"] == str(run["variants"][0]["n_scored"])
    assert report.fmt_num(12.3456789) == "12.3457" and report.fmt_num(51234.56) == "51234.6"
    assert report.fmt_num(0.0123456789) == "0.012346" and report.fmt_num(3.2e-6) == "3.20000e-06"


# ------------------------------------------------------------------------------------- generations

def test_generation_html_escapes_model_text_and_lists_alternatives_in_each_tokens_box():
    run = prompt_run()
    gen = run["variants"][1]["generation"]
    gen["tokens"][1]["text"] = "<script>"
    gen["tokens"][1]["top"][1]["text"] = '" onmouseover="x'
    out = plots.generation_html(run)
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert '" onmouseover="x' not in out
    for v in Run.from_json(run).entries():
        assert v.label in out
        for tok in v.generation.tokens:
            span_title = plots._token_span(tok)
            assert span_title in out
            for alt in tok.top:
                box = span_title.split('class="pc-alt"')[1]  # the alternatives' box, opened by hover or tap
                assert html.unescape(repr(alt.text)) in html.unescape(box)
                p = alt.prob
                assert (f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}") in span_title


def test_generation_tokens_are_coloured_by_probability():
    low = plots._token_span(GenToken(id=64, text="a", prob=0.01, top=[]))
    high = plots._token_span(GenToken(id=64, text="a", prob=0.99, top=[]))
    assert "hsl(1," in low and "hsl(119," in high


# ------------------------------------------------------------------------------------- partial runs

def test_a_partial_run_with_one_variant_no_reference_and_no_generation_builds_everything():
    run = partial_run()
    figs = plots.all_figures(run)
    assert set(figs) == {"next_token", "ppl", "surprisal", "kld"}  # "lens" only for a lens run
    assert [t.name for t in figs["next_token"].data] == [run["variants"][0]["label"]] == ["step1000 F16"]
    assert list(figs["ppl"].data[0].error_y.array) == [run["variants"][0]["ppl_err"]]
    assert "no generation" in plots.generation_html(run)
    assert len(report.summary_table(run)[1]) == 1
    empty = dict(run, variants=[])
    for fig in plots.all_figures(empty).values():
        assert len(fig.data) == 0 and fig.layout.annotations
    assert "No generations yet" in plots.generation_html(empty)
    assert report.summary_table(empty)[1] == []


def test_a_variant_keeps_its_colour_in_every_figure_and_as_the_run_grows():
    run = prompt_run()
    figs = plots.all_figures(run)
    colours = report.variant_colors(run)
    assert len(set(colours.values())) == len(colours)
    for name in ["Q8_0", "Q4_K_M", "Q2_K"]:
        assert _trace(figs["next_token"], name).marker.color == colours[name]
        assert _trace(figs["ppl"], name).marker.color == colours[name]
        assert _trace(figs["kld"], name).marker.color == colours[name]
    grown = report.variant_colors(dict(run, variants=run["variants"][:1]))
    assert grown["Q8_0"] == colours["Q8_0"]


def test_figures_redraw_identically_from_the_stored_json():
    for run in (prompt_run(), step_series_run(), quant_series_run(), partial_run(), corpus_run(ctx=8, n_chunks=3)):
        reopened = json.loads(json.dumps(run))
        live, again = plots.all_figures(run), plots.all_figures(reopened)
        assert {k: f.to_json() for k, f in live.items()} == {k: f.to_json() for k, f in again.items()}
        assert plots.generation_html(run) == plots.generation_html(reopened)


def test_the_typed_run_and_its_json_draw_the_same_figures():
    for run in (prompt_run(), quant_series_run(), partial_run()):
        typed = Run.from_json(run)
        assert ({k: f.to_json() for k, f in plots.all_figures(typed).items()}
                == {k: f.to_json() for k, f in plots.all_figures(run).items()})
        assert plots.generation_html(typed) == plots.generation_html(run)


def _runs_of_every_shape():
    seven = make_run(["Q8_0", "Q6_K", "Q4_K_M", "Q2_K", "step0", "step1000"], reference="F16", seed=7)  # panels
    few = make_run(["Q8_0", "Q2_K"], reference="F16", n_scored=5, tokens=["a", "b", "c", "d", "e", "f"], seed=9)
    return [prompt_run(), step_series_run(), step_series_run("Q8_0"), quant_series_run(), partial_run(),
            corpus_run(ctx=8, n_chunks=3), seven, few, dict(partial_run(), variants=[])]


def test_every_run_figure_is_valid_plotly_and_unchanged_when_plotly_validates_it():
    import plotly.graph_objects as go

    for run in _runs_of_every_shape():
        figs = dict(plots.all_figures(run), kld_log=plots.kld_figure(run, log_y=True))
        for name, fig in figs.items():
            sent = json.loads(fig.to_json())
            checked = go.Figure(sent)  # plotly's validation: a name it does not know raises ValueError
            assert json.loads(checked.to_json()) == sent, name
            assert sent["layout"]["template"] == json.loads(go.Figure(layout={"template": "plotly_white"})
                                                            .to_json())["layout"]["template"], name


def test_plots_imports_no_gradio():
    code = "import sys, pythia_compare.web.plots; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------- issue 20: readable plots

def test_the_kl_box_plot_takes_a_log_axis_when_a_step_sits_beside_quants_and_stays_linear_otherwise():
    run = prompt_run()
    assert plots.kld_figure(run).layout.yaxis.type == "linear"  # three quants: alike in scale
    run["variants"][0]["kld"]["per_token"] = [x * 1000 for x in run["variants"][0]["kld"]["per_token"]]  # a step
    fig = plots.kld_figure(run)
    assert fig.layout.yaxis.type == "log" and "log scale" in fig.layout.yaxis.title.text
    assert plots.kld_figure(run, log_y=False).layout.yaxis.type == "linear"  # a caller may still choose


def test_next_token_bars_are_scaled_to_the_largest_probability_and_the_axis_says_so():
    run = prompt_run()
    for e in [run["reference"], *run["variants"]]:
        for t in e["next_token"]:
            t["prob"] *= 0.1  # a step-0-like spread: nothing above 0.09
    top = max(t["prob"] for e in [run["reference"], *run["variants"]] for t in e["next_token"])
    fig = plots.next_token_figure(run)
    lo, hi = fig.layout.yaxis.range
    assert lo == 0 and top < hi <= 1.2 * top
    assert "probability" in fig.layout.yaxis.title.text and "fitted" in fig.layout.yaxis.title.text
    many = make_run(["Q8_0", "Q6_K", "Q4_K_M", "Q2_K", "step1000"], reference="F16")  # panels, one per variant
    for e in [many["reference"], *many["variants"]]:
        for t in e["next_token"]:
            t["prob"] *= 0.1
    panels = plots.next_token_figure(many)
    assert all(panels.layout[k].range[1] < 0.2 for k in panels.layout if k.startswith("yaxis") and panels.layout[k].range)


def test_sweep_ppl_vs_step_offers_each_quants_percent_above_the_reference_so_the_lines_part():
    sweep = make_sweep()
    fig = sweepplots.sweep_ppl_figure(sweep)
    (menu,) = fig.layout.updatemenus
    views = {b.label: b for b in menu.buttons}
    assert set(views) == {sweepplots.PPL_VIEW, sweepplots.DIFF_VIEW}
    diff = views[sweepplots.DIFF_VIEW].args
    names = [t.name for t in fig.data]
    ys = dict(zip(names, diff[0]["y"]))
    assert all(y == 0 for y in ys["F16"])  # the reference is the zero line
    for q in ("Q8_0", "Q2_K"):
        want = [100 * (cell(sweep, s, q)["ppl"] / cell(sweep, s, "F16")["ppl"] - 1) for s in DEMO_STEPS]
        assert ys[q] == pytest.approx(want, rel=1e-9)
    assert min(ys["Q2_K"]) > max(ys["Q8_0"])  # apart, where in perplexity they lie on top of each other
    assert diff[1]["yaxis.type"] == "linear" and "%" in diff[1]["yaxis.title.text"]
    back = views[sweepplots.PPL_VIEW].args
    assert dict(zip(names, back[0]["y"]))["Q2_K"] == [cell(sweep, s, "Q2_K")["ppl"] for s in DEMO_STEPS]
