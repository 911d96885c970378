"""One tokenization per run, checked with llama.cpp's own material: its GPT-NeoX-20B vocabulary files and the ids
Hugging Face's tokenizer gives its 46 test inputs; pre-less GGUFs loaded with pre-tokenizer 'mpt'; variants
compared by their vocabulary hash; llama.cpp's load warnings kept with each model."""

from __future__ import annotations

import re
import threading

import pytest

from tests.support import run_cli
from pythia_compare.models import ggufmeta
from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.models.engine import Model
from pythia_compare.runs.pool import ModelPool
from pythia_compare.errors import TokenizerMismatch
from pythia_compare.runs.store import RunStore
from tests.vocabmodels import copy_without_key, read_vocab_tests

# Splits differently under llama.cpp's 'default' pre-tokenizer (digits in threes, runs of punctuation).
DIGITS_AND_PUNCTUATION = "In 1999, the value was 3.14159 -- roughly; see pp. 12-14. Then 12345 + 678 = 13023!"


@pytest.fixture(scope="module")
def cases(llama_vocab_dir):
    found = read_vocab_tests(llama_vocab_dir / "ggml-vocab-mpt.gguf")
    assert len(found) == 46 and ("", []) in found
    return found


def _mismatches(model: Model, cases) -> list[tuple[str, list[int], list[int]]]:
    return [(text, want, got) for text, want in cases if (got := model.tokenize(text)) != want]


def test_the_46_gpt_neox_20b_cases_tokenize_as_hugging_face_does_through_the_engine(vocab_file_models, settings,
                                                                                     cases):
    model = Model(vocab_file_models["mpt"], settings, 256)
    assert model.overrides == {} and model.warnings == []
    assert not model.add_bos  # the run's tokenization adds nothing to these ids
    assert _mismatches(model, cases) == []


def test_a_gpt_neox_gguf_without_a_pre_tokenizer_loads_with_mpt_and_tokenizes_the_46_cases_the_same(
        vocab_file_models, settings, cases):
    assert ggufmeta.read_vocab(vocab_file_models["gpt-neox"]).pre is None
    model = Model(vocab_file_models["gpt-neox"], settings, 256)
    assert model.overrides == {"tokenizer.ggml.pre": "mpt"}
    assert not any("DEGRADED" in w for w in model.warnings)
    assert _mismatches(model, cases) == []


def test_without_the_override_the_pre_less_file_splits_the_cases_differently_and_llama_cpp_warns(
        vocab_file_models, settings, cases):
    model = Model(vocab_file_models["gpt-neox"], settings, 256, fix_pre=False)
    assert model.overrides == {}
    assert "GENERATION QUALITY WILL BE DEGRADED!" in model.warnings
    assert any("missing pre-tokenizer" in w for w in model.warnings)
    differ = _mismatches(model, cases)
    assert len(differ) >= 5, differ
    fixed = Model(vocab_file_models["gpt-neox"], settings, 256)
    # The example: 25 tokens under 'default', 20 as Hugging Face's tokenizer gives them.
    sentence = "In 1999, the value was 3.14159 -- roughly; see pp. 12-14."
    assert (len(model.tokenize(sentence)), len(fixed.tokenize(sentence))) == (25, 20)


def test_llama_cpps_two_vocabulary_files_have_one_vocabulary_hash(vocab_file_models, settings):
    a, b = (Model(vocab_file_models[n], settings, 256) for n in ("mpt", "gpt-neox"))
    assert re.fullmatch(r"[0-9a-f]{64}", a.vocab_sha256) and a.vocab_sha256 == b.vocab_sha256


def _vocab(tokens, types, merges=(b"a b",), bos=0):
    return ggufmeta.GGUFVocab("gptneox", "gpt2", "mpt", [t.encode() for t in tokens], list(types), list(merges),
                              bos, bos, False)


def test_the_vocabulary_hash_ignores_trailing_padding_however_it_is_named_or_typed():
    def h(v):
        return ggufmeta.vocab_sha256(v, n_vocab=6, bos_id=0, eos_id=0, add_bos=False)

    base = ["<|endoftext|>", "a", "b", "ab"]
    converted = _vocab(base + ["[PAD4]", "[PAD5]"], [3, 1, 1, 1, 5, 5])  # this project's converter: UNUSED
    old_convert = _vocab(base + ["[PAD4]", "[PAD5]"], [3, 1, 1, 1, 4, 4])  # llama.cpp's old converter
    renamed = _vocab(base + ["<pad4>", "<pad5>"], [3, 1, 1, 1, 5, 5])  # other names, type UNUSED
    assert converted.n_real == old_convert.n_real == renamed.n_real == 4
    assert h(converted) == h(old_convert) == h(renamed)
    assert h(_vocab(["<|endoftext|>", "a", "b", "ba", "[PAD4]", "[PAD5]"], [3, 1, 1, 1, 5, 5])) != h(converted)
    assert h(_vocab(base + ["[PAD4]", "[PAD5]"], [3, 1, 1, 4, 5, 5])) != h(converted)  # a real token's type
    assert h(_vocab(base + ["[PAD4]", "[PAD5]"], [3, 1, 1, 1, 5, 5], merges=(b"b a",))) != h(converted)
    assert ggufmeta.vocab_sha256(converted, n_vocab=6, bos_id=1, eos_id=0, add_bos=False) != h(converted)
    assert ggufmeta.vocab_sha256(converted, n_vocab=6, bos_id=0, eos_id=0, add_bos=True) != h(converted)
    assert ggufmeta.vocab_sha256(converted, n_vocab=8, bos_id=0, eos_id=0, add_bos=False) != h(converted)


def test_a_damaged_header_is_refused_by_the_header_reader_not_read_past_its_end(tiny_ggufs, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_ggufs["F16"].read_bytes()[:5000])  # ends inside the token list
    with pytest.raises(ggufmeta.GGUFHeaderError, match="past the end"):
        ggufmeta.read_vocab(cut)


def test_a_pre_less_gguf_runs_beside_its_twin_with_the_same_tokens_and_perplexity(preless_twin, settings):
    preless, twin = preless_twin
    default = Model(preless, settings, 256, fix_pre=False).tokenize(DIGITS_AND_PUNCTUATION)
    ids = Model(twin, settings, 256).tokenize(DIGITS_AND_PUNCTUATION)
    assert default != ids  # the text is one that 'default' splits differently
    pool = ModelPool(settings)
    for reference in (None, str(preless)):  # the pre-less file as a variant, then as the reference that tokenizes
        params = RunParams(max_tokens=0, reference=reference)
        run = run_comparison([str(preless), str(twin)], DIGITS_AND_PUNCTUATION, params, settings=settings,
                             pool=pool).to_json()
        entries = ([run["reference"]] if run["reference"] else []) + run["variants"]
        by_file = {e["spec"]: e for e in entries}
        assert run["input"]["n_tokens"] == len(ids) and by_file[str(twin)]["n_scored"] == len(ids) - 1
        assert by_file[str(preless)]["overrides"] == {"tokenizer.ggml.pre": "mpt"}
        assert by_file[str(twin)]["overrides"] == {}
        assert by_file[str(preless)]["source"]["vocab_sha256"] == by_file[str(twin)]["source"]["vocab_sha256"]
        assert by_file[str(preless)]["ppl"] == pytest.approx(by_file[str(twin)]["ppl"], abs=1e-6, rel=0)
        assert by_file[str(preless)]["token_logprobs"] == pytest.approx(by_file[str(twin)]["token_logprobs"],
                                                                       abs=1e-6)
        store = RunStore(settings.db_path)
        saved = store.get(store.save(run))  # the new keys survive the run log
        assert saved == {**run, "run_id": saved["run_id"], "created_at": saved["created_at"]}
    pool.close()


def test_the_cli_prints_identical_perplexities_for_a_pre_less_gguf_and_its_converted_twin(preless_twin, tmp_path):
    preless, twin = preless_twin
    text = tmp_path / "text.txt"
    text.write_text(DIGITS_AND_PUNCTUATION * 3, encoding="utf-8")
    proc = run_cli(["--offline", "compare", str(preless), str(twin), "--text-file", str(text), "--max-tokens", "0",
                    "--reference", "none"],
                   env={"PYTHIA_COMPARE_DB": str(tmp_path / "runs.db"), "PYTHIA_COMPARE_HOME": str(tmp_path / "h")})
    assert proc.returncode == 0, proc.stderr
    # the table's PPL column: the row of each file, read under the header's "PPL"
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if " PPL" in line)
    col = header.split().index("PPL")
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in (preless.name, twin.name)}
    assert set(rows) == {preless.name, twin.name}, proc.stdout
    assert rows[preless.name][col] == rows[twin.name][col]
    assert f"{preless.name}: loaded with tokenizer.ggml.pre=mpt" in proc.stderr


def test_models_with_different_vocabularies_are_refused_naming_both_files(tiny_ggufs, other_tokenizer_gguf,
                                                                          settings):
    pool = ModelPool(settings)
    with pytest.raises(TokenizerMismatch, match="vocabularies differ") as e:
        run_comparison([str(tiny_ggufs["F16"]), str(other_tokenizer_gguf)], "Hello there, world.",
                       RunParams(max_tokens=0), settings=settings, pool=pool)
    assert tiny_ggufs["F16"].name in str(e.value) and other_tokenizer_gguf.name in str(e.value)
    pool.close()


@pytest.fixture(scope="module")
def warning_gguf(tiny_ggufs, tmp_path_factory):
    """The tiny F16 with a BOS id past its vocabulary: llama.cpp loads it and warns."""
    out = tmp_path_factory.mktemp("warns") / "tiny-badbos-F16.gguf"
    return copy_without_key(tiny_ggufs["F16"], out, "tokenizer.ggml.bos_token_id",
                            uint32={"tokenizer.ggml.bos_token_id": 999999})


def test_llama_cpp_load_warnings_reach_the_run_json_and_stay_with_a_pooled_model(warning_gguf, settings):
    pool = ModelPool(settings)
    runs = [run_comparison([str(warning_gguf)], "Hello there, world.", RunParams(max_tokens=0),
                           settings=settings, pool=pool).to_json() for _ in range(2)]
    assert pool.loaded() == [str(warning_gguf.resolve())]  # the second run reused the loaded model
    for run in runs:
        assert any("bad special token" in w and "999999" in w for w in run["variants"][0]["warnings"]), run
    pool.close()


def test_two_loads_at_once_keep_their_own_warnings(warning_gguf, tiny_ggufs, settings):
    results: dict[str, list[list[str]]] = {"warns": [], "clean": []}

    def load(path, key):
        for _ in range(4):
            m = Model(path, settings, 256)
            results[key].append(m.warnings)
            m.close()

    threads = [threading.Thread(target=load, args=(warning_gguf, "warns")),
               threading.Thread(target=load, args=(tiny_ggufs["Q8_0"], "clean"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results["warns"]) == len(results["clean"]) == 4
    assert all(any("bad special token" in w for w in ws) for ws in results["warns"])
    assert all(not any("bad special token" in w for w in ws) for ws in results["clean"])


def test_the_cli_prints_a_variants_load_warnings_on_stderr(warning_gguf, tmp_path):
    proc = run_cli(["--offline", "compare", str(warning_gguf), "--prompt", "Hello there, world.", "--max-tokens", "0",
                    "--json"], env={"PYTHIA_COMPARE_DB": str(tmp_path / "runs.db"),
                                    "PYTHIA_COMPARE_HOME": str(tmp_path / "h")})
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"warning: {re.escape(warning_gguf.name)}: llama.cpp: bad special token", proc.stderr)
    import json

    run = json.loads(proc.stdout)
    assert any("bad special token" in w for w in run["variants"][0]["warnings"])


def test_the_dashboard_shows_a_variants_load_warnings_and_overrides_beside_its_name(warning_gguf, preless_twin,
                                                                                    settings):
    from pythia_compare.web.dashboard import Dashboard

    dash = Dashboard(settings, pool=ModelPool(settings))
    run = None
    for kind, _f, _m, snapshot in dash.run([str(warning_gguf)], "Hello there, world.", RunParams(max_tokens=0),
                                           owner=None):
        run = snapshot if kind == "done" else run
    status = dash.status(run)
    assert f"{warning_gguf.name}: llama.cpp: bad special token" in status
    for kind, _f, _m, snapshot in dash.run([str(preless_twin[0])], "Hello there, world.", RunParams(max_tokens=0),
                                           owner=None):
        run = snapshot if kind == "done" else run
    assert f"{preless_twin[0].name}: loaded with tokenizer.ggml.pre=mpt" in dash.status(run)
    dash.pool.close()


def test_this_projects_converter_and_llama_cpps_give_the_gpt_neox_20b_vocabulary_one_hash(llama_vocab_dir,
                                                                                          vocab_file_models,
                                                                                          settings, tmp_path, cases):
    """llama.cpp's converter pads with [PAD…] typed USER_DEFINED, this project's with UNUSED: a Hub file beside a
    converted one must still compare. The tokenizer.json rebuilt from llama.cpp's file also gives HF's ids."""
    import json

    from tokenizers import Tokenizer

    from pythia_compare.sources.convert import convert_checkpoint
    from tests.tinymodels import config_dict, random_weights, write_weights
    from tests.vocabmodels import tokenizer_json_of

    tok = tokenizer_json_of(llama_vocab_dir / "ggml-vocab-mpt.gguf")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    hf = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    assert [(t, hf.encode(t).ids) for t, _ in cases] == cases  # the rebuilt tokenizer is GPT-NeoX-20B's
    cfg = config_dict(d_model=64, n_head=2, d_ff=128, n_layer=1, vocab_size=50432)
    (ckpt / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    write_weights(ckpt, random_weights(cfg, seed=3))
    converted = convert_checkpoint(ckpt, tmp_path / "converted-F16.gguf", "F16")
    ours, theirs = ggufmeta.read_vocab(converted), ggufmeta.read_vocab(vocab_file_models["mpt"])
    assert ours.types[-1] == ggufmeta.TOKEN_UNUSED and theirs.types[-1] == 4  # padding typed differently
    a, b = Model(converted, settings, 256), Model(vocab_file_models["gpt-neox"], settings, 256)
    assert a.vocab_sha256 == b.vocab_sha256
    assert _mismatches(a, cases) == []
    pool = ModelPool(settings)
    run = run_comparison([str(vocab_file_models["gpt-neox"]), str(converted)], DIGITS_AND_PUNCTUATION,
                         RunParams(max_tokens=0), settings=settings, pool=pool).to_json()
    assert run["variants"][0]["n_scored"] == run["variants"][1]["n_scored"] == run["input"]["n_tokens"] - 1
    assert run["variants"][0]["overrides"] == {"tokenizer.ggml.pre": "mpt"}
    pool.close()
