"""Shared fixtures: tiny GPT-NeoX models built here (the only fake part is the weights), quantized by
llama.cpp's own quantizer; isolated Settings per test. A skipped test fails the run: a test that cannot
run in CI is a failure, not a skip."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest

from tests.support import ROOT, TEST_QUANTS, TIERS


def pytest_collection_modifyitems(config, items):
    """The tiers of tests/support.py's TIERS table become markers: the one place they are applied."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        name = item.originalname or item.name
        for key in (module, f"{module}::{name}"):
            for marker in TIERS.get(key, ()):
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session):
    """Collection imports gradio, torch, plotly and llama_cpp: hundreds of thousands of long-lived objects, which
    the cyclic garbage collector would walk again and again (seconds of the fast tier). It pauses while they are
    imported, and they are then frozen, so the tests' collections walk only what the tests allocate."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", [])) + len(reporter.stats.get("xfailed", []))
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped or xfailed; every test must run", red=True)
        session.exitstatus = 1


# The probe verdicts (pythia_compare/sources/probe.py) of files that loaded, by content, gathered from the `settings` homes of
# the tests so far: a file is probed in its real subprocess once a session, as one installation probes it once,
# and not again by every test that loads it. Refusals are never carried over.
_LOADED_VERDICTS: dict[str, dict] = {}


@pytest.fixture
def settings(tmp_path):
    """Settings isolated in tmp_path: its own DB, cache and HF cache; offline; flash attention off. Its home holds
    the verdicts of the files earlier tests' probes loaded (_LOADED_VERDICTS), and gives back its own."""
    from pythia_compare.config import Settings
    from pythia_compare.sources.probe import VERDICTS

    s = Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                 offline=True, hub_endpoint="http://127.0.0.1:9", flash_attn=False)
    if _LOADED_VERDICTS:
        s.home.mkdir(parents=True, exist_ok=True)
        (s.home / VERDICTS).write_text(json.dumps(_LOADED_VERDICTS, indent=1, sort_keys=True))
    yield s
    try:
        table = json.loads((s.home / VERDICTS).read_text())
    except (OSError, ValueError):
        return
    if isinstance(table, dict):
        _LOADED_VERDICTS.update({k: v for k, v in table.items() if isinstance(v, dict) and v.get("ok") is True})


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny random GPT-NeoX checkpoint in Hugging Face layout (safetensors), with a real BPE tokenizer."""
    from tests.tinymodels import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_ggufs(tiny_ckpt, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint as GGUF: F32 and F16 from the converter, TEST_QUANTS from llama.cpp's quantizer."""
    from pythia_compare.sources.convert import convert_checkpoint
    from pythia_compare.models.quantize import quantize_file

    out = tmp_path_factory.mktemp("gguf")
    files = {q: convert_checkpoint(tiny_ckpt, out / f"tiny-{q}.gguf", q) for q in ("F32", "F16")}
    for q in TEST_QUANTS:
        files[q] = quantize_file(files["F16"], out / f"tiny-{q}.gguf", q)
    return files


@pytest.fixture(scope="session")
def sample_text() -> str:
    """A varied English text for scoring (repeated so corpus mode has enough tokens)."""
    base = ("The quick brown fox jumps over the lazy dog. Researchers compare quantized models by perplexity, "
            "and by the KL divergence of their next-token distributions from a reference. 12345 + 678 = 13023.\n"
            "def add(a, b):\n    return a + b\n")
    return base * 8


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    d = ROOT / "assets" / "demo"
    assert any(d.glob("step*/config.json")), f"the demo suite is missing under {d}"
    return d


@pytest.fixture(scope="session")
def other_tokenizer_gguf(tmp_path_factory) -> Path:
    """A tiny model whose BPE tokenizer was trained to a smaller vocabulary: it splits text differently."""
    from tests.tinymodels import make_checkpoint, make_tokenizer

    from pythia_compare.sources.convert import convert_checkpoint

    d = make_checkpoint(tmp_path_factory.mktemp("other") / "ckpt", seed=1)
    make_tokenizer(d / "tokenizer.json", vocab_size=400)
    return convert_checkpoint(d, d.parent / "other-tokenizer-F16.gguf", "F16")


@pytest.fixture(scope="session")
def llama_vocab_dir() -> Path:
    """llama.cpp's tokenizer test material from the pinned sdist (tools/llama_vocab_files.sh, run by tools/test.sh):
    ggml-vocab-mpt.gguf with its .inp/.out test vectors, and ggml-vocab-gpt-neox.gguf (no pre-tokenizer name)."""
    value = os.environ.get("PYTHIA_COMPARE_LLAMA_VOCAB_DIR")
    if not value:
        pytest.fail("PYTHIA_COMPARE_LLAMA_VOCAB_DIR is not set: run the tests with tools/test.sh, or set it to the "
                    "directory `bash tools/llama_vocab_files.sh` prints", pytrace=False)
    d = Path(value)
    missing = [n for n in ("ggml-vocab-mpt.gguf", "ggml-vocab-mpt.gguf.inp", "ggml-vocab-mpt.gguf.out",
                           "ggml-vocab-gpt-neox.gguf") if not (d / n).is_file()]
    if missing:
        pytest.fail(f"PYTHIA_COMPARE_LLAMA_VOCAB_DIR={d} lacks {', '.join(missing)}; rerun "
                    f"`bash tools/llama_vocab_files.sh`", pytrace=False)
    return d


@pytest.fixture(scope="session")
def vocab_file_models(llama_vocab_dir, tmp_path_factory) -> dict[str, Path]:
    """Tiny random gptneox models with the vocabularies of llama.cpp's files: "mpt" (pre-tokenizer 'mpt') and
    "gpt-neox" (no pre-tokenizer key, as GGUFs made before spring 2024)."""
    from tests.vocabmodels import vocab_model

    out = tmp_path_factory.mktemp("vocab-models")
    return {name: vocab_model(llama_vocab_dir / f"ggml-vocab-{name}.gguf", out / f"tiny-vocab-{name}.gguf")
            for name in ("mpt", "gpt-neox")}


@pytest.fixture(scope="session")
def preless_twin(tiny_ggufs, tmp_path_factory) -> tuple[Path, Path]:
    """(the converted tiny F16 saved without tokenizer.ggml.pre, the converted F16 itself): one model."""
    from tests.vocabmodels import copy_without_key

    out = tmp_path_factory.mktemp("preless") / "tiny-nopre-F16.gguf"
    return copy_without_key(tiny_ggufs["F16"], out, "tokenizer.ggml.pre"), tiny_ggufs["F16"]
