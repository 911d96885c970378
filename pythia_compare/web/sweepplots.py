"""The Sweeps tab's figures: a sweep JSON dict (docs/sweeps.md) -> plotly figures of perplexity and KL against
the training step, perplexity against bits per weight, a steps × quants heatmap, and EleutherAI's published
accuracies against step (sweep_published_figure, given sweepview's choice of numbers); for a LAMBADA sweep, its
cells' LAMBADA accuracy against step beside EleutherAI's published lambada_openai accuracy (sweep_lambada_figure).

Pure, as plots.py is (whose title layout, template and escaping these share): sweep in, figure out. Built with
plotly's API (a sweep has few points). Every point and heatmap square carries its cell's run id at
customdata[1], so a click opens that cell's run.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from .plots import base_layout, esc
from ..runs.report import PALETTE, fmt_num
from ..variants import quant_rank

# A sweep JSON (docs/sweeps.md) holds a steps × quants grid of cells, each {"step", "quant", "status", "run_id",
# "ppl", "ppl_err", "kld_mean", "kld_mean_err", "kld_p99", "ln_ratio", "ln_ratio_err", "bpw", "hub"}. Only cells
# with status "done" are drawn. Quant q keeps colour PALETTE[i] (i its place in sweep_quant_order) in every figure.
SWEEP_STEP0_LABEL = "step0"
MAX_STEP_TICKS = 10  # up to this many steps, every step is a tick; more, and the ticks are decades
MAX_LEGEND_STEPS = 20  # the PPL-vs-bpw figure lists its steps in a legend up to this many
MAX_HEATMAP_TEXT = 120  # squares up to which the heatmap writes each value in its square (beyond: hover only)


def _figure(title: str, x_title: str, y_title: str) -> go.Figure:
    """An empty go.Figure with plots.base_layout's layout, for building with plotly's API (the sweeps' figures)."""
    return go.Figure(layout=base_layout(title, x_title, y_title))


def _placeholder(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=esc(message), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="#666"))
    return fig.update_layout(xaxis_visible=False, yaxis_visible=False)


def _done_cells(sweep: dict) -> list[dict]:
    return [c for c in sweep.get("cells") or [] if c.get("status") == "done" and c.get("ppl") is not None]


def sweep_quant_order(sweep: dict) -> list[str]:
    """The sweep's quants and any other quant a cell has, highest precision first (variants.quant_rank), however
    the sweep listed them: the order of every legend, line and heatmap row."""
    quants = {str(q) for q in sweep.get("quants") or []} | {str(c.get("quant")) for c in sweep.get("cells") or []}
    return sorted(quants, key=quant_rank)


def _cell_series(cell: dict) -> str:
    """The line a cell belongs to: its quant, or 'quant (Hub file)' for the seed repo's own files."""
    return f"{cell.get('quant')} (Hub file)" if cell.get("hub") else str(cell.get("quant"))


def _series_colors(sweep: dict) -> dict[str, str]:
    colors = {q: PALETTE[i % len(PALETTE)] for i, q in enumerate(sweep_quant_order(sweep))}
    return {**colors, **{f"{q} (Hub file)": c for q, c in colors.items()}}


def sweep_step_x(sweep: dict) -> dict[int, float]:
    """Step -> x on the log step axis: a step > 0 sits at itself; step0 half a decade before the first decade
    at or below the smallest step > 0, where its tick reads SWEEP_STEP0_LABEL."""
    steps = sorted({int(s) for s in sweep.get("steps") or []} | {int(c["step"]) for c in sweep.get("cells") or []})
    positive = [s for s in steps if s > 0]
    out = {s: float(s) for s in positive}
    if 0 in steps:
        out[0] = 10 ** (math.floor(math.log10(positive[0])) - 0.5) if positive else 1.0
    return out


def _step_label(step: int) -> str:
    if step == 0:
        return SWEEP_STEP0_LABEL
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


def _log_step_axis(fig: go.Figure, sweep: dict) -> go.Figure:
    """A logarithmic x axis over the sweep's steps, ticks labelled by step (step0 at its start)."""
    xs = sweep_step_x(sweep)
    if not xs:
        return fig.update_xaxes(type="log")
    lo, hi = math.log10(min(xs.values())), math.log10(max(xs.values()))
    steps = sorted(xs)
    if len(steps) <= MAX_STEP_TICKS:
        ticks = steps
    else:
        decades = [10 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) if lo - 1e-9 <= k <= hi + 1e-9]
        ticks = ([0] if 0 in xs else []) + [d for d in decades if 0 not in xs or d > xs[0] * 3]
    return fig.update_xaxes(type="log", range=[lo - 0.2, hi + 0.2], tickvals=[xs.get(s, s) for s in ticks],
                            ticktext=[_step_label(s) for s in ticks])


def _sweep_title(sweep: dict, what: str) -> str:
    name = sweep.get("name") or sweep.get("sweep_id") or "sweep"
    return f"{what} · {name}"


def _sweep_hover(what: str) -> str:
    return ("<b>%{fullData.name}</b><br>step %{customdata[0]}<br>" + what
            + "<br>run %{customdata[1]}<extra></extra>")


def sweep_ppl_figure(sweep: dict) -> go.Figure:
    """PPL vs training step on log axes, one line per quant (Hub files their own line), ± 1 standard error."""
    fig = _figure(_sweep_title(sweep, "Perplexity vs training step (± 1 standard error)"),
                  "training step (log scale)", "perplexity (log scale)")
    fig.update_layout(legend_title_text="quant")
    cells, xs, colors = _done_cells(sweep), sweep_step_x(sweep), _series_colors(sweep)
    if not cells:
        return _placeholder(fig, "No finished cells yet.")
    series = [s for q in sweep_quant_order(sweep) for s in (q, f"{q} (Hub file)")]
    for name in series:
        pts = sorted((c for c in cells if _cell_series(c) == name), key=lambda c: int(c["step"]))
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[xs[int(c["step"])] for c in pts], y=[c["ppl"] for c in pts], name=esc(name), mode="lines+markers",
            marker=dict(color=colors.get(name), size=8, symbol="diamond" if "(Hub" in name else "circle"),
            line=dict(color=colors.get(name), dash="dot" if "(Hub" in name else "solid"),
            error_y=dict(type="data", array=[c.get("ppl_err") or 0.0 for c in pts], visible=True,
                         color=colors.get(name), thickness=1.5),
            customdata=[[_step_label(int(c["step"])), c.get("run_id") or "–", fmt_num(c["ppl"]),
                         fmt_num(c.get("ppl_err") or 0.0)] for c in pts],
            hovertemplate=_sweep_hover("PPL = %{customdata[2]} ± %{customdata[3]}")))
    fig.update_yaxes(type="log")
    _difference_buttons(fig, sweep, cells)
    return _log_step_axis(fig, sweep)


PPL_VIEW = "perplexity"
DIFF_VIEW = "% above the reference"


def percent_above_reference(cell: dict, reference: str | None) -> tuple[float | None, float]:
    """(100 · (PPL(Q)/PPL(ref) − 1), its standard error) of a cell, from its ln ratio; the reference quant's own
    cells are 0 by definition; (None, 0) when the cell has no ratio."""
    if cell.get("ln_ratio") is None:
        return (0.0, 0.0) if str(cell.get("quant")) == str(reference) and not cell.get("hub") else (None, 0.0)
    ratio = math.exp(cell["ln_ratio"])
    return 100.0 * (ratio - 1.0), 100.0 * ratio * float(cell.get("ln_ratio_err") or 0.0)


def _difference_buttons(fig: go.Figure, sweep: dict, cells: list[dict]) -> None:
    """Two views of the PPL-vs-step figure, as buttons above it: perplexity (log axis), and each quant's
    perplexity above its step's reference, in percent (linear axis), where lines that lie on top of each other in
    perplexity part."""
    views = {PPL_VIEW: ([], []), DIFF_VIEW: ([], [])}
    for t in fig.data:
        name = t.name
        pts = sorted((c for c in cells if esc(_cell_series(c)) == name), key=lambda c: int(c["step"]))
        views[PPL_VIEW][0].append([c["ppl"] for c in pts])
        views[PPL_VIEW][1].append(dict(type="data", array=[c.get("ppl_err") or 0.0 for c in pts], visible=True,
                                       color=t.line.color, thickness=1.5))
        diffs = [percent_above_reference(c, sweep.get("reference")) for c in pts]
        views[DIFF_VIEW][0].append([d for d, _ in diffs])
        views[DIFF_VIEW][1].append(dict(type="data", array=[e for _, e in diffs], visible=True, color=t.line.color,
                                        thickness=1.5))
    axes = {PPL_VIEW: {"yaxis.type": "log", "yaxis.title.text": "perplexity (log scale)", "yaxis.autorange": True},
            DIFF_VIEW: {"yaxis.type": "linear", "yaxis.title.text": "PPL above the reference (%)",
                        "yaxis.autorange": True}}
    buttons = [dict(label=view, method="update", args=[{"y": ys, "error_y": errs}, axes[view]])
               for view, (ys, errs) in views.items()]
    # the buttons in a band of their own between the title and the plot (the top margin grows by its height)
    fig.update_layout(margin_t=fig.layout.margin.t + 34, title_yref="container", title_y=1.0, title_yanchor="top",
                      title_pad_t=14,
                      updatemenus=[dict(type="buttons", direction="right", buttons=buttons, active=0, showactive=True,
                                        x=0.0, xanchor="left", y=1.0, yanchor="bottom", pad=dict(t=0, b=6),
                                        font=dict(size=11))])


def sweep_kld_figure(sweep: dict) -> go.Figure:
    """Mean KLD (solid, ± 1 standard error) and its 99th percentile (dashed) vs step per quant; log axes.

    A quant whose cells have no KL statistics (the reference, or no reference) has no lines; values ≤ 0
    cannot sit on the log axis and are left out.
    """
    fig = _figure(_sweep_title(sweep, "KL divergence from the reference vs training step"),
                  "training step (log scale)", "KLD (nats, log scale)")
    fig.update_layout(legend_title_text="quant")
    cells, xs, colors = _done_cells(sweep), sweep_step_x(sweep), _series_colors(sweep)
    series = [s for q in sweep_quant_order(sweep) for s in (q, f"{q} (Hub file)")]
    for name in series:
        pts = sorted((c for c in cells if _cell_series(c) == name), key=lambda c: int(c["step"]))
        for key, label, dash in (("kld_mean", "mean KLD", "solid"), ("kld_p99", "KLD 99th percentile", "dash")):
            got = [c for c in pts if c.get(key) is not None and c[key] > 0]
            if not got:
                continue
            err = dict(type="data", array=[c.get("kld_mean_err") or 0.0 for c in got], visible=True,
                       color=colors.get(name), thickness=1.5) if key == "kld_mean" else None
            fig.add_trace(go.Scatter(
                x=[xs[int(c["step"])] for c in got], y=[c[key] for c in got], name=esc(f"{name} {label}"),
                legendgroup=esc(name), mode="lines+markers", error_y=err,
                marker=dict(color=colors.get(name), size=7, symbol="circle" if key == "kld_mean" else "triangle-up"),
                line=dict(color=colors.get(name), dash=dash),
                customdata=[[_step_label(int(c["step"])), c.get("run_id") or "–", fmt_num(c[key])] for c in got],
                hovertemplate=_sweep_hover(f"{label} = %{{customdata[2]}} nats")))
    if not fig.data:
        return _placeholder(fig, "No KL divergence yet: cells get one once scored against their reference.")
    fig.update_yaxes(type="log")
    return _log_step_axis(fig, sweep)


def _step_colors(steps: list[int]) -> dict[int, str]:
    """Early steps light, late steps dark (Viridis), so the lines read in training order."""
    import plotly.colors as pc

    if len(steps) == 1:
        return {steps[0]: pc.sample_colorscale("Viridis", [0.0])[0]}
    return dict(zip(steps, pc.sample_colorscale("Viridis", [i / (len(steps) - 1) for i in range(len(steps))])))


def _cell_bpw(cell: dict) -> float | None:
    """The cell's file's bits per weight (variants.bits_per_weight, measured when it ran); None: not measured."""
    return cell.get("bpw")


def sweep_bpw_figure(sweep: dict) -> go.Figure:
    """PPL (log axis) vs bits per weight, one line per training step (Hub files their own line), ± 1 standard
    error; the last step's points are labelled with their quant."""
    fig = _figure(_sweep_title(sweep, "Perplexity vs bits per weight (± 1 standard error)"),
                  "bits per weight", "perplexity (log scale)")
    fig.update_layout(legend_title_text="training step")
    cells = [c for c in _done_cells(sweep) if _cell_bpw(c) is not None]
    if not cells:
        return _placeholder(fig, "No finished cells yet.")
    steps = sorted({int(c["step"]) for c in cells})
    colors = _step_colors(steps)
    for step in steps:
        for hub in (False, True):
            pts = sorted((c for c in cells if int(c["step"]) == step and bool(c.get("hub")) == hub), key=_cell_bpw)
            if not pts:
                continue
            name = ("step 0" if step == 0 else f"step {step}") + (" (Hub files)" if hub else "")
            labelled = step == steps[-1]  # quant names on the last step's line only, to keep it readable
            fig.add_trace(go.Scatter(
                x=[_cell_bpw(c) for c in pts], y=[c["ppl"] for c in pts], name=esc(name),
                mode="lines+markers+text" if labelled else "lines+markers",
                # labels alternate below and above, so neighbours close in bits per weight do not collide
                text=[esc(str(c.get("quant"))) for c in pts] if labelled else None,
                textposition=[("bottom center", "top center")[k % 2] for k in range(len(pts))],
                textfont=dict(size=9),
                marker=dict(color=colors[step], size=8, symbol="diamond" if hub else "circle"),
                line=dict(color=colors[step], dash="dot" if hub else "solid"),
                error_y=dict(type="data", array=[c.get("ppl_err") or 0.0 for c in pts], visible=True,
                             color=colors[step], thickness=1.5),
                customdata=[[esc(str(c.get("quant"))), c.get("run_id") or "–", fmt_num(c["ppl"]),
                             fmt_num(c.get("ppl_err") or 0.0), f"{_cell_bpw(c):g}"] for c in pts],
                hovertemplate="<b>%{fullData.name}</b><br>%{customdata[0]} · %{customdata[4]} bpw<br>"
                              "PPL = %{customdata[2]} ± %{customdata[3]}<br>run %{customdata[1]}<extra></extra>"))
    fig.update_layout(showlegend=len(steps) <= MAX_LEGEND_STEPS)  # more steps: colour and hover tell them apart
    # a log bits axis (each halving of bits an equal step) spreads the low-bit quants, where files crowd
    bpws = [_cell_bpw(c) for c in cells]
    ticks = [t for t in (2, 3, 4, 5, 6, 8, 12, 16, 24, 32) if min(bpws) * 0.8 <= t <= max(bpws) * 1.25]
    fig.update_xaxes(type="log", title_text="bits per weight (log scale)", tickvals=ticks,
                     ticktext=[str(t) for t in ticks])
    return fig.update_yaxes(type="log")


NOISE_SE = 2.0  # a heatmap square within this many standard errors of 0 is marked as noise
NOISE_LEGEND = f"within {NOISE_SE:g} standard errors of 0: noise, not a difference"


def within_noise(cell: dict) -> bool:
    """Whether a cell's ln(PPL(Q)/PPL(ref)) is within NOISE_SE standard errors of 0: a sign the text (its chunk
    count) cannot tell the quant from the reference. A cell with no standard error (0: too few tokens) is not
    marked, as nothing can be said."""
    v, err = cell.get("ln_ratio"), cell.get("ln_ratio_err") or 0.0
    return v is not None and err > 0 and abs(v) <= NOISE_SE * err


def sweep_heatmap(sweep: dict) -> go.Figure:
    """ln(PPL(Q)/PPL(ref)) per cell: quants (rows, highest precision on top) × steps (columns, in order).

    Columns are one per step, labelled like the step axis (step0 first); a cell not done, or with no
    reference, is empty. Colours diverge at 0 (no change from the reference). Hub files get rows of their own.
    Up to MAX_HEATMAP_TEXT squares, each shows its value; a bigger grid (Pythia's 154 steps) shows it on hover.
    A square within noise (within_noise) is marked: its value is written "≈0 (value)" and a dashed frame
    (a layout shape) sits in it, and the legend says what the frame means.
    """
    fig = _figure(_sweep_title(sweep, "ln(PPL(Q) / PPL(reference)) per step and quant"), "training step",
                  "quant")
    cells = [c for c in _done_cells(sweep) if c.get("ln_ratio") is not None]
    if not cells:
        return _placeholder(fig, "No ln(PPL ratio) yet: cells get one once scored against their reference.")
    steps = sorted(sweep_step_x(sweep))
    rows = [s for q in sweep_quant_order(sweep) for s in (q, f"{q} (Hub file)")
            if any(_cell_series(c) == s for c in cells)]
    at = {(_cell_series(c), int(c["step"])): c for c in cells}
    z = [[at[(r, s)]["ln_ratio"] if (r, s) in at else None for s in steps] for r in rows]

    def square(r: str, s: int) -> list:
        c = at.get((r, s))
        if c is None:
            return [_step_label(s), "–", "–", "–", ""]
        return [_step_label(s), c.get("run_id") or "–", fmt_num(c["ln_ratio"]), fmt_num(c.get("ln_ratio_err") or 0.0),
                "<br>within noise (±2 SE covers 0)" if within_noise(c) else ""]

    def written(r: str, s: int) -> str:
        c = at.get((r, s))
        if c is None or not fits:
            return ""
        return f"≈0 ({fmt_num(c['ln_ratio'], 2)})" if within_noise(c) else fmt_num(c["ln_ratio"], 3)

    custom = [[square(r, s) for s in steps] for r in rows]
    labels = [_step_label(s) for s in steps]
    fits = len(steps) * len(rows) <= MAX_HEATMAP_TEXT  # values written in the squares while they fit
    lim = max(abs(v) for row in z for v in row if v is not None) or 1e-6
    fig.add_trace(go.Heatmap(
        z=z, x=labels, y=[esc(r) for r in rows], customdata=custom, colorscale="RdBu_r", zmid=0.0,
        zmin=-lim, zmax=lim, xgap=2, ygap=2, name="ln ratio", showlegend=False,
        colorbar=dict(title=dict(text="ln ratio"), len=0.8, y=0.4),
        text=[[written(r, s) for s in steps] for r in rows], texttemplate="%{text}",
        hovertemplate="<b>%{y}</b> · step %{customdata[0]}<br>ln(PPL(Q)/PPL(ref)) = %{customdata[2]} ± "
                      "%{customdata[3]}%{customdata[4]}<br>run %{customdata[1]}<extra></extra>"))
    noisy = [(i, j) for i, r in enumerate(rows) for j, s in enumerate(steps)
             if (r, s) in at and within_noise(at[(r, s)])]
    # each noisy square framed (a dashed rectangle inside it: category axes place square k at k)
    for i, j in noisy:
        fig.add_shape(type="rect", xref="x", yref="y", x0=j - 0.44, x1=j + 0.44, y0=i - 0.4, y1=i + 0.4,
                      line=dict(color="#222", width=2, dash="dash"), fillcolor="rgba(0,0,0,0)", layer="above")
    # the legend's entry for the frames (always listed, so the legend says what a frame means even when none is)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=esc(NOISE_LEGEND), showlegend=True,
                             hoverinfo="skip", marker=dict(symbol="square-open", size=14, color="#222",
                                                           line=dict(width=2))))
    fig.update_layout(showlegend=True, legend_title_text="")  # base_layout's legend below the plot: the frames
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    fig.update_yaxes(type="category", autorange="reversed", categoryorder="array",
                     categoryarray=[esc(r) for r in rows])
    return fig


def sweep_published_figure(sweep: dict, pub: dict) -> go.Figure:
    """EleutherAI's published zero-shot accuracies vs training step, one line per task (± 1 standard error), on
    the sweep's own log step axis. `pub` is sweepview.published_for_sweep's answer for this sweep (its own repo
    only): {"repo", "points": {task: [(step, acc, stderr)]}, "note"}; no points draws its note instead.
    Hover says the numbers are EleutherAI's; customdata[1] is "–", so a click opens no run."""
    repo = pub.get("repo") or sweep.get("repo") or "?"
    fig = _figure(_sweep_title(sweep, f"{repo}: published accuracy vs step"), "training step (log scale)",
                  "accuracy (EleutherAI's lm-eval, zero-shot)")
    fig.update_layout(legend_title_text="task")
    points = pub.get("points") or {}
    if not points:
        return _placeholder(fig, pub.get("note") or "No published numbers.")
    xs = sweep_step_x(sweep)
    for i, (task, pts) in enumerate(points.items()):
        pts = [p for p in pts if p[0] in xs or p[0] > 0]  # step0 only where the sweep's axis has it
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=[xs.get(s, float(s)) for s, _, _ in pts], y=[a for _, a, _ in pts], name=esc(task),
            mode="lines+markers", marker=dict(color=color, size=7), line=dict(color=color),
            error_y=dict(type="data", array=[e or 0.0 for _, _, e in pts], visible=True, color=color, thickness=1),
            customdata=[[_step_label(s), "–", fmt_num(a, 4), fmt_num(e or 0.0, 2)] for s, a, e in pts],
            hovertemplate="<b>%{fullData.name}</b><br>step %{customdata[0]}<br>acc = %{customdata[2]} ± "
                          "%{customdata[3]}<br>published by EleutherAI<extra></extra>"))
    fig.update_yaxes(rangemode="tozero")
    return _log_step_axis(fig, sweep)


PUBLISHED_LAMBADA_NAME = "EleutherAI, published (all 5,153 examples)"


def sweep_lambada_figure(sweep: dict, pub: dict | None = None) -> go.Figure:
    """A LAMBADA sweep's accuracy vs training step: one line per quant (hub cells their own line), ± 1 standard
    error (the cells' lambada_acc_stderr), on the sweep's log step axis; beside them, EleutherAI's published
    lambada_openai accuracy for the sweep's repo where `pub` (sweepview.published_lambada_for_sweep: {"repo",
    "points": [(step, acc, stderr)], "note"}) has points, else its note in a corner. Published points carry "–"
    at customdata[1]: a click opens no run."""
    fig = _figure(_sweep_title(sweep, "LAMBADA accuracy vs training step (± 1 standard error)"),
                  "training step (log scale)", "LAMBADA accuracy (lm-eval lambada_openai)")
    fig.update_layout(legend_title_text="quant")
    cells = [c for c in sweep.get("cells") or [] if c.get("status") == "done" and c.get("lambada_acc") is not None]
    xs, colors = sweep_step_x(sweep), _series_colors(sweep)
    points = (pub or {}).get("points") or []
    if not cells and not points:
        return _placeholder(fig, "No finished cells yet.")
    for name in [s for q in sweep_quant_order(sweep) for s in (q, f"{q} (Hub file)")]:
        pts = sorted((c for c in cells if _cell_series(c) == name), key=lambda c: int(c["step"]))
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[xs[int(c["step"])] for c in pts], y=[c["lambada_acc"] for c in pts], name=esc(name),
            mode="lines+markers",
            marker=dict(color=colors.get(name), size=8, symbol="diamond" if "(Hub" in name else "circle"),
            line=dict(color=colors.get(name), dash="dot" if "(Hub" in name else "solid"),
            error_y=dict(type="data", array=[c.get("lambada_acc_stderr") or 0.0 for c in pts], visible=True,
                         color=colors.get(name), thickness=1.5),
            customdata=[[_step_label(int(c["step"])), c.get("run_id") or "–", fmt_num(c["lambada_acc"], 4),
                         fmt_num(c.get("lambada_acc_stderr") or 0.0, 2), c.get("lambada_n")] for c in pts],
            hovertemplate=_sweep_hover("acc = %{customdata[2]} ± %{customdata[3]} (%{customdata[4]} examples)")))
    if points:
        pts = [p for p in points if p[0] in xs or p[0] > 0]  # step0 only where the sweep's axis has it
        fig.add_trace(go.Scatter(
            x=[xs.get(s, float(s)) for s, _, _ in pts], y=[a for _, a, _ in pts], name=esc(PUBLISHED_LAMBADA_NAME),
            mode="lines+markers", marker=dict(color="#222", size=7, symbol="square"),
            line=dict(color="#222", dash="dash", width=1.5),
            error_y=dict(type="data", array=[e or 0.0 for _, _, e in pts], visible=True, color="#222", thickness=1),
            customdata=[[_step_label(s), "–", fmt_num(a, 4), fmt_num(e or 0.0, 2)] for s, a, e in pts],
            hovertemplate="<b>%{fullData.name}</b><br>step %{customdata[0]}<br>acc = %{customdata[2]} ± "
                          "%{customdata[3]}<br>EleutherAI's lm-eval on the Hugging Face checkpoint, not measured "
                          "here<extra></extra>"))
    elif (pub or {}).get("note"):
        fig.add_annotation(text=esc(pub["note"]), showarrow=False, xref="paper", yref="paper", x=0.0, y=1.0,
                           xanchor="left", yanchor="top", align="left", font=dict(size=11, color="#666"),
                           bgcolor="rgba(255,255,255,0.8)")
    fig.update_yaxes(rangemode="tozero")
    return _log_step_axis(fig, sweep)


def sweep_figures(sweep: dict, lambada_pub: dict | None = None) -> dict[str, go.Figure]:
    """Every figure of a sweep's view, by name: ppl, kld, bpw, heatmap; a LAMBADA sweep's one figure, lambada
    (with `lambada_pub`, sweepview.published_lambada_for_sweep's answer): its corpus figures would mean nothing."""
    if sweep.get("scoring") == "lambada":
        return {"lambada": sweep_lambada_figure(sweep, lambada_pub)}
    return {"ppl": sweep_ppl_figure(sweep), "kld": sweep_kld_figure(sweep), "bpw": sweep_bpw_figure(sweep),
            "heatmap": sweep_heatmap(sweep)}
