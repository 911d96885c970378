"""A run -> its download formats: CSV for spreadsheets (one tidy row per (model, scored position), a summary row
per model), both in one zip (summary.csv + tokens.csv, and lens.csv for a run with the logit lens), and the
indented run JSON; the exports of the CLI (`runs export`) and of the page's downloads (dashboard.download).

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

from .metrics import corpus_target_indices
from .run import Run, as_run

COLUMNS = ("run_id", "role", "spec", "label", "position", "token_index", "token", "logprob", "prob",
           "surprisal_bits", "kld", "dp")
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
    run = as_run(run)
    tokens = run.input.tokens
    idx = scored_token_indices(run)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    has_ref = run.reference is not None
    for k, e in enumerate(run.entries()):
        role = "reference" if has_ref and k == 0 else "variant"
        per = (e.kld.per_token if e.kld else None) or []
        dp = (e.kld.dp_per_token if e.kld else None) or []
        for j, lp in enumerate(e.token_logprobs):
            ti = idx[j] if idx is not None and idx[j] < len(tokens) else None
            w.writerow([_text(run.run_id), role, _text(e.spec), _text(e.label), j,
                        "" if ti is None else ti, "" if ti is None else _text(tokens[ti]), _num(lp),
                        "" if lp is None else _num(math.exp(lp)), "" if lp is None else _num(-lp / math.log(2)),
                        _num(per[j]) if j < len(per) else "", _num(dp[j]) if j < len(dp) else ""])
    return buf.getvalue()


def summary_to_csv(run: Run | dict) -> str:
    """One row per model (reference first): run_id, then report.SUMMARY_COLUMNS with raw values (numbers at full
    precision, fractions as fractions, 'n/a' where a standard error is unknown, empty where missing)."""
    from .report import summary_table

    run = as_run(run)
    columns, rows = summary_table(run)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", *columns])
    for r in rows:
        w.writerow([_text(run.run_id)] + [
            "" if c is None else repr(float(c)) if isinstance(c, float) else str(c) if isinstance(c, int)
            else _text(c) for c in r])
    return buf.getvalue()


LENS_COLUMNS = ["run_id", "role", "spec", "label", "position", "token", "layer", "rank_in_layer", "lens_token",
                "lens_prob", "kl_from_baseline", "baseline_top1_rank", "status"]


def lens_to_csv(run: Run | dict) -> str:
    """The logit lens of a lens run as CSV text: one row per (model, asked position, layer, lens token), the
    lens's top tokens in order (rank_in_layer 1 …); kl_from_baseline and baseline_top1_rank repeat on the rows of
    one layer (kl empty for the baseline); status is the entry's lens status (ok / check failed / unavailable,
    the latter with a single row and empty layer cells). Header only for a run without the lens."""
    run = as_run(run)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(LENS_COLUMNS)
    has_ref = run.reference is not None
    for k, e in enumerate(run.entries()):
        if e.lens is None:
            continue
        head = [_text(run.run_id), "reference" if has_ref and k == 0 else "variant", _text(e.spec), _text(e.label)]
        if not e.lens.positions:
            w.writerow(head + [""] * 8 + [_text(e.lens.status)])
        for pos in e.lens.positions:
            tok = run.input.tokens[pos.position] if 0 <= pos.position < len(run.input.tokens) else ""
            for li, layer in enumerate(pos.layers):
                for r, t in enumerate(layer.top, 1):
                    w.writerow(head + [pos.position, _text(tok), li, r, _text(t.text), _num(t.prob), _num(layer.kl),
                                       layer.ref_rank, _text(e.lens.status)])
    return buf.getvalue()


def run_to_zip(run: Run | dict) -> bytes:
    """summary.csv (summary_to_csv) and tokens.csv (run_to_csv) in one zip, and lens.csv (lens_to_csv) for a lens
    run; the same bytes for the same run (the entries are dated by the run's created_at)."""
    run = as_run(run)
    when = (1980, 1, 1, 0, 0, 0)
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", str(run.created_at or ""))
    if m and int(m.group(1)) >= 1980:
        when = tuple(int(x) for x in m.groups())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        files = [("summary.csv", summary_to_csv(run)), ("tokens.csv", run_to_csv(run))]
        if run.params.lens_positions is not None:
            files.append(("lens.csv", lens_to_csv(run)))
        for name, text in files:
            info = zipfile.ZipInfo(name, date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text.encode("utf-8"))
    return buf.getvalue()


def run_to_json_text(run: Run | dict) -> str:
    """The run JSON as `runs export` writes it and the dashboard's JSON download holds it (one-space indent)."""
    return json.dumps(as_run(run).to_json(), ensure_ascii=False, indent=1)
