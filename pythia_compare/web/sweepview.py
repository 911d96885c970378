"""What the dashboard's Sweeps tab decides, in plain Python: the sweep list, a sweep's cell table, its status
line, opening sweeps by any id, which cell a click opens, and what a local user may start.

Owns the rows the Sweeps tab shows (formatted by report.format_table, so they read like the CLI's numbers),
turning a page's sweep id (from a link, the list or an API caller, hostile ones included) into a stored sweep
or None, mapping a cell-table row to the cell's run id, and the start-a-sweep form: checking its inputs, the
equivalent CLI command, running plan + run in this process on a thread of its own (local apps only, never a
public deployment), and which published numbers a sweep's figure draws (its own repo, its own step span; for a
LAMBADA sweep's figure, EleutherAI's lambada_openai accuracy only when the sweep scored that dataset). Never imports gradio (ui.py), never draws (sweepplots.py), never writes SQL (sweeps/store.py).
"""

from __future__ import annotations

import logging
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..runs import lambada, published, report
from ..config import Settings
from ..errors import BadInput, PythiaCompareError, RunNotFound
from ..runs.store import RunStore
from ..sweeps.store import SweepStore
from ..sweeps.sweep import cell_order
from ..variants import DEMO_ALIAS

log = logging.getLogger("pythia_compare.sweepview")

SWEEP_COLUMNS = ["sweep", "name", "created (UTC)", "repo", "scoring", "steps", "quants", "ctx", "done", "failed",
                 "total"]
CELL_COLUMNS = ["step", "quant", "status", "PPL", "PPL ±", "mean KLD", "KLD ±", "KLD p99", "ln(PPL/PPL ref)",
                "bpw", "run", "error"]
# A LAMBADA sweep's cell table: the cells' lm-eval lambada_openai figures (the names of the run's LAMBADA table).
LAMBADA_CELL_COLUMNS = ["step", "quant", "status", "acc", "acc ±", "LAMBADA PPL", "LAMBADA PPL ±", "examples", "bpw",
                        "run", "error"]
SWEEP_NOT_FOUND = ("### Sweep not found\nNo stored sweep matches this link. It may be in another run log, or the "
                   "link was cut short. The list above shows the sweeps of this log.")
NO_SWEEP = "Choose a sweep in the list to draw it."
PUBLIC_NO_START = ("Sweeps are started from the command line (`python -m pythia_compare sweep plan …` then "
                   "`sweep run ID`, or `sweep slurm` on a cluster); this public deployment does not run them.")
MAX_FORM_CHARS = 400  # the start form's steps box
FORM_QUANTS = ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q3_K_M", "Q2_K"]  # the start form's choices: the demo's test quants
# The start form's chunks per cell: the README's demo sweep's. With 2, most demo squares were within 2 standard
# errors of 0 (noise read as signal: Q3_K_M "better" than F16); 8 halves every standard error, in seconds.
FORM_CHUNKS = 8


# The accuracy tasks the "published benchmarks vs step" figure draws (LAMBADA's PPL is another scale: the
# Compare tab's table has it).
PUBLISHED_TASKS = ["lambada_openai", "piqa", "winogrande", "arc_easy", "arc_challenge", "sciq", "logiqa", "wsc"]


def published_for_sweep(sweep: dict) -> dict:
    """EleutherAI's published zero-shot accuracies for the sweep's own repo, over the sweep's own step span:
    {"repo", "points": {task name: [(step, acc, stderr)]}, "note"}. Never another training run's numbers (a
    sweep of the current models never gets v0's, whatever its Hub cells); "points" is empty and "note" says why
    when the repo has none (the demo suite) or none fall in the sweep's steps."""
    repo = sweep.get("repo")
    out: dict = {"repo": repo, "points": {}, "note": None}
    try:
        have = published.steps(repo)
    except PythiaCompareError:
        out["note"] = published_none_note(repo)
        return out
    own = sorted({int(s) for s in sweep.get("steps") or []} | {int(c["step"]) for c in sweep.get("cells") or []})
    inside = [s for s in have if own and own[0] <= s <= own[-1]]
    if not inside:
        out["note"] = (f"EleutherAI published no numbers for {repo} between this sweep's steps; it did for "
                       f"step{have[0]} … step{have[-1]} ({len(have)} checkpoints).")
        return out
    for task in PUBLISHED_TASKS:
        pts = []
        for s in inside:
            got = published.lookup(repo, s, task)
            if got and got.get("acc") is not None:
                pts.append((s, got["acc"], got.get("acc_stderr")))
        if pts:
            out["points"][published.TASK_NAMES[task]] = pts
    return out


def published_lambada_for_sweep(sweep: dict) -> dict:
    """What a LAMBADA sweep's figure draws beside its cells: {"repo", "points": [(step, acc, stderr)], "note"},
    EleutherAI's lambada_openai accuracy for the sweep's own repo over its step span (published_for_sweep's
    choice), only when the sweep scored that dataset (the pinned Hub file, by its sha256): a local file's
    examples are other examples, so its sweep gets a note instead."""
    lam = sweep.get("lambada") or {}
    if lam.get("repo") is None or lam.get("sha256") != lambada.HUB_SHA256:
        return {"repo": sweep.get("repo"), "points": [],
                "note": f"EleutherAI's published LAMBADA accuracy is for lm-eval's lambada_openai test split; this "
                        f"sweep scored {lam.get('file') or 'another file'}, so it is not drawn beside it."}
    pub = published_for_sweep(sweep)
    pts = pub["points"].get(published.TASK_NAMES["lambada_openai"], [])
    return {"repo": pub["repo"], "points": pts,
            "note": pub["note"] or (None if pts else f"EleutherAI published no LAMBADA accuracy for {pub['repo']} "
                                                     f"between this sweep's steps.")}


def published_none_note(repo: str | None) -> str:
    """Why a sweep of `repo` has no published figure: 'No published numbers for demo' for the demo suite."""
    if repo == DEMO_ALIAS:
        return "No published numbers for demo: the demo suite is a tiny model trained by this project."
    return f"No published numbers for {repo}: EleutherAI's are for {' and '.join(published.repos())}."


def _cell_quant(cell: dict) -> str:
    return f"{cell.get('quant')} (Hub file)" if cell.get("hub") else str(cell.get("quant"))


def sweep_rows(listed: list[dict]) -> list[list[str]]:
    """SweepStore.list() rows as the list's cells (SWEEP_COLUMNS)."""
    rows = [[r["sweep_id"], r.get("name") or "", str(r.get("created_at") or "")[:19].replace("T", " "),
             r.get("repo"), r.get("scoring") or "corpus", r.get("n_steps"), r.get("n_quants"), r.get("ctx"), r.get("done"), r.get("failed"),
             r.get("total")] for r in listed]
    return report.format_table(SWEEP_COLUMNS, rows)


def is_lambada(sweep: dict | None) -> bool:
    """Whether the sweep's cells score LAMBADA (its figures and cell table are LAMBADA's)."""
    return bool(sweep) and sweep.get("scoring") == "lambada"


def cell_columns(sweep: dict) -> list[str]:
    """The cell table's columns: CELL_COLUMNS, or LAMBADA_CELL_COLUMNS for a LAMBADA sweep."""
    return list(LAMBADA_CELL_COLUMNS if is_lambada(sweep) else CELL_COLUMNS)


def cell_values(sweep: dict) -> list[list]:
    """Every cell of the sweep in grid order, quants by bits per weight (cell_order), as cell_columns(sweep) with
    its raw numbers (None where missing): the library's SweepResult.grid()."""
    cells = cell_order(sweep.get("cells") or [])
    if is_lambada(sweep):
        return [[c["step"], _cell_quant(c), c.get("status"), c.get("lambada_acc"), c.get("lambada_acc_stderr"),
                 c.get("lambada_ppl"), c.get("lambada_ppl_stderr"), c.get("lambada_n"), c.get("bpw"),
                 c.get("run_id") or "", (c.get("error") or "")[:200]] for c in cells]
    return [[c["step"], _cell_quant(c), c.get("status"), c.get("ppl"), c.get("ppl_err"), c.get("kld_mean"),
             c.get("kld_mean_err"), c.get("kld_p99"), c.get("ln_ratio"), c.get("bpw"), c.get("run_id") or "",
             (c.get("error") or "")[:200]] for c in cells]


def cell_rows(sweep: dict) -> list[list[str]]:
    """Every cell of the sweep in grid order (cell_values), its numbers formatted as the CLI formats them."""
    return report.format_table(cell_columns(sweep), cell_values(sweep))


def cell_run_id(row: list | None) -> str | None:
    """The run id in a clicked cell-table row (of either table: both end in run, error), or None (a pending or
    failed cell has no run)."""
    if not row or len(row) not in (len(CELL_COLUMNS), len(LAMBADA_CELL_COLUMNS)):
        return None
    run_id = str(row[-2] or "").strip()
    return run_id if run_id and run_id != "–" else None


def status_line(sweep: dict) -> str:
    """One markdown line about a sweep: id, name, grid, progress, reference, text (a LAMBADA sweep: its examples)."""
    ref = "each step's F16" if sweep.get("reference") == "F16" else f"`{sweep.get('reference')}`"
    chunks = f", at most {sweep['max_chunks']} chunks" if sweep.get("max_chunks") else ""
    failed = f" · **{sweep['failed']} failed**" if sweep.get("failed") else ""
    if is_lambada(sweep):
        lam = sweep.get("lambada") or {}
        src = f"{lam['repo']}@{str(lam.get('revision'))[:12]}" if lam.get("repo") else "a local file"
        scored = (f"LAMBADA: {lam.get('n')} of {lam.get('n_file')} examples of "
                  f"{report.format_cell(str(lam.get('file')))} ({src})")
    else:
        scored = f"{sweep.get('n_tokens')} tokens"
    return (f"**Sweep `{sweep['sweep_id']}`** · {report.format_cell(sweep.get('name') or '')} · repo "
            f"`{sweep.get('repo')}` · {len(sweep.get('steps') or [])} steps × {len(sweep.get('quants') or [])} "
            f"quants · {sweep.get('done')} of {sweep.get('total')} cells done{failed} · reference {ref} · "
            f"ctx {sweep.get('ctx')}{chunks} · {scored}")


def _unreadable(store: RunStore, e: Exception):
    from .dashboard import log_unreadable  # the one message for a run log that cannot be read

    return log_unreadable(store, e)


@dataclass
class StartForm:
    """The start-a-sweep form's inputs, checked."""
    steps: str
    quants: list[str]
    ctx: int
    max_chunks: int | None
    name: str | None
    text: str = field(repr=False, default="")
    scoring: str = "corpus"  # or "lambada": the demo suite's own LAMBADA-format file, its first `limit` examples
    limit: int | None = None


class SweepDesk:
    """The Sweeps tab's work for one process: the run log's sweeps, and sweeps started from the page."""

    def __init__(self, settings: Settings, store: RunStore):
        self.settings, self.store = settings, store
        self._lock = threading.Lock()
        self.jobs: dict[str, threading.Thread] = {}  # sweep id -> the thread running it (started here)

    @property
    def can_start(self) -> bool:
        """Starting sweeps from the page: only a local app, never a public deployment."""
        return not self.settings.public

    def list(self) -> list[list[str]]:
        """The sweep list's rows, newest first. Raises RunLogError when the run log cannot be read (never an
        empty list in its place), as Dashboard.history does."""
        try:
            return sweep_rows(SweepStore(self.store).list(limit=200))
        except PythiaCompareError:
            raise
        except Exception as e:  # a damaged or replaced database file: not "no sweeps"
            log.exception("listing the sweeps: the run log %s cannot be read", self.store.path)
            raise _unreadable(self.store, e) from e

    def find(self, sweep_id: object) -> dict | None:
        """The stored sweep JSON, or None for any id that names none (malformed and hostile ones included).

        Raises RunLogError when the run log cannot be read (a damaged database is not a missing sweep), as
        Dashboard.find does."""
        if not isinstance(sweep_id, str) or not 0 < len(sweep_id) <= 64:
            return None
        try:
            return SweepStore(self.store).get(sweep_id)
        except RunNotFound:
            return None
        except PythiaCompareError:
            raise
        except Exception as e:  # a damaged or replaced database file: say so, on the page and in the log
            log.exception("opening sweep %r: the run log %s cannot be read", sweep_id, self.store.path)
            raise _unreadable(self.store, e) from e

    def get(self, sweep_id: object) -> dict:
        """The stored sweep JSON for an API caller; SweepNotFound (BadInput) names a bad id."""
        if not isinstance(sweep_id, str):
            raise BadInput(f"the sweep id must be a string, got {type(sweep_id).__name__}; "
                           f"`python -m pythia_compare sweep list` shows the stored sweeps")
        try:
            return SweepStore(self.store).get(sweep_id.strip())
        except PythiaCompareError:
            raise
        except Exception as e:  # a damaged or replaced database file: said, not a bare database error
            log.exception("reading sweep %r: the run log %s cannot be read", sweep_id, self.store.path)
            raise _unreadable(self.store, e) from e

    # -------------------------------------------------------------------------------- starting (local only)
    def check_form(self, steps: object, quants: object, text: object, ctx: object, max_chunks: object,
                   name: object, scoring: object = "corpus", limit: object = None) -> StartForm:
        """The start form's inputs checked; BadInput names what is wrong. An empty text means the demo suite's
        held-out text; max chunks 0 means all of the text. Scoring "lambada" scores the demo suite's own
        LAMBADA-format file (its first `limit` examples; 0 or empty: all) and takes no text."""
        from .dashboard import form_int

        if not self.can_start:
            raise BadInput("this deployment is public: sweeps are started from the command line, not the page")
        steps = str(steps or "").strip()
        if not steps or len(steps) > MAX_FORM_CHARS:
            raise BadInput(f"the steps box must hold a step spec of 1 … {MAX_FORM_CHARS} characters: all, "
                           f"log:5, 0-800/100 or a comma list like 0,100,800")
        if not isinstance(quants, (list, tuple)) or not quants or not all(isinstance(q, str) for q in quants):
            raise BadInput("choose at least one quant for the sweep (F16, Q8_0, … Q2_K)")
        chunks = form_int(max_chunks if max_chunks not in (None, "") else 0, "max chunks")
        if chunks < 0:
            raise BadInput(f"max chunks must be 0 (all of the text) or more, got {chunks}")
        name = str(name or "").strip()[:200] or None
        text = text if isinstance(text, str) and text.strip() else ""
        if scoring == "lambada":
            if text:
                raise BadInput("a LAMBADA sweep scores the demo suite's LAMBADA examples, not a text; empty the text "
                               "box, or choose corpus scoring to score the text")
            if not self.lambada_file().is_file():
                raise BadInput("the demo suite's LAMBADA file (lambada.jsonl) is not installed here; choose corpus "
                               "scoring")
            n = form_int(limit if limit not in (None, "") else 0, "LAMBADA examples")
            if n < 0:
                raise BadInput(f"LAMBADA examples must be 0 (all of the file) or more, got {n}")
            return StartForm(steps, [str(q) for q in quants], form_int(ctx, "context"), None, name, "", "lambada",
                             n or None)
        if scoring != "corpus":
            raise BadInput(f"scoring must be corpus or lambada, got {str(scoring)[:40]!r}")
        if not text:
            held_out = Path(self.settings.demo_dir) / "heldout.txt"
            if not held_out.is_file():
                raise BadInput("paste a text to score: the demo suite's held-out text is not installed here")
            text = held_out.read_text(encoding="utf-8")
        if len(text) > self.settings.max_text_chars:
            raise BadInput(f"the text has {len(text)} characters; the limit is {self.settings.max_text_chars}")
        return StartForm(steps, [str(q) for q in quants], form_int(ctx, "context"), chunks or None, name, text)

    def lambada_file(self) -> Path:
        """The demo suite's own LAMBADA-format file (made from its text; not LAMBADA)."""
        return Path(self.settings.demo_dir) / "lambada.jsonl"

    def command(self, form: StartForm) -> str:
        """The same sweep from the command line (the text as a file named text.txt)."""
        base = ["python", "-m", "pythia_compare", "sweep"]
        plan = base + ["plan", "--repo", "demo", "--steps", form.steps, "--quants", ",".join(form.quants)]
        if form.scoring == "lambada":
            plan += ["--scoring", "lambada", "--lambada-file", str(self.lambada_file()), "--ctx", str(form.ctx)]
            plan += ["--limit", str(form.limit)] if form.limit else []
        else:
            plan += ["--text-file", "text.txt", "--ctx", str(form.ctx)]
        plan += ["--max-chunks", str(form.max_chunks)] if form.max_chunks else []
        plan += ["--name", form.name] if form.name else []
        return f"{shlex.join(plan)}\n{shlex.join(base + ['run', 'ID'])}   # ID: the last line plan printed"

    def running(self) -> list[str]:
        """Ids of the sweeps this process is running now."""
        with self._lock:
            return [sid for sid, t in self.jobs.items() if t.is_alive()]

    def start(self, form: StartForm) -> str:
        """Plan a demo sweep in the run log (checked first, nothing written on bad input), then run all of its
        cells on a thread of this process (sweep.run_shard, one shard). Returns the new sweep's id."""
        from ..sweeps.sweep import plan_sweep, run_shard

        if not self.can_start:
            raise BadInput("this deployment is public: sweeps are started from the command line, not the page")
        with self._lock:
            busy = [sid for sid, t in self.jobs.items() if t.is_alive()]
            if busy:
                raise BadInput(f"sweep {busy[0]} started here is still running; wait for it to finish (its view "
                               f"fills in as cells finish), or run more from the command line")
            if form.scoring == "lambada":
                sweep_id, _ = plan_sweep(self.settings, self.store, steps=form.steps, quants=form.quants,
                                         repo="demo", ctx=form.ctx, max_chunks=None, name=form.name,
                                         scoring="lambada", lambada_file=self.lambada_file(), limit=form.limit)
            else:
                sweep_id, _ = plan_sweep(self.settings, self.store, steps=form.steps, quants=form.quants,
                                         text=form.text, repo="demo", ctx=form.ctx, max_chunks=form.max_chunks,
                                         name=form.name)

            def work() -> None:
                try:
                    run_shard(self.settings, self.store, sweep_id, progress=False)
                except Exception:
                    log.exception("the sweep %s started from the page failed", sweep_id)

            thread = threading.Thread(target=work, name=f"pythia-compare-sweep-{sweep_id}", daemon=True)
            self.jobs[sweep_id] = thread
            thread.start()
        return sweep_id
