"""Tests for pythia_compare.runs.metrics: each number checked against an independent computation written here
(plain loops over Python floats with the math module), against identities, and against values worked out
by hand from llama-perplexity's definitions."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from pythia_compare.runs import metrics
from pythia_compare.errors import BadInput, InputTextError
from pythia_compare.runs.metrics import ChunkPlan, TokenStats


# --------------------------------------------------------------------------- independent reference code


def loop_log_probs(row) -> list[float]:
    row = [float(x) for x in row]
    m = max(row)
    lse = m + math.log(math.fsum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def loop_mean_err(xs) -> tuple[float, float]:
    """The tool's sums formula: f = Σx/N, df = Σx²/N - f², err = sqrt(df/(N-1)) when df > 0 and N > 10."""
    n = len(xs)
    s = math.fsum(xs)
    s2 = math.fsum(x * x for x in xs)
    f = s / n
    df = s2 / n - f * f
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def loop_cov(a, b) -> float:
    n = len(a)
    if n < 10:
        return 0.0
    return (math.fsum(x * y for x, y in zip(a, b)) / n - (math.fsum(a) / n) * (math.fsum(b) / n)) / (n - 1)


def first_argmax(row) -> int:
    best = 0
    for i, x in enumerate(row):
        if x > row[best]:
            best = i
    return best


def random_pair(rng, n, vocab, noise=0.3):
    ref = rng.normal(0, 3, size=(n, vocab)).astype(np.float32)
    var = (ref + rng.normal(0, noise, size=(n, vocab))).astype(np.float32)
    targets = rng.integers(0, vocab, size=n)
    return ref, var, targets


# -------------------------------------------------------------------------------- log-softmax and nll


def test_nll_equals_a_direct_loop_computation():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 5, size=(6, 11)).astype(np.float32)
    targets = rng.integers(0, 11, size=6)
    got_nll = metrics.nll(logits, targets)
    assert got_nll.dtype == np.float64 and got_nll.shape == (6,)
    for i in range(6):
        want = loop_log_probs(logits[i])
        assert got_nll[i] == pytest.approx(-want[targets[i]], rel=1e-12)


def test_nll_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-5e4, -5e4, -5e4]])
    got = metrics.nll(logits, np.array([1, 2]))
    assert got[0] == pytest.approx(1000.0, rel=1e-12)
    assert got[1] == pytest.approx(math.log(3), rel=1e-12)


def test_nll_refuses_targets_outside_the_vocab():
    with pytest.raises(ValueError, match="vocab"):
        metrics.nll(np.zeros((2, 4)), np.array([0, 4]))


def test_uniform_logits_give_a_perplexity_equal_to_the_vocab_size():
    for vocab in (2, 7, 50304):
        logits = np.full((13, vocab), 1.25, dtype=np.float32)
        ppl, err = metrics.perplexity(metrics.nll(logits, np.arange(13) % vocab))
        assert ppl == pytest.approx(vocab, rel=1e-13)
        assert err == 0.0


# ------------------------------------------------------------------------------------- perplexity error


def test_perplexity_and_its_error_equal_the_sums_formula_on_random_data():
    rng = np.random.default_rng(2)
    x = rng.gamma(2.0, 1.5, size=257)
    ppl, err = metrics.perplexity(x)
    f, df = loop_mean_err(list(x))
    assert ppl == pytest.approx(math.exp(f), rel=1e-13)
    assert err == pytest.approx(math.exp(f) * df, rel=1e-9)
    assert err > 0


def test_ten_or_fewer_tokens_give_zero_uncertainties_and_eleven_do_not():
    rng = np.random.default_rng(3)
    for n in (1, 2, 10):
        x = rng.gamma(2.0, 1.0, size=n)
        assert metrics.perplexity(x)[1] == 0.0
        ref, var, t = random_pair(rng, n, 9)
        s = metrics.kl_summary(metrics.token_stats(ref, var, t))
        for key in ("mean_err", "dp_mean_err", "dp_rms_err", "same_top_err", "ppl_err", "ppl_ref_err",
                    "ln_ratio_err", "ppl_ratio_err", "ppl_diff_err"):
            assert s[key] == 0.0, (n, key)
        assert s["cor_ln_ppl"] is None
    x = rng.gamma(2.0, 1.0, size=11)
    assert metrics.perplexity(x)[1] > 0.0


def test_perplexity_of_no_tokens_is_refused():
    with pytest.raises(ValueError):
        metrics.perplexity(np.zeros(0))


def test_the_covariance_term_is_dropped_below_ten_tokens_and_used_from_ten():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    b = a[::-1].copy()  # perfectly anti-correlated: covariance < 0
    for n in (9, 10):
        st = TokenStats(nll_ref=b[:n], nll_var=a[:n], kld=np.zeros(n), dp=np.zeros(n),
                        same_top=np.ones(n, dtype=bool))
        s = metrics.kl_summary(st)
        if n == 9:
            assert s["ln_ratio_err"] == 0.0
        else:
            # at N == 10 the tool's errors are still 0 but its covariance is not: err = sqrt(-2 cov)
            cov = loop_cov(list(a), list(b))
            assert cov < 0
            assert s["ln_ratio_err"] == pytest.approx(math.sqrt(-2 * cov), rel=1e-12)


# ------------------------------------------------------------------------------------------ percentiles


def test_percentiles_interpolate_linearly_at_the_fraction_times_n_minus_one():
    v = np.array([0.0, 10.0, 20.0, 30.0, 40.0])
    # positions f*(N-1) with N-1 = 4
    assert metrics.percentile(v, 0.75) == pytest.approx(30.0)          # 3.0
    assert metrics.percentile(v, 0.1) == pytest.approx(4.0, rel=1e-6)   # 0.4 -> 0.6*0 + 0.4*10
    assert metrics.percentile(v, 0.999) == pytest.approx(39.96, rel=1e-6)  # 3.996 -> 30 + 0.996*10
    assert metrics.percentile(v, 0.0) == 0.0 and metrics.percentile(v, 1.0) == 40.0
    assert metrics.median(v) == 20.0
    assert metrics.median(np.array([1.0, 2.0, 4.0, 8.0])) == 3.0
    assert metrics.percentile(np.array([7.0]), 0.5) == 7.0


def test_percentile_positions_are_single_precision_like_the_tool():
    v = np.arange(17002, dtype=np.float64)
    pos = float(np.float32(0.999) * np.float32(17001))  # the C code: float fraction * float(size-1)
    assert pos == 16984.0 and 0.999 * 17001 < 16984.0  # single and double precision disagree here
    assert metrics.percentile(v, 0.999) == pos


def test_kl_summary_percentiles_and_extremes_match_hand_values():
    n = 101
    rng = np.random.default_rng(4)
    kld = rng.permutation(np.arange(n) / 100.0)           # sorted: 0.00 … 1.00, position f*100
    dp = rng.permutation(np.arange(n) / 50.0 - 1.0)        # sorted: -1.00 … 1.00
    st = TokenStats(nll_ref=rng.random(n), nll_var=rng.random(n), kld=kld, dp=dp,
                    same_top=np.arange(n) % 4 != 0)
    s = metrics.kl_summary(st)
    assert s["max"] == 1.0 and s["min"] == 0.0 and s["median"] == 0.5
    for key, f in (("p99_9", 0.999), ("p99", 0.99), ("p95", 0.95), ("p90", 0.9), ("p10", 0.1), ("p5", 0.05),
                   ("p1", 0.01), ("p0_1", 0.001)):
        assert s[key] == pytest.approx(f, abs=1e-6), key
    for key, f in (("dp_p99_9", 0.999), ("dp_p75", 0.75), ("dp_p25", 0.25), ("dp_p0_1", 0.001)):
        assert s[key] == pytest.approx(2 * f - 1, abs=1e-6), key
    assert s["dp_max"] == 1.0 and s["dp_min"] == -1.0 and s["dp_median"] == pytest.approx(0.0, abs=1e-15)
    same = 75 / 101
    assert s["same_top"] == pytest.approx(same)
    assert s["same_top_err"] == pytest.approx(math.sqrt(same * (1 - same) / 100))


# ---------------------------------------------------------------------------------------- token stats


def test_token_stats_equal_a_direct_loop_computation():
    rng = np.random.default_rng(5)
    ref, var, t = random_pair(rng, 8, 13, noise=1.0)
    var[3] = ref[3]                      # one row identical
    var[5, first_argmax(ref[5])] = 99.0  # one row whose top token surely agrees
    st = metrics.token_stats(ref, var, t)
    for i in range(8):
        lr, lv = loop_log_probs(ref[i]), loop_log_probs(var[i])
        kl = math.fsum(math.exp(a) * (a - b) for a, b in zip(lr, lv))
        assert st.kld[i] == pytest.approx(kl, rel=1e-9, abs=1e-14)
        assert st.nll_ref[i] == pytest.approx(-lr[t[i]], rel=1e-12)
        assert st.nll_var[i] == pytest.approx(-lv[t[i]], rel=1e-12)
        assert st.dp[i] == pytest.approx(math.exp(lv[t[i]]) - math.exp(lr[t[i]]), rel=1e-9, abs=1e-15)
        assert bool(st.same_top[i]) == (first_argmax(list(ref[i])) == first_argmax(list(var[i])))
    assert st.same_top[3] and st.same_top[5] and st.kld[3] == 0.0


def test_a_variant_compared_with_itself_has_zero_kld_zero_dp_and_the_same_top_token_everywhere():
    rng = np.random.default_rng(6)
    ref, _, t = random_pair(rng, 150, 31)
    st = metrics.token_stats(ref, ref.copy(), t)
    assert np.all(st.kld == 0.0) and np.all(st.dp == 0.0) and st.same_top.all()
    s = metrics.kl_summary(st)
    assert s["mean"] == 0.0 and s["max"] == 0.0 and s["same_top"] == 1.0 and s["same_top_err"] == 0.0
    assert s["dp_rms"] == 0.0 and s["dp_rms_err"] == 0.0
    assert s["ln_ratio"] == 0.0 and s["ppl_ratio"] == 1.0 and s["ppl_diff"] == 0.0
    assert s["ppl"] == s["ppl_ref"]
    assert s["cor_ln_ppl"] == pytest.approx(1.0, rel=1e-12)


def test_token_stats_refuse_mismatched_shapes_and_nan_logits():
    with pytest.raises(ValueError, match="same shape"):
        metrics.token_stats(np.zeros((3, 5)), np.zeros((3, 6)), np.zeros(3, dtype=int))
    bad = np.zeros((3, 5))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        metrics.token_stats(np.zeros((3, 5)), bad, np.zeros(3, dtype=int))


def test_a_masked_reference_token_contributes_nothing_to_the_kld():
    ref = np.array([[0.0, 0.0, -np.inf]])
    var = np.array([[0.0, 0.0, 0.0]])
    st = metrics.token_stats(ref, var, np.array([0]))
    assert st.kld[0] == pytest.approx(math.log(3 / 2), rel=1e-12)


def test_concatenated_stats_keep_chunk_order():
    rng = np.random.default_rng(7)
    parts = [metrics.token_stats(*random_pair(rng, n, 9)) for n in (4, 0, 3)]
    whole = TokenStats.concat(parts)
    assert len(whole) == 7
    assert np.array_equal(whole.kld, np.concatenate([parts[0].kld, parts[2].kld]))
    assert whole.same_top.dtype == bool
    assert len(TokenStats.concat([])) == 0


def test_token_stats_work_in_blocks_without_full_float64_copies():
    rng = np.random.default_rng(8)
    rows, vocab = 1024, 4096
    ref = rng.normal(size=(rows, vocab)).astype(np.float32)
    var = ref + np.float32(0.01)
    t = rng.integers(0, vocab, size=rows)
    tracemalloc.start()
    metrics.token_stats(ref, var, t)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_full_copy = rows * vocab * 8
    assert peak < one_full_copy


# ------------------------------------------------------------------------------------------ kl_summary


def test_kl_summary_equals_the_tool_formulas_computed_directly_on_random_data():
    rng = np.random.default_rng(9)
    ref, var, t = random_pair(rng, 300, 40, noise=0.8)
    st = metrics.token_stats(ref, var, t)
    s = metrics.kl_summary(st)
    a, b = list(st.nll_var), list(st.nll_ref)
    ln_q, e_q = loop_mean_err(a)
    ln_b, e_b = loop_mean_err(b)
    cov = loop_cov(a, b)
    assert s["ppl"] == pytest.approx(math.exp(ln_q), rel=1e-12)
    assert s["ppl_err"] == pytest.approx(math.exp(ln_q) * e_q, rel=1e-8)
    assert s["ppl_ref"] == pytest.approx(math.exp(ln_b), rel=1e-12)
    assert s["ppl_ref_err"] == pytest.approx(math.exp(ln_b) * e_b, rel=1e-8)
    assert s["cor_ln_ppl"] == pytest.approx(cov / (e_q * e_b), rel=1e-8)
    ln_err = math.sqrt(e_q ** 2 + e_b ** 2 - 2 * cov)
    assert s["ln_ratio"] == pytest.approx(ln_q - ln_b, rel=1e-10)
    assert s["ln_ratio_err"] == pytest.approx(ln_err, rel=1e-6)
    assert s["ppl_ratio"] == pytest.approx(math.exp(ln_q - ln_b), rel=1e-10)
    assert s["ppl_ratio_err"] == pytest.approx(math.exp(ln_q - ln_b) * ln_err, rel=1e-6)
    pq, pb = math.exp(ln_q), math.exp(ln_b)
    assert s["ppl_diff"] == pytest.approx(pq - pb, rel=1e-10)
    assert s["ppl_diff_err"] == pytest.approx(
        math.sqrt((pq * e_q) ** 2 + (pb * e_b) ** 2 - 2 * pq * pb * cov), rel=1e-6)
    k_mean, k_err = loop_mean_err(list(st.kld))
    assert s["mean"] == pytest.approx(k_mean, rel=1e-12) and s["mean_err"] == pytest.approx(k_err, rel=1e-8)
    d = list(st.dp)
    d_mean, d_err = loop_mean_err(d)
    assert s["dp_mean"] == pytest.approx(d_mean, rel=1e-9) and s["dp_mean_err"] == pytest.approx(d_err, rel=1e-8)
    mse, mse_err = loop_mean_err([x * x for x in d])
    assert s["dp_rms"] == pytest.approx(math.sqrt(mse), rel=1e-12)
    assert s["dp_rms_err"] == pytest.approx(0.5 * mse_err / math.sqrt(mse), rel=1e-8)
    assert s["same_top"] == sum(first_argmax(list(r)) == first_argmax(list(v)) for r, v in zip(ref, var)) / 300


def test_kl_summary_has_exactly_the_run_json_keys_and_is_json_safe():
    rng = np.random.default_rng(10)
    s = metrics.kl_summary(metrics.token_stats(*random_pair(rng, 120, 17)))
    expected = {"mean", "mean_err", "max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0_1", "min",
                "dp_mean", "dp_mean_err", "dp_rms", "dp_rms_err", "dp_max", "dp_p99_9", "dp_p99", "dp_p95",
                "dp_p90", "dp_p75", "dp_median", "dp_p25", "dp_p10", "dp_p5", "dp_p1", "dp_p0_1", "dp_min",
                "same_top", "same_top_err", "ppl_ratio", "ppl_ratio_err", "ln_ratio", "ln_ratio_err", "ppl_diff",
                "ppl_diff_err", "cor_ln_ppl", "ppl", "ppl_err", "ppl_ref", "ppl_ref_err"}
    assert set(s) == expected
    assert all(type(v) is float for v in s.values())
    json.dumps(s, allow_nan=False)


def test_a_correlation_with_a_constant_side_is_none_not_nan():
    n = 50
    st = TokenStats(nll_ref=np.full(n, 2.0), nll_var=np.linspace(1, 3, n), kld=np.zeros(n), dp=np.zeros(n),
                    same_top=np.ones(n, dtype=bool))
    s = metrics.kl_summary(st)
    assert s["cor_ln_ppl"] is None
    json.dumps(s, allow_nan=False)


def test_kl_summary_of_no_tokens_is_refused():
    with pytest.raises(ValueError):
        metrics.kl_summary(TokenStats())


# ------------------------------------------------------------------------------------------ scoring plans


def test_corpus_plan_replaces_each_chunks_first_token_by_bos_and_scores_the_second_half():
    tokens = list(range(100, 126))  # 26 tokens, ctx 8 -> 3 chunks, 2 left over
    plan = metrics.corpus_plan(tokens, 8, bos_id=0)
    assert [c.start for c in plan] == [0, 8, 16]
    for c in plan:
        assert isinstance(c, ChunkPlan)
        assert c.tokens == [0] + tokens[c.start + 1:c.start + 8]
        assert c.positions == [4, 5, 6]
        assert c.targets == [tokens[c.start + p + 1] for p in (4, 5, 6)]
    assert 124 not in [t for c in plan for t in c.tokens + c.targets]  # leftover dropped


def test_corpus_plan_keeps_the_first_token_when_the_vocab_adds_no_bos():
    tokens = list(range(50, 71))  # 21 tokens, ctx 7 -> 3 chunks; odd ctx scores 3 … 5
    plan = metrics.corpus_plan(tokens, 7, bos_id=None)
    assert len(plan) == 3
    for c in plan:
        assert c.tokens == tokens[c.start:c.start + 7]
        assert c.positions == [3, 4, 5]
        assert c.targets == tokens[c.start + 4:c.start + 7]


def test_corpus_plan_targets_stay_original_when_a_target_equals_bos():
    tokens = [0, 5, 6, 7, 0, 9, 0, 11]  # ctx 4: chunk 2 starts at 0 and ends with target 0
    plan = metrics.corpus_plan(tokens, 4, bos_id=1)
    assert plan[1].tokens == [1, 9, 0, 11] and plan[1].targets == [11] and plan[0].targets == [7]


def test_a_text_shorter_than_two_contexts_is_refused_with_both_counts_and_a_way_out():
    with pytest.raises(InputTextError) as e:
        metrics.corpus_plan(list(range(1000)), 512, bos_id=None)
    msg = str(e.value)
    assert "1000" in msg and "1024" in msg and "--ctx" in msg and "longer text" in msg and "500" in msg
    metrics.corpus_plan(list(range(1024)), 512, bos_id=None)  # exactly 2·ctx is enough


def test_a_context_too_small_to_score_anything_is_refused():
    with pytest.raises(BadInput, match="at least 3"):
        metrics.corpus_plan(list(range(10)), 2, bos_id=None)


# ------------------------------------------------------------------------------------------ printed block


LABELS = ["====== Perplexity statistics ======", "Mean PPL(Q)                   :",
          "Mean PPL(base)                :", "Cor(ln(PPL(Q)), ln(PPL(base))):", "Mean ln(PPL(Q)/PPL(base))     :",
          "Mean PPL(Q)/PPL(base)         :", "Mean PPL(Q)-PPL(base)         :",
          "====== KL divergence statistics ======", "Mean    KLD:", "Maximum KLD:", "99.9%   KLD:",
          "99.0%   KLD:", "95.0%   KLD:", "90.0%   KLD:", "Median  KLD:", "10.0%   KLD:", " 5.0%   KLD:",
          " 1.0%   KLD:", " 0.1%   KLD:", "Minimum KLD:", "====== Token probability statistics ======",
          "Mean    Δp:", "Maximum Δp:", "99.9%   Δp:", "99.0%   Δp:", "95.0%   Δp:", "90.0%   Δp:",
          "75.0%   Δp:", "Median  Δp:", "25.0%   Δp:", "10.0%   Δp:", " 5.0%   Δp:", " 1.0%   Δp:",
          " 0.1%   Δp:", "Minimum Δp:", "RMS Δp    :", "Same top p:"]


def test_the_kl_block_has_every_label_of_the_tool_in_its_order_with_percent_same_top():
    rng = np.random.default_rng(11)
    st = metrics.token_stats(*random_pair(rng, 120, 17))
    s = metrics.kl_summary(st)
    text = metrics.format_kl_block(s, n_scored=120)
    lines = text.splitlines()
    where = [next(i for i, line in enumerate(lines) if line.startswith(label)) for label in LABELS]
    assert where == sorted(where)
    same_line = lines[where[-1]]
    assert same_line == "Same top p: %6.3f ± %5.3f %%" % (100 * s["same_top"], 100 * s["same_top_err"])
    assert lines[where[1]] == "Mean PPL(Q)                   : %10.6f ± %10.6f" % (s["ppl"], s["ppl_err"])
    assert "float64" in text  # says that PPL(base) and Cor are exact


def test_the_kl_block_takes_its_count_from_per_token_and_is_a_note_below_100_tokens():
    rng = np.random.default_rng(12)
    st = metrics.token_stats(*random_pair(rng, 99, 17))
    s = metrics.kl_summary(st)
    s["per_token"] = [float(x) for x in st.kld]
    note = metrics.format_kl_block(s)
    assert "\n" not in note and "99" in note and "100" in note
    assert "Mean    KLD" in metrics.format_kl_block(s, n_scored=100)
    with pytest.raises(ValueError):
        metrics.format_kl_block(metrics.kl_summary(st))


def test_corpus_target_indices_name_the_tokens_corpus_plan_scores():
    tokens = list(range(1000, 1000 + 45))  # token id = 1000 + its index
    for ctx in (3, 4, 7, 8, 16, 22):
        plan = metrics.corpus_plan(tokens, ctx, bos_id=0)
        targets = [t for chunk in plan for t in chunk.targets]
        assert [tokens[i] for i in metrics.corpus_target_indices(len(tokens), ctx)] == targets
    assert metrics.corpus_target_indices(45, 2) == []
