"""Figures, generation HTML and table data for one comparison run.

Owns turning a run JSON dict (DESIGN.md "Run JSON") into plotly figures, the side-by-side generations'
HTML, table data (column names + rows of raw values) and the one function that formats a table cell.
Every builder is pure: run dict in, figure / str / table out, and works on partial runs (variants still
arriving, generation or kld None, no reference). Never imports gradio, never loads a model, never touches
files, the network or the database.

Colours: the reference is always REFERENCE_COLOR; variant i of run["variants"] is PALETTE[i % len], so a
variant keeps its colour in every figure and while a run streams (variants only ever get appended).
Text from the model or the user is escaped everywhere: plotly renders a pseudo-HTML subset in labels and
hover, so plotly text goes through `_esc`; the generations' HTML goes through html.escape.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from .errors import SpecError
from .variants import QUANTS, parse_spec

REFERENCE_COLOR = "#4d4d4d"
PALETTE: list[str] = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692",
                      "#B6E880", "#FF97FF", "#FECB52", "#1F77B4", "#8C564B", "#E377C2", "#BCBD22"]
MAX_HEATMAP_COLUMNS = 512  # surprisal heatmap shows at most this many scored tokens
MAX_TICK_LABELS = 80  # above this many columns the heatmap's x ticks are positions, not token text
LN2 = math.log(2.0)
# Shown beside the KL table: the PPL(base) and Cor rows are exact, llama-perplexity's come from uint16 logits.
KL_TABLE_NOTE = ("PPL(base) and Cor(ln PPL) are computed from exact reference log-probabilities; "
                 "llama-perplexity's come from its uint16-rounded reference file and read about 1% lower.")


@dataclass(frozen=True)
class _Entry:
    data: dict  # the variant (or reference) dict of the run JSON
    name: str  # trace / row name: the label, with " (reference)" for the reference
    color: str
    is_reference: bool


def _entries(run: dict, *, reference_first: bool = True) -> list[_Entry]:
    """The reference (if any) and the variants, each with its display name and fixed colour."""
    out = [_Entry(v, str(v.get("label") or v.get("spec") or f"variant {i + 1}"), PALETTE[i % len(PALETTE)], False)
           for i, v in enumerate(run.get("variants") or [])]
    ref = run.get("reference")
    if ref:
        r = _Entry(ref, f"{ref.get('label') or ref.get('spec') or 'reference'} (reference)", REFERENCE_COLOR, True)
        out = [r] + out if reference_first else out + [r]
    return out


def variant_colors(run: dict) -> dict[str, str]:
    """Display name (label, or 'label (reference)') -> colour used for it in every figure."""
    return {e.name: e.color for e in _entries(run)}


def show_token(text: str) -> str:
    """A token's text made visible: space -> '␣', newline/tab/CR -> '\\n'/'\\t'/'\\r', other controls -> \\xNN."""
    if text == "":
        return "∅"
    out = []
    for ch in text:
        if ch == " ":
            out.append("␣")
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _esc(text: str) -> str:
    """Escape text for plotly labels and hover (plotly reads <b>, <br>, &amp; … as markup)."""
    return html.escape(str(text), quote=False)


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}"


def _mode_word(run: dict) -> str:
    return "the text" if (run.get("params") or {}).get("scoring") == "corpus" else "the prompt"


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=_esc(title)), xaxis_title=x_title, yaxis_title=y_title,
                      template="plotly_white", legend_title_text="variant", hovermode="closest",
                      margin=dict(l=60, r=20, t=60, b=60))
    return fig


def _placeholder(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=_esc(message), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ---------------------------------------------------------------------------------------- next token

def next_token_figure(run: dict) -> go.Figure:
    """Grouped bars over the union of every entry's top-k next tokens; one trace per entry.

    Categories are ordered by the highest probability any entry gives the token. A token outside an entry's
    top-k has no bar for that entry (its probability is unknown, below that entry's k-th), not a zero.
    """
    fig = _figure(f"Next-token distribution after {_mode_word(run)} (top-k of each variant)",
                  "next token (␣ = space)", "probability")
    entries = [e for e in _entries(run) if e.data.get("next_token")]
    if not entries:
        return _placeholder(fig, "No next-token distribution yet.")
    best: dict[int, float] = {}
    text_of: dict[int, str] = {}
    for e in entries:
        for t in e.data["next_token"]:
            best[t["id"]] = max(best.get(t["id"], 0.0), float(t["prob"]))
            text_of.setdefault(t["id"], t["text"])
    ids = sorted(best, key=lambda i: (-best[i], i))
    shown = [show_token(text_of[i]) for i in ids]
    dup = {s for s in shown if shown.count(s) > 1}
    cats = [_esc(s + (f" (id {i})" if s in dup else "")) for s, i in zip(shown, ids)]
    for e in entries:
        by_id = {t["id"]: (rank + 1, float(t["prob"])) for rank, t in enumerate(e.data["next_token"])}
        fig.add_trace(go.Bar(
            x=cats, y=[by_id[i][1] if i in by_id else None for i in ids], name=_esc(e.name),
            marker_color=e.color,
            customdata=[[_esc(repr(text_of[i])), i, by_id[i][0] if i in by_id else None] for i in ids],
            hovertemplate="<b>%{fullData.name}</b><br>token %{customdata[0]} (id %{customdata[1]})"
                          "<br>p = %{y:.4f}<br>rank %{customdata[2]}<extra></extra>"))
    fig.update_layout(barmode="group", xaxis=dict(type="category", categoryorder="array", categoryarray=cats))
    return fig


# ---------------------------------------------------------------------------------------- generations

def _prob_color(p: float) -> str:
    """Background for a token of probability p: red (p≈0) through yellow to green (p≈1)."""
    p = min(max(float(p), 0.0), 1.0)
    return f"hsl({round(120 * p)}, 75%, 82%)"


def _token_span(tok: dict) -> str:
    p = float(tok.get("prob", 0.0))
    lines = [f"{tok.get('text', '')!r}  p = {_fmt_p(p)}", "top alternatives:"]
    for alt in tok.get("top") or []:
        mark = "→" if alt.get("id") == tok.get("id") else "  "
        lines.append(f"{mark} {alt.get('text', '')!r}  {_fmt_p(float(alt.get('prob', 0.0)))}")
    return (f'<span class="pc-tok" style="background:{_prob_color(p)};color:#111;white-space:pre-wrap;'
            f'border-radius:2px" title="{html.escape(chr(10).join(lines), quote=True)}">'
            f"{html.escape(tok.get('text', ''), quote=True)}</span>")


def generation_html(run: dict) -> str:
    """Side-by-side generations, one column per entry (reference first).

    Each token is a <span> coloured by its probability, with a title= tooltip listing the top alternatives.
    All model and user text is HTML-escaped.
    """
    entries = _entries(run)
    if not entries:
        return '<div class="pc-gen"><em>No generations yet.</em></div>'
    cols = []
    for e in entries:
        gen = e.data.get("generation")
        if gen is None:
            body = "<em>no generation</em>"
        elif gen.get("tokens"):
            body = "".join(_token_span(t) for t in gen["tokens"])
        else:
            body = f'<span style="white-space:pre-wrap">{html.escape(gen.get("text") or "")}</span>'
        cols.append(f'<div class="pc-gen-col" style="flex:1 1 0;min-width:14em;border-top:4px solid {e.color};'
                    f'padding:0.4em"><div style="font-weight:600;margin-bottom:0.3em">{html.escape(e.name)}</div>'
                    f'<div style="font-family:monospace;line-height:1.6">{body}</div></div>')
    legend = ('<div style="font-size:0.85em;color:#666;margin-top:0.4em">Background: probability of each '
              'generated token, <span style="background:hsl(0,75%,82%);color:#111">&nbsp;low&nbsp;</span> to '
              '<span style="background:hsl(120,75%,82%);color:#111">&nbsp;high&nbsp;</span>; '
              'hover a token for the top alternatives.</div>')
    return (f'<div class="pc-gen"><div style="display:flex;gap:0.8em;overflow-x:auto">{"".join(cols)}</div>'
            f"{legend}</div>")


# ---------------------------------------------------------------------------------------- perplexity

def _parsed(spec: str | None):
    try:
        return parse_spec(spec) if spec else None
    except SpecError:
        return None


def ppl_axis_mode(run: dict) -> str:
    """How ppl_figure lays out the variants: 'step', 'quant' or 'label'.

    'step' when every variant is a training step of one repo and at least two steps differ; 'quant' when every
    variant is the same repo and revision and at least two quants differ; else 'label'.
    """
    vs = [_parsed(v.get("spec")) for v in run.get("variants") or []]
    if not vs or any(v is None or v.kind == "local" for v in vs):
        return "label"
    if all(v.step is not None for v in vs) and len({v.repo for v in vs}) == 1 and len({v.step for v in vs}) > 1:
        return "step"
    quants = {(v.quant or "") for v in vs}
    if len({(v.repo, v.revision) for v in vs}) == 1 and len(quants) > 1:
        return "quant"
    return "label"


def step_to_x(step: int) -> float:
    """The step axis transform: log10(step + 1). Step 0 sits at 0, steps ≥ 10 are spaced almost logarithmically."""
    return math.log10(step + 1)


def _quant_of(e: _Entry) -> str | None:
    q = (e.data.get("source") or {}).get("quant")
    if q:
        return q
    v = _parsed(e.data.get("spec"))
    return v.quant if v else None


def _error_y(err: float | None, color: str) -> dict:
    return dict(type="data", array=[err if err is not None else 0.0], visible=True, color=color, thickness=1.5)


def ppl_figure(run: dict) -> go.Figure:
    """Perplexity per entry with ± error bars (error_y), laid out by ppl_axis_mode(run).

    - 'step': x = log10(step + 1) (see step_to_x) with ticks labelled by real steps, so step 0 is placed.
    - 'quant': x = file size in MB (1 MB = 10^6 bytes); bits per weight in the point labels and hover.
    - 'label': one bar per entry.
    In 'step' mode a reference that is not a step of the same repo is drawn as a dashed horizontal line.
    One trace per entry (named by its label); grey connecting lines are extra traces named '… (trend)'.
    """
    mode = ppl_axis_mode(run)
    entries = [e for e in _entries(run) if e.data.get("ppl") is not None]
    unit = "text" if (run.get("params") or {}).get("scoring") == "corpus" else "prompt"
    x_title = {"step": "training step (axis: log10(step + 1))", "quant": "file size (MB)", "label": "variant"}[mode]
    fig = _figure(f"Perplexity on the {unit} (± 1 standard error)", x_title, "perplexity")
    if not entries:
        return _placeholder(fig, "No perplexity yet.")
    hover = "<b>%{fullData.name}</b><br>%{customdata[0]}<br>PPL = %{customdata[1]} ± %{customdata[2]}<extra></extra>"

    def custom(e: _Entry, where: str) -> list:
        return [[_esc(where), fmt_num(e.data["ppl"]), fmt_num(e.data.get("ppl_err") or 0.0)]]

    if mode == "label":
        for e in entries:
            fig.add_trace(go.Bar(x=[_esc(e.name)], y=[e.data["ppl"]], name=_esc(e.name), marker_color=e.color,
                                 error_y=_error_y(e.data.get("ppl_err"), "#222"),
                                 customdata=custom(e, e.data.get("spec", "")), hovertemplate=hover))
        fig.update_layout(barmode="overlay", xaxis=dict(type="category"), showlegend=False)
        return fig

    placed: list[tuple[_Entry, float, str, str]] = []  # entry, x, group for trend line, hover line
    lines: list[_Entry] = []
    repo = _parsed(run["variants"][0]["spec"]).repo
    for e in entries:
        v = _parsed(e.data.get("spec"))
        if mode == "step":
            if v is None or v.step is None or v.repo != repo:
                lines.append(e)
                continue
            placed.append((e, step_to_x(v.step), v.quant or "", f"step {v.step} · {v.quant or ''}"))
        else:
            nbytes = (e.data.get("source") or {}).get("bytes")
            if not nbytes:
                lines.append(e)
                continue
            q = _quant_of(e)
            bpw = f" · {QUANTS[q].bpw:g} bpw" if q in QUANTS else ""
            placed.append((e, nbytes / 1e6, "all", f"{q or '?'}{bpw} · {nbytes / 1e6:.1f} MB"))
    for group in sorted({g for _, _, g, _ in placed}):
        pts = sorted((x, e.data["ppl"]) for e, x, g, _ in placed if g == group)
        if len(pts) > 1:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines",
                                     name=_esc(f"{group} (trend)" if mode == "step" else "trend"),
                                     line=dict(color="#c8c8c8", width=1.5), hoverinfo="skip", showlegend=False))
    for e, x, _, where in placed:
        q = _quant_of(e)
        label = q if mode == "quant" else None
        if mode == "quant" and q in QUANTS:
            label = f"{q} ({QUANTS[q].bpw:g} bpw)"
        fig.add_trace(go.Scatter(
            x=[x], y=[e.data["ppl"]], name=_esc(e.name), mode="markers+text" if label else "markers",
            text=[_esc(label)] if label else None, textposition="top center",
            marker=dict(color=e.color, size=11, symbol="diamond" if e.is_reference else "circle"),
            error_y=_error_y(e.data.get("ppl_err"), e.color), customdata=custom(e, where), hovertemplate=hover))
    xs = [x for _, x, _, _ in placed] or [0.0, 1.0]
    for e in lines:  # the reference, when it has no place on this axis
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[e.data["ppl"]] * 2, mode="lines", name=_esc(e.name),
                                 line=dict(color=e.color, dash="dash"),
                                 customdata=custom(e, e.data.get("spec", "")) * 2, hovertemplate=hover))
    if mode == "step":
        top = max(xs)
        ticks = [s for s in (0, 1, 10, 100, 1000, 10000, 100000) if step_to_x(s) <= top + 0.3]
        fig.update_xaxes(tickvals=[step_to_x(s) for s in ticks],
                         ticktext=[f"{s // 1000}k" if s >= 1000 else str(s) for s in ticks],
                         range=[-0.2, top + 0.25])
    return fig


# ---------------------------------------------------------------------------------------- surprisal

def scored_token_texts(run: dict) -> list[str] | None:
    """Text of the token scored at each position of token_logprobs, or None when that cannot be aligned.

    Prompt mode: token_logprobs[j] is the logprob of input token j+1. Corpus mode: llama-perplexity's layout,
    n_tokens // ctx chunks whose targets are chunk positions ctx//2 + 1 … ctx - 1; used only when the counts agree.
    """
    inp, params = run.get("input") or {}, run.get("params") or {}
    tokens = inp.get("tokens") or []
    entries = _entries(run)
    n = max((len(e.data.get("token_logprobs") or []) for e in entries), default=0)
    if not tokens or n == 0:
        return None
    if params.get("scoring") == "corpus":
        ctx = int(params.get("ctx") or 0)
        if ctx < 4 or len(tokens) != inp.get("n_tokens", len(tokens)):
            return None
        first = ctx // 2
        idx = [c * ctx + j for c in range(len(tokens) // ctx) for j in range(first + 1, ctx)]
        return [tokens[i] for i in idx] if len(idx) == n else None
    return list(tokens[1:]) if len(tokens) == n + 1 else None


def surprisal_heatmap(run: dict) -> go.Figure:
    """Heatmap entries (rows, reference first) × scored tokens (columns) of surprisal in bits, -logprob/ln 2.

    At most MAX_HEATMAP_COLUMNS columns (the first ones; the title says so). Hover: token text, p, surprisal.
    """
    entries = [e for e in _entries(run) if e.data.get("token_logprobs")]
    texts = scored_token_texts(run)
    fig = _figure("Surprisal per scored token (bits)", "scored token" if texts else "scored position",
                  "variant")
    if not entries:
        return _placeholder(fig, "No scored tokens yet.")
    n = max(len(e.data["token_logprobs"]) for e in entries)
    ncols = min(n, MAX_HEATMAP_COLUMNS)
    if n > ncols:
        fig.update_layout(title_text=_esc(f"Surprisal per scored token (bits): first {ncols} of {n} tokens"))
    z, hover = [], []
    for e in entries:
        lp = np.asarray(e.data["token_logprobs"][:ncols], dtype=np.float64)
        bits = (-lp / LN2).tolist()
        row_z = bits + [None] * (ncols - len(bits))
        z.append(row_z)
        row_h = []
        for j in range(ncols):
            tok = f"{_esc(repr(texts[j]))} · " if texts else ""
            if j < len(bits):
                row_h.append(f"{tok}position {j}<br>p = {_fmt_p(math.exp(lp[j]))}<br>surprisal = {bits[j]:.3f} bits")
            else:
                row_h.append(f"{tok}position {j}<br>not scored yet")
        hover.append(row_h)
    names = [_esc(e.name) for e in entries]
    fig.add_trace(go.Heatmap(z=z, x=list(range(ncols)), y=names, text=hover, colorscale="YlOrRd", zmin=0,
                             colorbar=dict(title=dict(text="bits")), xgap=1 if ncols <= MAX_TICK_LABELS else 0,
                             hovertemplate="<b>%{y}</b><br>%{text}<extra></extra>"))
    fig.update_yaxes(type="category", autorange="reversed")
    if texts and ncols <= MAX_TICK_LABELS:
        fig.update_xaxes(tickvals=list(range(ncols)), ticktext=[_esc(show_token(t)) for t in texts[:ncols]],
                         tickangle=-60)
    return fig


# ---------------------------------------------------------------------------------------- KL divergence

def kld_figure(run: dict, log_y: bool = False) -> go.Figure:
    """Per-token KL divergence from the reference (kld.per_token, nats), one box per variant (mean dashed)."""
    ref = run.get("reference") or {}
    entries = [e for e in _entries(run) if not e.is_reference and (e.data.get("kld") or {}).get("per_token")]
    fig = _figure(f"KL divergence from the reference {ref.get('label') or ''} per token".replace("  ", " "),
                  "variant", "KLD (nats)" + (", log scale" if log_y else ""))
    if not entries:
        return _placeholder(fig, "No KL divergence: choose a reference to compare against."
                            if not ref else "No KL divergence yet.")
    texts = scored_token_texts(run)
    for e in entries:
        per = e.data["kld"]["per_token"]
        hover = [_esc(repr(texts[j])) if texts and j < len(texts) else f"position {j}" for j in range(len(per))]
        fig.add_trace(go.Box(y=list(per), name=_esc(e.name), marker_color=e.color, boxmean=True,
                             boxpoints="outliers", text=hover, hoveron="boxes+points"))
    fig.update_layout(showlegend=False)
    fig.update_xaxes(type="category")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


# ---------------------------------------------------------------------------------------- tables

STAT_COLUMN = "statistic"
# (row name, where: "var"/"ref" top-level key or "kld" key). Names ending in "%" hold fractions shown as percent.
_KL_ROWS: list[tuple[str, str, str]] = [
    ("Mean PPL(Q)", "var", "ppl"), ("Mean PPL(Q) ±", "var", "ppl_err"),
    ("Mean PPL(base)", "ref", "ppl"), ("Mean PPL(base) ±", "ref", "ppl_err"),
    ("Cor(ln(PPL(Q)), ln(PPL(base))) %", "kld", "cor_ln_ppl"),
    ("Mean ln(PPL(Q)/PPL(base))", "kld", "ln_ratio"), ("Mean ln(PPL(Q)/PPL(base)) ±", "kld", "ln_ratio_err"),
    ("Mean PPL(Q)/PPL(base)", "kld", "ppl_ratio"), ("Mean PPL(Q)/PPL(base) ±", "kld", "ppl_ratio_err"),
    ("Mean PPL(Q)-PPL(base)", "kld", "ppl_diff"), ("Mean PPL(Q)-PPL(base) ±", "kld", "ppl_diff_err"),
    ("Mean KLD", "kld", "mean"), ("Mean KLD ±", "kld", "mean_err"), ("Maximum KLD", "kld", "max"),
    ("99.9% KLD", "kld", "p99_9"), ("99.0% KLD", "kld", "p99"), ("95.0% KLD", "kld", "p95"),
    ("90.0% KLD", "kld", "p90"), ("Median KLD", "kld", "median"), ("10.0% KLD", "kld", "p10"),
    ("5.0% KLD", "kld", "p5"), ("1.0% KLD", "kld", "p1"), ("0.1% KLD", "kld", "p0_1"), ("Minimum KLD", "kld", "min"),
    ("Mean Δp %", "kld", "dp_mean"), ("Mean Δp ± %", "kld", "dp_mean_err"), ("Maximum Δp %", "kld", "dp_max"),
    ("99.9% Δp %", "kld", "dp_p99_9"), ("99.0% Δp %", "kld", "dp_p99"), ("95.0% Δp %", "kld", "dp_p95"),
    ("90.0% Δp %", "kld", "dp_p90"), ("75.0% Δp %", "kld", "dp_p75"), ("Median Δp %", "kld", "dp_median"),
    ("25.0% Δp %", "kld", "dp_p25"), ("10.0% Δp %", "kld", "dp_p10"), ("5.0% Δp %", "kld", "dp_p5"),
    ("1.0% Δp %", "kld", "dp_p1"), ("0.1% Δp %", "kld", "dp_p0_1"), ("Minimum Δp %", "kld", "dp_min"),
    ("RMS Δp %", "kld", "dp_rms"), ("RMS Δp ± %", "kld", "dp_rms_err"),
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
    rows = []
    for name, where, key in _KL_ROWS:
        src = {"var": lambda v: v, "ref": lambda v: ref, "kld": lambda v: v["kld"]}[where]
        rows.append([name] + [src(v).get(key) for v in vs])
    return columns, rows


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
        kld = d.get("kld") or {}
        top = (d.get("next_token") or [None])[0] or {}
        tim = d.get("timings") or {}
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
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a == 0:
        return "0"
    if a < 1e-4 or a >= 1e12:
        return f"{x:.{digits - 1}e}"
    decimals = min(6, max(0, digits - 1 - math.floor(math.log10(a))))
    return f"{x:.{decimals}f}"


def format_cell(value, hint: str | None = None) -> str:
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
    if isinstance(value, int):
        return str(value)
    hint = hint or ""
    if not math.isfinite(float(value)):
        return str(float(value))
    if hint.endswith("%"):
        return f"{100.0 * value:.3f}"
    if hint.endswith(" s"):
        return f"{value:.2f}"
    if hint.endswith("MB"):
        return f"{value:.1f}"
    return fmt_num(value)


def format_table(columns: list[str], rows: list[list]) -> list[list[str]]:
    """Every cell through format_cell. A table whose first column is STAT_COLUMN takes hints from row names."""
    by_row = bool(columns) and columns[0] == STAT_COLUMN
    return [[format_cell(c, r[0] if by_row else columns[i]) for i, c in enumerate(r)] for r in rows]


# ---------------------------------------------------------------------------------------- all

def all_figures(run: dict) -> dict[str, go.Figure]:
    """Every figure of the dashboard, by name: next_token, ppl, surprisal, kld."""
    return {"next_token": next_token_figure(run), "ppl": ppl_figure(run), "surprisal": surprisal_heatmap(run),
            "kld": kld_figure(run)}
