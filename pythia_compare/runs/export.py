"""A run -> its download formats: CSV for spreadsheets (one tidy row per (model, scored position), a summary row
per model), both in one zip (summary.csv + tokens.csv; a LAMBADA run adds lambada.csv, one row per (model,
example), and a run with the logit lens lens.csv), and the indented run JSON; the exports of the CLI (`runs
export`) and of the page's downloads (dashboard.download).

Owns the CSV layouts of a run. Pure: takes a run (a `run.Run`, or its JSON dict of docs/run.md, read once
through `run.as_run`) and returns text or bytes; never opens the database, a file or a model.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from typing import Iterator

from .metrics import corpus_target_indices
from .report import quant_of, repo_of, shown_entries, step_of
from .run import Run, as_run

COLUMNS = ("run_id", "role", "spec", "label", "repo", "step", "quant", "position", "token_index", "token", "logprob",
           "prob", "surprisal_bits", "kld", "dp")
# summary.csv: the page's summary table (report.SUMMARY_COLUMNS) with these after "spec", so no one parses specs
SUMMARY_EXTRA = ("repo", "step")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def scored_token_indices(run: Run | dict) -> list[int] | None:
    """Index into input.tokens of the token scored at each position of token_logprobs, or None if unknown.

    Prompt mode: position j scores token j + 1. Corpus mode (llama-perplexity's layout): n_tokens // ctx
    chunks, each scoring its chunk positions ctx//2 + 1 … ctx - 1. None when the counts do not line up.
    """
    run = as_run(run)
    tokens = run.input.tokens
    n = max((len(e.token_logprobs) for e in run.entries()), default=0)
    if run.params.scoring == "corpus":
        ctx = run.params.ctx
        if ctx < 4:
            return None
        idx = corpus_target_indices(len(tokens), ctx)
    else:
        idx = list(range(1, len(tokens)))
    return idx if len(idx) >= n else None


def _text(s: object) -> str:
    """A text cell; one a spreadsheet would run as a formula gets a leading apostrophe."""
    s = _LONE_SURROGATE.sub("\ufffd", "" if s is None else str(s))  # so the text encodes as UTF-8
    return "'" + s if s.startswith(_FORMULA_START) else s


def _num(x: object) -> str:
    return "" if x is None else repr(float(x))


def run_to_csv(run: Run | dict) -> str:
    """The run's per-token table as CSV text (header first, CRLF line ends, quoting by the csv module).

    One row per (model, scored position): the reference first (role "reference"), then the variants in order.
    Columns:
      run_id          the run's id (empty if unsaved)
      role            "reference" | "variant"
      spec, label     the model's spec string and its short human name
      repo, step      the repo its file came from (demo: the demo suite; empty: a local file) and the training
                      step of its weights (report.step_of; empty when not known)
      quant           the file's quant (F16, Q8_0, …)
      position        0-based index into the model's token_logprobs (the scored positions)
      token_index     index of the scored token in input.tokens (empty when the layout cannot be aligned)
      token           that token's text
      logprob         natural-log probability the model gave the token
      prob            exp(logprob)
      surprisal_bits  -logprob / ln 2
      kld, dp         the variant's KL divergence from the reference and Δp = p_var - p_ref at that position;
                      empty for the reference and for runs without a reference
    Numbers are written with full precision (Python's repr). Text cells starting with = + - @ or a tab/CR get
    a leading apostrophe so a spreadsheet shows them instead of evaluating them; a lone surrogate (half of a
    character split across tokens) becomes U+FFFD, so the text always encodes as UTF-8.
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for (run_id, role, spec, label, repo, step, quant, j, ti, token, lp, p, bits, kld, dp) in token_rows(run):
        w.writerow([_text(run_id), role, _text(spec), _text(label), _text(repo or ""), _step_cell(step),
                    _text(quant or ""), j, "" if ti is None else ti, "" if ti is None else _text(token), _num(lp),
                    _num(p), _num(bits), _num(kld), _num(dp)])
    return buf.getvalue()


def token_rows(run: Run | dict) -> Iterator[tuple]:
    """The rows of run_to_csv (tokens.csv) as raw values, in its order and COLUMNS: text as it is, numbers as
    floats, None where the CSV cell is empty. The library's Result.tokens() is these rows."""
    run = as_run(run)
    tokens = run.input.tokens
    idx = scored_token_indices(run)
    has_ref = run.reference is not None
    for k, e in enumerate(run.entries()):
        role = "reference" if has_ref and k == 0 else "variant"
        about = (repo_of(e), step_of(e), quant_of(e))
        per = (e.kld.per_token if e.kld else None) or []
        dp = (e.kld.dp_per_token if e.kld else None) or []
        for j, lp in enumerate(e.token_logprobs):
            ti = idx[j] if idx is not None and idx[j] < len(tokens) else None
            yield (run.run_id, role, e.spec, e.label, *about, j, ti, None if ti is None else tokens[ti],
                   None if lp is None else float(lp), None if lp is None else math.exp(lp),
                   None if lp is None else -lp / math.log(2), _at(per, j), _at(dp, j))


def _at(values: list, j: int) -> float | None:
    return float(values[j]) if j < len(values) and values[j] is not None else None


def _step_cell(step: int | None) -> str:
    return "" if step is None else str(step)


def summary_to_csv(run: Run | dict) -> str:
    """One row per model (reference first): run_id, then report.SUMMARY_COLUMNS with SUMMARY_EXTRA (repo, step)
    after "spec" (a LAMBADA run: report.lambada_table's columns, the same way). Numbers at full precision; columns named "… %" in percent, as the page shows them (same top
    99.358, not 0.99358); 'n/a' where a standard error is unknown; empty where missing."""
    from .report import lambada_table, summary_table

    run = as_run(run)
    columns, rows = lambada_table(run) if run.lambada is not None else summary_table(run)
    at = columns.index("spec") + 1
    percent = {i for i, c in enumerate(columns) if c.endswith("%")}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", *columns[:at], *SUMMARY_EXTRA, *columns[at:]])
    for e, r in zip(shown_entries(run), rows):
        cells = ["" if c is None else repr(100.0 * float(c)) if i in percent and isinstance(c, float)
                 else repr(float(c)) if isinstance(c, float) else str(c) if isinstance(c, int)
                 else _text(c) for i, c in enumerate(r)]
        w.writerow([_text(run.run_id), *cells[:at], _text(repo_of(e.entry) or ""), _step_cell(step_of(e.entry)),
                    *cells[at:]])
    return buf.getvalue()


LAMBADA_CSV_COLUMNS = ("run_id", "role", "spec", "label", "example", "target", "target_tokens", "context_tokens",
                       "truncated", "loglikelihood", "is_greedy", "reference_is_greedy")


def lambada_to_csv(run: Run | dict) -> str:
    """A LAMBADA run's per-example table (empty for other runs): one row per (model, example), the reference
    first. example is the 0-based index among the examples scored (the file's line is example + 1); target the
    word predicted (with its leading space); target_tokens and context_tokens the tokens of the target and of the
    context evaluated (after left-truncation to ctx), truncated whether the context was cut; loglikelihood the
    log-probability of the target's tokens (nats); is_greedy 1 when every target token was the argmax, else 0;
    reference_is_greedy the reference's is_greedy for that example (empty without a reference)."""
    run = as_run(run)
    d = run.lambada
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LAMBADA_CSV_COLUMNS)
    if d is None:
        return buf.getvalue()
    has_ref = run.reference is not None
    ref = run.reference.lambada if has_ref and run.reference.lambada else None
    for k, e in enumerate(run.entries()):
        lam = e.lambada
        if lam is None:
            continue
        role = "reference" if has_ref and k == 0 else "variant"
        for i, (ll, greedy) in enumerate(zip(lam.loglikelihood, lam.is_greedy)):
            w.writerow([_text(run.run_id), role, _text(e.spec), _text(e.label), i, _text(d.targets[i]),
                        d.target_tokens[i], d.context_tokens[i], int(d.truncated[i]), _num(ll), int(greedy),
                        int(ref.is_greedy[i]) if ref is not None and i < len(ref.is_greedy) else ""])
    return buf.getvalue()


LENS_COLUMNS = ["run_id", "role", "spec", "label", "position", "token", "layer", "rank_in_layer", "lens_token",
                "lens_prob", "kl_from_baseline", "baseline_top1_rank", "status"]


def lens_to_csv(run: Run | dict) -> str:
    """The logit lens of a lens run as CSV text: one row per (model, asked position, layer, lens token), the
    lens's top tokens in order (rank_in_layer 1 …); kl_from_baseline and baseline_top1_rank repeat on the rows of
    one layer (kl empty for the baseline); status is the entry's lens status (ok / check failed / unavailable,
    the latter with a single row and empty layer cells). Header only for a run without the lens."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LENS_COLUMNS)
    for (run_id, role, spec, label, position, tok, li, r, text, prob, kl, rank, status) in lens_rows(run):
        if position is None:
            w.writerow([_text(run_id), role, _text(spec), _text(label)] + [""] * 8 + [_text(status)])
            continue
        w.writerow([_text(run_id), role, _text(spec), _text(label), position, _text(tok), li, r, _text(text),
                    _num(prob), _num(kl), rank, _text(status)])
    return buf.getvalue()


def lens_rows(run: Run | dict) -> Iterator[tuple]:
    """The rows of lens_to_csv (lens.csv) as raw values, in LENS_COLUMNS' order (None where the CSV cell is
    empty). The library's Result.lens() is these rows."""
    run = as_run(run)
    has_ref = run.reference is not None
    for k, e in enumerate(run.entries()):
        if e.lens is None:
            continue
        head = (run.run_id, "reference" if has_ref and k == 0 else "variant", e.spec, e.label)
        if not e.lens.positions:
            yield (*head, *[None] * 8, e.lens.status)
        for pos in e.lens.positions:
            tok = run.input.tokens[pos.position] if 0 <= pos.position < len(run.input.tokens) else ""
            for li, layer in enumerate(pos.layers):
                for r, t in enumerate(layer.top, 1):
                    yield (*head, pos.position, tok, li, r, t.text, float(t.prob),
                           None if layer.kl is None else float(layer.kl), layer.ref_rank, e.lens.status)


def run_to_zip(run: Run | dict) -> bytes:
    """summary.csv (summary_to_csv) and tokens.csv (run_to_csv) in one zip, lambada.csv (lambada_to_csv) for a
    LAMBADA run and lens.csv (lens_to_csv) for a lens run; the same bytes for the same run (the entries are dated
    by the run's created_at)."""
    run = as_run(run)
    when = (1980, 1, 1, 0, 0, 0)
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", str(run.created_at or ""))
    if m and int(m.group(1)) >= 1980:
        when = tuple(int(x) for x in m.groups())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        parts = [("summary.csv", summary_to_csv(run)), ("tokens.csv", run_to_csv(run))]
        if run.lambada is not None:
            parts.append(("lambada.csv", lambada_to_csv(run)))
        if run.params.lens_positions is not None:
            parts.append(("lens.csv", lens_to_csv(run)))
        for name, text in parts:
            info = zipfile.ZipInfo(name, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def run_to_json_text(run: Run | dict) -> str:
    """The run JSON as `runs export` writes it and the dashboard's JSON download holds it (one-space indent).

    A lone surrogate (half of a character split across tokens) is written as its \\uXXXX escape, so the text
    always encodes as UTF-8 and json.loads gives the same string back."""
    text = json.dumps(as_run(run).to_json(), ensure_ascii=False, indent=1)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
