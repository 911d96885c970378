"""The run parameters' limits, in one table: what the CLI, the API and the page's widgets all read.

Owns, for each number a run takes (ctx, top-k, max-tokens, temperature, seed): its RunParams field, the CLI
flag, the page's label, the inclusive range and where its default comes from (a Settings field). compare.py
checks a run against it (the CLI and the library), dashboard.py checks the page's and the API's inputs against
it, ui.py gives the widgets its ranges and labels. Pure data: never imports gradio, never checks anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    field: str  # the RunParams field (and the Settings field its default comes from)
    flag: str  # the CLI flag
    label: str  # the page's name of it (error messages on the page and the API)
    lo: float  # inclusive range
    hi: float
    whole: bool  # a whole number (else any real number in range)
    unit: str = ""  # said after the range in messages, e.g. " tokens (512 is llama-perplexity's)"
    note: str = ""  # said after the label on the widget, e.g. " (0: greedy)"

    @property
    def name(self) -> str:
        """How the CLI and the library name it in messages: the flag without its dashes."""
        return self.flag.lstrip("-")

    @property
    def widget_label(self) -> str:
        return self.label + self.note

    @property
    def range_text(self) -> str:
        """The range as the widget shows it, e.g. "8 … 8192" ("0 or more" when the top is beyond a million)."""
        return f"{self.lo:g} or more" if self.hi > 1e6 else f"{self.lo:g} … {self.hi:g}"

    def default(self, settings) -> float:
        """The default: the Settings field of the same name (config.Settings, from the environment)."""
        return getattr(settings, self.field)


LIMITS: dict[str, Limit] = {lim.field: lim for lim in (
    Limit("ctx", "--ctx", "Context", 8, 8192, True, " tokens (512 is llama-perplexity's)"),
    Limit("top_k", "--top-k", "Top-k", 1, 100, True),
    Limit("max_tokens", "--max-tokens", "Max new tokens", 0, 1024, True),
    Limit("temperature", "--temperature", "Temperature", 0.0, 5.0, False, " (0 is greedy)", " (0: greedy)"),
    Limit("seed", "--seed", "Seed", 0, 2**63 - 1, True),
)}


# ------------------------------------------------------------------------------------------ notebooks (issue 22)
@dataclass(frozen=True)
class NotebookLimits:
    """A notebook's limits (docs/notebook.md): runs/notebook.py and runs/notebookstore.py check them, the page and
    the CLI say them. A comparison cell's prompt and text are held to the run's own caps (Settings.max_prompt_chars,
    Settings.max_text_chars), read where the cell is checked."""
    max_cells: int = 50  # cells of one notebook
    max_note_chars: int = 20_000  # a note's Markdown
    max_title_chars: int = 200
    max_revision_bytes: int = 2 * 1024 * 1024  # one revision as stored: the notebook JSON, UTF-8
    max_revisions: int = 200  # revisions one notebook keeps; a later save is refused with an offer of a copy
    public_run_all_cells: int = 10  # Run all in public mode: at most this many cells, each its own queued job


NOTEBOOK = NotebookLimits()
