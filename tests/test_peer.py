"""Peer test: the engine's corpus perplexity and KL statistics agree with llama.cpp's own
`llama-perplexity` (plain and --kl-divergence), built from the pinned llama-cpp-python sdist with the
project's build flags, within docs/metrics.md's tolerance table."""

import json

import pytest

from tests.support import run_cli
from tests.peer import parse_final_ppl, parse_kl_block, run_tool

CTX = 128


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, sample_text):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(sample_text * 3)
    return path


def _ours(specs, corpus_file, tmp_path, reference=None, flash=False):
    args = ["--offline", "--db", str(tmp_path / "r.db"), "--home", str(tmp_path / "h"), "compare", *map(str, specs),
            "--text-file", str(corpus_file), "--ctx", str(CTX), "--scoring", "corpus", "--max-tokens", "0", "--json"]
    if reference:
        args += ["--reference", str(reference)]
    if not flash:
        args.append("--no-flash-attn")
    proc = run_cli(args, env={"PYTHIA_COMPARE_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("quant, flash, tol", [("F16", False, 1e-4), ("Q4_K_M", False, 1e-4), ("Q8_0", True, 1e-3)])
def test_corpus_perplexity_agrees_with_llama_perplexity(tiny_ggufs, corpus_file, tmp_path, quant, flash, tol):
    model = tiny_ggufs[quant]
    tool_ppl, tool_err = parse_final_ppl(run_tool(["-m", str(model), "-f", str(corpus_file), "-c", str(CTX),
                                                    "-b", str(CTX)], flash_attn=flash))
    run = _ours([model], corpus_file, tmp_path, flash=flash)
    v = run["variants"][0]
    assert run["params"]["scoring"] == "corpus" and run["params"]["flash_attn"] is flash
    assert abs(v["ppl"] / tool_ppl - 1) <= tol, (v["ppl"], tool_ppl)
    assert abs(v["ppl_err"] / tool_err - 1) <= 1e-2, (v["ppl_err"], tool_err)


def test_kl_statistics_agree_with_llama_perplexity_kl_divergence(tiny_ggufs, corpus_file, tmp_path):
    base = tmp_path / "base.kld"
    run_tool(["-m", str(tiny_ggufs["F16"]), "-f", str(corpus_file), "-c", str(CTX), "-b", str(CTX),
              "--kl-divergence-base", str(base)], until="")
    quants = ["Q8_0", "Q4_K_M", "Q2_K"]
    run = _ours([tiny_ggufs[q] for q in quants], corpus_file, tmp_path, reference=tiny_ggufs["F16"])
    assert run["reference"]["source"]["file"].endswith("tiny-F16.gguf")
    for q, v in zip(quants, run["variants"]):
        out = run_tool(["-m", str(tiny_ggufs[q]), "--kl-divergence-base", str(base), "--kl-divergence",
                        "-c", str(CTX), "-b", str(CTX)])
        tool = parse_kl_block(out)
        assert {"kld_mean", "kld_median", "same_top_pct", "ppl"} <= set(tool), out[-3000:]
        k = v["kld"]
        assert abs(k["mean"] / tool["kld_mean"] - 1) <= 0.03, (q, k["mean"], tool["kld_mean"])
        assert abs(k["median"] / tool["kld_median"] - 1) <= 0.03, (q, k["median"], tool["kld_median"])
        assert abs(k["same_top"] * 100 - tool["same_top_pct"]) <= 0.5, (q, k["same_top"], tool["same_top_pct"])
        assert abs(k["ppl"] / tool["ppl"] - 1) <= 1e-4, (q, k["ppl"], tool["ppl"])
