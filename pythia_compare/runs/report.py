"""Tables of a run as plain data and as text: what the CLI prints and the dashboard's tables show.

Owns the summary table (one row per variant and the reference), llama-perplexity's KL statistics as a
table, the one function that formats a cell, display names and colours of a run's entries, and the CLI's
text report. Pure: takes a run (a `run.Run`; a run JSON dict is read once through `run.as_run`) and imports
neither plotly nor gradio, so the CLI stays light and the dashboard shows exactly the numbers the CLI prints.

The entries are shown in the run's one order (`Run.entries()`: the reference first, then the variants), each
with its display name and colour (`shown_entries`); plots.py draws them with the same names and colours.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import SpecError
from .run import Entry, Run, as_run
from ..variants import FINAL_STEP, parse_spec

REFERENCE_COLOR = "#4d4d4d"
PALETTE: list[str] = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
                      "#B6E880", "#FF97FF", "#FECB52", "#1F77B4", "#8C564B", "#E377C2", "#BCBD22"]
# Shown beside the KL table: the PPL(base) and Cor rows are exact, llama-perplexity's come from uint16 logits.
KL_TABLE_NOTE = ("PPL(base) and Cor(ln PPL) are computed from exact reference log-probabilities; "
                 "llama-perplexity's come from its uint16-rounded reference file and read about 1% lower.")


@dataclass(frozen=True)
class Shown:
    """An entry of a run as the tables and figures show it."""
    entry: Entry
    name: str  # trace / row name: the label, with " (reference)" for the reference
    color: str
    is_reference: bool


def shown_entries(run: Run | dict) -> list[Shown]:
    """The run's entries in its order (Run.entries(): the reference first), each with its display name and
    fixed colour: the reference REFERENCE_COLOR, variant i PALETTE[i % len(PALETTE)]."""
    run = as_run(run)
    has_ref = run.reference is not None
    out = []
    for k, e in enumerate(run.entries()):
        if has_ref and k == 0:
            out.append(Shown(e, f"{e.label or e.spec} (reference)", REFERENCE_COLOR, True))
        else:
            out.append(Shown(e, str(e.label or e.spec), PALETTE[(k - has_ref) % len(PALETTE)], False))
    return out


def variant_colors(run: Run | dict) -> dict[str, str]:
    """Display name (label, or 'label (reference)') -> colour used for it in every figure."""
    return {s.name: s.color for s in shown_entries(run)}


_VISIBLE = {**{c: f"\\x{c:02x}" for c in [*range(32), 127]}, 32: "␣", 10: "\\n", 9: "\\t", 13: "\\r"}


def show_token(text: str) -> str:
    """A token's text made visible: space -> '␣', newline/tab/CR -> '\\n'/'\\t'/'\\r', other controls -> \\xNN."""
    return text.translate(_VISIBLE) if text else "∅"


def parsed(spec: str | None):
    """The Variant of a spec, or None when it does not parse."""
    try:
        return parse_spec(spec) if spec else None
    except SpecError:
        return None



def quant_of(e: Entry) -> str | None:
    """The entry's quant: its file's (source.quant), else its spec's."""
    return e.source.quant or getattr(parsed(e.spec), "quant", None)


_CACHED_STEP = re.compile(r"-step(\d+)-[A-Za-z0-9_]+\.gguf$")  # a converted file: <repo>-step<N>-<quant>.gguf (sources)


def step_of(e: Entry) -> int | None:
    """The training step of an entry's weights, for the exports' step column: its spec's (`step3000`,
    `demo@step0`); else the step in the name of the converted file (`demo` ran demo-step800-F16.gguf); else, for a
    bare spec of the default Pythia repos (`Q4_K_M`, `F16`), the final step; None for anything else (a local
    file, another repo's main)."""
    v = parsed(e.spec)
    if v is not None and v.step is not None:
        return v.step
    m = _CACHED_STEP.search(e.source.file or "")
    if m:
        return int(m.group(1))
    if v is not None and v.repo is None and v.kind != "local":
        return FINAL_STEP
    return None


def repo_of(e: Entry) -> str | None:
    """The repo an entry's file came from (source.repo; `demo` for the demo suite); None for a local file."""
    return e.source.repo


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


def kl_table(run: Run | dict) -> tuple[list[str], list[list]]:
    """llama-perplexity's KL-mode statistics blocks: rows = statistics, columns = variants with a kld.

    Cells hold the run JSON's raw values (fractions stay fractions; format_cell shows rows named '… %' in
    percent, as the tool prints them); a missing statistic is None. No reference or no kld: no variant columns.
    """
    run = as_run(run)
    vs = [v for v in run.variants if v.kld is not None]
    columns = [STAT_COLUMN] + [str(v.label or v.spec) for v in vs]
    src = {"var": lambda v: v, "ref": lambda v: run.reference, "kld": lambda v: v.kld}
    return columns, [[name] + [getattr(src[where](v), key, None) for v in vs] for name, where, key in _KL_ROWS]


SUMMARY_COLUMNS: list[str] = ["variant", "role", "spec", "quant", "size MB", "bpw", "PPL", "PPL ±", "n scored",
                              "bits/byte", "word PPL", "mean KLD", "KLD ±", "same top %", "top-1 next token",
                              "top-1 p", "load s", "score s", "generate s"]
# A LAMBADA run's table (lambada_table): lm-eval's lambada_openai figures per entry.
LAMBADA_COLUMNS: list[str] = ["variant", "role", "spec", "quant", "acc", "acc ±", "LAMBADA PPL", "LAMBADA PPL ±",
                              "examples", "agreement %", "load s", "score s"]
_TOKEN_COLUMNS = {"top-1 next token"}


# A standard error needs more than this many scored tokens (metrics.perplexity's rule, the tool's KL-mode one):
# at or below it the run JSON holds the tool's 0, which the tables show as NA (uncertainty_note says why).
MAX_TOKENS_WITHOUT_ERROR = 10
NA = "n/a"


def no_error(e: Entry) -> bool:
    """Whether the entry's ± is unknown: it is scored, but on too few tokens for a standard error."""
    return e.ppl is not None and e.n_scored <= MAX_TOKENS_WITHOUT_ERROR


def uncertainty_note(run: Run | dict) -> str | None:
    """Why some ± reads n/a (too few scored tokens for a standard error), or None when every ± is known."""
    ns = sorted({e.n_scored for e in as_run(run).entries() if no_error(e)})
    if not ns:
        return None
    return (f"± n/a: {ns[0]} scored token{'s' if ns[0] != 1 else ''}; a standard error needs more than "
            f"{MAX_TOKENS_WITHOUT_ERROR} (llama-perplexity's rule; the run JSON keeps its 0).")


def kl_block_note(run: Run | dict) -> str | None:
    """Why the KL statistics block is not shown (fewer scored tokens than llama-perplexity prints it from), or
    None when it is; the same line the CLI prints."""
    from .metrics import MIN_TOKENS_FOR_BLOCK, format_kl_block

    n = min((v.n_scored for v in as_run(run).variants if v.kld is not None), default=None)
    if n is None or n >= MIN_TOKENS_FOR_BLOCK:
        return None
    return format_kl_block({}, n)


def summary_table(run: Run | dict) -> tuple[list[str], list[list]]:
    """One row per entry (reference first): the numbers the CLI prints, as raw values (see SUMMARY_COLUMNS).

    'size MB' is source.bytes / 1e6; 'same top %' holds the fraction 0..1 (format_cell shows percent);
    'top-1 next token' holds the raw token text; missing values are None. 'PPL ±' and 'KLD ±' hold NA
    when the entry has too few scored tokens for a standard error (uncertainty_note).
    """
    rows = []
    for s in shown_entries(run):
        e, kld, tim = s.entry, s.entry.kld, s.entry.timings
        top = e.next_token[0] if e.next_token else None
        q = quant_of(e)
        na = no_error(e)
        rows.append([e.label or e.spec, "reference" if s.is_reference else "variant", e.spec, q,
                     e.source.bytes / 1e6 if e.source.bytes is not None else None,
                     e.source.bpw, e.ppl, NA if na else e.ppl_err, e.n_scored, e.bits_per_byte, e.word_ppl,
                     kld and kld.mean, NA if na and kld else kld and kld.mean_err, kld and kld.same_top,
                     top and top.text, top and top.prob, tim.load_s, tim.score_s, tim.generate_s])
    return list(SUMMARY_COLUMNS), rows


def lambada_table(run: Run | dict) -> tuple[list[str], list[list]]:
    """A LAMBADA run (params.scoring "lambada"): one row per entry (reference first) of LAMBADA_COLUMNS, raw
    values: acc and its stderr as fractions, PPL = exp(-mean log-likelihood) ± its stderr, the examples scored,
    the share of examples whose is_greedy is the reference's ('agreement %', a fraction; None on the reference
    and without one)."""
    rows = []
    for s in shown_entries(run):
        e, lam, tim = s.entry, s.entry.lambada, s.entry.timings
        rows.append([e.label or e.spec, "reference" if s.is_reference else "variant", e.spec, quant_of(e),
                     lam and lam.acc, lam and lam.acc_stderr, lam and lam.ppl, lam and lam.ppl_stderr,
                     lam.n if lam else None, lam and lam.agreement, tim.load_s, tim.score_s])
    return list(LAMBADA_COLUMNS), rows


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


# The summary's columns in the order they are dropped when a terminal is too narrow (the rest stay).
DROP_FIRST = ["load s", "score s", "generate s", "spec", "role", "bpw", "size MB", "word PPL", "bits/byte", "top-1 p",
              "quant", "same top %", "n scored", "examples", "top-1 next token", "KLD ±", "PPL ±", "LAMBADA PPL ±"]
MIN_CELL = 12  # a cell narrower than its text is cut to at least this many characters, with "…"


def terminal_width() -> int:
    """The terminal's width for the CLI's tables (COLUMNS when set; 80 when stdout is not a terminal)."""
    import shutil

    return max(40, shutil.get_terminal_size((80, 24)).columns)


def text_table(columns: list[str], rows: list[list], width: int | None = None) -> str:
    """The table as aligned text. With `width`, columns of DROP_FIRST are left out, in that order, until it fits;
    if it still does not, the widest cells are cut with "…"; a last line names the columns left out."""
    cells = [[_visible(c) for c in r] for r in format_table(columns, rows)]
    keep = list(range(len(columns)))

    def widths_of(idx: list[int]) -> list[int]:
        return [max([len(columns[i])] + [len(r[i]) for r in cells]) for i in idx]

    def total(ws: list[int]) -> int:
        return sum(ws) + 2 * (len(ws) - 1)

    if width is not None:
        for name in DROP_FIRST:
            if total(widths_of(keep)) <= width:
                break
            if name in columns and len(keep) > 1:
                keep.remove(columns.index(name))
    widths = widths_of(keep)
    if width is not None:
        while total(widths) > width and max(widths) > MIN_CELL:
            widest = widths.index(max(widths))
            widths[widest] = max(MIN_CELL, widths[widest] - (total(widths) - width))
    cut = lambda s, w: s if len(s) <= w else s[:max(w - 1, 0)] + "…"
    line = lambda items: "  ".join(cut(items[i], w).ljust(w) for i, w in zip(keep, widths)).rstrip()
    dashes = [""] * len(columns)
    for i, w in zip(keep, widths):
        dashes[i] = "-" * w
    out = [line(columns), line(dashes)] + [line(r) for r in cells]
    left_out = [c for i, c in enumerate(columns) if i not in keep]
    if left_out:
        import textwrap

        out += textwrap.wrap(f"(not shown to fit {width} columns: {', '.join(left_out)}; --json has everything)",
                             width)
    return "\n".join(out)


def _visible(s: str) -> str:
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def terminal_text(s: str) -> str:
    """Text safe to print to a terminal: newlines and tabs kept, every other character that is not printable
    (control bytes such as SO and BEL in a step-0 generation, escape sequences, DEL, C1 controls, separators)
    written as a visible escape: \\x0e, \\x07, \\u2028."""
    return "".join(c if c in "\n\t" or c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) < 0x10000
                    else f"\\U{ord(c):08x}") for c in s)


def format_run(run: Run | dict, width: int | None = None) -> str:
    """The CLI's readable report: summary table, the KL statistics blocks, then generations. With `width` the
    head and the table fit that many columns (text_table drops columns to fit)."""
    import textwrap

    from .metrics import format_kl_block

    run = as_run(run)
    p = run.params
    wrap = (lambda t: textwrap.fill(t, width, break_on_hyphens=False)) if width else (lambda t: t)
    if run.lambada is not None:
        return "\n".join([wrap(lambada_head(run)), "", text_table(*lambada_table(run), width=width)])
    head = (f"run {run.run_id or '(unsaved)'}  {p.scoring} scoring, {run.input.n_tokens} tokens, "
            f"ctx {p.ctx}, flash attention {'on' if p.flash_attn else 'off'}"
            + (f", reference {p.reference}" if p.reference else ""))
    note = uncertainty_note(run)
    parts = [wrap(head), "", text_table(*summary_table(run), width=width)] + ([wrap(note)] if note else [])
    for v in run.variants:
        if v.kld is not None:
            n = len(v.kld.per_token) if v.kld.per_token is not None else None
            block = format_kl_block(v.kld.stats(), n).splitlines()  # its footnote wrapped to the width
            parts += ["", f"== {v.label} vs reference {run.reference.label} ==",
                      *[wrap(line) if line.startswith("(") else line for line in block]]
    for pos, (columns, rows) in lens_tables(run):
        parts += ["", wrap(pos), text_table(columns, rows, width=width)]
    for s in shown_entries(run):
        gen = s.entry.generation
        if gen and gen.tokens:  # a model's text may hold control bytes: escaped, never sent to the terminal
            parts += ["", f"-- {s.name} generates:", terminal_text(gen.text)]
    return "\n".join(parts)


def lambada_head(run: Run) -> str:
    """The head line of a LAMBADA run: where its examples came from and how many ran."""
    d, p = run.lambada, run.params
    where = f"{d.repo}@{(d.revision or '')[:12]} {d.file}" if d.repo else d.file
    n = len(d.targets)
    return (f"run {run.run_id or '(unsaved)'}  LAMBADA (lm-eval lambada_openai), {n} of {d.n_file} examples of "
            f"{where}, ctx {p.ctx} ({sum(d.truncated)} contexts cut), flash attention "
            f"{'on' if p.flash_attn else 'off'}" + (f", reference {p.reference}" if p.reference else ""))


def lens_tables(run: Run | dict) -> list[tuple[str, tuple[list[str], list[list]]]]:
    """The logit lens of a lens run, one table per asked position: (its title, (columns, rows)), a row per layer
    with each entry's top token and probability, its KL from the baseline's lens and the rank of the baseline's
    final top-1. [] for a run without the lens."""
    run = as_run(run)
    if run.params.lens_positions is None:
        return []
    shown = [s for s in shown_entries(run) if s.entry.lens is not None and s.entry.lens.positions]
    out = []
    for i, p in enumerate(run.params.lens_positions):
        tok = run.input.tokens[p] if 0 <= p < len(run.input.tokens) else "?"
        if not shown:
            continue
        target = shown[0].entry.lens.positions[i].target
        title = (f"== logit lens at position {p} (after {show_token(tok)!r}); rank: of "
                 f"{show_token(target.text)!r}, {shown[0].name}'s final top-1 ==")
        columns = ["layer"]
        for k, s in enumerate(shown):
            columns += [f"{s.name} top", "p"] + (["KL"] if k else []) + ["rank"]
        rows = []
        for li in range(len(shown[0].entry.lens.positions[i].layers)):
            row: list = [li]
            for k, s in enumerate(shown):
                layer = s.entry.lens.positions[i].layers[li]
                row += [show_token(layer.top[0].text), layer.top[0].prob] + ([layer.kl] if k else []) + \
                    [layer.ref_rank]
            rows.append(row)
        out.append((title, (columns, rows)))
    return out


def run_notes(run: Run | dict) -> list[str]:
    """What the user must know beside the numbers, one line each: the run's warnings ('warning: …'), each
    variant's load-time metadata overrides ('note: …') and llama.cpp's load warnings ('warning: label: …')."""
    run = as_run(run)
    lines = [f"warning: {w}" for w in run.warnings or []]
    for s in shown_entries(run):
        for key, value in (s.entry.overrides or {}).items():
            lines.append(f"note: {s.name}: loaded with {key}={value} (the file names no pre-tokenizer, so llama.cpp "
                         f"would split text unlike the tokenizer the model was trained with)")
        lines += [f"warning: {s.name}: llama.cpp: {w}" for w in s.entry.warnings or []]
        lens = s.entry.lens
        if lens is not None and lens.status != "ok":
            lines.append(f"warning: {s.name}: logit lens {lens.status}: {lens.message}")
    return lines


def format_run_list(rows: list[dict], width: int | None = None) -> str:
    """`runs list`: one row per run; with `width`, the widest cells are cut with "…" until it fits."""
    if not rows:
        return "no runs yet; start one with `python -m pythia_compare compare …`"
    cols = ["run", "created", "tokens", "scoring", "variants", "text"]
    table = []
    for r in rows:
        names = r.get("variants") or r.get("labels") or []
        if names and isinstance(names[0], dict):
            names = [n.get("label") or n.get("spec") for n in names]
        table.append([r.get("run_id"), str(r.get("created_at", ""))[:19], r.get("n_tokens"), r.get("scoring"),
                      terminal_text(", ".join(map(str, names))[:60]),
                      terminal_text(r.get("text") or r.get("preview") or "")[:50]])
    return text_table(cols, table, width=width)


_MARKDOWN_SPECIALS = set("\\`*_{}[]()#!|<>~&$^")


def plain_markdown(text: object) -> str:
    """`text` shown as itself inside Markdown: every character Markdown or HTML could act on escaped and line
    breaks made spaces, so a label such as `![x](http://…)` is printed, never fetched or linked."""
    out = []
    for ch in " ".join(str(text).split("\n")).replace("\r", " "):
        if ch in _MARKDOWN_SPECIALS:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)
