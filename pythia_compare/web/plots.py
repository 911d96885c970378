"""Figures and generation HTML for one comparison run, and the figures of a sweep.

Owns turning a run (`pythia_compare.run.Run`, docs/run.md) into plotly figures and the side-by-side generations'
HTML. Every builder is pure: run in, figure / str out, and works on partial runs (variants still arriving,
generation or kld None, no reference). The public builders also take a run JSON dict, read once through
`run.as_run`. Never imports gradio, never loads a model, never touches
files, the network or the database; tables, the formatting of numbers and tokens, and the palette are
report.py's (it has no plotly, so the CLI shares them).

Colours and names: report.shown_entries (the reference REFERENCE_COLOR, variant i PALETTE[i % len]), so a variant
keeps its colour in every figure, in the tables and while a run streams (variants only ever get appended).
Text from the model or the user is escaped everywhere: plotly renders a pseudo-HTML subset in labels and
hover, so plotly text goes through `_esc`; the generations' HTML goes through html.escape.

Speed (a shared link opens at once, issue 13): a run's figures are built as plain dicts (`{"data": [...],
"layout": {...}}`) and wrapped once in a go.Figure without plotly's per-property validation (`_figure_of`), with
the plotly_white template read once (`_template`). The dicts use only names plotly knows: the tests rebuild
every figure through plotly's validation and require the same figure.

The Sweeps tab's figures are sweepplots.py's; they share base_layout and esc from here.
"""

from __future__ import annotations

import functools
import html
import math

import numpy as np
import plotly.graph_objects as go

from ..runs.metrics import corpus_target_indices
from ..runs.report import Shown, fmt_num, no_error, parsed, quant_of, show_token, shown_entries
from ..runs.run import Entry, GenToken, Run, as_run
from ..variants import FINAL_STEP

MAX_HEATMAP_COLUMNS = 512  # surprisal heatmap shows at most this many scored tokens
MAX_TICK_LABELS = 80  # above this many columns the heatmap's x ticks are positions, not token text
LN2 = math.log(2.0)
TITLE_CHARS = 36  # titles wrap at this many characters, so they fit a phone's width (390 px)
MAX_GROUPED = 4  # more entries than this: the next-token chart gets a panel per entry (grouped bars get thin)
FACET_TOKENS = 5  # tokens per panel then
LOG_SPAN = 10.0  # perplexities spanning more than this factor get a log axis
TEMPLATE = "plotly_white"


def _wrap(title: str, width: int = TITLE_CHARS) -> str:
    """Plain text wrapped at spaces into lines of at most `width` characters, escaped, joined by <br>."""
    import textwrap

    return "<br>".join(esc(line) for line in textwrap.wrap(title, width, break_on_hyphens=False) or [""])


def esc(text: str) -> str:
    """Escape text for plotly labels and hover (plotly reads <b>, <br>, &amp; … as markup)."""
    return html.escape(str(text), quote=False)


def _unit(run: Run) -> str:
    return "text" if run.params.scoring == "corpus" else "prompt"


def _fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.2e}"


@functools.cache
def _template() -> dict:
    """The figures' template as the dict plotly.js reads, read from plotly once. Shared: never modified (every
    go.Figure copies the layout it is given)."""
    import plotly.io as pio

    return pio.templates[TEMPLATE].to_plotly_json()


def base_layout(title: str, x_title: str, y_title: str) -> dict:
    """A figure's layout: wrapped title, axis titles, the template, the legend titled "variant" in rows at the
    bottom of the figure (beside the plot, on a phone, it took half the width)."""
    text = _wrap(title)
    return {"title": {"text": text, "font": {"size": 15}}, "xaxis": {"title": {"text": x_title}},
            "yaxis": {"title": {"text": y_title}}, "template": _template(),
            "legend": {"title": {"text": "variant"}, **LEGEND_BELOW},
            "hovermode": "closest", "margin": {"l": 60, "r": 20, "t": 36 + 19 * (text.count("<br>") + 1), "b": 60}}


# a legend in rows at the bottom of the figure, below the x axis title (its height is taken from the plot's, not
# its width; "container": placed in the whole figure, so it never covers the axis title)
LEGEND_BELOW = {"orientation": "h", "x": 0.0, "xanchor": "left", "yref": "container", "y": 0.0, "yanchor": "bottom"}


def _figure_of(data: list[dict], layout: dict) -> go.Figure:
    """A go.Figure of trace dicts (each with its "type") and a layout dict, taken as they are (plotly's
    `_validate=False`): plotly's property-by-property validation cost 90% of a link's server time, and the dicts
    are ours (test_plots validates every figure through plotly and requires it unchanged)."""
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def _placeholder_layout(layout: dict, message: str) -> dict:
    """The layout of an empty figure: the message in its middle, no axes."""
    layout.setdefault("annotations", []).append({"text": esc(message), "showarrow": False, "xref": "paper",
                                                 "yref": "paper", "x": 0.5, "y": 0.5,
                                                 "font": {"size": 14, "color": "#666"}})
    layout["xaxis"]["visible"] = False
    layout["yaxis"]["visible"] = False
    return layout


_TOKEN_HOVER = ("<b>%{fullData.name}</b><br>token %{customdata[0]} (id %{customdata[1]})"
                "<br>p = %{y:.4f}<br>rank %{customdata[2]}<extra></extra>")


def next_token_figure(run: Run | dict) -> go.Figure:
    """Grouped bars over the union of every entry's top-k next tokens; one trace per entry.

    Categories are ordered by the highest probability any entry gives the token. A token outside an entry's
    top-k has no bar for that entry (its probability is unknown, below that entry's k-th), not a zero.
    """
    run = as_run(run)
    layout = base_layout(f"Next-token distribution after the {_unit(run)} (top-k of each variant)",
                     "next token (␣ = space)", PROB_AXIS)
    entries = [e for e in shown_entries(run) if e.entry.next_token]
    if not entries:
        return _figure_of([], _placeholder_layout(layout, "No next-token distribution yet."))
    if len(entries) > MAX_GROUPED:
        return _next_token_panels(layout, entries)
    best: dict[int, float] = {}
    text_of: dict[int, str] = {}
    for e in entries:
        for t in e.entry.next_token:
            best[t.id] = max(best.get(t.id, 0.0), t.prob)
            text_of.setdefault(t.id, t.text)
    ids = sorted(best, key=lambda i: (-best[i], i))
    shown = [show_token(text_of[i]) for i in ids]
    dup = {s for s in shown if shown.count(s) > 1}
    cats = [esc(s + (f" (id {i})" if s in dup else "")) for s, i in zip(shown, ids)]
    data = []
    for e in entries:
        by_id = {t.id: (rank + 1, t.prob) for rank, t in enumerate(e.entry.next_token)}
        data.append({"type": "bar", "x": cats, "y": [by_id[i][1] if i in by_id else None for i in ids],
                     "name": esc(e.name), "marker": {"color": e.color},
                     "customdata": [[esc(repr(text_of[i])), i, by_id[i][0] if i in by_id else None] for i in ids],
                     "hovertemplate": _TOKEN_HOVER})
    layout["barmode"] = "group"
    layout["xaxis"].update(type="category", categoryorder="array", categoryarray=cats)
    layout["yaxis"].update(range=_prob_range(max(best.values())))
    return _figure_of(data, layout)


PROB_AXIS = "probability (axis fitted to the largest)"


def _prob_range(top: float) -> list[float]:
    """A probability axis from 0 to a little above the largest bar (never past 1), so that bars of 0.08 are not
    slivers on a 0–1 axis."""
    return [0.0, min(1.0, max(float(top), 1e-6) * 1.15)]


@functools.lru_cache(maxsize=16)
def _panel_grid(rows: int) -> dict:
    """make_subplots' layout of `rows` × 2 panels sharing y by row (axes with domains, a title slot per panel)."""
    from plotly.subplots import make_subplots

    grid = make_subplots(rows=rows, cols=2, shared_yaxes=True, vertical_spacing=0.5 / rows, horizontal_spacing=0.06,
                         subplot_titles=["·"] * (2 * rows)).to_plotly_json()["layout"]
    grid.pop("template", None)
    return grid


def _next_token_panels(layout: dict, entries: list[Shown]) -> go.Figure:
    """A panel per entry, two across, each with that entry's FACET_TOKENS most likely tokens (one trace each)."""
    import copy

    rows = math.ceil(len(entries) / 2)
    grid = copy.deepcopy(_panel_grid(rows))
    titles = grid.pop("annotations")[:len(entries)]
    for note, e in zip(titles, entries):
        note["text"] = esc(e.name)
    for k in range(1, 2 * rows + 1):
        x, y = grid[f"xaxis{k if k > 1 else ''}"], grid[f"yaxis{k if k > 1 else ''}"]
        x.update(type="category", tickangle=0, automargin=True)
        y.update(title={"text": "probability" if k % 2 else ""},
                 range=_prob_range(max(t.prob for e in entries for t in e.entry.next_token[:FACET_TOKENS])))
    grid["xaxis"]["title"] = layout["xaxis"]["title"]
    layout.update(grid, annotations=titles, height=140 + 190 * rows, showlegend=False, bargap=0.25)
    layout["title"] = dict(layout["title"], text=_wrap(f"Next-token distribution: each variant's top {FACET_TOKENS}"))
    data = []
    for k, e in enumerate(entries):
        top = e.entry.next_token[:FACET_TOKENS]
        data.append({"type": "bar", "xaxis": f"x{k + 1 if k else ''}", "yaxis": f"y{k + 1 if k else ''}",
                     "x": [esc(show_token(t.text)) + "\u200b" * r for r, t in enumerate(top)],  # same text: 2 bars
                     "y": [t.prob for t in top], "name": esc(e.name), "marker": {"color": e.color},
                     "customdata": [[esc(repr(t.text)), t.id, r + 1] for r, t in enumerate(top)],
                     "hovertemplate": _TOKEN_HOVER})
    return _figure_of(data, layout)


def _prob_color(p: float) -> str:
    """Background for a token of probability p: red (p≈0) through yellow to green (p≈1)."""
    return f"hsl({round(120 * min(max(float(p), 0.0), 1.0))}, 75%, 82%)"


def _token_span(tok: GenToken) -> str:
    """A generated token: focusable (a tap or a click focuses it), its top alternatives in a box that the page's
    CSS (assets/style.css: .pc-tok:focus .pc-alt) shows while it is hovered or focused; no script needed."""
    lines = [f"{tok.text!r}  p = {_fmt_p(tok.prob)}", "top alternatives:"]
    for alt in tok.top:
        mark = "→" if alt.id == tok.id else "  "
        lines.append(f"{mark} {alt.text!r}  {_fmt_p(alt.prob)}")
    return (f'<span class="pc-tok" tabindex="0" role="button" style="background:{_prob_color(tok.prob)};color:#111;'
            f'white-space:pre-wrap;border-radius:2px">{html.escape(tok.text, quote=True)}'
            f'<span class="pc-alt" role="tooltip">{html.escape(chr(10).join(lines), quote=True)}</span></span>')


def generation_html(run: Run | dict) -> str:
    """Side-by-side generations, one column per entry (reference first).

    Each token is a <span> coloured by its probability, with a title= tooltip listing the top alternatives.
    All model and user text is HTML-escaped.
    """
    entries = shown_entries(as_run(run))
    if not entries:
        return '<div class="pc-gen"><em>No generations yet.</em></div>'
    cols = []
    for e in entries:
        gen = e.entry.generation
        if gen is None:
            body = "<em>no generation</em>"
        elif gen.tokens:
            body = "".join(_token_span(t) for t in gen.tokens)
        else:
            body = f'<span style="white-space:pre-wrap">{html.escape(gen.text or "")}</span>'
        # min-width 0 and overflow-wrap: a generation without spaces (step 0's) wraps inside its own card
        cols.append(f'<div class="pc-gen-col" style="flex:1 1 14em;min-width:0;max-width:100%;'
                    f'border-top:4px solid {e.color};padding:0.4em;overflow-wrap:anywhere;word-break:break-word">'
                    f'<div style="font-weight:600;margin-bottom:0.3em">{html.escape(e.name)}</div>'
                    f'<div style="font-family:monospace;line-height:1.6">{body}</div></div>')
    swatch = [f'<span style="background:{_prob_color(p)};color:#111">&nbsp;{w}&nbsp;</span>' for p, w in [(0, "low"),
                                                                                                 (1, "high")]]
    legend = ('<div style="font-size:0.85em;color:#666;margin-top:0.4em">Background: probability of each generated '
              f'token, {swatch[0]} to {swatch[1]}; hover or tap a token for the top alternatives.</div>')
    return (f'<div class="pc-gen"><div style="display:flex;flex-wrap:wrap;gap:0.8em">{"".join(cols)}</div>'
            f"{legend}</div>")


def ppl_axis_mode(run: Run | dict) -> str:
    """How ppl_figure lays out the variants: 'step', 'quant' or 'label'.

    'step' when every variant is a training step of one repo and at least two steps differ; 'quant' when every
    variant is the same repo and revision and at least two quants differ; else 'label'.
    """
    vs = [parsed(v.spec) for v in as_run(run).variants]
    if not vs or any(v is None or v.kind == "local" for v in vs):
        return "label"
    if all(v.step is not None for v in vs) and len({v.repo for v in vs}) == 1 and len({v.step for v in vs}) > 1:
        return "step"
    # One checkpoint: a bare quant (Q8_0, revision None) and F16 (step{FINAL_STEP}) are both the final one.
    ckpt = {(v.repo, v.revision or (f"step{FINAL_STEP}" if v.repo is None else "main")) for v in vs}
    return "quant" if len(ckpt) == 1 and len({v.quant or "" for v in vs}) > 1 else "label"


def step_to_x(step: int) -> float:
    """The step axis transform: log10(step + 1). Step 0 sits at 0, steps ≥ 10 are spaced almost logarithmically."""
    return math.log10(step + 1)


def _error_y(err: float | None, color: str, known: bool = True) -> dict:
    return dict(type="data", array=[err if err is not None else 0.0], visible=known, color=color, thickness=1.5)


_PPL_HOVER = "<b>%{fullData.name}</b><br>%{customdata[0]}<br>PPL = %{customdata[1]} ± %{customdata[2]}<extra></extra>"


def ppl_figure(run: Run | dict) -> go.Figure:
    """Perplexity per entry with ± error bars (error_y), laid out by ppl_axis_mode(run).

    - 'step': x = log10(step + 1) (see step_to_x) with ticks labelled by real steps, so step 0 is placed.
    - 'quant': x = file size in MB (1 MB = 10^6 bytes); bits per weight in the point labels and hover.
    - 'label': one bar per entry.
    In 'step' mode a reference that is not a step of the same repo is drawn as a dashed horizontal line.
    One trace per entry (named by its label); grey connecting lines are extra traces named '… (trend)'.
    """
    run = as_run(run)
    mode = ppl_axis_mode(run)
    entries = [e for e in shown_entries(run) if e.entry.ppl is not None]
    x_title = {"step": "training step (axis: log10(step + 1))", "quant": "file size (MB)", "label": "variant"}[mode]
    unknown = [e for e in entries if no_error(e.entry)]
    errors = (f"± n/a: {min(e.entry.n_scored for e in unknown)} scored tokens" if unknown
              else "± 1 standard error")
    layout = base_layout(f"Perplexity on the {_unit(run)} ({errors})", x_title, "perplexity")
    if not entries:
        return _figure_of([], _placeholder_layout(layout, "No perplexity yet."))
    xaxis, yaxis = layout["xaxis"], layout["yaxis"]
    ppls = [e.entry.ppl for e in entries]
    log_y = min(ppls) > 0 and max(ppls) / min(ppls) > LOG_SPAN  # e.g. step 0 beside the quants: log, or all look alike
    if log_y:
        yaxis.update(type="log", title={"text": "perplexity (log scale)"})
    if mode == "label":
        data = [{"type": "bar", "x": [esc(d.name)], "y": [d.entry.ppl], "name": esc(d.name),
                 "marker": {"color": d.color}, "error_y": _error_y(d.entry.ppl_err, "#222", not no_error(d.entry)),
                 "customdata": _ppl_custom(d.entry, d.entry.spec), "hovertemplate": _PPL_HOVER} for d in entries]
        layout.update(barmode="overlay", showlegend=False)
        xaxis.update(type="category", automargin=True)
        return _figure_of(data, layout)

    placed, lines = _ppl_places(run, entries, mode)
    data = _trend_lines(placed, mode)
    xs = [x for _, x, _, _ in placed] or [0.0, 1.0]
    span = max(xs) - min(xs)
    for d, x, _, where in placed:
        e = d.entry
        data.append({"type": "scatter", "x": [x], "y": [e.ppl], "name": esc(d.name), "mode": "markers",
                     "marker": {"color": d.color, "size": 11, "symbol": "diamond" if d.is_reference else "circle"},
                     "error_y": _error_y(e.ppl_err, d.color, not no_error(e)), "customdata": _ppl_custom(e, where),
                     "hovertemplate": _PPL_HOVER})
    pad = 0.05 * span or 0.2
    if mode == "quant":
        _quant_labels(placed, layout, log_y, span)
        pad = 0.2 * span or 1.0  # room for the first and last labels
        xaxis["range"] = [min(xs) - pad, max(xs) + pad]
    for d in lines:
        data.append({"type": "scatter", "x": [min(xs) - pad, max(xs) + pad], "y": [d.entry.ppl] * 2,
                     "mode": "lines", "name": esc(d.name), "line": {"color": d.color, "dash": "dash"},
                     "customdata": _ppl_custom(d.entry, d.entry.spec) * 2, "hovertemplate": _PPL_HOVER})
    if mode == "step":
        top = max(xs)
        ticks = [s for s in (0, 1, 10, 100, 1000, 10000, 100000) if step_to_x(s) <= top + 0.3]
        xaxis.update(tickvals=[step_to_x(s) for s in ticks],
                     ticktext=[f"{s // 1000}k" if s >= 1000 else str(s) for s in ticks], range=[-0.2, top + 0.25])
    return _figure_of(data, layout)


def _ppl_custom(e: Entry, where: str) -> list:
    """A perplexity point's hover data: where it sits, its PPL and its ± (n/a on too few tokens)."""
    err = "n/a" if no_error(e) else fmt_num(e.ppl_err or 0.0)
    return [[esc(where), fmt_num(e.ppl), err]]


def _ppl_places(run: Run, entries: list[Shown], mode: str) -> tuple[list[tuple[Shown, float, str, str]], list[Shown]]:
    """Where each entry sits on a 'step' or 'quant' axis: ([(entry, x, trend group, hover line)], the entries
    with no place on it, drawn as horizontal lines (a reference of another kind))."""
    placed: list[tuple[Shown, float, str, str]] = []
    lines: list[Shown] = []
    repo = parsed(run.variants[0].spec).repo
    for d in entries:
        v, q, nbytes = parsed(d.entry.spec), quant_of(d.entry), d.entry.source.bytes
        if mode == "step" and v is not None and v.step is not None and v.repo == repo:
            placed.append((d, step_to_x(v.step), q or "", f"step {v.step} · {q or ''}"))
        elif mode == "quant" and nbytes:
            bpw = f" · {d.entry.source.bpw:.2f} bpw" if d.entry.source.bpw is not None else ""
            placed.append((d, nbytes / 1e6, "all", f"{q or '?'}{bpw} · {nbytes / 1e6:.1f} MB"))
        else:
            lines.append(d)
    return placed, lines


def _trend_lines(placed: list[tuple[Shown, float, str, str]], mode: str) -> list[dict]:
    """Grey lines joining the placed points of each group (a quant along the steps; all files by size)."""
    data = []
    for group in sorted({g for _, _, g, _ in placed}):
        pts = sorted((x, d.entry.ppl) for d, x, g, _ in placed if g == group)
        if len(pts) > 1:
            data.append({"type": "scatter", "x": [p[0] for p in pts], "y": [p[1] for p in pts], "mode": "lines",
                         "name": esc(f"{group} (trend)" if mode == "step" else "trend"),
                         "line": {"color": "#c8c8c8", "width": 1.5}, "hoverinfo": "skip", "showlegend": False})
    return data


LABEL_CHAR_FRACTION = 0.022  # a label character's width as a fraction of a phone-wide plot (≈ 7 px of 310)
LABEL_ROW_PX = 34  # one level of labels (two lines of 11 px text and a gap)


def _quant_labels(placed: list[tuple[Shown, float, str, str]], layout: dict, log_y: bool, span: float) -> None:
    """Each point's quant and bits per weight in a label above it (two short lines), on a pointer to it (layout's
    annotations). A label goes on the lowest level where it clears the labels already there, its width estimated
    from its characters at a phone's width (LABEL_CHAR_FRACTION of the x range each), so that no two labels
    overlap however close the files' sizes are. The figure gets a height of its own, so that each level has
    LABEL_ROW_PX above the points, and no legend (each label names its point)."""
    ax = (lambda v: math.log10(v)) if log_y else (lambda v: v)
    err = [0.0 if no_error(d.entry) else float(d.entry.ppl_err or 0.0) for d, _, _, _ in placed]
    lo = min(ax(max(d.entry.ppl - r, 1e-9) if log_y else d.entry.ppl - r) for (d, _, _, _), r in zip(placed, err))
    hi = max(ax(d.entry.ppl + r) for (d, _, _, _), r in zip(placed, err))
    room = (hi - lo) or 0.2 * abs(hi) or 1.0
    width = 1.4 * (span or 1.0)  # the x range shown (layout's range pads the span by 0.2 on each side)
    ends: list[float] = []  # per level, the right edge of its last label
    spots = []
    for d, x, _, _ in sorted(placed, key=lambda p: p[1]):
        text = _bpw_label(quant_of(d.entry), d.entry)
        half = 0.5 * max(len(line) for line in text.split("<br>")) * LABEL_CHAR_FRACTION * width
        level = next((k for k, end in enumerate(ends) if end < x - half), len(ends))
        if level == len(ends):
            ends.append(-math.inf)
        ends[level] = x + half
        spots.append((d, x, level, text))
    levels = max(len(ends), 1)
    labels_px = LABEL_ROW_PX * levels + 8
    height = 300 + labels_px + layout["margin"]["t"]
    plot_px = height - layout["margin"]["t"] - layout["margin"]["b"]
    y0 = lo - 0.15 * room
    per_px = (hi + 0.05 * room - y0) / (plot_px - labels_px)  # axis units per pixel
    y1 = hi + 0.05 * room + labels_px * per_px
    layout["yaxis"]["range"] = [y0, y1]
    layout.update(height=height, showlegend=False)
    notes = layout.setdefault("annotations", [])
    for d, x, level, text in spots:
        notes.append({"x": x, "y": ax(d.entry.ppl), "ax": x, "ay": y1 - (4 + LABEL_ROW_PX * (level + 0.5)) * per_px,
                      "axref": "x", "ayref": "y", "text": text, "name": esc(d.name), "showarrow": True,
                      "arrowwidth": 1, "arrowhead": 0, "arrowcolor": "#bbb", "standoff": 7, "font": {"size": 11},
                      "bgcolor": "rgba(255,255,255,0.85)"})


def _bpw_label(quant: str | None, e: Entry) -> str:
    """A point's quant and, on a second line when the run measured it, its file's bits per weight
    (variants.bits_per_weight); escaped for plotly."""
    name = esc(quant or "?")
    return f"{name}<br>{e.source.bpw:.2f} bpw" if e.source.bpw is not None else name


def scored_token_texts(run: Run | dict) -> list[str] | None:
    """Text of the token scored at each position of token_logprobs, or None when that cannot be aligned.

    Prompt mode: token_logprobs[j] is the logprob of input token j+1. Corpus mode: llama-perplexity's layout,
    n_tokens // ctx chunks whose targets are chunk positions ctx//2 + 1 … ctx - 1; used only when the counts agree.
    """
    run = as_run(run)
    tokens = run.input.tokens
    n = max((len(e.token_logprobs) for e in run.entries()), default=0)
    if not tokens or n == 0:
        return None
    if run.params.scoring == "corpus":
        ctx = run.params.ctx
        if ctx < 4 or len(tokens) != run.input.n_tokens:
            return None
        idx = corpus_target_indices(len(tokens), ctx)
        return [tokens[i] for i in idx] if len(idx) == n else None
    return list(tokens[1:]) if len(tokens) == n + 1 else None


def surprisal_heatmap(run: Run | dict) -> go.Figure:
    """Heatmap entries (rows, reference first) × scored tokens (columns) of surprisal in bits, -logprob/ln 2.

    At most MAX_HEATMAP_COLUMNS columns (the first ones; the title says so). Hover: token text, p, surprisal.
    """
    run = as_run(run)
    entries = [e for e in shown_entries(run) if e.entry.token_logprobs]
    texts = scored_token_texts(run)
    layout = base_layout("Surprisal per scored token (bits)", "scored token" if texts else "scored position", "variant")
    if not entries:
        return _figure_of([], _placeholder_layout(layout, "No scored tokens yet."))
    n = max(len(e.entry.token_logprobs) for e in entries)
    ncols = min(n, MAX_HEATMAP_COLUMNS)
    if n > ncols:
        title = _wrap(f"Surprisal per scored token (bits): first {ncols} of {n} tokens")
        layout["title"] = dict(layout["title"], text=title)
        layout["margin"] = dict(layout["margin"], t=36 + 19 * (title.count("<br>") + 1))
    tok = [f"{esc(repr(texts[j]))} · " if texts else "" for j in range(ncols)]
    z, hover = [], []
    for e in entries:
        lp = np.asarray(e.entry.token_logprobs[:ncols], dtype=np.float64)
        bits = (-lp / LN2).tolist()
        z.append(bits + [None] * (ncols - len(bits)))
        hover.append([f"{tok[j]}position {j}<br>" + (f"p = {_fmt_p(math.exp(lp[j]))}<br>surprisal = {bits[j]:.3f} bits"
                                                    if j < len(bits) else "not scored yet") for j in range(ncols)])
    data = [{"type": "heatmap", "z": z, "x": list(range(ncols)), "y": [esc(e.name) for e in entries], "text": hover,
             "colorscale": _colorscale("YlOrRd"), "zmin": 0, "colorbar": {"title": {"text": "bits"}},
             "xgap": 1 if ncols <= MAX_TICK_LABELS else 0, "hovertemplate": "<b>%{y}</b><br>%{text}<extra></extra>"}]
    layout["yaxis"].update(type="category", autorange="reversed")
    if texts and ncols <= MAX_TICK_LABELS:
        layout["xaxis"].update(tickvals=list(range(ncols)), ticktext=[esc(show_token(t)) for t in texts[:ncols]],
                               tickangle=-60)
    return _figure_of(data, layout)


@functools.cache
def _colorscale_json(name: str) -> tuple:
    return tuple(tuple(step) for step in go.Heatmap(colorscale=name).colorscale)


def _colorscale(name: str) -> list[list]:
    """A named plotly colour scale as the [[fraction, colour], …] list that validation would make of the name."""
    return [list(step) for step in _colorscale_json(name)]


def kld_log_axis(run: Run | dict) -> bool:
    """Whether the KL box plot needs a log axis: the variants' median KLDs span more than LOG_SPAN (a step beside
    quants: nats against thousandths, where a linear axis draws every quant flat at 0), the PPL plot's rule."""
    meds = [float(np.median(d.entry.kld.per_token)) for d in shown_entries(as_run(run))
            if not d.is_reference and d.entry.kld is not None and d.entry.kld.per_token]
    meds = [m for m in meds if m > 0]
    return len(meds) > 1 and max(meds) / min(meds) > LOG_SPAN


def kld_figure(run: Run | dict, log_y: bool | None = None) -> go.Figure:
    """Per-token KL divergence from the reference (kld.per_token, nats), one box per variant (mean dashed); on a
    log axis when log_y, or (None) when kld_log_axis says the spread calls for it (tokens of KLD 0 then drop
    out of the drawing, as they cannot sit on a log axis)."""
    run = as_run(run)
    if log_y is None:
        log_y = kld_log_axis(run)
    ref = run.reference
    entries = [d for d in shown_entries(run)
               if not d.is_reference and d.entry.kld is not None and d.entry.kld.per_token]
    layout = base_layout(f"KL divergence from the reference {(ref.label if ref else '') or ''} per token"
                     .replace("  ", " "), "variant", "KLD (nats)" + (", log scale" if log_y else ""))
    if not entries:
        return _figure_of([], _placeholder_layout(layout, "No KL divergence: choose a reference to compare against."
                                                  if ref is None else "No KL divergence yet."))
    texts = scored_token_texts(run)
    data = []
    for d in entries:
        per = d.entry.kld.per_token
        if texts:
            hover = [esc(repr(t)) for t in texts[:len(per)]] + [f"position {j}" for j in range(len(texts), len(per))]
        else:
            hover = [f"position {j}" for j in range(len(per))]
        data.append({"type": "box", "y": list(per), "name": esc(d.name), "marker": {"color": d.color},
                     "boxmean": True, "boxpoints": "outliers", "text": hover, "hoveron": "boxes+points"})
    layout.update(showlegend=False)
    layout["xaxis"]["type"] = "category"
    layout["yaxis"]["type"] = "log" if log_y else "linear"
    return _figure_of(data, layout)


_LENS_HOVER = ("<b>%{y}</b><br>layer %{x}: %{customdata[0]}<br>p = %{z:.4f}<br>rank of the baseline's final "
               "top-1: %{customdata[1]}<extra></extra>")


def lens_figure(run: Run | dict) -> go.Figure:
    """The "Layers" view of a lens run (Entry.lens): on top, per entry and asked position, the lens's top token at
    each layer coloured by its probability; below, each variant's KL from the baseline's lens at the same layer;
    at the bottom, the rank of the baseline's final top-1 in each entry's lens (log scale, 1 at the top)."""
    run = as_run(run)
    layout = base_layout("Layers: the logit lens after each layer", "layer", "")
    shown = [s for s in shown_entries(run) if s.entry.lens is not None and s.entry.lens.positions]
    if not shown:
        why = ("No logit lens: run a prompt with the lens on (compare --lens)." if run.params.lens_positions is None
               else "The logit lens is unavailable for every variant of this run.")
        return _figure_of([], _placeholder_layout(layout, why))
    positions = run.params.lens_positions or []
    many = len(positions) > 1
    rows, z, text, custom = [], [], [], []
    data: list[dict] = []
    n_layer = len(shown[0].entry.lens.positions[0].layers)
    for s in shown:
        for i, pos in enumerate(s.entry.lens.positions):
            label = esc(s.name + (f" @{pos.position}" if many else ""))
            rows.append(label)
            z.append([layer.top[0].prob for layer in pos.layers])
            text.append([esc(show_token(layer.top[0].text)) for layer in pos.layers])
            custom.append([[esc(repr(layer.top[0].text)), layer.ref_rank] for layer in pos.layers])
            dash = "solid" if i == len(s.entry.lens.positions) - 1 else "dot"
            xs = list(range(len(pos.layers)))
            if any(layer.kl is not None for layer in pos.layers):
                data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "yaxis": "y2",
                             "y": [layer.kl for layer in pos.layers], "name": label, "legendgroup": label,
                             "line": {"color": s.color, "dash": dash}, "showlegend": False,
                             "hovertemplate": "<b>%{fullData.name}</b><br>layer %{x}: KL %{y:.4g} nats<extra></extra>"})
            data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "yaxis": "y3",
                         "y": [layer.ref_rank for layer in pos.layers], "name": label, "legendgroup": label,
                         "line": {"color": s.color, "dash": dash},
                         "hovertemplate": "<b>%{fullData.name}</b><br>layer %{x}: rank %{y}<extra></extra>"})
    heat = {"type": "heatmap", "x": list(range(n_layer)), "y": rows, "z": z, "text": text, "customdata": custom,
            "texttemplate": "%{text}", "zmin": 0, "zmax": 1, "colorscale": _colorscale("Viridis"),
            "colorbar": {"title": {"text": "p(top)"}, "len": 0.42, "y": 0.79}, "hovertemplate": _LENS_HOVER,
            "name": "top token", "showlegend": False}
    base = shown[0].name
    layout["xaxis"].update(dtick=1, anchor="y3")
    layout["yaxis"] = {"domain": [0.58, 1.0], "autorange": "reversed", "automargin": True,
                       "title": {"text": "top token by layer"}}
    layout["yaxis2"] = {"domain": [0.31, 0.52], "anchor": "x", "title": {"text": "KL from baseline"},
                        "rangemode": "tozero"}
    layout["yaxis3"] = {"domain": [0.0, 0.25], "anchor": "x", "type": "log", "autorange": "reversed", "dtick": 1,
                        "title": {"text": "rank of final top-1"}}
    layout["annotations"] = [{"text": esc(f"baseline: {base}; dotted lines: earlier positions" if many
                                          else f"baseline: {base}"), "showarrow": False, "xref": "paper",
                              "yref": "paper", "x": 0, "y": 0.545, "xanchor": "left", "font": {"size": 11}}]
    layout["legend"] = dict(layout["legend"], orientation="h", x=0, y=-0.12, yanchor="top")
    layout["margin"] = dict(layout["margin"], b=90)
    layout.update(height=440 + 34 * len(rows))
    return _figure_of([heat, *data], layout)


def all_figures(run: Run | dict) -> dict[str, go.Figure]:
    """Every figure of the dashboard for this run, by name: next_token, ppl, surprisal, kld, and lens (the Layers
    figure) for a run made with the logit lens."""
    run = as_run(run)
    figures = {"next_token": next_token_figure(run), "ppl": ppl_figure(run), "surprisal": surprisal_heatmap(run),
               "kld": kld_figure(run)}
    if run.params.lens_positions is not None:
        figures["lens"] = lens_figure(run)
    return figures
