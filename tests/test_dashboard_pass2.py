"""The dashboard's second pass (issue 11), handler by handler: real demo models through llama.cpp, a real SQLite
run log, the handlers the page calls. The browser's side of it is in test_e2e.py."""

from __future__ import annotations

import json

import csv
import io
import zipfile

import gradio as gr
import pytest

from pythia_compare.web import plots
from pythia_compare.runs import report
from pythia_compare.runs.compare import RunParams, iter_comparison
from pythia_compare.web.dashboard import NOT_FOUND, collect_specs, controls_for, download, load_catalog, log_spaced
from pythia_compare.errors import SpecError
from pythia_compare.runs.export import run_to_csv
from pythia_compare.web.ui import CONTROLS, Handlers
from pythia_compare.variants import parse_specs
from tests.plots_runs import make_run
from tests.support import ROOT
from tests.ui_support import PROMPT, dashboard, demo_suite

HELDOUT = ROOT / "assets" / "demo" / "heldout.txt"


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture(scope="module")
def dash(tmp_path_factory, suite):
    with dashboard(tmp_path_factory.mktemp("ui2"), suite) as d:
        yield d


@pytest.fixture(scope="module")
def cat(dash):
    return load_catalog(dash.settings)


def page(**over) -> dict:
    """The page's inputs, as the Run button sends them."""
    args = dict(family="demo", quants=[], steps=[], specs="", reference="", prompt=PROMPT, text="", text_file=None,
                scoring="auto", ctx=512, top_k=5, max_tokens=3, temperature=0.0, seed=0, owner=None)
    args.update(over)
    return args


def last_run(dash: Handlers, **args) -> dict:
    return json.loads(dash.compare(**args))


def error_of(dash: Handlers, **args) -> str:
    with pytest.raises(gr.Error) as e:
        dash.compare(**args)
    return e.value.message


def value(x):
    return getattr(x, "value", x)


def inputs_after_restore(dash: Handlers, run_id: str, cat, before: dict) -> dict:
    """What the page sends when Run is pressed after the run was reopened: the restored controls over `before`."""
    out = dash.restore_controls(run_id, cat)
    args = dict(before)
    for name, v in zip(CONTROLS, out):
        if not isinstance(v, type(gr.skip())):
            args[name] = value(v)
    return args


def same_run(a: dict, b: dict) -> None:
    """Two runs of the same inputs: the same specs, parameters, text and perplexities."""
    assert [v["spec"] for v in a["variants"]] == [v["spec"] for v in b["variants"]]
    assert (a["reference"] or {}).get("spec") == (b["reference"] or {}).get("spec")
    assert a["params"] == b["params"] and a["input"] == b["input"]
    assert [e["ppl"] for e in [a["reference"], *a["variants"]]] == [e["ppl"] for e in [b["reference"], *b["variants"]]]


# ------------------------------------------------------------------------------------------ 1. the variant limit
def test_eight_variants_with_the_reference_among_them_are_not_too_many(dash):
    eight = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "Q2_K"]
    chosen, _, params = dash.core.prepare("demo", eight, [], "", "demo:F16", PROMPT, "", None, "auto", 512, 5, 3, 0,
                                          0)
    assert len(chosen) == 8 and params.reference == "demo:F16"
    # the library (CLI and API) counts the same way: the run starts resolving instead of refusing
    first = next(iter_comparison(chosen, PROMPT, params, settings=dash.settings, pool=None))
    assert first.kind == "progress" and "resolving" in first.message


def test_five_log_spaced_steps_and_the_default_quants_are_eight_variants_not_nine(dash, cat):
    steps = log_spaced(cat.steps["demo"])
    assert len(steps) == 5 and steps[-1] == dash.core.demo_final  # the last step is `demo` itself
    chosen, _, _ = dash.core.prepare("demo", ["F16", "Q8_0", "Q4_K_M", "Q2_K"], steps, "", "demo:F16", PROMPT, "",
                                     None, "auto", 512, 5, 3, 0, 0)
    assert len(chosen) == 8 and f"demo@step{steps[-1]}" not in chosen and "demo:F16" in chosen


def test_the_demos_last_step_and_demo_are_one_variant_in_the_lists_and_in_a_run(dash, suite):
    last = dash.core.demo_final
    assert collect_specs("demo", ["F16"], [last], f"demo demo@step{last}", demo_final=last) == ["demo:F16"]
    with pytest.raises(SpecError, match="twice"):
        parse_specs([f"demo@step{last}", "demo"], demo_final=last)
    run = last_run(dash, **page(specs=f"demo@step{last} demo:Q2_K", reference="demo", max_tokens=0))
    assert [v["spec"] for v in run["variants"]] == ["demo:Q2_K"]  # the reference is not run twice


def test_nine_variants_are_refused_in_words_for_a_browser_user(dash):
    nine = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K"]
    msg = error_of(dash, **page(quants=nine, reference="demo:F16"))
    assert "9 variants" in msg and "limit is 8" in msg and "Settings" not in msg and "max_variants" not in msg
    # the CLI's and the API's check (compare.validate_params) says the same
    with pytest.raises(SpecError) as e:
        next(iter_comparison([f"demo:{q}" for q in nine], PROMPT, RunParams(reference="demo:F16"),
                             settings=dash.settings, pool=None))
    assert str(e.value) == msg


# ------------------------------------------------------------------------------------------ 2. reopening a run
def test_a_reopened_prompt_run_with_steps_and_quants_runs_again_the_same(dash, cat, suite, tmp_path):
    steps = sorted(cat.steps["demo"])[:2]
    first = last_run(dash, **page(quants=["F16", "Q4_K_M"], steps=steps, reference="demo:F16", top_k=4,
                                  temperature=0.7, seed=5, max_tokens=3))
    assert [v["spec"] for v in first["variants"]] == ["demo:Q4_K_M"] + [f"demo@step{s}" for s in steps]
    # a fresh page (default controls), then the link is opened: every control shows what produced the run
    upload = tmp_path / "other.txt"
    upload.write_text("A file uploaded before the link was opened.", encoding="utf-8")
    fresh = page(quants=["Q8_0"], prompt="The capital of France is", temperature=0.0, seed=0, top_k=10,
                 text="Some other text", text_file=str(upload))
    again = inputs_after_restore(dash, first["run_id"], cat, fresh)
    assert again["text_file"] is None  # the upload would win over the restored text
    assert again["quants"] == ["F16", "Q4_K_M"] and again["steps"] == steps and again["reference"] == "demo:F16"
    assert again["prompt"] == PROMPT and again["text"] == ""
    assert (again["temperature"], again["seed"], again["top_k"]) == (0.7, 5, 4)
    same_run(first, last_run(dash, **again))


def test_a_reopened_corpus_run_with_steps_and_quants_shows_its_text_and_runs_again_the_same(dash, cat):
    text = HELDOUT.read_text(encoding="utf-8")[:1500]
    steps = sorted(cat.steps["demo"])[1:3]
    first = last_run(dash, **page(quants=["Q8_0"], steps=steps, specs="demo", reference="demo", text=text, ctx=32,
                                  max_tokens=2))
    assert first["params"]["scoring"] == "corpus"
    again = inputs_after_restore(dash, first["run_id"], cat, page())
    assert again["text"] == text and again["ctx"] == 32  # the scored text is on the page, in the text box
    assert "the scored text is in" in dash.views(first)[0]
    same_run(first, last_run(dash, **again))


def test_controls_keep_the_order_of_specs_typed_out_of_the_page_order(cat):
    run = make_run(["demo@step0", "demo:Q2_K", "demo:Q8_0"], reference="demo:F16")
    c = controls_for(run, cat, 1000)
    assert collect_specs(c["family"], c["quants"], c["steps"], c["specs"]) == ["demo:F16", "demo@step0",
                                                                                "demo:Q2_K", "demo:Q8_0"]


def test_an_unknown_run_leaves_the_controls_as_they_are(dash, cat):
    assert all(isinstance(v, type(gr.skip())) for v in dash.restore_controls("nosuchrun123", cat))


# ------------------------------------------------------------------------------------------ 3. errors (handlers)
def test_a_failed_run_puts_its_error_in_the_status_and_clears_the_previous_results(dash):
    out = []
    gen = dash.stream(**page(specs="demo@step3001"))
    with pytest.raises(gr.Error) as e:
        for item in gen:
            out.append(item)
    state = out[-1]
    views = dash.views(state)
    assert "the demo suite has no step3001; it has step0" in views[0] and e.value.message in views[0]
    assert views[8] == "" and views[1].visible is False and views[9].visible is False  # no id, no link, no files


# ------------------------------------------------------------------------------------------ 4. unknown uncertainties
def test_ten_or_fewer_scored_tokens_show_na_with_the_reason_and_no_kl_block(dash):
    run = last_run(dash, **page(specs="demo demo:Q2_K", reference="demo", prompt="The quick brown fox",
                                max_tokens=0))
    v = run["variants"][0]
    assert v["n_scored"] <= 10 and v["ppl_err"] == 0 and v["kld"]["mean_err"] == 0  # the JSON keeps the tool's 0
    status, summary = dash.views(run)[:2]
    cols, data = summary.value["headers"], summary.value["data"]
    assert {r[cols.index("PPL ±")] for r in data} == {"n/a"} and data[1][cols.index("KLD ±")] == "n/a"
    assert f"± n/a: {v['n_scored']} scored tokens; a standard error needs more than 10" in status
    kl = dash.views(run)[7]
    assert kl.value["data"] == [[f"KL statistics block not shown: {v['n_scored']} scored tokens "
                                 f"(llama-perplexity prints it from 100 on)"]]
    fig = plots.ppl_figure(run)
    assert "± 1 standard error" not in fig.layout.title.text and "n/a" in fig.layout.title.text
    assert all(t.error_y.visible is False for t in fig.data)
    assert "n/a" in report.format_run(run) and "standard error needs more than 10" in report.format_run(run)


# ------------------------------------------------------------------------------------------ 6. messages
def test_an_unknown_quant_is_named_once(dash):
    msg = error_of(dash, **page(specs="Q9_Z"))
    assert msg.count("Q9_Z") == 1 and "unknown quant" in msg
    msg = error_of(dash, **page(specs="demo:Q9_Z"))
    assert "variant 'demo:Q9_Z': unknown quant 'Q9_Z'" in msg


@pytest.mark.parametrize("field, given, label", [("ctx", 4, "Context"), ("top_k", 0, "Top-k"),
                                                 ("max_tokens", 5000, "Max new tokens"),
                                                 ("temperature", 9, "Temperature")])
def test_an_out_of_range_setting_is_named_as_the_page_labels_it(dash, field, given, label):
    msg = error_of(dash, **page(specs="demo:Q2_K", **{field: given}))
    assert msg.startswith(f"{label} {given} is out of range")


def test_the_page_has_no_range_check_of_its_own_that_would_not_name_the_field(dash):
    from pythia_compare.web.ui import build_demo

    demo = build_demo(dash.settings)
    run_settings = {"pc-ctx", "pc-top-k", "pc-max-tokens", "pc-temperature", "pc-seed"}  # the Compare tab's
    numbers = [c for c in demo.blocks.values() if isinstance(c, gr.Number) and c.elem_id in run_settings]
    assert {n.elem_id for n in numbers} == run_settings
    assert numbers and all(n.minimum is None and n.maximum is None for n in numbers)
    demo.handlers.pool.close()


def test_a_bare_pythia_quant_typed_beside_the_demo_suite_says_how_to_write_the_demos(dash):
    msg = error_of(dash, **page(specs="Q4_K_M"))
    assert "demo:Q4_K_M" in msg and "--offline" not in msg and "Models" in msg
    assert "demo@step3000:Q8_0" in error_of(dash, **page(specs="step3000:Q8_0"))


def test_the_banner_mentions_the_offline_variable_only_when_it_was_set(dash):
    assert "PYTHIA_COMPARE_OFFLINE" in load_catalog(dash.settings).banner
    unreachable = load_catalog(dash.settings.replace(offline=False, hub_endpoint="http://127.0.0.1:9"))
    assert "could not be reached" in unreachable.banner and "PYTHIA_COMPARE_OFFLINE" not in unreachable.banner


def test_a_bogus_link_points_at_the_controls_above():
    assert "above" in NOT_FOUND and "below" not in NOT_FOUND


# ------------------------------------------------------------------------------------------ 7. history and exports
def test_a_search_without_result_says_so(dash):
    last_run(dash, **page(specs="demo:Q2_K", max_tokens=0))
    table, note = dash.search("zebra xylophone", None)
    assert table["data"] == [] and "No run's text, variant or label matches “zebra xylophone”" in note
    table, note = dash.search("quick brown", None)
    assert table["data"] and "found" in note


def test_runs_that_differ_only_in_temperature_or_seed_tell_apart_in_the_history(dash):
    a = last_run(dash, **page(specs="demo:Q2_K", prompt="Sampled one way", temperature=0.8, seed=1))
    b = last_run(dash, **page(specs="demo:Q2_K", prompt="Sampled one way", temperature=0.8, seed=2))
    rows = {r[0]: r for r in dash.history("Sampled one way", None)["data"]}
    col = dash.history("", None)["headers"].index("settings")
    assert rows[a["run_id"]][col] != rows[b["run_id"]][col]
    assert "seed 1" in rows[a["run_id"]][col] and "T 0.8" in rows[a["run_id"]][col]


def test_delete_asks_before_it_deletes(dash):
    rid = last_run(dash, **page(specs="demo:Q2_K", max_tokens=0))["run_id"]
    note, _, selected, armed = dash.delete(rid, "", None, "")
    assert "Click **Delete** again" in note and dash.core.find(rid) is not None and armed == rid
    note, listing, _, armed = dash.delete(rid, "", None, armed)
    assert note == f"Deleted run `{rid}`." and dash.core.find(rid) is None and armed == ""
    assert rid not in [r[0] for r in listing["data"]]


def test_the_export_zip_holds_a_summary_row_per_model_and_the_per_token_rows(dash):
    run = last_run(dash, **page(specs="demo demo:Q2_K demo:Q8_0", reference="demo", max_tokens=0))
    zipped, _, _ = download(dash.core.store, f"{run['run_id']}.zip")
    with zipfile.ZipFile(io.BytesIO(zipped)) as z:
        assert sorted(z.namelist()) == ["summary.csv", "tokens.csv"]
        summary = list(csv.DictReader(io.StringIO(z.read("summary.csv").decode("utf-8"), newline="")))
        tokens = z.read("tokens.csv").decode("utf-8")
    assert [r["spec"] for r in summary] == ["demo", "demo:Q2_K", "demo:Q8_0"]
    assert [r["role"] for r in summary] == ["reference", "variant", "variant"]
    assert float(summary[1]["PPL"]) == run["variants"][0]["ppl"] and float(summary[1]["mean KLD"]) == \
        run["variants"][0]["kld"]["mean"]
    assert tokens == run_to_csv(run)


# ------------------------------------------------------------------------------------------ 10. status mid-run
def test_mid_run_the_status_counts_only_variants_scored_through_every_chunk(dash):
    text = HELDOUT.read_text(encoding="utf-8")[:2500]
    runs = [state.to_json() for state in dash.stream(**page(specs="demo demo:Q2_K demo:Q8_0", reference="demo",
                                                            text=text, ctx=32, max_tokens=0))]
    final = runs[-1]
    chunks = final["input"]["n_tokens"] // 32
    assert final["params"]["scoring"] == "corpus" and chunks >= 3
    per_chunk = 32 - 1 - 16
    after_first = next(r for r in runs if r.get("variants") and r["variants"][-1]["n_scored"] == per_chunk)
    status = dash.views(after_first)[0]
    assert "0 of 3 scored" in status and f"chunk 1 of {chunks} done" in status
    assert dash.core.status(final).startswith(f"**Run `{final['run_id']}`**")




# ------------------------------------------------------------------------------------------ issue 20, item 5

def test_the_page_names_its_own_controls_in_messages_not_the_clis_flags(dash):
    # a text too short for corpus scoring at this context
    two = "demo@step0 demo"
    message = error_of(dash, **page(specs=two, text="word " * 40, ctx=4096, scoring="corpus"))
    assert "--ctx" not in message and "“Context” (Settings)" in message
    message = error_of(dash, **page(specs=two, prompt="", text=""))
    assert "--prompt" not in message and "--text-file" not in message and "prompt" in message
    from pythia_compare.web.dashboard import page_wording

    offline = page_wording("Run once without --offline (with network) to fetch it into the cache, or use "
                           "--offline with cached files")
    assert "--offline" not in offline and "PYTHIA_COMPARE_OFFLINE" in offline


def test_the_compare_api_takes_reference_none_as_the_cli_does(dash):
    for none in ("none", "None", " NONE "):
        run = last_run(dash, **page(specs="demo@step0 demo", reference=none, max_tokens=0))
        assert run["reference"] is None and run["params"]["reference"] is None
        assert [v["spec"] for v in run["variants"]] == ["demo@step0", "demo"]
    assert "reference" in error_of(dash, **page(specs="demo@step0 demo", reference=7))
