"""The dashboard's handlers, called directly: real demo models through llama.cpp, a real SQLite run log."""

from __future__ import annotations

import io
import json
import re
import zipfile

import gradio as gr
import pytest

from pythia_compare.web import plots
from pythia_compare.runs import report
from pythia_compare.config import ASSETS_DIR
from pythia_compare.runs.export import run_to_csv
from pythia_compare.runs.run import Run
from pythia_compare.sources.resolver import demo_steps
from pythia_compare.web.dashboard import (NOT_FOUND, collect_specs, default_reference, download, load_catalog,
                                      log_spaced, quant_choices, scrub, table_cells)
from pythia_compare.web.ui import Handlers, build_demo, launch_kwargs
from pythia_compare.variants import PYTHIA_STEPS
from tests.ui_support import PROMPT, dashboard, demo_suite, settings_for, three_specs


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return demo_suite(tmp_path_factory.mktemp("demo-standin"))


@pytest.fixture(scope="module")
def dash(tmp_path_factory, suite):
    with dashboard(tmp_path_factory.mktemp("ui"), suite) as d:
        yield d


def run_args(specs: str, reference: str | None = None, prompt: str = PROMPT, **over) -> dict:
    args = dict(family="demo", quants=[], steps=[], specs=specs, reference=reference, prompt=prompt, text="",
                text_file=None, scoring="auto", ctx=512, top_k=5, max_tokens=4, temperature=0.0, seed=0, owner=None)
    args.update(over)
    return args


def run_all(dash: Handlers, progress=None, **args) -> list[tuple[dict, object]]:
    """Each yield of the Run button's event as (its run JSON, the views' state itself)."""
    kw = {"progress": progress} if progress else {}
    return [(state.to_json() if isinstance(state, Run) else state, state) for state in dash.stream(**args, **kw)]


def error_of(dash: Handlers, **args) -> str:
    with pytest.raises(gr.Error) as e:
        run_all(dash, **args)
    return e.value.message


@pytest.fixture(scope="module")
def streamed(dash, suite):
    """One run of three variants and a reference: (yields, progress messages)."""
    specs, ref = three_specs(suite)
    messages = []
    yields = run_all(dash, progress=lambda frac, desc=None: messages.append(desc),
                     **run_args(" ".join(specs + [ref]), ref))
    return yields, messages


# ------------------------------------------------------------------------------------------ choosing variants
def test_selections_become_specs_of_the_chosen_family_in_order_and_once():
    assert collect_specs("pythia", ["Q8_0", "Q2_K"], [0, 3000], "step3000:Q4_K_M, Q8_0\nx/y:Q5_0") == \
        ["Q8_0", "Q2_K", "step0", "step3000", "step3000:Q4_K_M", "x/y:Q5_0"]
    assert collect_specs("demo", ["Q4_K_M"], [4000], "") == ["demo:Q4_K_M", "demo@step4000"]
    # the same variant spelt twice (a box ticked and the spec typed) runs once; a bad spec is kept to be named
    assert collect_specs("demo", ["F16", "Q8_0"], [], "demo demo:q8_0 nonsense!") == ["demo:F16", "demo:Q8_0",
                                                                                      "nonsense!"]


def test_the_default_reference_is_the_highest_precision_variant_chosen():
    assert default_reference(["Q2_K", "Q8_0", "Q4_K_M"]) == "Q8_0"
    assert default_reference(["demo:Q4_K_M", "demo@step0", "demo:F16"]) == "demo:F16"  # F16 of the last step
    assert default_reference(["step1000", "step3000:Q8_0"]) == "step1000"
    assert default_reference(["Q8_0"]) == ""  # one variant leaves nothing to compare against


def test_the_step_selector_spreads_steps_log_wise_from_step0_to_the_last():
    picks = log_spaced(PYTHIA_STEPS, 5)
    assert picks[0] == 0 and picks[-1] == 143000 and len(picks) == 5
    assert any(0 < s < 1000 for s in picks)  # the log-spaced early steps are reachable


def test_quant_labels_show_the_file_size_and_no_nominal_bits_per_weight_in_bits_per_weight_order():
    labels = dict((v, label) for label, v in quant_choices("pythia", ["Q2_K", "Q8_0", "Q4_K_M"]))
    assert labels["Q4_K_M"] == "Q4_K_M · 267 MB"  # a bpw figure is the file's own, once a run loaded it
    assert [v for _, v in quant_choices("pythia", ["Q2_K", "Q8_0", "Q4_K_M"])] == ["Q8_0", "Q4_K_M", "Q2_K"]
    assert quant_choices("demo", ["Q5_0"])[0][0] == "Q5_0"


def test_offline_the_selectors_offer_the_demo_suite_under_a_plain_banner(dash):
    cat = load_catalog(dash.settings)
    assert cat.family == "demo"
    assert cat.steps["demo"] == demo_steps(dash.settings.demo_dir)
    assert "not Pythia" in cat.banner and "trained" in cat.banner and "PYTHIA_COMPARE_OFFLINE" in cat.banner


def test_online_the_selectors_list_the_hubs_quant_files_and_step_branches(dash):
    from tests.fakehub import FakeHub

    hub = FakeHub()
    s = dash.settings
    hub.add_revision(s.gguf_repo, "main", {f"pythia-410m-deduped-v0.{q}.gguf": b"GGUF" * 64
                                           for q in ("Q8_0", "Q4_K_M", "Q2_K", "Q3_K")})
    for step in (0, 512, 143000, 1000):
        hub.add_revision(s.checkpoint_repo, f"step{step}", {"config.json": b"{}"})
    with hub:
        cat = load_catalog(s.replace(offline=False, hub_endpoint=hub.endpoint))
    assert cat.family == "pythia" and cat.banner == ""
    assert cat.quants["pythia"][0] == "F16"  # converted from the final step
    assert sorted(cat.quants["pythia"][1:]) == ["Q2_K", "Q3_K_M", "Q4_K_M", "Q8_0"]  # Q3_K is Q3_K_M
    assert cat.steps["pythia"] == [0, 512, 1000, 143000]


def test_an_unreachable_hub_falls_back_to_the_demo_suite(dash):
    cat = load_catalog(dash.settings.replace(offline=False, hub_endpoint="http://127.0.0.1:9"))
    assert cat.family == "demo" and "could not be reached" in cat.banner


# ------------------------------------------------------------------------------------------ running
def test_progress_names_each_variant_and_results_arrive_one_variant_at_a_time(streamed):
    yields, messages = streamed
    final = yields[-1][0]
    labels = [final["reference"]["label"]] + [v["label"] for v in final["variants"]]
    for label in labels:
        assert any(m and m.startswith(label) for m in messages), (label, messages)
    scored = [sum(e["ppl"] is not None for e in [y["reference"], *y["variants"]]) for y, _ in yields]
    assert scored[-1] == 4 and scored == sorted(scored)
    assert {1, 2, 3} <= set(scored)  # shown after each variant, not only at the end


def test_generations_stream_token_by_token(streamed):
    yields, _ = streamed
    lengths = [len((y["reference"]["generation"] or {}).get("tokens", [])) for y, _ in yields]
    assert lengths[-1] == 4 and any(0 < n < 4 for n in lengths)


def test_a_run_advanced_from_a_different_thread_at_every_step_completes(dash, suite):
    """Gradio advances a sync generator on whichever worker thread is free."""
    from concurrent.futures import ThreadPoolExecutor

    specs, ref = three_specs(suite)
    gen = dash.stream(**run_args(" ".join(specs + [ref]), ref))
    out = []
    while True:
        with ThreadPoolExecutor(1) as ex:  # a new thread for every step
            item = ex.submit(next, gen, None).result()
        if item is None:
            break
        out.append(item)
    assert out[-1].run_id and out[-1].reference.generation.tokens


def test_the_views_state_ends_as_the_stored_run(dash, streamed):
    run, state = streamed[0][-1]
    assert isinstance(state, Run) and run == dash.store.get(run["run_id"])


def test_the_compare_api_returns_the_stored_run_json_once_with_progress_and_no_snapshot(dash, suite):
    specs, ref = three_specs(suite)
    messages = []
    out = dash.compare(**run_args(" ".join(specs + [ref]), ref), progress=lambda f, desc=None: messages.append(desc))
    run = json.loads(out)
    assert run == dash.store.get(run["run_id"]) and run["reference"]["generation"]["tokens"]
    assert any(m.endswith(": generating") for m in messages) and messages[-1] == "done"


def test_partial_runs_render_every_view_without_error(dash, streamed):
    for run, _ in streamed[0][:3]:
        out = dash.views(run)
        assert out[0].startswith("**Running**") and out[8] == ""  # no id, so no link or downloads yet


def test_more_variants_than_the_limit_are_refused_with_a_clear_message(dash):
    specs = " ".join(["demo"] + [f"demo:{q}" for q in ("Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0",
                                                       "Q3_K_M", "Q2_K")])
    msg = error_of(dash, **run_args(specs))
    assert "9 variants" in msg and "limit is 8" in msg


def test_an_over_long_prompt_is_refused_on_the_server(dash):
    msg = error_of(dash, **run_args("demo demo:Q2_K", prompt="x" * (dash.settings.max_prompt_chars + 1)))
    assert f"limit is {dash.settings.max_prompt_chars}" in msg


def test_an_uploaded_text_file_is_scored_and_an_over_size_one_is_refused(dash, tmp_path):
    small = tmp_path / "t.txt"
    small.write_text("Hello there, general text.", encoding="utf-8")
    run = run_all(dash, **run_args("demo demo:Q2_K", text_file=str(small), max_tokens=0))[-1][0]
    assert run["input"]["text"] == "Hello there, general text."
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (dash.settings.max_upload_bytes + 1))
    assert "limit is" in error_of(dash, **run_args("demo demo:Q2_K", text_file=str(big)))
    assert ".txt" in error_of(dash, **run_args("demo demo:Q2_K", text_file=str(tmp_path / "x.gguf")))


def test_bad_numbers_from_an_api_caller_are_refused_by_name(dash):
    assert "top-k" in error_of(dash, **run_args("demo demo:Q2_K", top_k="many"))
    assert "context" in error_of(dash, **run_args("demo demo:Q2_K", ctx=float("nan")))


def test_error_messages_carry_no_file_paths_or_tokens(dash, tmp_path):
    where = tmp_path / "secret-folder"
    msg = error_of(dash, **run_args(f"demo {where}/model.gguf"))
    assert "model.gguf" in msg and "secret-folder" not in msg and str(tmp_path) not in msg
    assert scrub("cannot read /home/me/x/y.gguf or C:\\Users\\me\\z.bin with hf_abcdefghijklmnop") == \
        "cannot read y.gguf or z.bin with hf_***"
    assert scrub("see https://huggingface.co/EleutherAI/pythia and owner/name") == \
        "see https://huggingface.co/EleutherAI/pythia and owner/name"


# ------------------------------------------------------------------------------------------ tables
def test_the_summary_table_shows_the_cells_the_cli_prints(streamed):
    run = streamed[0][-1][0]
    cols, rows = report.summary_table(run)
    printed = report.text_table(cols, rows).splitlines()[2:]
    assert [re.split(r"\s{2,}", line.strip()) for line in printed] == table_cells(cols, rows)


def test_views_of_a_stored_run_carry_every_figure_and_both_downloads(dash, streamed):
    run = streamed[0][-1][0]
    status, summary, nxt, gen, ppl, surprisal, kld, kl, run_id, downloads, pub_note, pub, layers = dash.views(run)
    assert pub_note.value == "No published numbers for demo: the demo suite is a tiny model trained by this " \
        "project, which EleutherAI never evaluated." and not pub.visible
    assert run_id == run["run_id"] and run_id in status
    assert layers.visible is False  # a run without the logit lens has no Layers view
    figs = plots.all_figures(run)
    for name, fig in (("next_token", nxt), ("ppl", ppl), ("surprisal", surprisal), ("kld", kld)):
        assert fig.to_plotly_json() == figs[name].to_plotly_json() and len(fig.data) >= 1
    assert gen == plots.generation_html(run)
    # fewer than 100 scored tokens: as the CLI, no KL block but a line saying why
    assert run["variants"][0]["n_scored"] < 100
    assert kl.value["headers"] == ["KL statistics"] and kl.value["data"] == [[report.kl_block_note(run)]]
    assert "llama-perplexity prints it from 100 on" in kl.value["data"][0][0]
    # the downloads: two links the server answers from the run log (dashboard.download), nothing written here
    assert downloads.visible and downloads.value == (
        f'<a id="pc-json" class="pc-download" href="pc-download/{run_id}.json" download="pythia-compare-{run_id}.json">'
        f'⬇ JSON</a><a id="pc-zip" class="pc-download" href="pc-download/{run_id}.zip" '
        f'download="pythia-compare-{run_id}.zip">⬇ CSV (zip)</a>')
    data, media, name = download(dash.core.store, f"{run_id}.json")
    assert json.loads(data.decode("utf-8")) == run and media.startswith("application/json")
    assert name == f"pythia-compare-{run_id}.json"
    data, media, name = download(dash.core.store, f"{run_id}.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.read("tokens.csv").decode("utf-8") == run_to_csv(run)
        assert z.read("summary.csv").decode("utf-8").startswith("run_id,variant,")
        assert "lens.csv" not in z.namelist()
    assert (media, name) == ("application/zip", f"pythia-compare-{run_id}.zip")


# ------------------------------------------------------------------------------------------ links
def test_a_link_redraws_the_stored_run_with_the_same_figures_and_no_model_loaded(dash, streamed):
    run = streamed[0][-1][0]
    elsewhere = Handlers(dash.settings)  # another process's handlers: an empty model pool
    live, linked = dash.views(run), elsewhere.open_run(run["run_id"])
    assert elsewhere.pool.loaded() == []
    def data(x):
        return x.to_plotly_json() if hasattr(x, "to_plotly_json") else x.value if hasattr(x, "value") else x

    for a, b in zip(live[1:8], linked[1:8]):
        assert data(a) == data(b)


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "x" * 10_000, "ünïcödé-☃-𝔘", "../../etc/passwd", "%2e%2e%2f",
                                     "", None, 12345, "AAAAAAAAAAAAAAAA"])
def test_unknown_malformed_and_hostile_ids_show_a_friendly_not_found(dash, hostile):
    out = dash.open_run(hostile)
    assert out[0] == NOT_FOUND and out[1].visible is False and out[8] == ""  # no table, not even its headers


def test_page_load_gives_the_browser_an_owner_token_and_opens_the_linked_run(dash, streamed):
    run = streamed[0][-1][0]
    token, *views, hist = dash.on_load(None, gr.Request(query_params={"run": run["run_id"]}))
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,64}", token) and views[8] == run["run_id"]
    again = dash.on_load(token, gr.Request(query_params={"run": "<script>alert(1)</script>"}))
    assert again[0] == token and again[1] == NOT_FOUND and "<script>" not in again[1]


# ------------------------------------------------------------------------------------------ history
@pytest.mark.parametrize("query", ['"', "brown fox", "AND OR NOT", "fox*", "text: ' ; DROP TABLE runs; --",
                                   "NEAR(a b)", "☃", "x" * 5000])
def test_history_search_takes_any_text_without_an_sql_error(dash, streamed, query):
    assert dash.history(query, None)["headers"][0] == "run"
    assert dash.store.count() >= 1


def test_history_search_finds_runs_by_input_text(dash, streamed):
    run_id = streamed[0][-1][0]["run_id"]
    assert run_id in [r[0] for r in dash.history("brown fox", None)["data"]]
    assert run_id not in [r[0] for r in dash.history("zebra", None)["data"]]


def test_a_public_deployment_shows_each_browser_only_its_own_runs_and_only_the_owner_deletes(tmp_path, suite, dash):
    pub = Handlers(settings_for(tmp_path, suite, public=True), pool=dash.pool)
    alice, bob = "a" * 24, "b" * 24
    mine = run_all(pub, **run_args("demo demo:Q2_K", owner=alice, max_tokens=0))[-1][0]["run_id"]
    assert [r[0] for r in pub.history("", alice)["data"]] == [mine]
    assert pub.history("", bob)["data"] == [] and pub.history("", None)["data"] == []
    assert pub.open_run(mine)[8] == mine  # a link still opens for anyone who has it
    assert "Select one of your runs" in pub.delete(mine, "", bob, armed=mine)[0]  # confirmed, still not bob's
    assert pub.store.get(mine)["run_id"] == mine
    note, listing, _, _ = pub.delete(mine, "", alice, armed=mine)
    assert "Deleted" in note and listing["data"] == [] and pub.store.count() == 0


def test_locally_every_run_is_listed_whatever_the_owner(dash, streamed):
    run_id = run_all(dash, **run_args("demo demo:Q2_K", owner="c" * 24, max_tokens=0))[-1][0]["run_id"]
    listed = [r[0] for r in dash.history("", "d" * 24)["data"]]
    assert run_id in listed and streamed[0][-1][0]["run_id"] in listed


# ------------------------------------------------------------------------------------------ wiring
def test_the_compare_event_is_the_api_and_gradio_run_history_is_off(dash):
    demo = build_demo(dash.settings)
    api = [d for d in demo.config["dependencies"] if d.get("api_visibility", "public") == "public" and d.get("api_name")]
    # "sweep": a stored sweep as JSON (Sweeps tab); "notebook": a stored notebook as JSON (Notebook tab)
    assert [d["api_name"] for d in api] == ["compare", "sweep", "notebook"]
    kw = launch_kwargs(dash.settings)
    assert kw["run_history"] is False and "runs" not in kw["footer_links"]
    assert kw["mcp_server"] is False and kw["enable_monitoring"] is False and kw["ssr_mode"] is False
    assert kw["allowed_paths"] == [str(ASSETS_DIR.resolve())] and kw["max_file_size"] == dash.settings.max_upload_bytes
    assert str(dash.settings.demo_dir.resolve()) in kw["blocked_paths"]
    assert demo._queue.max_size == 16 and demo._queue.default_concurrency_limit == 1
    demo.handlers.pool.close()


def test_the_page_preloads_the_plotly_bundle_of_the_installed_gradio():
    from pathlib import Path

    from pythia_compare.web.ui import _plotly_preload_js

    found = re.search(r"\./(PlotlyPlot-[\w-]+\.js)", _plotly_preload_js() or "")
    assert found, "gradio's plotly bundle was not found: the page would load plotly.js only with the first figure"
    assert (Path(gr.__file__).parent / "templates" / "frontend" / "assets" / found.group(1)).is_file()
