"""Tables of a run as plain data and as text: what the CLI prints and the dashboard's tables show.

Owns the summary table (one row per variant and the reference), the list of runs, and their text
rendering. Pure: takes run JSON dicts, imports neither plotly nor gradio, so the CLI stays light and
the dashboard shows exactly the numbers the CLI prints.
"""

from __future__ import annotations

import math

SUMMARY_COLUMNS = ["variant", "role", "spec", "quant", "size MB", "PPL", "± PPL", "scored", "mean KLD",
                   "± KLD", "same top %", "next token", "p(next)", "load s", "score s"]


def format_cell(value) -> str:
    """One display rule for every number in every table."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.1f}"
        if a >= 0.01:
            return f"{value:.4g}" if a < 100 else f"{value:.2f}"
        return f"{value:.3e}"
    return str(value)


def _entries(run: dict) -> list[tuple[str, dict]]:
    out = [("variant", v) for v in run.get("variants") or []]
    if run.get("reference"):
        out.insert(0, ("reference", run["reference"]))
    return out


def summary_table(run: dict) -> tuple[list[str], list[list]]:
    """Rows of raw values (floats unrounded) for SUMMARY_COLUMNS; format with format_cell."""
    rows = []
    for role, v in _entries(run):
        src = v.get("source") or {}
        kld = v.get("kld") or {}
        top = (v.get("next_token") or [None])[0]
        t = v.get("timings") or {}
        rows.append([v.get("label"), role, v.get("spec"), src.get("quant"),
                     (src["bytes"] / 1e6) if src.get("bytes") is not None else None,
                     v.get("ppl"), v.get("ppl_err"), v.get("n_scored"), kld.get("mean"), kld.get("mean_err"),
                     (kld["same_top"] * 100) if kld.get("same_top") is not None else None,
                     top["text"] if top else None, top["prob"] if top else None,
                     t.get("load_s"), t.get("score_s")])
    return list(SUMMARY_COLUMNS), rows


def text_table(columns: list[str], rows: list[list]) -> str:
    cells = [[format_cell(c) if not isinstance(c, str) else _visible(c) for c in r] for r in rows]
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
    for role, v in _entries(run):
        gen = v.get("generation")
        if gen and gen.get("tokens"):
            parts += ["", f"-- {v['label']} generates:", gen["text"]]
    return "\n".join(parts)


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
