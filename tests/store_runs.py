"""Run dicts for the run-log tests, shaped as compare.py writes them (docs/run.md).

`full_run` has two variants and an F16 reference, KL statistics with every metrics.py key (cor_ln_ppl null),
generations with alternatives, and awkward values: floats that only repr keeps exact, subnormals, unicode and
control characters in token texts.
"""

from __future__ import annotations

import math
import random

from pythia_compare.runs.runrows import KLD_STATS

TOKENS = ["The", " capital", " of", " France", " is", " Paris", ".", "\n", " Ünïcödé", " 東京", " 🙂", "\t=1+1",
          " \"quoted\"", " O'Brien", " a\x00b", "\ud83d"]


def _entry(spec: str, label: str, n: int, rng: random.Random, quant: str, with_kld: bool) -> dict:
    lp = [-rng.expovariate(0.4) for _ in range(n)]
    lp[0] = 0.1 + 0.2 - 10.0  # not representable in short decimal form
    lp[1] = -5e-324  # the smallest subnormal
    alts = lambda: [{"id": rng.randrange(50304), "text": rng.choice(TOKENS), "prob": p}
                    for p in sorted((rng.random() / 3 for _ in range(3)), reverse=True)]
    gen_tokens = [dict(a[0], top=a) for a in (alts() for _ in range(4))]
    nll = [-x for x in lp]
    ppl = math.exp(sum(nll) / n)
    kld = None
    if with_kld:
        kld = {k: rng.uniform(-1, 1) for k in KLD_STATS}
        kld["cor_ln_ppl"] = None
        kld["per_token"] = [rng.expovariate(20.0) for _ in range(n)]
        kld["dp_per_token"] = [rng.gauss(0, 0.03) for _ in range(n)]
    return {"spec": spec, "label": label,
            "source": {"repo": "RichardErkhov/EleutherAI_-_pythia-410m-deduped-v0-gguf" if quant != "F16" else None,
                       "commit": "0123456789abcdef0123456789abcdef01234567", "file": f"pythia-{quant}.gguf",
                       "sha256": "ab" * 32, "bytes": 433_000_000 + rng.randrange(1000), "quant": quant},
            "ppl": ppl, "ppl_err": ppl / 7.0, "n_scored": n, "token_logprobs": lp,
            "next_token": alts(), "generation": {"text": "".join(t["text"] for t in gen_tokens), "tokens": gen_tokens},
            "kld": kld, "timings": {"load_s": rng.random(), "score_s": 1 / 3, "generate_s": 1e-7}}


def full_run(seed: int = 0, text: str | None = None, n_tokens: int | None = None) -> dict:
    """Two variants + F16 reference, prompt scoring; `text` replaces the input text (tokens stay)."""
    rng = random.Random(seed)
    tokens = TOKENS if n_tokens is None else [TOKENS[i % len(TOKENS)] for i in range(n_tokens)]
    n = len(tokens) - 1
    ref = _entry("F16", "F16", n, rng, "F16", with_kld=False)
    return {"schema": 1, "run_id": None, "created_at": None,
            "input": {"text": text if text is not None else "".join(t for t in tokens if t != "\ud83d"),
                      "n_tokens": len(tokens), "tokens": list(tokens)},
            "params": {"scoring": "prompt", "ctx": 512, "top_k": 3, "max_tokens": 4, "temperature": 0.7,
                       "seed": 1234, "flash_attn": True, "reference": "F16"},
            "variants": [_entry("Q8_0", "Q8_0", n, rng, "Q8_0", True),
                         _entry("step3000:Q4_K_M", "step3000 Q4_K_M", n, rng, "Q4_K_M", True)],
            "reference": ref,
            "versions": {"pythia_compare": "0.1.0", "llama_cpp_python": "0.3.36"}}
