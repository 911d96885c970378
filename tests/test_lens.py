"""The logit lens (lenscapture.py, lens.py, compare.py's lens runs) against llama.cpp's own numbers, against
transformers, and against bad input.

Real parts only: tiny GPT-NeoX checkpoints converted and quantized by the project, llama.cpp through the engine and
its eval callback, transformers for the anchor, gguf's reader and writer for the misshapen files.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from pythia_compare.models import lenscapture
from pythia_compare.runs import lens
from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.config import Settings
from pythia_compare.sources.convert import convert_checkpoint
from pythia_compare.errors import InputTextError, ModelFileError
from pythia_compare.runs.pool import ModelPool
from pythia_compare.models.quantize import quantize_file
from pythia_compare.runs.run import Run
from pythia_compare.variants import SUPPORTED_QUANTS
from tests.support import run_cli

PROMPT = ("The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times, "
          "it was the age of wisdom.")


@pytest.fixture(scope="module")
def every_quant(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint in every quant type the project supports."""
    out = tmp_path_factory.mktemp("lens-quants")
    files = {q: convert_checkpoint(tiny_ckpt, out / f"tiny-{q}.gguf", q) for q in ("F32", "F16", "BF16")}
    for q in SUPPORTED_QUANTS:
        if q not in files:
            files[q] = quantize_file(files["F16"], out / f"tiny-{q}.gguf", q)
    return files


def _hold(path: Path, settings: Settings):
    pool = ModelPool(settings)
    return pool, pool.hold([path], n_ctx=256)


@pytest.mark.parametrize("quant", SUPPORTED_QUANTS)
def test_the_last_layers_lens_matches_the_models_own_logits_for_every_supported_quant_type(every_quant, settings,
                                                                                           quant):
    pool, held = _hold(every_quant[quant], settings)
    try:
        with held as (model,):
            ids = model.tokenize(PROMPT)
            positions = [3, len(ids) // 2, len(ids) - 1]
            cap = lenscapture.capture(model, ids, positions)
    finally:
        pool.close()
    assert cap.missing == "" and cap.layers.shape == (3, 2, 256)
    head = lens.read_head(every_quant[quant])
    logits = head.logits(cap.layers)
    check = lens.self_check(logits[:, -1], cap.logits, head.out_type, 5)
    assert check.ok, check.message
    assert check.rule == ("logits" if head.out_type in ("F32", "F16") else "top-k and KL")
    # the final norm llama.cpp computed is the lens's norm of the last layer
    np.testing.assert_allclose(head.normed(cap.layers[:, -1]), cap.norm, rtol=0, atol=1e-4 * np.abs(cap.norm).max())


def test_the_capture_is_the_same_when_llama_cpp_cuts_the_prompt_into_micro_batches(tiny_ggufs, settings):
    pool, held = _hold(tiny_ggufs["F32"], Settings(**{**settings.__dict__, "kv_f32": True}))
    try:
        with held as (model,):
            ids = model.tokenize(PROMPT)
            assert len(ids) > 24
            positions = [0, 6, 7, 15, len(ids) - 2, len(ids) - 1]
            whole = lenscapture.capture(model, ids, positions)
            cut = lenscapture.capture(model, ids, positions, n_ubatch=7)  # positions 6 and 7 straddle a boundary
            own = model.logits(ids, positions)
    finally:
        pool.close()
    assert whole.missing == "" and cut.missing == ""
    scale = np.abs(whole.layers).max()
    np.testing.assert_allclose(cut.layers, whole.layers, rtol=0, atol=1e-4 * scale)
    np.testing.assert_allclose(cut.logits, own, rtol=0, atol=1e-4 * np.abs(own).max())
    np.testing.assert_allclose(whole.logits, own, rtol=0, atol=1e-4 * np.abs(own).max())


def test_a_lens_run_stores_every_layer_for_every_variant_and_reads_back(tiny_ggufs, settings):
    specs = [str(tiny_ggufs["Q8_0"]), str(tiny_ggufs["Q2_K"])]
    params = RunParams(scoring="prompt", ctx=128, top_k=5, max_tokens=0, reference=str(tiny_ggufs["F16"]),
                       lens=True, lens_positions=[2, 9])
    pool = ModelPool(settings)
    try:
        run = run_comparison(specs, PROMPT, params, settings=settings, pool=pool)
    finally:
        pool.close()
    assert run.params.lens_positions == [2, 9]
    for e in run.entries():
        assert e.lens.status == "ok", e.lens.message
        assert [p.position for p in e.lens.positions] == [2, 9]
        assert all(len(p.layers) == 2 and len(p.layers[0].top) == 5 for p in e.lens.positions)
    ref, q2 = run.reference, run.variants[1]
    assert all(layer.kl is None for p in ref.lens.positions for layer in p.layers)
    assert all(layer.kl >= 0 for p in q2.lens.positions for layer in p.layers)
    # the reference's own last layer ranks its final top-1 first
    assert all(p.layers[-1].ref_rank == 1 for p in ref.lens.positions)
    again = Run.from_json(json.loads(json.dumps(run.to_json())))
    assert again.to_json() == run.to_json()


def test_a_run_without_the_lens_writes_no_lens_keys(tiny_ggufs, settings):
    params = RunParams(scoring="prompt", ctx=128, top_k=3, max_tokens=0)
    pool = ModelPool(settings)
    try:
        run = run_comparison([str(tiny_ggufs["Q8_0"])], PROMPT, params, settings=settings, pool=pool)
    finally:
        pool.close()
    data = run.to_json()
    assert "lens_positions" not in data["params"] and "lens" not in data["variants"][0]


def test_a_graph_without_l_out_nodes_says_the_lens_is_unavailable_and_the_run_completes(tiny_ggufs, settings,
                                                                                      monkeypatch):
    # what a llama.cpp that names its layer outputs otherwise looks like to the callback: no node matches
    monkeypatch.setattr(lenscapture, "_L_OUT", __import__("re").compile(rb"^layer_output-(\d+)$"))
    params = RunParams(scoring="prompt", ctx=128, top_k=3, max_tokens=0, lens=True)
    pool = ModelPool(settings)
    try:
        run = run_comparison([str(tiny_ggufs["Q8_0"])], PROMPT, params, settings=settings, pool=pool)
    finally:
        pool.close()
    e = run.variants[0]
    assert e.lens.status == "unavailable" and "l_out" in e.lens.message and e.lens.positions == []
    assert e.ppl is not None and e.next_token


# ----------------------------------------------------------------------------- bad input


def _copy(src: Path, dst: Path, *, drop: str = "", arch: str = "", reshape: str = "") -> Path:
    """`src` rewritten at `dst`, without tensor `drop`, under another architecture name, or with tensor `reshape`
    cut to half its length."""
    from tests.vocabmodels import _copy_field

    reader = gguf.GGUFReader(str(src))
    old = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst, arch or old)
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        if arch and f.name.startswith(old + "."):
            writer.add_key_value(arch + f.name[len(old):], f.contents(), f.types[0],
                                 sub_type=f.types[-1] if len(f.types) > 1 else None)
            continue
        _copy_field(writer, f)
    kept = []
    for t in reader.tensors:
        if t.name == drop:
            continue
        data = t.data[: len(t.data) // 2] if t.name == reshape else t.data
        kept.append((t, data))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data in kept:
        writer.write_tensor_data(data)
    writer.close()
    return dst


@pytest.mark.parametrize("how, words", [
    ({"drop": "output.weight"}, "has no output.weight"),
    ({"drop": "output_norm.bias"}, "has no output_norm.bias"),
    ({"reshape": "output_norm.weight"}, "output_norm.weight is F32 of shape [128]"),
    ({"arch": "llama"}, "GPT-NeoX models only"),
])
def test_a_gguf_the_lens_cannot_read_is_refused_naming_it_before_anything_runs(tiny_ggufs, tmp_path, settings, how,
                                                                                words):
    bad = _copy(tiny_ggufs["F16"], tmp_path / "bad.gguf", **how)
    params = RunParams(scoring="prompt", ctx=128, max_tokens=0, lens=True)
    pool = ModelPool(settings)
    try:
        with pytest.raises(ModelFileError, match=__import__("re").escape(words)):
            run_comparison([str(bad)], PROMPT, params, settings=settings, pool=pool)
        assert pool.loaded() == []
    finally:
        pool.close()


@pytest.mark.parametrize("change, words", [
    ({"scoring": "corpus"}, "prompt runs only"),
    ({"lens_positions": list(range(9))}, "9 lens positions asked; the limit is 8"),
    ({"lens_positions": [1, 1]}, "repeat a position"),
    ({"lens_positions": [500]}, "out of range"),
    ({"lens": False, "lens_positions": [1]}, "without the lens"),
])
def test_bad_lens_inputs_are_refused_with_what_would_work(tiny_ggufs, settings, change, words):
    params = RunParams(**{"scoring": "prompt", "ctx": 128, "max_tokens": 0, "lens": True, **change})
    pool = ModelPool(settings)
    try:
        with pytest.raises(InputTextError, match=words):
            run_comparison([str(tiny_ggufs["Q8_0"])], PROMPT * (6 if change.get("scoring") else 1), params,
                           settings=settings, pool=pool)
    finally:
        pool.close()


def test_the_lens_on_a_text_that_auto_picks_corpus_mode_is_refused_and_the_cli_stores_nothing(tiny_ggufs,
                                                                                              settings, tmp_path):
    text = tmp_path / "long.txt"
    text.write_text(PROMPT * 12, encoding="utf-8")
    env = {"PYTHIA_COMPARE_DB": str(settings.db_path), "PYTHIA_COMPARE_HOME": str(settings.home)}
    res = run_cli(["compare", str(tiny_ggufs["Q8_0"]), "--text-file", str(text), "--ctx", "64", "--lens",
                   "--max-tokens", "0"], env=env)
    assert res.returncode == 2, res.stderr
    assert "prompt runs only" in res.stderr
    listed = run_cli(["runs", "list"], env=env)
    assert listed.returncode == 0 and "no runs" in listed.stdout.lower(), listed.stdout


# ----------------------------------------------------------------------------- the anchor: transformers


def _ggml_gelu():
    """GELU as ggml's CPU backend computes it: the tanh form, looked up in a table of F16 inputs and outputs (|x| < 10).
    transformers' exact erf GELU differs from it by up to 2e-4 of the residual stream after two layers, which is
    the two libraries' arithmetic, not the capture; with this one the anchor checks the capture alone."""
    import torch

    class GgmlGelu(torch.nn.Module):
        def forward(self, x):
            h = x.to(torch.float16).to(torch.float32)
            y = torch.nn.functional.gelu(h, approximate="tanh").to(torch.float16).to(torch.float32)
            return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, y))

    return GgmlGelu()


def test_the_captured_stream_and_the_lens_equal_transformers_on_a_demo_checkpoint(demo_dir, tmp_path, settings):
    import dataclasses

    import torch
    from tokenizers import Tokenizer
    from transformers import GPTNeoXForCausalLM

    ckpt = demo_dir / "step800"
    path = convert_checkpoint(ckpt, tmp_path / "demo-step800-F32.gguf", "F32")
    ids = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(PROMPT, add_special_tokens=False).ids
    positions = [1, len(ids) // 2, len(ids) - 1]
    pool = ModelPool(dataclasses.replace(settings, kv_f32=True, flash_attn=False))
    try:
        with pool.hold([path], n_ctx=256) as (model,):
            assert model.tokenize(PROMPT) == ids
            cap = lenscapture.capture(model, ids, positions)
    finally:
        pool.close()
    assert cap.missing == ""

    hf = GPTNeoXForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    for block in hf.gpt_neox.layers:  # the GELU llama.cpp's CPU backend computes (see _ggml_gelu)
        block.mlp.act = _ggml_gelu()
    last: list = []
    hook = hf.gpt_neox.layers[-1].register_forward_hook(lambda mod, args, out: last.append(
        (out[0] if isinstance(out, tuple) else out).detach()))
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
    hook.remove()
    hidden = [h[0].double().numpy()[positions] for h in out.hidden_states]
    n_layer = hf.config.num_hidden_layers
    assert cap.layers.shape[1] == n_layer == len(hidden) - 1

    def close(got, want, what):
        worst, scale = np.abs(np.asarray(got, np.float64) - want).max(), np.abs(want).max()
        assert worst <= 1e-4 * scale, f"{what}: max |Δ| {worst:.3g} vs max |value| {scale:.3g}"

    for layer in range(n_layer - 1):
        close(cap.layers[:, layer], hidden[layer + 1], f"l_out-{layer} vs hidden_states[{layer + 1}]")
    close(cap.layers[:, -1], last[0][0].double().numpy()[positions], "the last l_out vs the last layer's hook")
    close(cap.norm, hidden[-1], "result_norm vs hidden_states[-1] (transformers 5: the normed state)")
    head = lens.read_head(path)
    with torch.no_grad():
        want = hf.get_output_embeddings()(out.hidden_states[-1])[0].double().numpy()[positions]
    close(head.logits(cap.layers)[:, -1], want, "the lens logits vs the unembedding of the final norm")
    close(head.logits(cap.layers)[:, -1], out.logits[0].double().numpy()[positions], "the lens vs transformers' logits")


def test_a_lens_context_that_does_not_fit_the_memory_budget_leaves_the_lens_unavailable_and_the_run_whole(
        tiny_ggufs, settings):
    import dataclasses

    path = tiny_ggufs["Q8_0"]
    tight = dataclasses.replace(settings, memory_budget_bytes=path.stat().st_size + 1000)  # the model, not its lens
    params = RunParams(scoring="prompt", ctx=128, top_k=3, max_tokens=0, lens=True)
    pool = ModelPool(tight)
    try:
        run = run_comparison([str(path)], PROMPT, params, settings=tight, pool=pool)
    finally:
        pool.close()
    e = run.variants[0]
    assert e.lens.status == "unavailable" and "memory budget" in e.lens.message
    assert e.ppl is not None


# ----------------------------------------------------------------------------- what the user sees


@pytest.fixture(scope="module")
def cli_lens_run(tiny_ggufs, tmp_path_factory) -> tuple[dict, dict, str]:
    """A lens run made by the CLI (`compare --lens --lens-positions`), stored in its own run log: (env, the run
    JSON as `runs show --json` gives it, the compare command's stdout)."""
    tmp = tmp_path_factory.mktemp("cli-lens")
    env = {"PYTHIA_COMPARE_DB": str(tmp / "runs.db"), "PYTHIA_COMPARE_HOME": str(tmp / "home"),
           "PYTHIA_COMPARE_OFFLINE": "1"}
    res = run_cli(["compare", str(tiny_ggufs["Q8_0"]), str(tiny_ggufs["Q2_K"]), "--reference",
                   str(tiny_ggufs["F16"]), "--prompt", PROMPT, "--max-tokens", "0", "--lens", "--lens-positions",
                   "4,11"], env=env)
    assert res.returncode == 0, res.stderr
    run_id = res.stdout.split("\nrun ", 1)[1].split()[0]
    shown = run_cli(["runs", "show", run_id, "--json"], env=env)
    assert shown.returncode == 0, shown.stderr
    return env, json.loads(shown.stdout), res.stdout


def test_compare_lens_prints_a_per_layer_table_for_each_position(cli_lens_run):
    _, run, out = cli_lens_run
    assert run["params"]["lens_positions"] == [4, 11]
    for p in (4, 11):
        assert f"== logit lens at position {p} " in out
    table = out.split("== logit lens at position 11 ", 1)[1]
    lines = [line for line in table.splitlines()[1:] if line.strip()]
    lines = lines[next(i for i, line in enumerate(lines) if line.split()[0] == "layer"):]  # after the wrapped title
    assert lines[0].split()[0] == "layer" and "KL" in lines[0] and "rank" in lines[0]
    rows = [line.split()[0] for line in lines[1:] if line.split()[0].isdigit()]
    assert rows == ["0", "1"]  # one row per layer of the tiny model


def test_the_zip_export_of_a_lens_run_holds_lens_csv_with_every_entry_and_layer(cli_lens_run, tmp_path):
    import csv
    import io
    import zipfile

    env, run, _ = cli_lens_run
    out = tmp_path / "run.zip"
    res = run_cli(["runs", "export", run["run_id"], "--format", "zip", "--out", str(out)], env=env)
    assert res.returncode == 0, res.stderr
    with zipfile.ZipFile(out) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("lens.csv").decode("utf-8"))))
    labels = {e["label"] for e in [run["reference"], *run["variants"]]}
    assert {r["label"] for r in rows} == labels
    assert {(r["position"], r["layer"]) for r in rows} == {(p, l) for p in ("4", "11") for l in ("0", "1")}
    assert len(rows) == len(labels) * 2 * 2 * 5  # entries × positions × layers × top-5
    assert all(r["kl_from_baseline"] == "" for r in rows if r["role"] == "reference")


def test_the_layers_figure_draws_every_entry_from_the_stored_run_alone(cli_lens_run):
    import plotly.graph_objects as go

    from pythia_compare.web import plots

    _, run, _ = cli_lens_run
    fig = plots.lens_figure(run)
    assert go.Figure(fig.to_dict()).to_dict() == fig.to_dict()  # plotly's validation leaves it unchanged
    heat = fig.data[0]
    names = [e["label"] for e in [run["reference"], *run["variants"]]]
    assert heat.type == "heatmap" and len(heat.y) == len(names) * 2
    assert all(any(n in y for y in heat.y) for n in names)
    assert list(heat.x) == [0, 1]
    # the KL lines are the variants' (the baseline has none); the rank lines every entry's
    assert {t.name.split(" @")[0] for t in fig.data[1:] if t.yaxis == "y2"} == set(names[1:])
    assert {t.name.split(" @")[0] for t in fig.data[1:] if t.yaxis == "y3"} == \
        {names[0] + " (reference)", *names[1:]}


def test_a_lens_run_scores_exactly_as_the_same_run_without_the_lens(tiny_ggufs, settings):
    specs = [str(tiny_ggufs["Q4_K_M"])]
    runs = []
    pool = ModelPool(settings)
    try:
        for on in (False, True):
            params = RunParams(scoring="prompt", ctx=128, top_k=5, max_tokens=0, reference=str(tiny_ggufs["F16"]),
                               lens=on)
            runs.append(run_comparison(specs, PROMPT, params, settings=settings, pool=pool))
    finally:
        pool.close()
    plain, lensed = runs
    for a, b in zip(plain.entries(), lensed.entries()):
        np.testing.assert_allclose(b.token_logprobs, a.token_logprobs, rtol=1e-6, atol=1e-6)
        assert [t.id for t in b.next_token] == [t.id for t in a.next_token]
    assert lensed.variants[0].kld.mean == pytest.approx(plain.variants[0].kld.mean, rel=1e-5, abs=1e-9)
