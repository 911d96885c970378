"""The bundled offline demo suite (assets/demo): present, small, Pythia-shaped, K-quant compatible, and
scored on text it never trained on. Reads the files with json, numpy and safetensors only (no torch);
re-derives the training text from this machine's standard library with tools/train_demo.py's own
functions, which import no torch at module import."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "assets" / "demo"
SCRIPT = ROOT / "tools" / "train_demo.py"
EOT = "<|endoftext|>"


def _load_script():
    spec = importlib.util.spec_from_file_location("train_demo_for_tests", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _step_dirs() -> list[Path]:
    dirs = [d for d in DEMO.iterdir() if d.is_dir() and re.fullmatch(r"step\d+", d.name)]
    return sorted(dirs, key=lambda d: int(d.name[4:]))


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def training_text(script) -> str:
    return script.read_training_text()


@pytest.fixture(scope="module")
def heldout() -> str:
    return (DEMO / "heldout.txt").read_text(encoding="utf-8")


def test_the_demo_suite_has_at_least_five_steps_including_step0_each_in_hugging_face_layout():
    steps = [int(d.name[4:]) for d in _step_dirs()]
    assert len(steps) >= 5, steps
    assert steps[0] == 0
    for d in _step_dirs():
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            assert (d / name).is_file(), f"{d.name}/{name} missing"


def test_all_demo_assets_together_take_less_than_20_mb():
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 20 * 1000 * 1000, f"{total} bytes"


def test_every_config_is_pythia_style_gpt_neox_with_k_quant_compatible_sizes():
    for d in _step_dirs():
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["architectures"] == ["GPTNeoXForCausalLM"] and cfg["model_type"] == "gpt_neox", d.name
        assert cfg["hidden_size"] % 256 == 0 and cfg["intermediate_size"] % 256 == 0, d.name
        assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0, d.name
        assert cfg["use_parallel_residual"] is True and cfg["tie_word_embeddings"] is False, d.name
        assert cfg["rotary_pct"] == 0.25 and cfg["rotary_emb_base"] == 10000, d.name
        assert cfg["bos_token_id"] == 0 and cfg["eos_token_id"] == 0, d.name
        assert cfg["torch_dtype"] == "float16" and cfg["vocab_size"] % 128 == 0, d.name


def test_every_checkpoint_holds_float16_weights_of_the_configured_shapes_with_rows_of_256_multiples():
    for d in _step_dirs():
        cfg = json.loads((d / "config.json").read_text())
        h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        tensors = load_file(str(d / "model.safetensors"))
        assert tensors["gpt_neox.embed_in.weight"].shape == (v, h), d.name
        assert tensors["embed_out.weight"].shape == (v, h), d.name  # separate head, Pythia's name
        for i in range(cfg["num_hidden_layers"]):
            p = f"gpt_neox.layers.{i}."
            assert tensors[p + "attention.query_key_value.weight"].shape == (3 * h, h)
            assert tensors[p + "attention.dense.weight"].shape == (h, h)
            assert tensors[p + "mlp.dense_h_to_4h.weight"].shape == (f, h)
            assert tensors[p + "mlp.dense_4h_to_h.weight"].shape == (h, f)
        for name, t in tensors.items():
            assert t.dtype == np.float16, f"{d.name} {name} is {t.dtype}"
            assert np.isfinite(t).all(), f"{d.name} {name} has non-finite values"
            if t.ndim == 2:
                assert t.shape[1] % 256 == 0, f"{d.name} {name} rows of {t.shape[1]} cannot be K-quantized"


def test_the_checkpoints_differ_from_one_another_so_each_step_is_its_own_training_state():
    digests = {d.name: (d / "model.safetensors").read_bytes() for d in _step_dirs()}
    assert len(set(digests.values())) == len(digests)


def test_the_tokenizer_is_a_gpt_neox_style_byte_level_bpe_with_endoftext_at_id_0():
    first = (_step_dirs()[0] / "tokenizer.json").read_text()
    tok = json.loads(first)
    assert tok["model"]["type"] == "BPE"
    assert tok["pre_tokenizer"]["type"] == "ByteLevel" and tok["pre_tokenizer"]["add_prefix_space"] is False
    assert tok["pre_tokenizer"]["trim_offsets"] is True
    assert tok["decoder"]["type"] == "ByteLevel"
    assert tok["post_processor"]["type"] == "ByteLevel"  # adds no BOS, like GPT-NeoX
    added = {t["id"]: t for t in tok["added_tokens"]}
    assert added[0]["content"] == EOT and added[0]["special"] is True
    assert tok["model"]["vocab"][EOT] == 0
    spaces = {t["content"] for t in added.values() if set(t["content"]) == {" "}}
    assert spaces == {" " * n for n in range(2, 25)}
    byte_symbols = [s for s in tok["model"]["vocab"] if len(s) == 1]
    assert len(byte_symbols) >= 256  # every byte has a symbol: nothing is ever unknown
    n_tokens = len(set(tok["model"]["vocab"].values()) | set(added))
    for d in _step_dirs():
        assert (d / "tokenizer.json").read_text() == first, f"{d.name} has another tokenizer"
        assert json.loads((d / "config.json").read_text())["vocab_size"] >= n_tokens


def test_the_training_script_imports_no_torch_when_its_data_functions_are_used():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('td', {str(SCRIPT)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "m.training_files(); m.read_heldout_text()\n"
            "bad = sorted(n for n in ('torch', 'transformers', 'tokenizers') if n in sys.modules)\n"
            "print(','.join(bad))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_heldout_txt_is_the_held_out_modules_of_this_machines_standard_library(script, heldout):
    assert heldout == script.read_heldout_text()
    trained = {p.name for p in script.training_files()}
    for p in script.heldout_files():
        assert p.name not in trained


def test_the_heldout_text_is_plain_ascii_and_of_a_size_for_corpus_scoring(heldout):
    # ASCII with plain newlines: every tokenizer (HF, llama.cpp) sees the same characters.
    assert heldout.isascii() and "\r" not in heldout
    assert 4_000 <= len(heldout.encode()) < 100_000


def test_no_long_piece_of_the_heldout_text_appears_in_the_training_text(heldout, training_text):
    assert len(training_text) > 1_000_000
    # The check itself finds text that is there: a piece cut from the middle of the training text.
    mid = len(training_text) // 2
    assert training_text[mid:mid + 100] in training_text
    found = [i for i in range(0, len(heldout) - 100, 50) if heldout[i:i + 100] in training_text]
    assert found == [], f"held-out text at chars {found[:5]} is also training text"


def test_the_readme_gives_provenance_license_command_and_each_saved_step(heldout):
    text = (DEMO / "README.md").read_text()
    assert "NOT Pythia" in text
    assert "Python Software Foundation License" in text
    assert "python tools/train_demo.py" in text
    assert "pip install torch==2.13.0 transformers==5.24.0 tokenizers==0.23.3" in text
    for d in _step_dirs():
        assert re.search(rf"^\| {d.name[4:]} \|", text, re.M), f"no PPL row for {d.name}"
