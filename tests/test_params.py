"""The run parameters' limits have one home (params.LIMITS): the CLI, the API and the page's widgets follow it."""

from __future__ import annotations

import dataclasses
import json

import gradio as gr
import pytest

from pythia_compare import cli, params
from pythia_compare.errors import BadInput
from pythia_compare.web.ui import Handlers, build_demo
from tests.ui_support import PROMPT, demo_suite, settings_for


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture
def top_k_up_to_3(monkeypatch):
    monkeypatch.setitem(params.LIMITS, "top_k", dataclasses.replace(params.LIMITS["top_k"], hi=3))


@pytest.fixture
def cli_args(monkeypatch, suite):
    monkeypatch.setenv("PYTHIA_COMPARE_DEMO_DIR", str(suite))
    return _cli_args


def _cli_args(tmp_path, *more) -> list[str]:
    return ["--offline", "--db", str(tmp_path / "runs.db"), "--home", str(tmp_path / "home"), "compare", "demo@step0", "--prompt", PROMPT, "--max-tokens", "0", *more]


def page_inputs(**over) -> dict:
    args = dict(family="demo", quants=[], steps=[], specs="demo@step0", reference="", prompt=PROMPT, text="",
                text_file=None, scoring="auto", ctx=64, top_k=2, max_tokens=0, temperature=0.0, seed=0)
    args.update(over)
    return args


def test_a_limit_changed_in_the_table_is_what_the_cli_refuses_and_names(top_k_up_to_3, cli_args, tmp_path, capsys):
    assert cli.main(cli_args(tmp_path, "--top-k", "4")) == 2
    assert "error: top-k 4 is out of range; use 1 … 3" in capsys.readouterr().err


def test_a_limit_raised_in_the_table_lets_the_cli_run_beyond_the_old_one(monkeypatch, cli_args, tmp_path, capsys):
    monkeypatch.setitem(params.LIMITS, "top_k", dataclasses.replace(params.LIMITS["top_k"], hi=200))
    assert cli.main(cli_args(tmp_path, "--top-k", "150", "--json")) == 0, capsys.readouterr().err
    run = json.loads(capsys.readouterr().out)
    assert run["params"]["top_k"] == 150 and len(run["variants"][0]["next_token"]) == 150


def test_a_limit_changed_in_the_table_is_what_the_api_handler_refuses_and_names(top_k_up_to_3, tmp_path, suite):
    dash = Handlers(settings_for(tmp_path, suite))
    try:
        with pytest.raises(BadInput, match=r"^Top-k 4 is out of range; use 1 … 3"):
            dash.core.prepare(**page_inputs(top_k=4))
        _, _, ok = dash.core.prepare(**page_inputs(top_k=3))
        assert ok.top_k == 3
        with pytest.raises(gr.Error, match=r"Top-k 4 is out of range; use 1 … 3"):
            dash.compare(**page_inputs(top_k=4), owner=None)
    finally:
        dash.pool.close()


def test_a_limit_changed_in_the_table_is_the_range_the_widget_shows(top_k_up_to_3, tmp_path, suite):
    demo = build_demo(settings_for(tmp_path, suite))
    try:
        by_id = {c.elem_id: c for c in demo.blocks.values() if isinstance(c, gr.Number)}
        assert by_id["pc-top-k"].info == "1 … 3"
        for field, lim in params.LIMITS.items():  # every run parameter's widget reads the table
            widget = by_id["pc-" + field.replace("_", "-")]
            assert (widget.label, widget.info) == (lim.widget_label, lim.range_text)
            assert widget.info == (f"{lim.lo:g} … {lim.hi:g}" if lim.hi < 1e6 else f"{lim.lo:g} or more")
            assert widget.value == getattr(demo.handlers.settings, field)
    finally:
        demo.handlers.pool.close()


def test_a_widget_as_gradio_rebuilds_it_for_a_session_hands_an_out_of_range_value_to_the_server(tmp_path, suite):
    demo = build_demo(settings_for(tmp_path, suite))
    try:
        by_id = {c.elem_id: c for c in demo.blocks.values() if isinstance(c, gr.Number)}
        for field, lim in params.LIMITS.items():
            widget = by_id["pc-" + field.replace("_", "-")]
            # gradio rebuilds a component from its class and arguments once the page updated it (gr.skip() too):
            # with gradio's own minimum/maximum it would refuse the value with a message naming no field
            rebuilt = widget.__class__(**{**widget.constructor_args, "render": False})
            assert rebuilt.preprocess(lim.hi + 1) == lim.hi + 1 and widget.preprocess(lim.hi + 1) == lim.hi + 1
    finally:
        demo.handlers.pool.close()


def test_a_sweeps_context_follows_the_table_too(monkeypatch, tmp_path, suite):
    from pythia_compare.sweeps.sweep import SweepError, make_plan

    monkeypatch.setitem(params.LIMITS, "ctx", dataclasses.replace(params.LIMITS["ctx"], hi=100))
    with pytest.raises(SweepError, match=r"^--ctx 200 is out of range; use 8 … 100 tokens"):
        make_plan(settings_for(tmp_path, suite), steps="all", quants="F16", text="some text", repo="demo", ctx=200)
