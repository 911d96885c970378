"""Run dicts shaped like the run JSON (docs/run.md), for the plots tests: a factory and a few named runs.

Numbers are drawn from a seeded generator and made self-consistent (PPL from the log-probs, KL statistics
from the per-token values), so the tests can check figures against the run's own numbers.
"""

from __future__ import annotations

import math

import numpy as np

from pythia_compare.variants import QUANTS, parse_spec

PROMPT_TOKENS = ["The", " capital", " of", " France", " is", " Paris", ".", "\n", "The", " river", " is"]
VOCAB = [(279, " the"), (198, "\n"), (247, " a"), (3400, " Paris"), (13, "."), (11, ","), (285, " is"),
         (253, " and"), (1386, " Seine"), (275, " in"), (0, "<|endoftext|>"), (2, "  ")]
HUB_BYTES = {"F16": 813_000_000, "Q8_0": 433_000_000, "Q6_K": 335_000_000, "Q4_K_M": 267_000_000,
             "Q2_K": 174_000_000}


def _stats(x: np.ndarray, prefix: str = "") -> dict:
    q = {"p99_9": .999, "p99": .99, "p95": .95, "p90": .9, "p75": .75, "median": .5, "p25": .25, "p10": .1,
         "p5": .05, "p1": .01, "p0_1": .001}
    out = {f"{prefix}{k}": float(np.quantile(x, f)) for k, f in q.items()}
    out.update({f"{prefix}max": float(x.max()), f"{prefix}min": float(x.min()), f"{prefix}mean": float(x.mean()),
                f"{prefix}mean_err": float(x.std(ddof=1) / math.sqrt(len(x)))})
    return out


def make_variant(spec: str, n_scored: int, rng: np.random.Generator, *, top_k: int = 5, scale: float = 1.0,
                 reference: dict | None = None, generate: bool = True) -> dict:
    v = parse_spec(spec)
    quant = v.quant or "F16"
    lp = (-rng.gamma(2.0, 1.6 * scale, size=n_scored)).tolist()
    nll = -np.asarray(lp)
    ppl = float(math.exp(nll.mean()))
    ppl_err = ppl * float(math.sqrt(nll.var() / (n_scored - 1)))
    picks = rng.permutation(len(VOCAB))[:top_k]
    probs = np.sort(rng.dirichlet(np.ones(top_k)) * 0.9)[::-1]
    nxt = [{"id": VOCAB[i][0], "text": VOCAB[i][1], "prob": float(p)} for i, p in zip(picks, probs)]
    gen = None
    if generate:
        toks = []
        for _ in range(6):
            alts = [{"id": VOCAB[i][0], "text": VOCAB[i][1], "prob": float(p)}
                    for i, p in zip(rng.permutation(len(VOCAB))[:3], sorted(rng.dirichlet(np.ones(3)), reverse=True))]
            toks.append(dict(alts[0], top=alts))
        gen = {"text": "".join(t["text"] for t in toks), "tokens": toks}
    kld = None
    if reference is not None:
        per = rng.gamma(0.6, 0.05 * scale, size=n_scored)
        dp = rng.normal(-0.01 * scale, 0.03 * scale, size=n_scored)
        ref_nll = -np.asarray(reference["token_logprobs"])
        kld = _stats(per)
        kld.update(_stats(dp, "dp_"))
        kld.update({"per_token": per.tolist(), "dp_per_token": dp.tolist(),
                    "dp_rms": float(np.sqrt((dp ** 2).mean())), "dp_rms_err": 0.001,
                    "same_top": float(rng.uniform(0.8, 0.99)), "same_top_err": 0.01,
                    "ppl_ratio": ppl / reference["ppl"], "ppl_ratio_err": 0.002,
                    "ln_ratio": math.log(ppl / reference["ppl"]), "ln_ratio_err": 0.001,
                    "ppl_diff": ppl - reference["ppl"], "ppl_diff_err": 0.05,
                    "cor_ln_ppl": float(np.corrcoef(nll, ref_nll)[0, 1])})
    nbytes = HUB_BYTES.get(quant, int(QUANTS[quant].bpw * 405_000_000 / 8))
    return {"spec": v.spec, "label": v.label,
            "source": {"repo": v.repo, "commit": "0" * 40, "file": f"pythia-410m-{quant}.gguf",
                       "sha256": "ab" * 32, "bytes": nbytes, "quant": quant,
                       "bpw": (nbytes - 1_500_000) * 8 / 405_334_016},  # tensor bytes (no metadata) × 8 / params
            "ppl": ppl, "ppl_err": ppl_err, "n_scored": n_scored, "token_logprobs": lp, "next_token": nxt,
            "generation": gen, "kld": kld,
            "timings": {"load_s": float(rng.uniform(0.1, 2)), "score_s": float(rng.uniform(0.1, 2)),
                        "generate_s": float(rng.uniform(0.1, 2))}}


def make_run(specs: list[str], reference: str | None = "F16", *, scoring: str = "prompt", ctx: int = 512,
             tokens: list[str] | None = None, n_scored: int | None = None, seed: int = 0,
             generate: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    tokens = list(tokens or PROMPT_TOKENS)
    n = n_scored if n_scored is not None else len(tokens) - 1
    ref = None
    if reference:
        ref = make_variant(reference, n, rng, generate=generate, scale=0.9)
        ref.pop("kld")
    variants = [make_variant(s, n, rng, reference=ref, generate=generate, scale=1.0 + 0.3 * i)
                for i, s in enumerate(specs)]
    return {"schema": 1, "run_id": f"run{seed:04d}", "created_at": "2025-01-01T00:00:00Z",
            "input": {"text": "".join(tokens), "n_tokens": len(tokens), "tokens": tokens},
            "params": {"scoring": scoring, "ctx": ctx, "top_k": 5, "max_tokens": 6, "temperature": 0.0,
                       "seed": 1, "flash_attn": True, "reference": ref["spec"] if ref else None},
            "variants": variants, "reference": ref,
            "versions": {"pythia_compare": "0.1.0", "llama_cpp_python": "0.3.36"}}


def prompt_run() -> dict:
    """Three quants of the final checkpoint against the F16 reference, prompt mode, with kld and generations."""
    return make_run(["Q8_0", "Q4_K_M", "Q2_K"], reference="F16")


def step_series_run(reference: str = "step143000") -> dict:
    return make_run(["step0", "step512", "step1000", "step16000"], reference=reference, seed=1)


def quant_series_run() -> dict:
    return make_run(["Q8_0", "Q6_K", "Q4_K_M", "Q2_K"], reference="F16", seed=2)


def partial_run() -> dict:
    """A run still streaming: one variant, no reference, no generation yet."""
    return make_run(["step1000"], reference=None, seed=3, generate=False)


def corpus_run(ctx: int, n_chunks: int) -> dict:
    """Corpus mode: n_chunks·ctx tokens plus a dropped leftover; each chunk scores ctx - ctx//2 - 1 targets."""
    tokens = [f" w{i}" for i in range(n_chunks * ctx + 2)]
    return make_run(["Q8_0", "Q4_K_M"], reference="F16", scoring="corpus", ctx=ctx, tokens=tokens,
                    n_scored=n_chunks * (ctx - ctx // 2 - 1), seed=4)
