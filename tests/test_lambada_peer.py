"""--scoring lambada against lm-evaluation-harness itself (PyPI lm-eval 0.4.13), the reference for LAMBADA.

lm-eval runs its own lambada_openai definition (the installed task YAML, with only its data source turned into a
local JSONL: `dataset_path: json`) with `--model hf` on the demo suite's step800 checkpoint, offline
(HF_DATASETS_OFFLINE=1). We score the same file with the same checkpoint converted to F32, flash attention off.
Both cut contexts to 64 tokens (lm-eval's max_length, our --ctx), so left truncation is compared too.

The file is made from the demo's held-out text: half the examples end in the word the checkpoint itself
continues with greedily (found with transformers), so a real share of them are greedy hits; the other half end
in the text's own next word.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.sources.convert import convert_checkpoint
from pythia_compare.runs.pool import ModelPool

CTX = 64  # lm-eval's max_length and our --ctx: a good part of the examples are longer, so both truncate


def _examples(demo_dir: Path) -> list[str]:
    """Texts from heldout.txt: each cut before a space; one version ending in the word step800 continues with
    greedily, one in the text's own next word."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    ckpt = demo_dir / "step800"
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    text = (demo_dir / "heldout.txt").read_text(encoding="utf-8")
    cuts = [i for i in range(200, len(text)) if text[i] == " " and not text[i - 1].isspace()]
    out = []
    for i in cuts[::max(1, len(cuts) // 60)]:
        prefix = text[text.rfind("\n", 0, i - 150) + 1:i]
        own = text[i:].split("\n")[0].split(" ")
        if len(own) > 1 and own[1]:
            out.append(prefix + " " + own[1])
        ids = tok.encode(prefix, add_special_tokens=False).ids
        with torch.no_grad():
            new = model.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False)[0, len(ids):].tolist()
        word = ""
        for k, t in enumerate(new):
            piece = tok.decode([t])
            if k == 0 and not (piece.startswith(" ") and piece.strip() and not any(c.isspace() for c in piece[1:])):
                break
            if k > 0 and (not piece or any(c.isspace() for c in piece)):
                break
            word += piece
        if word:
            out.append(prefix + word)
    return out


def _lm_eval(ckpt: Path, data: Path, work: Path) -> tuple[dict, list[dict]]:
    """lm-eval's results for the task and its per-example samples, from `lm-eval run` in a fresh process."""
    import yaml
    import lm_eval

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "lambada" / "lambada_openai.yaml").read_text())
    spec.update(task="lambada_peer", dataset_path="json", dataset_kwargs={"data_files": {"test": str(data)}})
    spec.pop("dataset_name", None)
    spec.pop("tag", None)
    tasks = work / "tasks"
    tasks.mkdir()
    (tasks / "lambada_peer.yaml").write_text(yaml.safe_dump(spec))
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf"),
               TOKENIZERS_PARALLELISM="false")
    out = work / "out"
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
                           f"pretrained={ckpt},dtype=float32,max_length={CTX}", "--tasks", "lambada_peer",
                           "--include_path", str(tasks), "--device", "cpu", "--batch_size", "1", "--log_samples",
                           "--output_path", str(out)], capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["lambada_peer"]
    samples = [json.loads(line) for f in out.rglob("samples_lambada_peer_*.jsonl")
               for line in f.read_text().splitlines() if line.strip()]
    return results, sorted(samples, key=lambda s: s["doc_id"])


@pytest.fixture(scope="module")
def both(tmp_path_factory, demo_dir):
    work = tmp_path_factory.mktemp("lambada_peer")
    texts = _examples(demo_dir)
    data = work / "lambada.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    theirs, samples = _lm_eval(demo_dir / "step800", data, work)
    from pythia_compare.config import Settings

    settings = Settings(db_path=work / "runs.db", home=work / "home", hf_cache_dir=work / "hf", offline=True,
                        hub_endpoint="http://127.0.0.1:9", flash_attn=False)
    gguf = convert_checkpoint(demo_dir / "step800", work / "step800-F32.gguf", "F32")
    pool = ModelPool(settings)
    try:
        run = run_comparison([str(gguf)], "", RunParams(scoring="lambada", ctx=CTX, lambada_file=data),
                             settings=settings, pool=pool)
    finally:
        pool.close()
    return texts, theirs, samples, run


def test_every_examples_is_greedy_and_the_ppl_agree_with_lm_eval_on_a_demo_checkpoint(both):
    texts, theirs, samples, run = both
    ours = run.variants[0].lambada
    assert len(samples) == len(texts) == ours.n
    their_ll = np.array([float(s["resps"][0][0][0]) for s in samples])
    their_greedy = [s["resps"][0][0][1] == "True" for s in samples]  # lm-eval logs both as text
    assert their_greedy == ours.is_greedy
    assert sum(ours.is_greedy) >= 0.2 * ours.n, f"{sum(ours.is_greedy)} hits of {ours.n}: the test proves too little"
    assert sum(run.lambada.truncated) >= 5  # left truncation is compared too
    np.testing.assert_allclose(ours.loglikelihood, their_ll, rtol=1e-3, atol=1e-3)
    assert ours.acc == pytest.approx(theirs["acc,none"], abs=1e-12)
    assert ours.acc_stderr == pytest.approx(theirs["acc_stderr,none"], rel=1e-9)
    assert ours.ppl == pytest.approx(theirs["perplexity,none"], rel=1e-3)


def test_our_bootstrap_ppl_stderr_is_near_lm_evals(both, monkeypatch):
    """lm-eval bootstraps ppl's stderr (100,000 resamples, Python's random); we bootstrap too (10,000, numpy).
    Over the whole file, whose misses have log-likelihoods down to about -60, the bootstrap itself is noisy:
    lm-eval's own estimate moves by about 10% between 10,000 and 100,000 resamples. Over the greedy hits (a
    lighter tail) the two estimators agree closely, checked with lm-eval's own bootstrap_stderr function."""
    from lm_eval.api.metrics import bootstrap_stderr, perplexity

    from pythia_compare.runs import lambada

    _, theirs, _, run = both
    ours = run.variants[0].lambada
    boot = theirs["perplexity_stderr,none"]
    gap = abs(ours.ppl_stderr - boot) / boot
    print(f"\nppl {ours.ppl:.6g} over {ours.n} examples: stderr ours {ours.ppl_stderr:.6g}, lm-eval {boot:.6g} "
          f"({100 * gap:.1f}% apart)")
    assert gap < 0.4
    hits = [ll for ll, g in zip(ours.loglikelihood, ours.is_greedy) if g]
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")  # lm-eval's single-process path: the same draws every time
    theirs_hits = bootstrap_stderr(perplexity, hits, iters=10_000)
    ours_hits = lambada.ppl_stderr(hits)
    print(f"greedy hits ({len(hits)}): stderr ours {ours_hits:.6g}, lm-eval's bootstrap_stderr {theirs_hits:.6g}")
    assert ours_hits == pytest.approx(theirs_hits, rel=0.05)
