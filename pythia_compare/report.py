"""Tables of a run as plain data and as text: what the CLI prints and the dashboard's tables show.

Owns the summary table (one row per variant and the reference), llama-perplexity's KL statistics as a
table, the one function that formats a cell, display names and colours of a run's entries, and the CLI's
text report. Pure: takes run JSON dicts and imports neither plotly nor gradio, so the CLI stays light and
the dashboard shows exactly the numbers the CLI prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SpecError
from .variants import QUANTS, parse_spec

REFERENCE_COLOR = "#4d4d4d"
PALETTE: list[str] = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
                      "#B6E880", "#FF97FF", "#FECB52", "#1F77B4", "#8C564B", "#E377C2", "#BCBD22"]
# Shown beside the KL table: the PPL(base) and Cor rows are exact, llama-perplexity's come from uint16 logits.
KL_TABLE_NOTE = ("PPL(base) and Cor(ln PPL) are computed from exact reference log-probabilities; "
                 "llama-perplexity's come from its uint16-rounded reference file and read about 1% lower.")


@dataclass(frozen=True)
class _Entry:
    data: dict  # the variant (or reference) dict of the run JSON
    name: str  # trace / row name: the label, with " (reference)" for the reference
    color: str
    is_reference: bool


def _entries(run: dict) -> list[_Entry]:
    """The reference (if any) first, then the variants, each with its display name and fixed colour."""
    ref = run.get("reference")
    out = [_Entry(ref, f"{ref.get('label') or ref.get('spec')} (reference)", REFERENCE_COLOR, True)] if ref else []
    return out + [_Entry(v, str(v.get("label") or v.get("spec")), PALETTE[i % len(PALETTE)], False)
                  for i, v in enumerate(run.get("variants") or [])]


def variant_colors(run: dict) -> dict[str, str]:
    """Display name (label, or 'label (reference)') -> colour used for it in every figure."""
    return {e.name: e.color for e in _entries(run)}


_VISIBLE = {**{c: f"\\x{c:02x}" for c in [*range(32), 127]}, 32: "␣", 10: "\\n", 9: "\\t", 13: "\\r"}


def show_token(text: str) -> str:
    """A token's text made visible: space -> '␣', newline/tab/CR -> '\\n'/'\\t'/'\\r', other controls -> \\xNN."""
    return text.translate(_VISIBLE) if text else "∅"


def _parsed(spec: str | None):
    try:
        return parse_spec(spec) if spec else None
    except SpecError:
        return None


def _quant_of(e: _Entry) -> str | None:
    return (e.data.get("source") or {}).get("quant") or getattr(_parsed(e.data.get("spec")), "quant", None)


STAT_COLUMN = "statistic"
# (row name, where the value is: "var"/"ref" = the variant / reference dict, "kld" = the variant's kld),
# in llama-perplexity's order. Names ending in "%" hold fractions that format_cell shows in percent.
_PCT = [("99.9%", "p99_9"), ("99.0%", "p99"), ("95.0%", "p95"), ("90.0%", "p90")]
_LOW = [("10.0%", "p10"), ("5.0%", "p5"), ("1.0%", "p1"), ("0.1%", "p0_1")]
_KL_ROWS: list[tuple[str, str, str]] = [
    ("Mean PPL(Q)", "var", "ppl"), ("Mean PPL(Q) ±", "var", "ppl_err"),
    ("Mean PPL(base)", "ref", "ppl"), ("Mean PPL(base) ±", "ref", "ppl_err"),
    ("Cor(ln(PPL(Q)), ln(PPL(base))) %", "kld", "cor_ln_ppl"),
    ("Mean ln(PPL(Q)/PPL(base))", "kld", "ln_ratio"), ("Mean ln(PPL(Q)/PPL(base)) ±", "kld", "ln_ratio_err"),
    ("Mean PPL(Q)/PPL(base)", "kld", "ppl_ratio"), ("Mean PPL(Q)/PPL(base) ±", "kld", "ppl_ratio_err"),
    ("Mean PPL(Q)-PPL(base)", "kld", "ppl_diff"), ("Mean PPL(Q)-PPL(base) ±", "kld", "ppl_diff_err"),
    ("Mean KLD", "kld", "mean"), ("Mean KLD ±", "kld", "mean_err"), ("Maximum KLD", "kld", "max"),
    *[(f"{n} KLD", "kld", k) for n, k in _PCT], ("Median KLD", "kld", "median"),
    *[(f"{n} KLD", "kld", k) for n, k in _LOW], ("Minimum KLD", "kld", "min"),
    ("Mean Δp %", "kld", "dp_mean"), ("Mean Δp ± %", "kld", "dp_mean_err"), ("Maximum Δp %", "kld", "dp_max"),
    *[(f"{n} Δp %", "kld", f"dp_{k}") for n, k in _PCT + [("75.0%", "p75"), ("Median", "median"),
                                                         ("25.0%", "p25")] + _LOW],
    ("Minimum Δp %", "kld", "dp_min"), ("RMS Δp %", "kld", "dp_rms"), ("RMS Δp ± %", "kld", "dp_rms_err"),
    ("Same top p %", "kld", "same_top"), ("Same top p ± %", "kld", "same_top_err"),
]


def kl_table(run: dict) -> tuple[list[str], list[list]]:
    """llama-perplexity's KL-mode statistics blocks: rows = statistics, columns = variants with a kld.

    Cells hold the run JSON's raw values (fractions stay fractions; format_cell shows rows named '… %' in
    percent, as the tool prints them); a missing statistic is None. No reference or no kld: no variant columns.
    """
    ref = run.get("reference") or {}
    vs = [v for v in run.get("variants") or [] if v.get("kld")]
    columns = [STAT_COLUMN] + [str(v.get("label") or v.get("spec")) for v in vs]
    src = {"var": lambda v: v, "ref": lambda v: ref, "kld": lambda v: v["kld"]}
    return columns, [[name] + [src[where](v).get(key) for v in vs] for name, where, key in _KL_ROWS]


SUMMARY_COLUMNS: list[str] = ["variant", "role", "spec", "quant", "size MB", "bpw", "PPL", "PPL ±", "n scored",
                              "mean KLD", "KLD ±", "same top %", "top-1 next token", "top-1 p", "load s",
                              "score s", "generate s"]
_TOKEN_COLUMNS = {"top-1 next token"}


def summary_table(run: dict) -> tuple[list[str], list[list]]:
    """One row per entry (reference first): the numbers the CLI prints, as raw values (see SUMMARY_COLUMNS).

    'size MB' is source.bytes / 1e6; 'same top %' holds the fraction 0..1 (format_cell shows percent);
    'top-1 next token' holds the raw token text; missing values are None.
    """
    rows = []
    for e in _entries(run):
        d, src = e.data, e.data.get("source") or {}
        kld, tim, top = d.get("kld") or {}, d.get("timings") or {}, (d.get("next_token") or [{}])[0]
        q = src.get("quant") or _quant_of(e)
        rows.append([d.get("label") or d.get("spec"), "reference" if e.is_reference else "variant", d.get("spec"),
                     q, src["bytes"] / 1e6 if src.get("bytes") is not None else None,
                     QUANTS[q].bpw if q in QUANTS else None, d.get("ppl"), d.get("ppl_err"), d.get("n_scored"),
                     kld.get("mean"), kld.get("mean_err"), kld.get("same_top"), top.get("text"), top.get("prob"),
                     tim.get("load_s"), tim.get("score_s"), tim.get("generate_s")])
    return list(SUMMARY_COLUMNS), rows


def fmt_num(x: float, digits: int = 6) -> str:
    """A float with `digits` significant digits in fixed notation (at most 6 decimals); scientific below 1e-4."""
    if x is None:
        return "–"
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    a = abs(x)
    if a < 1e-4 or a >= 1e12:
        return f"{x:.{digits - 1}e}"
    decimals = min(6, max(0, digits - 1 - math.floor(math.log10(a))))
    return f"{x:.{decimals}f}"


def format_cell(value: float | int | str | None, hint: str | None = None) -> str:
    """Render one table cell. `hint` is its column name (or, in kl_table, its row name).

    None -> '–'; names ending in '%' -> value × 100 with 3 decimals; ending in ' s' -> 2 decimals;
    'size MB' -> 1 decimal; token columns -> show_token; other floats -> fmt_num; ints as they are.
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return show_token(value) if hint in _TOKEN_COLUMNS else value
    hint = hint or ""
    if isinstance(value, int) or not math.isfinite(float(value)):
        return str(value)
    if hint.endswith(("%", " s", "MB")):  # percent (from a fraction), seconds, megabytes
        return f"{100.0 * value:.3f}" if hint.endswith("%") else f"{value:.{2 if hint.endswith(' s') else 1}f}"
    return fmt_num(value)


def format_table(columns: list[str], rows: list[list]) -> list[list[str]]:
    """Every cell through format_cell. A table whose first column is STAT_COLUMN takes hints from row names."""
    by_row = bool(columns) and columns[0] == STAT_COLUMN
    return [[format_cell(c, r[0] if by_row else columns[i]) for i, c in enumerate(r)] for r in rows]


def text_table(columns: list[str], rows: list[list]) -> str:
    cells = [[_visible(c) for c in r] for r in format_table(columns, rows)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda items: "  ".join(s.ljust(w) for s, w in zip(items, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _visible(s: str) -> str:
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def format_run(run: dict) -> str:
    """The CLI's readable report: summary table, the KL statistics blocks, then generations."""
    from .metrics import format_kl_block

    p = run.get("params") or {}
    inp = run.get("input") or {}
    head = (f"run {run.get('run_id') or '(unsaved)'}  {p.get('scoring')} scoring, {inp.get('n_tokens')} tokens, "
            f"ctx {p.get('ctx')}, flash attention {'on' if p.get('flash_attn') else 'off'}"
            + (f", reference {p['reference']}" if p.get("reference") else ""))
    parts = [head, "", text_table(*summary_table(run))]
    for v in run.get("variants") or []:
        if v.get("kld"):
            parts += ["", f"== {v['label']} vs reference {run['reference']['label']} ==", format_kl_block(v["kld"])]
    for e in _entries(run):
        gen = e.data.get("generation")
        if gen and gen.get("tokens"):
            parts += ["", f"-- {e.name} generates:", gen["text"]]
    return "\n".join(parts)


def run_notes(run: dict) -> list[str]:
    """What the user must know beside the numbers, one line each: the run's warnings ('warning: …'), each
    variant's load-time metadata overrides ('note: …') and llama.cpp's load warnings ('warning: label: …')."""
    lines = [f"warning: {w}" for w in run.get("warnings") or []]
    for e in _entries(run):
        for key, value in (e.data.get("overrides") or {}).items():
            lines.append(f"note: {e.name}: loaded with {key}={value} (the file names no pre-tokenizer, so llama.cpp "
                         f"would split text unlike the tokenizer the model was trained with)")
        lines += [f"warning: {e.name}: llama.cpp: {w}" for w in e.data.get("warnings") or []]
    return lines


def format_run_list(rows: list[dict]) -> str:
    if not rows:
        return "no runs yet; start one with `python -m pythia_compare compare …`"
    cols = ["run", "created", "tokens", "scoring", "variants", "text"]
    table = []
    for r in rows:
        names = r.get("variants") or r.get("labels") or []
        if names and isinstance(names[0], dict):
            names = [n.get("label") or n.get("spec") for n in names]
        table.append([r.get("run_id"), str(r.get("created_at", ""))[:19], r.get("n_tokens"), r.get("scoring"),
                      ", ".join(map(str, names))[:60], (r.get("text") or r.get("preview") or "")[:50]])
    return text_table(cols, table)
