"""A public deployment bounds a run's work (issue 18, item 1): a run that would evaluate more tokens than
Settings.max_run_tokens_public is refused, and one running past Settings.max_run_seconds_public is stopped, each
saying so and what would work; nothing is stored. A local app runs the same runs. Real demo models, the page's
"/compare" handler (ui.Handlers.compare)."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from pythia_compare.web.ui import Handlers
from tests.ui_support import PROMPT, demo_suite, settings_for


def handlers(tmp_path, **changes) -> Handlers:
    return Handlers(settings_for(tmp_path, demo_suite(tmp_path / "demo-standin"), **changes))


def run(h: Handlers, max_tokens: int = 4) -> dict:
    return json.loads(h.compare(family="demo", specs="demo demo:Q2_K", reference="demo", prompt=PROMPT, text="",
                                scoring="auto", ctx=64, top_k=5, max_tokens=max_tokens, temperature=0, seed=0,
                                progress=lambda *a, **k: None))


def test_a_public_run_over_its_work_bound_is_refused_saying_how_much_and_what_would_work(tmp_path):
    h = handlers(tmp_path, public=True, max_run_tokens_public=40)
    with pytest.raises(gr.Error) as e:
        run(h, max_tokens=16)
    message = e.value.message
    assert "this run would evaluate" in message and "2 models" in message and "16 new" in message
    assert "at most 40 per run" in message and "fewer variants, a shorter text or fewer new tokens" in message
    assert h.store.count() == 0
    h.pool.close()


def test_a_public_run_past_its_time_bound_is_stopped_and_says_so(tmp_path):
    h = handlers(tmp_path, public=True, max_run_seconds_public=1e-6)
    with pytest.raises(gr.Error) as e:
        run(h)
    assert "the run was stopped after 1e-06 seconds, the most this public deployment gives one run" in e.value.message
    assert h.store.count() == 0
    h.pool.close()


def test_a_local_app_runs_what_a_public_one_would_refuse(tmp_path):
    h = handlers(tmp_path, public=False, max_run_tokens_public=40, max_run_seconds_public=1e-6)
    final = run(h, max_tokens=16)
    assert final["run_id"] and len(final["variants"][0]["generation"]["tokens"]) == 16
    h.pool.close()


def test_a_public_run_within_its_bounds_runs(tmp_path):
    h = handlers(tmp_path, public=True)
    assert run(h)["run_id"]
    h.pool.close()
