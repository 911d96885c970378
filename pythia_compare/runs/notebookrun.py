"""Running a notebook's comparison cells: each one an ordinary run of the run log, one after another.

Owns what a comparison cell runs (its variant set or the notebook's, its text, the notebook's settings under its
overrides, checked against params.LIMITS and the run's caps: `cell_job`), recording a result or a failure on the
cell (`computed`, `failed`: a cell that fails shows its error and the others still run), and the headless run of
every cell (`run_cells`, for the CLI's `notebook run` and the library) through one ModelPool, so each model loads
once. Never stores a notebook itself (the caller saves the result as a new revision: notebookstore.py), never
draws.
"""

from __future__ import annotations

from typing import Callable

from ..config import Settings
from ..errors import BadInput, InputTextError, PythiaCompareError, SpecError
from .compare import RunParams, count_variants, demo_final_step, run_comparison, too_many, validate_params
from .notebook import Cell, Notebook, VariantSet


def cell_job(nb: Notebook, cell: Cell, settings: Settings) -> tuple[list[str], str, RunParams]:
    """(specs, text, params) of a comparison cell; BadInput naming what is missing or out of range."""
    if cell.kind != "comparison":
        raise BadInput("a note has nothing to run; run a comparison cell")
    vs = nb.variants_of(cell)
    if not vs.specs:
        raise SpecError("this cell has no variants: choose the notebook's variants (or give the cell its own)")
    text = cell.prompt or cell.text or ""
    if not text.strip():
        raise InputTextError("the cell's prompt is empty; type a prompt (or a text for corpus scoring)")
    if cell.prompt and len(cell.prompt) > settings.max_prompt_chars:
        raise InputTextError(f"the prompt has {len(cell.prompt)} characters; the limit is {settings.max_prompt_chars}")
    if cell.text and len(cell.text) > settings.max_text_chars:
        raise InputTextError(f"the text has {len(cell.text)} characters; the limit is {settings.max_text_chars}")
    values = nb.settings_of(cell)
    params = RunParams.from_settings(settings, scoring=cell.scoring, reference=vs.reference, lens=cell.lens,
                                     **values)
    n = count_variants(vs.specs, vs.reference, demo_final_step(settings))
    if n > settings.max_variants:
        raise SpecError(too_many(n, settings.max_variants))
    validate_params(params, n, settings)
    return list(vs.specs), text, params


def computed(nb: Notebook, cell_id: str, run_id: str) -> Cell:
    """Record on the cell that `run_id` is its output, computed with its variant set as it is now."""
    cell = nb.cells[nb.cell_index(cell_id)]
    vs = nb.variants_of(cell)
    cell.run_id, cell.computed_with, cell.error = run_id, VariantSet(list(vs.specs), vs.reference), None
    return cell


def failed(nb: Notebook, cell_id: str, message: str) -> Cell:
    """Record why the cell could not run (its last output, if any, stays, marked stale or not as before)."""
    cell = nb.cells[nb.cell_index(cell_id)]
    cell.error = message[:2000]
    return cell


def comparison_ids(nb: Notebook, cell_ids: list[str] | None = None) -> list[str]:
    """The comparison cells to run, in notebook order (all, or those of `cell_ids`)."""
    return [c.id for c in nb.cells if c.kind == "comparison" and (cell_ids is None or c.id in cell_ids)]


def run_cells(nb: Notebook, *, settings: Settings, pool, store, owner: str | None = None,
              cell_ids: list[str] | None = None,
              on_cell: Callable[[int, int, Cell], None] | None = None,
              on_event: Callable[[object], None] | None = None) -> Notebook:
    """Run every comparison cell (or those of `cell_ids`) one after another, each saved as a run of `store`;
    returns `nb` with each cell's run id or error. The caller saves the notebook (one new revision).

    `on_cell(i, n, cell)` is told before cell i of n runs (1-based: "cell 3 of 7"), `on_event` of each
    compare.Event. A failing cell records its error and the next one runs."""
    ids = comparison_ids(nb, cell_ids)
    for i, cid in enumerate(ids, 1):
        cell = nb.cells[nb.cell_index(cid)]
        if on_cell:
            on_cell(i, len(ids), cell)
        try:
            specs, text, params = cell_job(nb, cell, settings)
            run = run_comparison(specs, text, params, settings=settings, pool=pool, on_event=on_event)
            computed(nb, cid, store.save(run, owner=owner))
        except PythiaCompareError as e:
            failed(nb, cid, str(e))
    return nb
