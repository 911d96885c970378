"""The engine on tiny GPT-NeoX models built here and quantized by llama.cpp's own quantizer."""

import json
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.support import ROOT, TEST_QUANTS
from pythia_compare.runs import metrics
from pythia_compare.config import Settings
from pythia_compare.models.engine import bytes_to_text, cpu_info, load_plan
from pythia_compare.runs.pool import ModelPool
from pythia_compare.models.loadplan import parse_cpu
from pythia_compare.errors import BudgetError, ModelFileError
from pythia_compare.variants import SUPPORTED_QUANTS

def score(m, ids: list[int]) -> np.ndarray:
    """Log-probability of each token after the first, teacher-forced (prompt scoring, as compare.py does it)."""
    return -metrics.nll(m.logits(ids, list(range(len(ids) - 1))), np.asarray(ids[1:]))


TEXT = "Perplexity measures surprise. Quantization trades bits for error: Q8_0, Q4_K_M, Q2_K. é ü 😀 3.14159"

_SUBPROCESS = r"""
import json, sys
import numpy as np
from pythia_compare.runs import metrics
from pythia_compare.config import Settings
from pythia_compare.runs.pool import ModelPool
from pythia_compare.models.quantize import quantize_file
src, out_dir, quants, text = sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
from pythia_compare.models.engine import load_plan
report = {}
for q in quants:
    path = quantize_file(src, f"{out_dir}/m-{q}.gguf", q) if q not in ("F16", "F32") else src
    report[q] = {}
    # each decision load_plan can make for this quant here: its own ("auto"), and a repacked generation handle
    for mode in ("auto", "on"):
        settings = Settings(flash_attn=True, generation_handle=mode)
        pool = ModelPool(settings)
        with pool.hold([path], 256) as (m,):
            ids = m.tokenize(text)
            lp = -metrics.nll(m.logits(ids, list(range(len(ids) - 1))), np.asarray(ids[1:]))
            gen = list(m.generate(ids[:8], 6, n_alternatives=4))  # on the generation handle, if planned
            plans = {ph: load_plan(settings, q, ph)["extra_bufts"] for ph in ("score", "generate")}
            report[q][mode] = [len(lp), bool(np.all(np.isfinite(lp))), float(lp.mean()), len(gen),
                               all(0 < t.prob <= 1 and len(t.top) == 4 for t in gen), m.load_info(), plans]
        pool.close()
print(json.dumps(report))
"""


def test_every_supported_quant_type_runs_in_a_fresh_process(tiny_ggufs, tmp_path):
    # A crash inside ggml (e.g. a CPU-specific matmul) kills only the child, and fails this test.
    quants = [q for q in SUPPORTED_QUANTS if q not in ("F32", "F16")]
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS, str(ROOT), str(tiny_ggufs["F16"]), str(tmp_path),
                           json.dumps(quants), TEXT], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"child exited {proc.returncode}: {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(quants)
    with ModelPool(Settings()).hold([tiny_ggufs["F16"]], 256) as (m,):
        f16_mean = float(score(m, m.tokenize(TEXT)).mean())
    repacked = 0
    for q, modes in report.items():
        for mode, (n, finite, mean, n_gen, gen_ok, load, plans) in modes.items():
            assert n > 10 and finite, (q, mode)
            assert 1.5 * f16_mean < mean < 0.5 * f16_mean, (q, mode, mean, f16_mean)
            # each phase ran with the load settings its plan decided, and generation streamed on them
            assert n_gen == 6 and gen_ok, (q, mode)
            assert load["quant"] == q and load["extra_bufts_score"] == plans["score"], (q, mode, load)
            if plans["generate"] and not plans["score"]:  # a second handle: kept only if llama.cpp repacked
                repacked += load["extra_bufts_generate"]
                assert load["extra_bufts_generate"] == (load.get("generate_extra_mb", 0) > 0), (q, mode, load)
            else:
                assert load["extra_bufts_generate"] == plans["generate"], (q, mode, load)
    if cpu_info()["amx"]:
        assert not any(v[5]["extra_bufts_score"] or v[5]["extra_bufts_generate"]
                       for modes in report.values() for v in modes.values())
    elif cpu_info()["x86"]:  # Q4_K_M and Q4_0 repack on every AVX2 CPU: the second handle ran in the child
        assert report["Q4_K_M"]["on"][5]["extra_bufts_generate"] and repacked >= 2


AMX_XEON_FLAGS = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse2 avx2 avx512f "
                  "avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n")
EPYC_FLAGS = ("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
              "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
XEON_FLAGS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n"
              "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")


def test_an_amx_cpu_keeps_extra_buffer_types_off_for_every_quant_and_phase():
    amx = parse_cpu(AMX_XEON_FLAGS, "CPU : AVX2 = 1 | AVX512 = 1 |", "x86_64")
    assert amx["amx"] and amx["amx_flags"] == ["amx_bf16", "amx_int8", "amx_tile"]
    by_ggml = parse_cpu(EPYC_FLAGS, "CPU : AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |", "x86_64")
    assert by_ggml["amx"]  # ggml's own view counts too
    for cpu in (amx, by_ggml):
        for forced in (False, True):
            for q in SUPPORTED_QUANTS:
                for phase in ("score", "generate"):
                    plan = load_plan(Settings(extra_bufts=forced), q, phase, cpu)
                    assert plan["extra_bufts"] is False and "AMX" in plan["reason"], (q, phase, forced)


def test_without_amx_repacking_is_planned_for_generation_only_where_it_was_measured_faster():
    epyc = parse_cpu(EPYC_FLAGS, "CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |", "x86_64")
    xeon = parse_cpu(XEON_FLAGS, "CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 |", "x86_64")
    assert not epyc["amx"] and "AMD EPYC 9R14" in epyc["summary"] and epyc["vendor"] == "AuthenticAMD"
    s = Settings()
    assert load_plan(s, "Q4_K_M", "generate", epyc)["extra_bufts"] is True  # 17% faster there
    assert load_plan(s, "Q4_K_M", "generate", xeon)["extra_bufts"] is True  # 5% faster there (2 threads)
    assert load_plan(s, "Q4_K_S", "generate", xeon)["extra_bufts"] is False  # not measured there: no extra memory
    for cpu in (epyc, xeon):
        assert load_plan(s, "Q4_K_M", "score", cpu)["extra_bufts"] is False  # slower repacked on both
        assert load_plan(s, "Q8_0", "generate", cpu)["extra_bufts"] is False  # nothing to repack on x86
        assert load_plan(s, "F16", "generate", cpu)["extra_bufts"] is False
        # asked for: a repacked generation handle for any quant; never for scoring
        assert load_plan(s.replace(generation_handle="on"), "Q2_K", "generate", cpu)["extra_bufts"] is True
        assert load_plan(s.replace(generation_handle="on"), "Q2_K", "score", cpu)["extra_bufts"] is False
    # Q4_0 on that Xeon: faster repacked in both phases, so one repacked handle (no second one)
    assert load_plan(s, "Q4_0", "score", xeon)["extra_bufts"] is True
    assert load_plan(s, "Q4_0", "generate", xeon)["extra_bufts"] is True
    assert load_plan(s, "Q4_0", "score", epyc)["extra_bufts"] is False  # not measured there
    # without a second handle, generation keeps the scoring handle's settings
    assert load_plan(s.replace(generation_handle="off"), "Q4_K_M", "generate", epyc)["extra_bufts"] is False
    arm = parse_cpu("processor\t: 0\nFeatures\t: fp asimd\n", "CPU : NEON = 1 |", "aarch64")
    assert load_plan(s, "Q4_K_M", "generate", arm)["extra_bufts"] is False
    with pytest.raises(ValueError, match="phase"):
        load_plan(s, "Q4_K_M", "decode", epyc)
    with pytest.raises(ValueError, match="auto, on or off"):
        Settings.from_env({"PYTHIA_COMPARE_GENERATION_HANDLE": "sometimes"})


def test_a_repacked_generation_handle_gives_the_plain_handles_greedy_tokens_and_its_memory_counts(tiny_ggufs,
                                                                                                   settings):
    plain = ModelPool(settings.replace(generation_handle="off"))
    two = ModelPool(settings.replace(generation_handle="on"))
    with plain.hold([tiny_ggufs["Q4_K_M"]], 256) as (a,), two.hold([tiny_ggufs["Q4_K_M"]], 256) as (b,):
        ids = a.tokenize(TEXT)[:16]
        want = [t.id for t in a.generate(ids, 8)]
        got = [t.id for t in b.generate(ids, 8)]
        info = b.load_info()
        assert a.load_info()["extra_bufts_generate"] is False and a.extra_bytes == 0
        if load_plan(settings.replace(generation_handle="on"), "Q4_K_M", "generate")["extra_bufts"]:
            assert info["extra_bufts_generate"] and b.extra_bytes > 0 and info["generate_extra_mb"] > 0
        # near-ties may flip under another matmul layout; the first tokens agree
        assert got[:4] == want[:4]
        np.testing.assert_allclose(score(b, a.tokenize(TEXT)), score(a, a.tokenize(TEXT)), atol=1e-4)
    plain.close()
    two.close()


def test_no_room_under_the_budget_keeps_generation_on_the_scoring_handle(tiny_ggufs, settings):
    path = tiny_ggufs["Q4_K_M"]
    settings = settings.replace(generation_handle="on")
    pool = ModelPool(settings.replace(memory_budget_bytes=path.stat().st_size + 1024))
    with pool.hold([path], 256) as (m,):
        toks = list(m.generate(m.tokenize(TEXT)[:16], 4))
        info = m.load_info()
    pool.close()
    assert len(toks) == 4 and m.extra_bytes == 0 and info["extra_bufts_generate"] is False
    if load_plan(settings, "Q4_K_M", "generate")["extra_bufts"]:
        assert "memory budget" in info["reason"]


def test_the_run_json_records_each_variants_load_settings_and_the_run_log_keeps_them(tiny_ggufs, settings):
    from pythia_compare.runs.compare import RunParams, run_comparison
    from pythia_compare.runs.store import RunStore

    pool = ModelPool(settings)
    specs = [str(tiny_ggufs["Q8_0"]), str(tiny_ggufs["Q4_K_M"])]
    run = run_comparison(specs, TEXT, RunParams.from_settings(settings, max_tokens=4, top_k=4), settings=settings,
                         pool=pool).to_json()
    pool.close()
    for v, q in zip(run["variants"], ("Q8_0", "Q4_K_M")):
        load = v["load"]
        assert load["quant"] == q and load["extra_bufts_score"] is False
        assert load["extra_bufts_generate"] == load_plan(settings, q, "generate")["extra_bufts"] and load["reason"]
    store = RunStore(settings.db_path)
    run_id = store.save(run)
    back = store.get(run_id)
    assert [v["load"] for v in back["variants"]] == [v["load"] for v in run["variants"]]
    store.close()


def test_listed_quants_give_finite_log_probs_in_process(tiny_ggufs, settings):
    pool = ModelPool(settings)
    for q in ["F32", "F16", *TEST_QUANTS]:
        with pool.hold([tiny_ggufs[q]], 256) as (m,):
            lp = score(m, m.tokenize(TEXT))
            assert lp.shape == (len(m.tokenize(TEXT)) - 1,) and np.all(np.isfinite(lp)) and np.all(lp < 0), q
    pool.close()


def test_engine_f32_log_probs_equal_a_plain_llama_eval(tiny_ggufs, settings):
    import llama_cpp

    s = settings.replace(kv_f32=True, flash_attn=False)
    pool = ModelPool(s)
    with pool.hold([tiny_ggufs["F32"]], 256) as (m,):
        ids = m.tokenize(TEXT)
        ours = score(m, ids)
    pool.close()
    plain = llama_cpp.Llama(str(tiny_ggufs["F32"]), n_ctx=256, logits_all=True, verbose=False, type_k=0, type_v=0,
                            n_threads=s.n_threads, flash_attn=False)
    plain.eval(ids)
    logits = np.array(plain.scores[: len(ids)], dtype=np.float64)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    theirs = logits[np.arange(len(ids) - 1), ids[1:]] - lse[:-1]
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=0)


def test_scoring_in_small_batches_asks_only_for_the_positions_scored(tiny_ggufs, settings):
    pool_big = ModelPool(settings)
    pool_small = ModelPool(settings.replace(n_batch=16))
    with pool_big.hold([tiny_ggufs["F16"]], 256) as (a,), pool_small.hold([tiny_ggufs["F16"]], 256) as (b,):
        ids = a.tokenize(TEXT)
        full = a.logits(ids, list(range(len(ids))))
        some = b.logits(ids, [3, 17, len(ids) - 1])
        assert some.shape == (3, a.n_vocab)
        np.testing.assert_allclose(some, full[[3, 17, len(ids) - 1]], atol=2e-3)
        np.testing.assert_allclose(score(b, ids), score(a, ids), atol=2e-3)
        with pytest.raises(ValueError):
            a.logits(ids, [5, 3])
    pool_big.close()
    pool_small.close()


def test_scan_hands_over_every_requested_row_in_place_in_blocks_of_at_most_max_outputs(tiny_ggufs, settings):
    pool = ModelPool(settings.replace(n_batch=16, max_outputs=5))
    with pool.hold([tiny_ggufs["Q4_K_M"]], 256) as (m,):
        ids = m.tokenize(TEXT)
        assert len(ids) > 16
        for positions in (list(range(len(ids) // 2, len(ids))), [0, 3, 4, 15, 16, len(ids) - 1], [len(ids) - 1]):
            want = m.logits(ids, positions)
            blocks = []

            def consume(row, block):
                assert not block.flags.owndata and not block.flags.writeable  # llama.cpp's own rows
                assert m.lock.locked()
                blocks.append((row, block.copy()))

            m.scan(ids, positions, consume)
            assert [r for r, _ in blocks] == list(np.cumsum([0] + [len(b) for _, b in blocks])[:-1])
            assert all(1 <= len(b) <= 5 for _, b in blocks)
            np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), want)
        assert not m.lock.locked()
    pool.close()


def test_decode_calls_respect_the_batch_size_and_the_output_cap():
    from pythia_compare.models.engine import _decode_calls

    calls = list(_decode_calls(512, list(range(256, 512)), 512, 128))
    assert calls == [(0, 384, 128), (384, 512, 128)]
    assert list(_decode_calls(512, list(range(256, 511)), 512, 512)) == [(0, 512, 255)]
    assert list(_decode_calls(40, [0, 1, 2, 39], 16, 2)) == [(0, 2, 2), (2, 18, 1), (18, 34, 0), (34, 40, 1)]
    assert list(_decode_calls(10, [], 4, 1)) == [(0, 4, 0), (4, 8, 0), (8, 10, 0)]


def test_top_k_is_sorted_and_sums_to_at_most_one(tiny_ggufs, settings):
    pool = ModelPool(settings)
    with pool.hold([tiny_ggufs["Q8_0"]], 256) as (m,):
        ids = m.tokenize(TEXT)
        row = m.logits(ids, [len(ids) - 1])[0]
        top = m.top_k(row, 10)
    pool.close()
    probs = [t["prob"] for t in top]
    assert len(top) == 10 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert top[0]["id"] == int(np.argmax(row))
    assert all(isinstance(t["text"], str) for t in top)


def test_byte_tokens_and_partial_utf8_decode_to_readable_text():
    assert bytes_to_text("é".encode()) == "é"
    assert bytes_to_text(b"\xc3") == "<0xC3>"
    assert bytes_to_text(b"a\xf0\x9f") == "a<0xF0><0x9F>"
    assert bytes_to_text("😀".encode()[:2] + b"x") == "<0xF0><0x9F>x"


def test_generation_streams_tokens_whose_text_joins_into_the_decoded_output(tiny_ggufs, settings):
    pool = ModelPool(settings)
    with pool.hold([tiny_ggufs["F16"]], 256) as (m,):
        ids = m.tokenize("Once upon a time")
        stream = m.generate(ids, 12)
        first = next(stream)  # an iterator: tokens arrive one by one
        toks = [first, *stream]
        assert 1 <= len(toks) <= 12
        assert all(0 < t.prob <= 1 and t.top and t.top[0]["prob"] >= t.top[-1]["prob"] for t in toks)
        assert "".join(t.text for t in toks) == b"".join(m.piece(t.id) for t in toks).decode("utf-8", "replace")
        again = [t.id for t in m.generate(ids, 12)]
        assert again == [t.id for t in toks]  # greedy is deterministic
        s1 = [t.id for t in m.generate(ids, 12, temperature=1.5, seed=1)]
        s1b = [t.id for t in m.generate(ids, 12, temperature=1.5, seed=1)]
        s2 = [t.id for t in m.generate(ids, 12, temperature=1.5, seed=2)]
        assert s1 == s1b and s1 != s2
    pool.close()


def test_models_over_the_budget_fail_before_loading_and_name_the_sizes(tiny_ggufs, settings):
    sizes = {q: tiny_ggufs[q].stat().st_size for q in ("F16", "Q8_0")}
    pool = ModelPool(settings.replace(memory_budget_bytes=sizes["F16"] + sizes["Q8_0"] - 1))
    with pytest.raises(BudgetError) as e:
        with pool.hold([tiny_ggufs["F16"], tiny_ggufs["Q8_0"]], 256):
            pass
    msg = str(e.value)
    assert "budget" in msg and f"{sizes['F16'] / 1e6:.1f} MB" in msg and "PYTHIA_COMPARE_MEMORY_BUDGET" in msg
    assert pool.loaded() == []


def test_the_pool_evicts_the_least_recently_used_model_but_never_one_in_use(tiny_ggufs, settings):
    a, b, c = tiny_ggufs["F16"], tiny_ggufs["Q8_0"], tiny_ggufs["Q6_K"]
    budget = a.stat().st_size + b.stat().st_size + 1024
    pool = ModelPool(settings.replace(memory_budget_bytes=budget))
    with pool.hold([a], 256):
        with pool.hold([b], 256):
            pass
        with pool.hold([c], 256):  # a is in use: b (idle) must go
            loaded = [os.path.basename(p) for p in pool.loaded()]
            assert a.name in loaded and c.name in loaded and b.name not in loaded
    with pool.hold([b], 256):  # now a is idle and least recently used
        loaded = [os.path.basename(p) for p in pool.loaded()]
        assert a.name not in loaded and b.name in loaded
    pool.close()


def test_one_model_scored_from_many_threads_gives_the_serial_answer(tiny_ggufs, settings):
    pool = ModelPool(settings)
    with pool.hold([tiny_ggufs["Q4_K_M"]], 256) as (m,):
        ids = m.tokenize(TEXT)
        expected = score(m, ids)
        results, errors = [], []

        def work():
            try:
                results.append(score(m, ids))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    pool.close()
    assert not errors and len(results) == 6
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_llama_cpp_logs_to_python_logging_not_to_the_terminal(tiny_ggufs, settings, caplog, capfd):
    with caplog.at_level(logging.DEBUG, logger="pythia_compare.llama_cpp"):
        pool = ModelPool(settings)
        with pool.hold([tiny_ggufs["Q4_K_M"]], 256) as (m,):
            score(m, m.tokenize("hello there"))
        pool.close()
    assert any("gptneox" in r.getMessage() or "llama_model_loader" in r.getMessage() for r in caplog.records)
    out, err = capfd.readouterr()
    assert "llama_model_loader" not in out + err


def test_threads_default_to_the_cores_this_process_may_use():
    assert Settings().n_threads == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"),
    (b"not a gguf at all", "not a GGUF"),
])
def test_missing_and_non_gguf_files_are_refused(tmp_path, settings, content, words):
    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match=words):
        with ModelPool(settings).hold([path], 256):
            pass


def test_a_truncated_gguf_is_refused_with_llama_cpps_reason(tiny_ggufs, tmp_path, settings):
    data = tiny_ggufs["Q8_0"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        with ModelPool(settings).hold([cut], 256):
            pass


def test_the_load_is_planned_from_the_files_header_which_names_the_quant_llama_cpp_loads(tiny_ggufs, settings):
    # The header's general.file_type plans the load before llama.cpp opens the file, so a quant repacked on this
    # CPU (Q4_0 on Intel) is loaded once, not plain first and then again repacked.
    from pythia_compare.models import ggufmeta
    from pythia_compare.models.engine import _quant_name

    pool = ModelPool(settings)
    for q, path in tiny_ggufs.items():
        header_quant = _quant_name(ggufmeta.read_vocab(path).file_type)
        assert header_quant == q
        with pool.hold([path], 64) as (m,):
            assert m.quant == q
            assert m.load_plans["score"] == load_plan(settings, q, "score")
    pool.close()
