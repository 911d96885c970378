"""The Sweeps tab's handlers, called directly, on a real demo sweep (planned and run through the CLI into a real
SQLite run log, real llama.cpp scoring): the list, a sweep's four figures and cell table, share links, the API,
a cell's click opening its run, and starting sweeps only when the app is local."""

from __future__ import annotations

import math

import gradio as gr
import pytest

from pythia_compare.web import sweepplots
from pythia_compare.runs.store import RunStore
from pythia_compare.web.sweepview import CELL_COLUMNS, NO_SWEEP, SWEEP_COLUMNS, SWEEP_NOT_FOUND, cell_run_id
from pythia_compare.web.ui import SWEEP_FIGURE_LABELS, SWEEP_FIGURES, Handlers, SweepHandlers, build_demo
from pythia_compare.sweeps.store import SweepStore
from tests.ui_support import DEMO_SWEEP_QUANTS, demo_suite, demo_sweep_steps, make_demo_sweep, settings_for


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture(scope="module")
def made(tmp_path_factory, suite):
    """(settings, sweep id): one demo sweep, 3 steps × 3 quants, in the run log of these settings."""
    tmp = tmp_path_factory.mktemp("ui-sweeps")
    settings = settings_for(tmp, suite)
    return settings, make_demo_sweep(tmp, suite, settings.db_path)


@pytest.fixture(scope="module")
def sweeps(made):
    settings, _ = made
    return SweepHandlers(settings, RunStore(settings.db_path))


@pytest.fixture(scope="module")
def sweep(made, sweeps):
    return SweepStore(sweeps.desk.store).get(made[1])


def select(row: list, index=(0, 0)) -> gr.SelectData:
    """What gradio hands a select handler when a user clicks a row of a table."""
    return gr.SelectData(None, {"index": list(index), "value": row[index[1]], "row_value": row})


# ------------------------------------------------------------------------------------------ the list
def test_the_list_shows_the_sweep_with_every_cell_done(made, sweeps):
    listing = sweeps.listing()
    assert listing["headers"] == SWEEP_COLUMNS
    (row,) = [r for r in listing["data"] if r[0] == made[1]]
    n = len(demo_sweep_steps(made[0].demo_dir)) * len(DEMO_SWEEP_QUANTS)
    assert row[1] == "demo test grid" and row[3] == "demo"
    assert row[SWEEP_COLUMNS.index("done")] == str(n) == row[SWEEP_COLUMNS.index("total")]
    assert row[SWEEP_COLUMNS.index("failed")] == "0"


def test_clicking_a_sweep_in_the_list_draws_its_four_views_and_its_cells(made, sweeps, sweep):
    row = [r for r in sweeps.listing()["data"] if r[0] == made[1]][0]
    status, *slots, cells, sweep_id, _published = sweeps.select_sweep(select(row))
    assert sweep_id == made[1] and made[1] in status and "9 of 9 cells done" in status
    expected = sweepplots.sweep_figures(sweep)
    for name, slot in zip(SWEEP_FIGURES, slots, strict=True):  # each slot shown, with its own label
        fig = slot["value"]
        assert slot["visible"] and slot["label"] == SWEEP_FIGURE_LABELS[name]
        assert fig.to_plotly_json() == expected[name].to_plotly_json() and len(fig.data) >= 1, name
    ppl = slots[0]["value"]
    assert [t.name for t in ppl.data] == DEMO_SWEEP_QUANTS and ppl.layout.xaxis.type == "log"
    assert cells["headers"] == CELL_COLUMNS and len(cells["data"]) == 9
    assert all(cell_run_id(r) for r in cells["data"])


def test_the_figures_draw_the_cells_numbers_step0_first(made, sweep):
    steps = demo_sweep_steps(made[0].demo_dir)
    ppl = sweepplots.sweep_ppl_figure(sweep)
    for q in DEMO_SWEEP_QUANTS:
        (t,) = [t for t in ppl.data if t.name == q]
        cells = sorted((c for c in sweep["cells"] if c["quant"] == q), key=lambda c: c["step"])
        assert list(t.y) == [c["ppl"] for c in cells] and all(c["ppl"] > 1 for c in cells)
        assert list(t.error_y.array) == [c["ppl_err"] for c in cells]
    ticks = dict(zip(ppl.layout.xaxis.tickvals, ppl.layout.xaxis.ticktext))
    assert steps[0] == 0 and ticks[min(ticks)] == "step0"
    hm = sweepplots.sweep_heatmap(sweep).data[0]
    assert list(hm.y) == ["Q8_0", "Q2_K"]  # F16 is each step's reference: no ratio to itself
    for i, q in enumerate(hm.y):
        for j, s in enumerate(steps):
            c = [c for c in sweep["cells"] if c["quant"] == q and c["step"] == s][0]
            f16 = [c for c in sweep["cells"] if c["quant"] == "F16" and c["step"] == s][0]
            assert hm.z[i][j] == pytest.approx(math.log(c["ppl"] / f16["ppl"]), rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------------------------------ cells open runs
def test_clicking_a_cell_row_opens_that_cells_run_with_the_same_numbers(made, sweeps, sweep):
    dash = Handlers(made[0], pool=None, store=sweeps.desk.store)
    try:
        rows = sweeps.views(sweep)[5]["data"]
        row = next(r for r in rows if r[1] == "Q2_K")
        run_id, note = sweeps.select_cell(select(row, (0, 3)))
        cell = next(c for c in sweep["cells"] if c["run_id"] == run_id)
        assert run_id in note and (cell["step"], cell["quant"]) == (int(row[0]), "Q2_K")
        views = dash.open_run(run_id)
        assert views[8] == run_id and run_id in views[0]
        run = dash.store.get(run_id)
        assert run["variants"][0]["ppl"] == cell["ppl"] and run["variants"][0]["kld"]["mean"] == cell["kld_mean"]
        held_out = (made[0].demo_dir / "heldout.txt").read_text(encoding="utf-8")
        assert held_out.startswith(run["input"]["text"]) and run["input"]["n_tokens"] == sweep["n_tokens"]
    finally:
        dash.pool.close()


def test_a_cell_without_a_run_says_so_and_opens_nothing(sweeps):
    row = ["100", "Q2_K", "failed"] + ["–"] * (len(CELL_COLUMNS) - 4) + ["download failed"]
    run_id, note = sweeps.select_cell(select(row))
    assert run_id == "" and "failed" in note and "no run" in note


# ------------------------------------------------------------------------------------------ links, API
def test_a_sweep_link_opens_the_sweeps_tab_with_the_sweep_drawn(made, sweeps, sweep):
    listing, status, *figs, cells, sweep_id, pub, tabs = sweeps.on_load(gr.Request(query_params={"sweep": made[1]}))
    assert sweep_id == made[1] and tabs.selected == "sweeps" and len(cells["data"]) == 9
    assert [f["value"].to_plotly_json() for f in figs] == [sweepplots.sweep_figures(sweep)[n].to_plotly_json()
                                                            for n in SWEEP_FIGURES]
    # a demo sweep: the published-benchmarks figure says there are none, and draws nothing
    assert not pub.data and pub.layout.annotations[0].text.startswith("No published numbers for demo")
    plain = sweeps.on_load(gr.Request(query_params={}))
    assert plain[1] == NO_SWEEP and plain[-3] == "" and not isinstance(plain[-1], gr.Tabs)  # the tab is left alone


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x" * 10_000, "ünïcödé-☃", "../../etc/passwd", "", None,
                                     12345, "AAAAAAAAAAAA"])
def test_unknown_malformed_and_hostile_sweep_ids_show_a_friendly_not_found(sweeps, hostile):
    out = sweeps.open_sweep(hostile)
    assert out[0] == SWEEP_NOT_FOUND and out[-2] == "" and out[1]["value"] is None and out[-1] is None
    loaded = sweeps.on_load(gr.Request(query_params={"sweep": "<script>alert(1)</script>"}))
    assert loaded[1] == SWEEP_NOT_FOUND and "<script>" not in loaded[1]


def test_the_sweep_api_returns_the_stored_sweep_json_and_names_a_bad_id(made, sweeps, sweep):
    assert sweeps.sweep(made[1]) == sweep
    with pytest.raises(gr.Error) as e:
        sweeps.sweep("nosuchsweep1")
    assert "no stored sweep" in e.value.message and "nosuchsweep1" in e.value.message


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x" * 10_000, "../../etc/passwd", "", None, 12345, ["a"]])
def test_the_sweep_api_answers_hostile_ids_with_a_clear_error(sweeps, hostile):
    with pytest.raises(gr.Error) as e:
        sweeps.sweep(hostile)
    assert "sweep" in e.value.message and "Traceback" not in e.value.message


def test_the_page_offers_the_compare_sweep_and_notebook_apis(made):
    demo = build_demo(made[0])
    try:
        public = [d["api_name"] for d in demo.config["dependencies"]
                  if d.get("api_visibility", "public") == "public" and d.get("api_name")]
        assert public == ["compare", "sweep", "notebook"]
    finally:
        demo.handlers.pool.close()


# ------------------------------------------------------------------------------------------ starting sweeps
def _elem_ids(demo: gr.Blocks) -> set[str]:
    return {c.get("props", {}).get("elem_id") for c in demo.config["components"]} - {None}


def test_only_a_local_app_offers_to_start_a_sweep(made, suite, tmp_path):
    local = build_demo(made[0])
    public = build_demo(settings_for(tmp_path, suite, public=True))
    try:
        assert "pc-sweep-start" in _elem_ids(local) and "pc-sweep-start" not in _elem_ids(public)
        assert "pc-sweeps" in _elem_ids(public)  # sweeps are still listed and drawn
    finally:
        local.handlers.pool.close()
        public.handlers.pool.close()


def start_args(suite, **over) -> dict:
    steps = ",".join(str(s) for s in demo_sweep_steps(suite))
    args = dict(steps=steps, quants=list(DEMO_SWEEP_QUANTS), text="", ctx=64, max_chunks=2, name="from the page")
    args.update(over)
    return args


def test_a_sweep_started_from_a_local_page_runs_here_and_matches_the_cli_sweep(made, sweeps, sweep, suite):
    note, listing, status, *figs, cells, sweep_id, _published, timer = sweeps.start(**start_args(suite))
    assert sweep_id and sweep_id in note and "sweep plan --repo demo" in note and timer.active
    assert sweep_id in [r[0] for r in listing["data"]]
    sweeps.desk.jobs[sweep_id].join(timeout=1800)
    assert sweeps.desk.running() == []
    *_, timer = sweeps.tick(sweep_id)
    assert timer.active is False  # nothing runs here any more: the page stops polling
    mine = SweepStore(sweeps.desk.store).get(sweep_id)
    assert mine["done"] == mine["total"] == sweep["total"] and mine["name"] == "from the page"
    for a, b in zip(mine["cells"], sweep["cells"]):
        assert (a["step"], a["quant"]) == (b["step"], b["quant"]) and a["run_id"] != b["run_id"]
        assert a["ppl"] == pytest.approx(b["ppl"], rel=1e-6)
        for key in ("kld_mean", "ln_ratio"):
            assert (a[key] is None) == (b[key] is None) and (a[key] is None or a[key] == pytest.approx(b[key],
                                                                                                  rel=1e-6, abs=1e-12))


def test_a_lambada_sweep_started_from_a_local_page_scores_the_demo_suites_lambada_file_in_every_cell(sweeps, suite):
    steps = demo_sweep_steps(suite)[:2]
    note, listing, status, *figs, cells, sweep_id, _published, timer = sweeps.start(
        **start_args(suite, steps=",".join(map(str, steps)), quants=["F16", "Q2_K"], scoring="lambada", limit=6))
    assert "--scoring lambada" in note and "lambada.jsonl" in note and "--limit 6" in note
    sweeps.desk.jobs[sweep_id].join(timeout=1800)
    mine = SweepStore(sweeps.desk.store).get(sweep_id)
    assert mine["scoring"] == "lambada" and mine["done"] == mine["total"] == 4
    for cell in mine["cells"]:
        assert cell["lambada_n"] == 6 and 0 <= cell["lambada_acc"] <= 1 and cell["lambada_ppl"] > 1
        assert cell["ppl"] is None  # no corpus figure in a LAMBADA cell


@pytest.mark.parametrize("bad, says", [(dict(quants=[]), "at least one quant"),
                                       (dict(steps="step7"), "has no step 7"),
                                       (dict(steps=""), "step spec"),
                                       (dict(max_chunks=-1), "max chunks"),
                                       (dict(ctx="wide"), "context"),
                                       (dict(text="too short"), "needs at least 128"),
                                       (dict(scoring="lambada", text="the quick brown fox " * 20), "empty the text"),
                                       (dict(scoring="lambada", limit=-2), "LAMBADA examples must be 0"),
                                       (dict(scoring="lambada", limit=10 ** 6), "examples"),
                                       (dict(scoring="perplexity"), "scoring must be corpus or lambada")])
def test_bad_start_inputs_are_refused_by_name_and_nothing_is_planned(sweeps, suite, bad, says):
    before = SweepStore(sweeps.desk.store).ids()
    with pytest.raises(gr.Error) as e:
        sweeps.start(**start_args(suite, **bad))
    assert says in e.value.message and SweepStore(sweeps.desk.store).ids() == before
    assert "Traceback" not in e.value.message and "Something went wrong" not in e.value.message


def test_a_public_deployment_refuses_to_start_a_sweep_even_through_a_direct_call(made, suite, tmp_path):
    pub = SweepHandlers(settings_for(tmp_path, suite, public=True), RunStore(tmp_path / "runs.db"))
    with pytest.raises(gr.Error) as e:
        pub.start(**start_args(suite))
    assert "public" in e.value.message and SweepStore(pub.desk.store).ids() == []
