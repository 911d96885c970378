"""Metrics: log-softmax, NLL, perplexity ± error, and KL-divergence / Δp / same-top statistics.

Owns the arithmetic that must agree with llama.cpp's `llama-perplexity` (and its `--kl-divergence` mode):
how a corpus is cut into chunks and which positions are scored, the mean ± uncertainty rule, the
percentile interpolation, and the printed statistics block. Pure numpy on arrays handed in; it never
reads files, never loads a model, never imports llama_cpp.

Where we differ from the tool on purpose (all stated in docs/metrics.md):
- the reference log-probs are exact float64, not the tool's uint16 rounding, and the KLD sums over the
  whole vocabulary (the tool skips reference log-probs below -16, an artifact of that rounding);
- every uncertainty is 0 when N <= 10 (the tool's KL-mode rule; its plain perplexity mode and its
  same-top error do not apply it);
- a square root of a negative variance (rounding, or the tool's N == 10 quirk) gives 0, not NaN;
  a value that is undefined (a correlation with a zero-variance side) is None, so results are JSON-safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import BadInput, InputTextError

# Rows of logits are processed in blocks of about this many elements, so the temporary float64 arrays
# stay near 1 MB each (cache-sized, and faster than larger blocks) whatever the number of rows.
_BLOCK_ELEMENTS = 1 << 17

# The tool prints its statistics blocks only from this many scored tokens on.
MIN_TOKENS_FOR_BLOCK = 100

KLD_PERCENTILES = (("p99_9", 0.999), ("p99", 0.990), ("p95", 0.950), ("p90", 0.900),
                   ("p10", 0.100), ("p5", 0.050), ("p1", 0.010), ("p0_1", 0.001))
DP_PERCENTILES = (("dp_p99_9", 0.999), ("dp_p99", 0.990), ("dp_p95", 0.950), ("dp_p90", 0.900),
                  ("dp_p75", 0.750), ("dp_p25", 0.250), ("dp_p10", 0.100), ("dp_p5", 0.050),
                  ("dp_p1", 0.010), ("dp_p0_1", 0.001))


# ---------------------------------------------------------------------------------------------- per row


def _rows(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a 2-D array (rows, vocab) with vocab > 0; got shape {a.shape}")
    return a


def _block_rows(vocab: int) -> int:
    return max(1, _BLOCK_ELEMENTS // vocab)


def _log_softmax_inplace(x: np.ndarray) -> np.ndarray:
    """x: (rows, vocab) float64, overwritten with its log-softmax; returns the probabilities (a new array)."""
    x -= x.max(axis=1, keepdims=True)
    p = np.exp(x)
    s = p.sum(axis=1, keepdims=True)
    x -= np.log(s)
    p /= s
    return p


def nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood per row: logsumexp(logits[i]) - logits[i, targets[i]].

    logits (n, vocab) float32/float64, targets (n,) int -> (n,) float64.
    """
    logits = _rows(logits, "logits")
    targets = np.asarray(targets, dtype=np.int64)
    _check_targets(targets, logits.shape)
    out = np.empty(len(logits), dtype=np.float64)
    step = _block_rows(logits.shape[1])
    rows = np.arange(min(step, len(logits)))
    for a in range(0, len(logits), step):
        x = logits[a:a + step].astype(np.float64)
        out[a:a + step] = _logsumexp_rows(x)[0] - x[rows[:len(x)], targets[a:a + step]]
    return out


def _logsumexp_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x: (rows, vocab) float64. Returns (logsumexp of each row, exp(x - row max)), the second a new array."""
    m = x.max(axis=1)
    e = x - m[:, None]
    np.exp(e, out=e)
    return m + np.log(e.sum(axis=1)), e


def _check_targets(targets: np.ndarray, shape: tuple[int, ...]) -> None:
    if targets.shape != (shape[0],):
        raise ValueError(f"targets must have shape ({shape[0]},) to match logits {shape}; got {targets.shape}")
    if len(targets) and (targets.min() < 0 or targets.max() >= shape[1]):
        raise ValueError(f"target ids must lie in 0..{shape[1] - 1} (the vocab); got {targets.min()}..{targets.max()}")


# ---------------------------------------------------------------------------------------- mean ± error


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error sqrt((E[x²]-E[x]²)/(N-1)), as llama-perplexity's KL mode computes it.

    The error is 0 when N <= 10 or the variance is not positive. Raises ValueError for N == 0.
    The variance is taken about the mean (two passes), which equals E[x²]-E[x]² without its cancellation.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    if n == 0:
        raise ValueError("no values: the mean of zero scored tokens is undefined")
    mean = float(x.mean())
    # A constant sample has zero variance exactly (its float mean may be off by an ulp).
    var = 0.0 if x.min() == x.max() else float(np.mean((x - mean) ** 2))
    err = math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0
    return mean, err


def _covariance(a: np.ndarray, b: np.ndarray) -> float:
    """(E[ab] - E[a]E[b]) / (N-1) as the tool computes it, 0 when N < 10 (the tool's own threshold)."""
    n = len(a)
    if n < 10:
        return 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean()))) / (n - 1)


def _sqrt0(x: float) -> float:
    return math.sqrt(x) if x > 0 else 0.0


def perplexity(nll: np.ndarray) -> tuple[float, float]:
    """(PPL, error) of per-token NLLs (N,): PPL = exp(mean nll), error = PPL * sqrt((E[nll²]-E[nll]²)/(N-1)).

    The error is 0 when N <= 10 (docs/metrics.md's rule; see the module docstring). Raises ValueError for N == 0.
    """
    mean, err = mean_and_uncertainty(nll)
    ppl = math.exp(mean)
    return ppl, ppl * err


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile of an ascending array: linear interpolation at fraction·(N-1).

    Like the tool, the position is computed in single precision (float fraction times float(N-1)), so
    e.g. 0.999 of 17002 values sits at 16984.0, not 16983.999. fraction <= 0 gives the minimum, >= 1 the maximum.
    """
    v = np.asarray(sorted_values, dtype=np.float64)
    if len(v) == 0:
        raise ValueError("percentile of an empty array")
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    pos = np.float32(fraction) * np.float32(len(v) - 1)
    ip = int(pos)
    w = float(pos - np.float32(ip))
    return float((1 - w) * v[ip] + w * v[min(ip + 1, len(v) - 1)])


def median(sorted_values: np.ndarray) -> float:
    """The tool's median: the middle value, or the mean of the two middle values for even N."""
    v = np.asarray(sorted_values, dtype=np.float64)
    n = len(v)
    if n == 0:
        raise ValueError("median of an empty array")
    return float(v[n // 2]) if n % 2 else float(0.5 * (v[n // 2] + v[n // 2 - 1]))


# ------------------------------------------------------------------------------------------ scoring plan


@dataclass
class ChunkPlan:
    """One corpus chunk: what to feed the model and which logits to score."""

    tokens: list[int]     # ctx token ids fed to the model; the first replaced by BOS when the vocab adds BOS
    positions: list[int]  # logit positions scored: ctx//2 … ctx-2
    targets: list[int]    # the original token ids at positions+1 (what each scored position predicts)
    start: int            # offset of tokens[0] in the whole text's token list


def _scored_positions(ctx: int) -> list[int]:
    """The positions of a corpus chunk whose logits are scored: ctx//2 … ctx-2 (each predicts the next token)."""
    return list(range(ctx // 2, ctx - 1))


def corpus_target_indices(n_tokens: int, ctx: int) -> list[int]:
    """Corpus mode: the index, in the whole text's token list, of the token each scored position predicts, in
    scoring order (corpus_plan's layout: n_tokens // ctx chunks, leftover dropped; chunk positions
    ctx//2 + 1 … ctx - 1). What a run's token_logprobs line up with; [] when ctx < 3."""
    if ctx < 3:
        return []
    return [start + p + 1 for start in range(0, (n_tokens // ctx) * ctx, ctx) for p in _scored_positions(ctx)]


def corpus_plan(tokens: list[int], ctx: int, bos_id: int | None) -> list[ChunkPlan]:
    """Cut a whole-text tokenization into llama-perplexity's chunks.

    `tokens` is the text tokenized whole, as the tool does it (with add_special, so with the leading BOS
    when the vocab adds one). It is split into len(tokens)//ctx chunks of ctx tokens, leftover dropped.
    When bos_id is not None (the vocab adds BOS) the first token of every chunk is replaced by it for
    evaluation; the targets are always the original tokens. Positions ctx//2 … ctx-2 are scored
    (ctx - 1 - ctx//2 per chunk). Raises InputTextError when len(tokens) < 2·ctx, BadInput when ctx < 3.
    """
    n = len(tokens)
    if ctx < 3:
        raise BadInput(f"--ctx {ctx} is too small for corpus scoring: it scores positions ctx/2 … ctx-2 of each "
                       f"chunk, so ctx must be at least 3 (llama-perplexity's default is 512)")
    if n < 2 * ctx:
        largest = n // 2
        smaller = (f"a smaller --ctx (at most {largest})" if largest >= 3 else "prompt scoring")
        raise InputTextError(f"the text has {n} tokens; corpus scoring with --ctx {ctx} needs at least {2 * ctx} "
                             f"(two chunks of {ctx}); {smaller} or a longer text would work")
    positions = _scored_positions(ctx)
    plan = []
    for start in range(0, (n // ctx) * ctx, ctx):
        original = [int(t) for t in tokens[start:start + ctx]]
        fed = list(original)
        if bos_id is not None:
            fed[0] = int(bos_id)
        plan.append(ChunkPlan(tokens=fed, positions=list(positions),
                              targets=[original[p + 1] for p in positions], start=start))
    return plan


# ------------------------------------------------------------------------------------- token statistics


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.float64)


@dataclass
class TokenStats:
    """Per scored token, aligned arrays (N,): reference vs variant."""

    nll_ref: np.ndarray = field(default_factory=_empty)   # float64, -log p_ref(tok)
    nll_var: np.ndarray = field(default_factory=_empty)   # float64, -log p_var(tok)
    kld: np.ndarray = field(default_factory=_empty)       # float64, Σ p_ref (log p_ref - log p_var)
    dp: np.ndarray = field(default_factory=_empty)        # float64, p_var(tok) - p_ref(tok)
    same_top: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # argmax equal

    def __len__(self) -> int:
        return len(self.kld)

    @classmethod
    def concat(cls, parts: Sequence["TokenStats"]) -> "TokenStats":
        """Join the statistics of several chunks, in order."""
        if not parts:
            return cls()
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("nll_ref", "nll_var", "kld", "dp", "same_top")))


def token_stats(ref_logits: np.ndarray, var_logits: np.ndarray, targets: np.ndarray) -> TokenStats:
    """Reference-vs-variant statistics of one chunk.

    ref_logits, var_logits: (n, vocab) float32/float64, row i of both scoring the same position;
    targets: (n,) int, the token each row predicts. Rows are processed in blocks, so the memory used on
    top of the inputs is a few (block, vocab) float64 arrays. Raises ValueError on mismatched shapes or
    non-finite results (NaN/inf logits).
    """
    ref = _rows(ref_logits, "ref_logits")
    var = _rows(var_logits, "var_logits")
    if ref.shape != var.shape:
        raise ValueError(f"reference logits {ref.shape} and variant logits {var.shape} must have the same shape")
    t = np.asarray(targets, dtype=np.int64)
    _check_targets(t, ref.shape)
    n = len(ref)
    out = TokenStats(np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=bool))
    step = _block_rows(ref.shape[1])
    for a in range(0, n, step):
        b = min(n, a + step)
        rows = np.arange(b - a)
        tb = t[a:b]
        out.same_top[a:b] = ref[a:b].argmax(axis=1) == var[a:b].argmax(axis=1)
        xr = ref[a:b].astype(np.float64)
        xv = var[a:b].astype(np.float64)
        lse_r, p_ref = _logsumexp_rows(xr)
        p_ref /= p_ref.sum(axis=1, keepdims=True)
        lse_v = _logsumexp_rows(xv)[0]
        out.nll_ref[a:b] = lse_r - xr[rows, tb]
        out.nll_var[a:b] = lse_v - xv[rows, tb]
        out.dp[a:b] = np.exp(-out.nll_var[a:b]) - np.exp(-out.nll_ref[a:b])
        # Σ p_ref (log p_ref - log p_var) = Σ p_ref (x_ref - x_var) - lse_ref + lse_var, as Σ p_ref = 1:
        # one exp per model, and exactly 0 for identical rows.
        xr -= xv
        kl = np.einsum("ij,ij->i", p_ref, xr)
        off = ~np.isfinite(kl)
        if off.any():  # 0·log 0 = 0: a token the reference rules out (p_ref = 0, a -inf logit) adds nothing
            d = xr[off]
            d[p_ref[off] == 0] = 0.0
            kl[off] = np.einsum("ij,ij->i", p_ref[off], d)
        out.kld[a:b] = kl - lse_r + lse_v
        bad = ~(np.isfinite(out.kld[a:b]) & np.isfinite(out.nll_var[a:b]) & np.isfinite(out.nll_ref[a:b]))
        if bad.any():
            raise ValueError(f"non-finite statistics at scored row {a + int(np.argmax(bad))}: "
                             f"the logits hold NaN or infinite values")
    return out


# --------------------------------------------------------------------------------------------- summary


def kl_summary(stats: TokenStats) -> dict:
    """The run JSON's "kld" object (minus per_token / dp_per_token) plus ppl, ppl_err, ppl_ref, ppl_ref_err.

    All values are plain floats; fractions (same_top) are 0..1. cor_ln_ppl is the tool's
    cov / (err_var · err_ref), which is the Pearson correlation of per-token nll; it is None when either
    error is 0 (N <= 10, or a side with zero variance). Raises ValueError for N == 0.
    """
    n = len(stats)
    if n == 0:
        raise ValueError("no scored tokens: KL statistics need at least one")
    nll_v = np.asarray(stats.nll_var, dtype=np.float64)
    nll_r = np.asarray(stats.nll_ref, dtype=np.float64)
    kld = np.sort(np.asarray(stats.kld, dtype=np.float64))
    dp = np.asarray(stats.dp, dtype=np.float64)
    dps = np.sort(dp)

    ln_v, ln_v_err = mean_and_uncertainty(nll_v)
    ln_r, ln_r_err = mean_and_uncertainty(nll_r)
    cov = _covariance(nll_v, nll_r)
    ppl, ppl_ref = math.exp(ln_v), math.exp(ln_r)
    ppl_err, ppl_ref_err = ppl * ln_v_err, ppl_ref * ln_r_err
    ln_ratio = ln_v - ln_r
    ln_ratio_err = _sqrt0(ln_v_err ** 2 + ln_r_err ** 2 - 2.0 * cov)
    ppl_ratio = math.exp(ln_ratio)
    ppl_diff_err = _sqrt0(ppl_err ** 2 + ppl_ref_err ** 2 - 2.0 * ppl * ppl_ref * cov)
    cor = cov / (ln_v_err * ln_r_err) if ln_v_err > 0 and ln_r_err > 0 else None

    out: dict = {}
    out["mean"], out["mean_err"] = mean_and_uncertainty(kld)
    out["max"] = float(kld[-1])
    for key, f in KLD_PERCENTILES[:4]:
        out[key] = percentile(kld, f)
    out["median"] = median(kld)
    for key, f in KLD_PERCENTILES[4:]:
        out[key] = percentile(kld, f)
    out["min"] = float(kld[0])

    out["dp_mean"], out["dp_mean_err"] = mean_and_uncertainty(dp)
    mse, mse_err = mean_and_uncertainty(dp * dp)
    out["dp_rms"] = math.sqrt(mse)
    # 0.5·err(Δp²)/RMS; when RMS is 0 every Δp is 0, and so is the spread.
    out["dp_rms_err"] = 0.5 * mse_err / out["dp_rms"] if out["dp_rms"] > 0 else 0.0
    out["dp_max"] = float(dps[-1])
    for key, f in DP_PERCENTILES[:5]:
        out[key] = percentile(dps, f)
    out["dp_median"] = median(dps)
    for key, f in DP_PERCENTILES[5:]:
        out[key] = percentile(dps, f)
    out["dp_min"] = float(dps[0])

    same = float(np.count_nonzero(stats.same_top)) / n
    out["same_top"] = same
    out["same_top_err"] = _sqrt0(same * (1.0 - same) / (n - 1)) if n > 10 else 0.0

    out.update(ppl_ratio=ppl_ratio, ppl_ratio_err=ppl_ratio * ln_ratio_err, ln_ratio=ln_ratio,
               ln_ratio_err=ln_ratio_err, ppl_diff=ppl - ppl_ref, ppl_diff_err=ppl_diff_err, cor_ln_ppl=cor,
               ppl=ppl, ppl_err=ppl_err, ppl_ref=ppl_ref, ppl_ref_err=ppl_ref_err)
    return {k: (None if v is None else float(v)) for k, v in out.items()}


def format_kl_block(summary: dict, n_scored: int | None = None) -> str:
    """llama-perplexity's final statistics blocks (same labels, order and number formats).

    `summary` is kl_summary()'s dict or the run JSON's "kld" object. The number of scored tokens is
    n_scored, else len(summary["per_token"]). Below MIN_TOKENS_FOR_BLOCK tokens it returns a one-line
    note instead, as the tool prints nothing there. A last line says that PPL(base) and Cor come from
    exact float64 reference log-probs (the tool's come from its uint16-rounded ones).
    """
    if n_scored is None:
        if summary.get("per_token") is None:
            raise ValueError("format_kl_block needs n_scored, or a summary holding per_token")
        n_scored = len(summary["per_token"])
    if n_scored < MIN_TOKENS_FOR_BLOCK:
        return (f"KL statistics block not shown: {n_scored} scored tokens "
                f"(llama-perplexity prints it from {MIN_TOKENS_FOR_BLOCK} on)")
    s = summary
    cor = "   n/a%" if s["cor_ln_ppl"] is None else "%6.2f%%" % (100.0 * s["cor_ln_ppl"])
    pm = lambda v, e: "%10.6f ± %10.6f" % (v, e)  # noqa: E731
    lines = [
        "====== Perplexity statistics ======",
        "Mean PPL(Q)                   : " + pm(s["ppl"], s["ppl_err"]),
        "Mean PPL(base)                : " + pm(s["ppl_ref"], s["ppl_ref_err"]),
        "Cor(ln(PPL(Q)), ln(PPL(base))): " + cor,
        "Mean ln(PPL(Q)/PPL(base))     : " + pm(s["ln_ratio"], s["ln_ratio_err"]),
        "Mean PPL(Q)/PPL(base)         : " + pm(s["ppl_ratio"], s["ppl_ratio_err"]),
        "Mean PPL(Q)-PPL(base)         : " + pm(s["ppl_diff"], s["ppl_diff_err"]),
        "",
        "====== KL divergence statistics ======",
        "Mean    KLD: " + pm(s["mean"], s["mean_err"]),
        "Maximum KLD: %10.6f" % s["max"],
        "99.9%%   KLD: %10.6f" % s["p99_9"],
        "99.0%%   KLD: %10.6f" % s["p99"],
        "95.0%%   KLD: %10.6f" % s["p95"],
        "90.0%%   KLD: %10.6f" % s["p90"],
        "Median  KLD: %10.6f" % s["median"],
        "10.0%%   KLD: %10.6f" % s["p10"],
        " 5.0%%   KLD: %10.6f" % s["p5"],
        " 1.0%%   KLD: %10.6f" % s["p1"],
        " 0.1%%   KLD: %10.6f" % s["p0_1"],
        "Minimum KLD: %10.6f" % s["min"],
        "",
        "====== Token probability statistics ======",
        "Mean    Δp: %6.3f ± %5.3f %%" % (100.0 * s["dp_mean"], 100.0 * s["dp_mean_err"]),
        "Maximum Δp: %6.3f%%" % (100.0 * s["dp_max"]),
    ]
    for label, key in (("99.9%   ", "dp_p99_9"), ("99.0%   ", "dp_p99"), ("95.0%   ", "dp_p95"),
                       ("90.0%   ", "dp_p90"), ("75.0%   ", "dp_p75"), ("Median  ", "dp_median"),
                       ("25.0%   ", "dp_p25"), ("10.0%   ", "dp_p10"), (" 5.0%   ", "dp_p5"),
                       (" 1.0%   ", "dp_p1"), (" 0.1%   ", "dp_p0_1")):
        lines.append(label + "Δp: %6.3f%%" % (100.0 * s[key]))
    lines += [
        "Minimum Δp: %6.3f%%" % (100.0 * s["dp_min"]),
        "RMS Δp    : %6.3f ± %5.3f %%" % (100.0 * s["dp_rms"], 100.0 * s["dp_rms_err"]),
        "Same top p: %6.3f ± %5.3f %%" % (100.0 * s["same_top"], 100.0 * s["same_top_err"]),
        "",
        "(PPL(base) and Cor use exact float64 reference log-probs; llama-perplexity uses its uint16-rounded ones.)",
    ]
    return "\n".join(lines)
