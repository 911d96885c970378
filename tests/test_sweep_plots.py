"""The sweep view's figures (sweepplots.sweep_*): what a researcher reads off them, on sweep JSON dicts shaped like
docs/sweeps.md (built by tests/sweep_data.py)."""

from __future__ import annotations

import json
import math

import pytest

from pythia_compare.web import sweepplots
from pythia_compare.variants import QUANTS

from tests.sweep_data import DEMO_QUANTS, DEMO_STEPS, cell, make_sweep


def _trace(fig, name):
    found = [t for t in fig.data if t.name == name]
    assert len(found) == 1, f"expected one trace named {name!r}, got {[t.name for t in fig.data]}"
    return found[0]


def _step_at(fig, x):
    """The tick label at x on the figure's step axis."""
    ticks = dict(zip(fig.layout.xaxis.tickvals, fig.layout.xaxis.ticktext))
    return ticks[x]


# ------------------------------------------------------------------------------------- PPL vs step

def test_ppl_vs_step_has_one_line_per_quant_on_a_log_step_axis_with_error_bars():
    sweep = make_sweep()
    fig = sweepplots.sweep_ppl_figure(sweep)
    assert [t.name for t in fig.data] == DEMO_QUANTS
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    for q in DEMO_QUANTS:
        t = _trace(fig, q)
        assert t.mode == "lines+markers" and len(t.x) == len(DEMO_STEPS)
        assert list(t.y) == [cell(sweep, s, q)["ppl"] for s in DEMO_STEPS]
        assert t.error_y.visible and list(t.error_y.array) == [cell(sweep, s, q)["ppl_err"] for s in DEMO_STEPS]
        assert [_step_at(fig, x) for x in t.x] == ["step0", "25", "100", "300", "800"]


def test_step0_is_drawn_at_the_start_of_the_log_axis_labelled_step0():
    fig = sweepplots.sweep_ppl_figure(make_sweep())
    x0 = _trace(fig, "F16").x[0]
    lo, hi = fig.layout.xaxis.range
    assert 0 < x0 < 25 and lo < math.log10(x0) < math.log10(25)  # on the axis, before every other step
    assert _step_at(fig, x0) == "step0" and fig.layout.xaxis.ticktext[0] == "step0"
    assert math.log10(800) < hi


def test_positive_steps_sit_at_their_own_value_so_the_axis_is_truly_logarithmic():
    fig = sweepplots.sweep_ppl_figure(make_sweep(steps=[25, 100, 300, 800]))
    assert list(_trace(fig, "Q8_0").x) == [25, 100, 300, 800]
    assert "step0" not in fig.layout.xaxis.ticktext


def test_a_long_step_list_gets_decade_ticks_and_step0_still_labelled():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512] + list(range(1000, 143001, 13000))
    fig = sweepplots.sweep_ppl_figure(make_sweep(steps=steps, quants=["F16", "Q4_K_M"]))
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext) == ["step0", "1", "10", "100", "1k", "10k", "100k"]
    x0 = _trace(fig, "F16").x[0]
    assert x0 < 1 and _step_at(fig, x0) == "step0"


def test_failed_and_pending_cells_are_left_out_of_the_lines():
    sweep = make_sweep(failed={(100, "Q2_K")}, pending={(800, "Q2_K")})
    t = _trace(sweepplots.sweep_ppl_figure(sweep), "Q2_K")
    assert [_step_at(sweepplots.sweep_ppl_figure(sweep), x) for x in t.x] == ["step0", "25", "300"]


def test_hub_files_get_their_own_marked_line():
    sweep = make_sweep(hub_quants=("Q4_K_M",))
    fig = sweepplots.sweep_ppl_figure(sweep)
    hub = _trace(fig, "Q4_K_M (Hub file)")
    assert list(hub.y) == [cell(sweep, 800, "Q4_K_M", hub=True)["ppl"]] and hub.marker.symbol == "diamond"
    assert len(_trace(fig, "Q4_K_M").x) == len(DEMO_STEPS)


def test_hover_names_the_cells_run_so_it_can_be_opened():
    sweep = make_sweep()
    t = _trace(sweepplots.sweep_ppl_figure(sweep), "Q8_0")
    assert [c[1] for c in t.customdata] == [cell(sweep, s, "Q8_0")["run_id"] for s in DEMO_STEPS]
    assert "run %{customdata[1]}" in t.hovertemplate


# ------------------------------------------------------------------------------------- KLD vs step

def test_kld_vs_step_draws_mean_and_99th_percentile_per_quant_but_not_for_the_reference():
    sweep = make_sweep()
    fig = sweepplots.sweep_kld_figure(sweep)
    quants = [q for q in DEMO_QUANTS if q != "F16"]
    assert [t.name for t in fig.data] == [f"{q} {what}" for q in quants
                                          for what in ("mean KLD", "KLD 99th percentile")]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    for q in quants:
        mean, p99 = _trace(fig, f"{q} mean KLD"), _trace(fig, f"{q} KLD 99th percentile")
        assert list(mean.y) == [cell(sweep, s, q)["kld_mean"] for s in DEMO_STEPS]
        assert list(mean.error_y.array) == [cell(sweep, s, q)["kld_mean_err"] for s in DEMO_STEPS]
        assert list(p99.y) == [cell(sweep, s, q)["kld_p99"] for s in DEMO_STEPS]
        assert mean.line.color == p99.line.color and p99.line.dash == "dash"
        assert _step_at(fig, mean.x[0]) == "step0"


def test_a_quant_keeps_its_colour_in_every_figure():
    figs = sweepplots.sweep_figures(make_sweep())
    for q in ("Q8_0", "Q2_K"):
        assert _trace(figs["ppl"], q).line.color == _trace(figs["kld"], f"{q} mean KLD").line.color


# ------------------------------------------------------------------------------------- PPL vs bpw

def test_ppl_vs_bits_per_weight_has_one_line_per_step_in_bpw_order():
    sweep = make_sweep()
    fig = sweepplots.sweep_bpw_figure(sweep)
    assert [t.name for t in fig.data] == ["step 0", "step 25", "step 100", "step 300", "step 800"]
    for step, t in zip(DEMO_STEPS, fig.data):
        assert list(t.x) == sorted(QUANTS[q].bpw for q in DEMO_QUANTS)
        by_quant = {c[0]: y for c, y in zip(t.customdata, t.y)}
        assert by_quant == {q: cell(sweep, step, q)["ppl"] for q in DEMO_QUANTS}
        assert t.error_y.visible and len(t.error_y.array) == len(DEMO_QUANTS)
    assert fig.layout.xaxis.title.text == "bits per weight" and fig.layout.yaxis.type == "log"
    assert fig.data[-1].text and list(fig.data[-1].text) == [q for q in reversed(DEMO_QUANTS)]  # labelled by quant


def test_later_steps_are_drawn_darker_so_the_lines_read_in_training_order():
    fig = sweepplots.sweep_bpw_figure(make_sweep())
    assert len({t.line.color for t in fig.data}) == len(DEMO_STEPS)
    assert fig.data[0].line.color != fig.data[-1].line.color


# ------------------------------------------------------------------------------------- heatmap

def test_the_heatmap_shows_ln_ppl_ratio_per_quant_and_step():
    sweep = make_sweep()
    fig = sweepplots.sweep_heatmap(sweep)
    (hm,) = fig.data
    assert hm.type == "heatmap"
    assert list(hm.x) == ["step0", "25", "100", "300", "800"]
    quants = [q for q in DEMO_QUANTS if q != "F16"]  # the reference has no ratio to itself
    assert list(hm.y) == quants
    for i, q in enumerate(quants):
        for j, s in enumerate(DEMO_STEPS):
            c = cell(sweep, s, q)
            assert hm.z[i][j] == pytest.approx(math.log(c["ppl"] / cell(sweep, s, "F16")["ppl"]), rel=1e-12)
            assert hm.customdata[i][j][1] == c["run_id"]
    assert hm.zmid == 0 and hm.zmin == -hm.zmax


def test_a_failed_cell_is_an_empty_square_in_the_heatmap():
    sweep = make_sweep(failed={(300, "Q6_K")})
    hm = sweepplots.sweep_heatmap(sweep).data[0]
    assert hm.z[list(hm.y).index("Q6_K")][list(hm.x).index("300")] is None


# ------------------------------------------------------------------------------------- empty and hostile

def test_an_empty_or_all_failed_sweep_draws_every_view_with_a_message():
    sweep = make_sweep(steps=[0, 25], quants=["F16", "Q2_K"], pending={(0, "F16"), (0, "Q2_K"), (25, "F16"),
                                                                        (25, "Q2_K")})
    for name, fig in sweepplots.sweep_figures(sweep).items():
        assert len(fig.data) == 0 and fig.layout.annotations, name
        json.loads(fig.to_json())


def test_markup_in_a_sweep_name_is_escaped_for_plotly():
    sweep = make_sweep()
    sweep["name"] = "<b>bold</b>"
    for fig in sweepplots.sweep_figures(sweep).values():
        assert "<b>bold" not in fig.layout.title.text and "&lt;b&gt;bold" in fig.layout.title.text


def test_every_point_and_square_carries_its_cells_run_id_for_the_click_that_opens_it():
    sweep = make_sweep(hub_quants=("Q4_K_M",))
    run_ids = {c["run_id"] for c in sweep["cells"]}
    figs = sweepplots.sweep_figures(sweep)
    for name in ("ppl", "kld", "bpw"):
        for t in figs[name].data:
            assert t.customdata is not None and all(row[1] in run_ids for row in t.customdata), (name, t.name)
    hm = figs["heatmap"].data[0]
    assert all(sq[1] in run_ids for row in hm.customdata for sq in row if sq[2] != "–")
    bpw = _trace(figs["bpw"], "step 100")
    assert {row[1] for row in bpw.customdata} == {cell(sweep, 100, q)["run_id"] for q in DEMO_QUANTS}


def test_the_full_pythia_grid_draws_with_every_step_placed_and_values_on_hover_only():
    from pythia_compare.variants import PYTHIA_STEPS

    quants = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
    sweep = make_sweep(steps=PYTHIA_STEPS, quants=quants)
    figs = sweepplots.sweep_figures(sweep)
    assert len(_trace(figs["ppl"], "Q2_K").x) == len(PYTHIA_STEPS) == 154
    assert figs["ppl"].layout.xaxis.ticktext[0] == "step0" and "100k" in figs["ppl"].layout.xaxis.ticktext
    hm = figs["heatmap"].data[0]
    assert len(hm.x) == 154 and len(hm.y) == len(quants) - 1
    assert all(t == "" for row in hm.text for t in row)  # 1071 squares: too small to write in
    assert "ln(PPL(Q)/PPL(ref)) = %{customdata[2]}" in hm.hovertemplate
    assert len(figs["bpw"].data) == 154 and figs["bpw"].layout.showlegend is False


def test_a_small_heatmap_writes_each_value_in_its_square():
    hm = sweepplots.sweep_heatmap(make_sweep()).data[0]
    assert hm.text[0][0] == sweepplots.fmt_num(hm.z[0][0], 3)
