"""LAMBADA (runs/lambada.py, `--scoring lambada`) and the tokenizer-independent corpus figures (bits per byte,
word perplexity) against lm-eval's own definitions, the run they are stored in, and the bad inputs they refuse.

lm-eval's pieces used here are its installed task YAML (rendered with jinja2, as lm-eval renders it) and its
metric functions (lm_eval.api.metrics); the model-level comparison is tests/test_lambada_peer.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pythia_compare.errors import BadInput
from pythia_compare.runs import lambada, metrics
from pythia_compare.runs.compare import RunParams, run_comparison
from pythia_compare.runs.export import LAMBADA_CSV_COLUMNS, run_to_zip
from pythia_compare.runs.pool import ModelPool
from pythia_compare.runs.store import RunStore
from tests.fakehub import FakeHub
from tests.support import ROOT, run_cli

DEMO_FILE = ROOT / "assets" / "demo" / "lambada.jsonl"
FOUR = ["demo", "demo:Q2_K", "demo@step100", "demo@step300"]

TRICKY = ["He said it was the  end", "line one\nline two ends here", "tab\tinside the last\tword",
          "accents café naïve fiancée", "a b", "  leading spaces then words", "the end.", "quote \"end\""]


# ------------------------------------------------------------------------------------------ the definition


def test_the_context_and_target_are_lm_evals_templates_rendered_as_lm_eval_renders_them():
    import jinja2
    import lm_eval
    import yaml

    spec = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "lambada" / "lambada_openai.yaml").read_text())
    env = jinja2.Environment()
    for text in TRICKY:
        doc = {"text": text}
        expected = (env.from_string(spec["doc_to_text"]).render(**doc),
                    env.from_string(spec["doc_to_target"]).render(**doc))
        assert lambada.split(text) == expected, text


def test_the_target_keeps_the_contexts_trailing_space_as_lm_evals_encode_pair_does():
    def tok(s: str) -> list[int]:  # one id per character: the split point is plain to see
        return [ord(c) for c in s]

    ctx, cont = lambada.encode_pair(tok, *lambada.split("double  space"))
    assert "".join(map(chr, ctx)) == "double" and "".join(map(chr, cont)) == "  space"


def test_a_long_context_is_cut_from_the_left_to_ctx_tokens_and_the_target_positions_follow():
    ctx, cont = list(range(100)), [500, 501]
    tokens, positions = lambada.window(ctx, cont, 16)
    assert tokens == (ctx + cont)[-17:-1] and len(tokens) == 16
    assert positions == [14, 15]  # the logits there predict 500 and 501
    tokens, positions = lambada.window([1, 2, 3], [9], 16)
    assert tokens == [1, 2, 3] and positions == [2]
    with pytest.raises(BadInput, match="raise --ctx"):
        lambada.window(ctx, list(range(20)), 16)


def test_score_sums_the_targets_log_probabilities_and_is_greedy_needs_every_argmax():
    logits = np.log(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]]))
    ll, greedy = lambada.score(logits, [1, 0])
    assert ll == pytest.approx(math.log(0.7) + math.log(0.5)) and greedy
    ll, greedy = lambada.score(logits, [1, 2])
    assert ll == pytest.approx(math.log(0.7) + math.log(0.3)) and not greedy


def test_acc_ppl_and_their_stderrs_are_lm_evals_on_the_same_examples(monkeypatch):
    from lm_eval.api.metrics import bootstrap_stderr, mean, mean_stderr, perplexity

    rng = np.random.default_rng(5)
    ll = list(-rng.gamma(2.0, 1.5, size=300))
    greedy = list(rng.random(300) < 0.4)
    got = lambada.summary(ll, greedy)
    assert got["n"] == 300
    assert got["acc"] == pytest.approx(mean([int(g) for g in greedy]), abs=1e-15)
    assert got["acc_stderr"] == pytest.approx(mean_stderr([int(g) for g in greedy]), rel=1e-12)
    assert got["ppl"] == pytest.approx(perplexity(ll), rel=1e-12)
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    assert got["ppl_stderr"] == pytest.approx(bootstrap_stderr(perplexity, ll, iters=10_000), rel=0.05)
    assert lambada.summary(ll, greedy)["ppl_stderr"] == got["ppl_stderr"]  # seeded: one value per set of examples
    assert lambada.summary(ll[:1], greedy[:1])["acc_stderr"] is None  # lm-eval reports N/A for one example


# ------------------------------------------------------------------------------------------ bad files, limits


GOOD = '{"text": "the cat sat on the mat"}\n'


@pytest.mark.parametrize("data, line, words", [
    (GOOD + "not json\n", 2, "is not JSON"),
    (GOOD + '{"txt": "a b"}\n', 2, 'has no "text" key'),
    (GOOD + '["a b"]\n', 2, 'has no "text" key'),
    (GOOD + '{"text": 7}\n', 2, "must be a string"),
    (GOOD + '{"text": "lonely"}\n', 2, "has one word"),
    (GOOD + "\n" + GOOD, 2, "is blank"),
    (GOOD + GOOD + "\n", 3, "is blank"),
    ('{"text": "ends in a space "}\n' + GOOD, 1, "ends in whitespace"),
])
def test_a_bad_line_is_refused_naming_its_line_and_what_would_work(data, line, words):
    with pytest.raises(lambada.LambadaFileError) as e:
        lambada.parse(data.encode(), "mine.jsonl")
    msg = str(e.value)
    assert f"mine.jsonl, line {line}" in msg and words in msg


def test_a_file_too_large_not_utf8_or_empty_is_refused_saying_what_works():
    with pytest.raises(lambada.LambadaFileError, match=r"is 101 bytes; the limit is 100 bytes"):
        lambada.parse(b"x" * 101, "big.jsonl", max_bytes=100)
    with pytest.raises(lambada.LambadaFileError, match="not UTF-8"):
        lambada.parse(b'{"text": "a \xff"}\n', "latin.jsonl")
    with pytest.raises(lambada.LambadaFileError, match="holds no examples"):
        lambada.parse(b"", "empty.jsonl")
    assert [e.line for e in lambada.parse((GOOD * 3).encode())] == [1, 2, 3]


@pytest.mark.parametrize("limit, words", [(0, "not a number of examples; use 1 … 64"),
                                          (-3, "not a number of examples"),
                                          ("ten", "must be a whole number of examples, not 'ten'"),
                                          (2.5, "must be a whole number"),
                                          (65, "more than the 64 examples")])
def test_a_limit_that_is_not_a_count_of_the_examples_is_refused_with_the_range(limit, words):
    with pytest.raises(lambada.LambadaFileError, match=re.escape(words)):
        lambada.check_limit(limit, 64)


def test_public_mode_caps_the_limit():
    assert lambada.check_limit(lambada.PUBLIC_MAX_LIMIT, 5153, public=True) == lambada.PUBLIC_MAX_LIMIT
    with pytest.raises(lambada.LambadaFileError, match=f"public mode scores at most {lambada.PUBLIC_MAX_LIMIT}"):
        lambada.check_limit(lambada.PUBLIC_MAX_LIMIT + 1, 5153, public=True)


# ------------------------------------------------------------------------------------------ section 3: corpus


def test_bits_per_byte_and_word_perplexity_are_lm_evals_on_the_same_log_likelihoods_and_counts():
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    rng = np.random.default_rng(1)
    nll = rng.gamma(2.0, 1.2, size=400)
    sizes = rng.integers(1, 7, size=400)
    words = rng.integers(0, 2, size=400)
    items_b = [(-x, int(b)) for x, b in zip(nll, sizes)]  # lm-eval's items: (log-likelihood, weight)
    items_w = [(-x, int(w)) for x, w in zip(nll, words)]
    assert metrics.bits_per_byte(nll, int(sizes.sum())) == pytest.approx(bits_per_byte(items_b), rel=1e-12)
    assert metrics.word_perplexity(nll, int(words.sum())) == pytest.approx(weighted_perplexity(items_w), rel=1e-12)
    assert metrics.bits_per_byte(nll, 0) is None and metrics.word_perplexity(nll, 0) is None


def test_bytes_and_words_of_every_token_are_the_texts_bytes_and_its_whitespace_split_words():
    text = "The  quick\tbrown fox\n\njumps — über 12.5 lazy dogs. "
    pieces, rest = [], text.encode("utf-8")
    while rest:  # cut anywhere, even inside a character, as byte-level tokens may be
        k = 1 + len(pieces) % 4
        pieces.append(rest[:k])
        rest = rest[k:]
    sizes, words = metrics.bytes_and_words(pieces, list(range(len(pieces))))
    assert sizes.sum() == len(text.encode("utf-8"))
    assert words.sum() == len(text.split())  # lm-eval's wikitext counts re.split(r"\s+", ...) pieces
    sizes, words = metrics.bytes_and_words(pieces, list(range(3, len(pieces))))  # the first tokens unscored
    assert sizes.sum() == len(text.encode("utf-8")) - sum(len(p) for p in pieces[:3])


def test_a_corpus_run_stores_bits_per_byte_and_word_perplexity_of_its_scored_tokens(settings):
    from pythia_compare.runs.metrics import corpus_target_indices

    text = (ROOT / "assets" / "demo" / "heldout.txt").read_text(encoding="utf-8")[:6000]
    pool = ModelPool(settings)
    try:
        run = run_comparison(["demo", "demo:Q2_K"], text, RunParams(scoring="corpus", ctx=128, max_tokens=0),
                             settings=settings, pool=pool)
    finally:
        pool.close()
    idx = corpus_target_indices(run.input.n_tokens, 128)
    scored = "".join(run.input.tokens[i] for i in idx)
    assert run.input.n_bytes == len(scored.encode("utf-8"))  # the demo text is ASCII: no <0xNN> tokens
    for e in run.entries():
        nll = -np.asarray(e.token_logprobs)
        assert e.bits_per_byte == pytest.approx(nll.sum() / (run.input.n_bytes * math.log(2)), rel=1e-12)
        assert e.word_ppl == pytest.approx(math.exp(nll.sum() / run.input.n_words), rel=1e-12)
        assert e.lambada is None
    assert 0 < run.input.n_words < run.input.n_bytes and run.lambada is None


# ------------------------------------------------------------------------------------------ runs


def _lambada_run(settings, specs=FOUR, **params):
    pool = ModelPool(settings)
    try:
        return run_comparison(specs, "", RunParams(scoring="lambada", ctx=128, **params), settings=settings,
                              pool=pool)
    finally:
        pool.close()


def test_a_lambada_run_of_four_demo_variants_reopens_with_every_number_and_its_zip_holds_lambada_csv(settings):
    run = _lambada_run(settings, lambada_file=DEMO_FILE, limit=24, reference="demo")
    n = 24
    assert run.params.scoring == "lambada" and run.params.max_tokens == 0
    assert run.lambada.file == "lambada.jsonl" and run.lambada.repo is None and run.lambada.limit == n
    assert run.lambada.n_file == 64 and run.lambada.sha256 == hashlib.sha256(DEMO_FILE.read_bytes()).hexdigest()
    texts = [json.loads(x)["text"] for x in DEMO_FILE.read_text().splitlines()[:n]]
    assert run.lambada.targets == [" " + t.split(" ")[-1] for t in texts]
    ref = run.reference.lambada
    for e in run.entries():  # token-level fields stay empty: PPL columns never mix the two perplexities
        assert e.ppl is None and e.n_scored == 0 and e.token_logprobs == [] and e.generation is None
        lam = e.lambada
        assert lam.n == n == len(lam.loglikelihood) == len(lam.is_greedy)
        assert lam.acc == pytest.approx(np.mean(lam.is_greedy))
        assert lam.ppl == pytest.approx(math.exp(-np.mean(lam.loglikelihood)))
        assert lam.acc_stderr is not None and lam.ppl_stderr is not None and lam.ppl_stderr > 0
    for v in run.variants:
        assert v.lambada.agreement == pytest.approx(np.mean(np.equal(v.lambada.is_greedy, ref.is_greedy)))
    assert ref.agreement is None
    store = RunStore(settings.db_path)
    again = store.get_run(store.save(run))
    assert again.to_json() == {**run.to_json(), "run_id": again.run_id, "created_at": again.created_at}
    with zipfile.ZipFile(io.BytesIO(run_to_zip(again))) as z:
        rows = list(csv.reader(io.StringIO(z.read("lambada.csv").decode("utf-8"))))
        summary = list(csv.reader(io.StringIO(z.read("summary.csv").decode("utf-8"))))
    assert rows[0] == list(LAMBADA_CSV_COLUMNS) and len(rows) == 1 + 4 * n
    first = dict(zip(rows[0], rows[1 + n]))  # the first variant's first example
    assert first["spec"] == "demo:Q2_K" and first["example"] == "0" and first["target"] == run.lambada.targets[0]
    assert float(first["loglikelihood"]) == run.variants[0].lambada.loglikelihood[0]
    assert first["is_greedy"] == str(int(run.variants[0].lambada.is_greedy[0]))
    assert summary[0][:7] == ["run_id", "variant", "role", "spec", "repo", "step", "quant"] and "acc" in summary[0]
    assert [r[3] for r in summary[1:]] == FOUR  # the reference first


def test_lambada_from_the_hub_downloads_the_pinned_file_into_the_hf_cache_and_records_the_revision(settings):
    texts = [json.loads(x)["text"] for x in DEMO_FILE.read_text().splitlines()]
    files = {  # the layout of EleutherAI/lambada_openai (docs/metrics.md): the JSONL files under data/
        "README.md": b"---\npretty_name: LAMBADA OpenAI\n---\n",
        "data/lambada_test.jsonl": DEMO_FILE.read_bytes(),
        "data/lambada_test_en.jsonl": DEMO_FILE.read_bytes(),
        "data/lambada_test_de.jsonl": b'{"text": "ein kleiner Test"}\n',
        "lambada_openai.txt": b"backup of the loading script\n",
    }
    with FakeHub() as hub:
        commit = hub.add_dataset("EleutherAI/lambada_openai", files, private=False)
        online = settings.replace(offline=False, hub_endpoint=hub.endpoint, lambada_revision=commit)
        run = _lambada_run(online, specs=["demo"], limit=8)
        got = [r for r in hub.requests if "lambada_test_en.jsonl" in r.path and r.method == "GET"]
    assert run.lambada.repo == "EleutherAI/lambada_openai" and run.lambada.revision == commit
    assert run.lambada.file == "data/lambada_test_en.jsonl" and run.lambada.n_file == len(texts)
    assert got and all(f"/datasets/EleutherAI/lambada_openai/resolve/{commit}/" in r.path for r in got)
    cached = settings.hf_cache_dir / "datasets--EleutherAI--lambada_openai" / "snapshots" / commit / "data"
    assert (cached / "lambada_test_en.jsonl").read_bytes() == DEMO_FILE.read_bytes()
    assert any("not the 4aa8d02cd17c7191" in w for w in run.warnings)  # not the real test split: said so
    offline = _lambada_run(settings.replace(lambada_revision=commit), specs=["demo"], limit=8)  # from the cache
    assert offline.variants[0].lambada.loglikelihood == run.variants[0].lambada.loglikelihood


# ------------------------------------------------------------------------------------------ the CLI


def _base(tmp_path):
    return ["--offline", "--db", str(tmp_path / "runs.db"), "--home", str(tmp_path / "home")]


def test_the_cli_prints_the_lambada_table_and_the_json_holds_the_figures(tmp_path):
    proc = run_cli([*_base(tmp_path), "compare", "demo", "demo:Q2_K", "--scoring", "lambada", "--lambada-file",
                    str(DEMO_FILE), "--limit", "12", "--ctx", "128", "--json"])
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["variants"][0]["lambada"]["n"] == 12 and run["lambada"]["limit"] == 12
    shown = run_cli([*_base(tmp_path), "runs", "show", "--", run["run_id"]], env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert "LAMBADA (lm-eval lambada_openai), 12 of 64 examples of lambada.jsonl" in shown.stdout
    from pythia_compare.runs.report import format_cell

    line = next(x for x in shown.stdout.splitlines() if x.startswith("demo Q2_K")).split()
    lam = run["variants"][0]["lambada"]
    assert line[5:10] == [format_cell(lam[k], c) for k, c in (("acc", "acc"), ("acc_stderr", "acc ±"),
                          ("ppl", "LAMBADA PPL"), ("ppl_stderr", "LAMBADA PPL ±"), ("n", "examples"))]


@pytest.mark.parametrize("extra, words", [
    (["--prompt", "hello there"], "takes no prompt or text"),
    (["--limit", "0"], "limit 0 is not a number of examples"),
    (["--limit", "-2"], "limit -2 is not a number of examples"),
    (["--limit", "many"], "must be a whole number of examples, not 'many'"),
    (["--limit", "65"], "more than the 64 examples"),
])
def test_bad_lambada_input_exits_2_with_a_clear_error_and_writes_no_run(tmp_path, extra, words):
    proc = run_cli([*_base(tmp_path), "compare", "demo", "--scoring", "lambada", "--lambada-file", str(DEMO_FILE),
                    *extra])
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "runs.db").exists() or RunStore(tmp_path / "runs.db").count() == 0


def test_a_bad_lambada_file_exits_2_naming_its_line_and_writes_no_run(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD + '{"text": "solo"}\n')
    proc = run_cli([*_base(tmp_path), "compare", "demo", "--scoring", "lambada", "--lambada-file", str(bad)])
    assert proc.returncode == 2 and "bad.jsonl, line 2" in proc.stderr and "one word" in proc.stderr
    assert not (tmp_path / "runs.db").exists() or RunStore(tmp_path / "runs.db").count() == 0
