"""What the dashboard decides, in plain Python: choices, input caps, one run on its own thread, links, history.

Owns turning the page's selections into spec strings and RunParams, the input caps enforced on the server, the
catalog the selectors offer (the Hub's lists, or the demo suite with a banner saying so), running a comparison
on a thread of its own while streaming snapshots of it, saving it with its owner, opening stored runs by any
id, the history list and owner-scoped deletes, a run's downloads (made when asked for, never kept on disk),
the "published at this step" table beside a run (runs/published.py's numbers; docs/published.md), and
scrubbing error messages of paths and tokens.
Never imports gradio (ui.py puts this on the page), never draws (plots.py), never formats a number its own way
(report.py) and never writes SQL (store.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..runs import published, report
from ..runs.compare import (Event, RunParams, check_unicode, count_variants, default_reference,  # noqa: F401
                            demo_final_step, given_reference, iter_comparison, too_many)
from ..config import Settings
from ..errors import BadInput, PythiaCompareError, RunNotFound, SpecError
from ..runs.runrows import short_repr
from ..runs.export import run_to_json_text, run_to_zip
from ..params import LIMITS
from ..sources.policy import NotAllowed, stopped_message
from ..runs.run import Run, as_run
from ..sources.resolver import demo_steps
from ..runs.store import RunLogError, RunStore
from ..threads import in_thread
from ..variants import DEMO_ALIAS, QUANTS, SUPPORTED_QUANTS, builtin_steps, parse_spec, quant_rank

if TYPE_CHECKING:
    from ..runs.backup import Backup
    from ..runs.pool import ModelPool

log = logging.getLogger("pythia_compare.dashboard")

HUB_TIMEOUT_S = 4.0  # how long start-up waits for the Hub's lists before falling back to the demo suite
UPDATE_EVERY_S = 0.2  # generation streaming: at most this often a snapshot (each variant's result comes at once)
SNAPSHOT_PACE = 12.0  # after handling a snapshot for t seconds, the page waits 12 t before the next (streamed)
MAX_SPECS_CHARS = 2000  # the free-form spec box
MAX_QUERY_CHARS = 500  # history search text
OWNER_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # a browser's owner token (secrets.token_urlsafe)
# Pythia-410M-deduped GGUF sizes on the Hub (MB, docs/models.md); other quants are estimated from bits per weight.
HUB_MB = {"F16": 813, "Q8_0": 433, "Q6_K": 335, "Q4_K_M": 267, "Q2_K": 174}
PYTHIA_PARAMS = 406.5e6  # weights of Pythia-410M: F16 file bytes / 2
DEFAULT_QUANTS = {"pythia": ["Q8_0", "Q6_K", "Q4_K_M", "Q2_K"], DEMO_ALIAS: ["F16", "Q8_0", "Q4_K_M", "Q2_K"]}
DEMO_BANNER = (
    "**Demo models, not Pythia.** {why} The variants below are a small demo suite trained on this project's "
    "own text and bundled with it, so that the dashboard works with no network. Their numbers say nothing "
    "about Pythia-410M. To compare the real models, start the app with network access{restart}, or download "
    "them while online with `python -m pythia_compare compare Q8_0 Q4_K_M --prompt hi` and then use them "
    "offline from the cache.")
MODELS_NOTE = ("The Hub's GGUF quants are of the v0 models (`EleutherAI/pythia-410m-deduped-v0`, the default "
               "checkpoint repo: 143 checkpoints, step1000 … step143000); the current models "
               "(`EleutherAI/pythia-410m-deduped`, 154 checkpoints from step0) are a different training run. The "
               "steps offered are the checkpoint repo's own branches.")
NOT_FOUND = ("### Run not found\nNo stored run matches this link. It may have been deleted, or the link was "
             "cut short. Start a new comparison with the controls above, or find past runs in the History tab.")
HISTORY_COLUMNS = ["run", "created (UTC)", "text", "tokens", "scoring", "variants", "reference", "settings"]


def demo_banner(why: str, settings: Settings) -> str:
    """The demo suite's banner; it mentions PYTHIA_COMPARE_OFFLINE only when this app was started with it."""
    return DEMO_BANNER.format(why=why, restart=" (without `PYTHIA_COMPARE_OFFLINE`)" if settings.offline else "")

_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:\\|~?/)(?:[^\s'\"`<>|]*[/\\])?([^\s'\"`<>|/\\]*)")
_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")


def scrub(message: str, secret: str | None = None) -> str:
    """An error message fit for the page: absolute paths cut to their last part, Hub tokens masked."""
    text = _TOKEN.sub("hf_***", _ABS_PATH.sub(lambda m: m.group(1) or "…", str(message)))
    return text.replace(secret, "***") if secret else text


# ------------------------------------------------------------------------------------------ choosing variants
def split_specs(text: str | None) -> list[str]:
    """The free-form spec box: specs separated by spaces, commas or new lines."""
    return [s for s in re.split(r"[\s,]+", text or "") if s]


def collect_specs(family: str, quants: list[str] | None, steps: list[int] | None, free: str | None, *,
                  demo_final: int | None = None) -> list[str]:
    """Selections -> spec strings in order (quants, steps, free-form), each once.

    pythia: `Q4_K_M`, `step3000`; demo: `demo:Q4_K_M`, `demo@step300`; free-form specs as typed. With
    `demo_final` (the demo suite's last step) `demo@step<last>` and `demo:F16` are one variant.
    """
    demo = family == DEMO_ALIAS
    # boxes in the order of the lists, not of the clicks: quants by bits per weight (quant_rank), steps ascending
    out = [f"{DEMO_ALIAS}:{q}" if demo else str(q) for q in sorted(quants or [], key=quant_rank)]
    out += [f"{DEMO_ALIAS}@step{int(s)}" if demo else f"step{int(s)}" for s in sorted(steps or [], key=int)]
    unique: dict = {}
    for spec in out + split_specs(free):  # each variant once, however spelt; a bad spec is reported later
        try:
            unique.setdefault(parse_spec(spec, demo_final=demo_final).key, spec)
        except SpecError:
            unique.setdefault(spec, spec)
    return list(unique.values())


# The CLI's flags in a message, as the page names its own controls (page_wording). Longest first.
_PAGE_WORDS: list[tuple[str, str]] = [
    (r"a prompt \(--prompt\) or a text file \(--text-file\)",
     "a Prompt, or a text under “Longer text for corpus scoring”"),
    (r"Run once without --offline \(with network\)",
     "Start the app once with the network (without PYTHIA_COMPARE_OFFLINE=1)"),
    (r"(?:run with|use) --offline", "start the app with PYTHIA_COMPARE_OFFLINE=1"),
    (r"--scoring (prompt|corpus|auto)", r"Scoring “\1” (Settings)"),
    (r"--text-file", "“Longer text for corpus scoring”"),
    (r"--prompt", "the Prompt"),
    (r"--home", "PYTHIA_COMPARE_HOME"),
    (r"--db", "PYTHIA_COMPARE_DB"),
    (r"--json has everything", "the run JSON download has everything"),
    (r"--max-chunks", "“Max chunks per cell”"),
    (r"--quants", "“Quants”"),
] + [(re.escape(lim.flag), f"“{lim.label}” (Settings)") for lim in LIMITS.values()]


def page_wording(message: str) -> str:
    """A message of the core (worded for the CLI: "raise --ctx to 200", "Run once without --offline") in the
    page's words: its controls by their labels ("raise “Context” (Settings) to 200"), the environment where the
    page has no control."""
    for pattern, words in _PAGE_WORDS:
        message = re.sub(pattern, words, message)
    return message


def reference_choices(specs: list[str]) -> list[tuple[str, str]]:
    return [("none (no KL divergence)", "")] + [(c, c) for c in specs]


def log_spaced(steps: list[int], n: int = 5) -> list[int]:
    """About n steps spread evenly on a log(step + 1) axis, always the first and the last."""
    if len(steps) <= n:
        return list(steps)
    hi = math.log10(steps[-1] + 1)
    return sorted({min(steps, key=lambda s: abs(math.log10(s + 1) - hi * i / (n - 1))) for i in range(n)})


def quant_choices(family: str, available: list[str]) -> list[tuple[str, str]]:
    """(label, value) per quant, highest precision first (quant_rank); for Pythia, with the file size. No bits
    per weight: that is a file's own figure (variants.bits_per_weight), shown once a run has loaded it."""
    out = []
    for q in sorted(available, key=quant_rank):
        label = q
        if family != DEMO_ALIAS:
            label += f" · {HUB_MB[q]} MB" if q in HUB_MB else f" · ≈{PYTHIA_PARAMS * QUANTS[q].bpw / 8e6:.0f} MB"
            label += " (converted)" if QUANTS[q].native else ""
        out.append((label, q))
    return out


@dataclass
class Catalog:
    """What the selectors offer: from the Hub when reachable, else the demo suite with a banner."""
    family: str  # the default family: "pythia" or "demo"
    banner: str  # markdown shown above the selectors ('' for the real models)
    quants: dict[str, list[str]] = field(default_factory=dict)  # family -> quant names
    steps: dict[str, list[int]] = field(default_factory=dict)  # family -> training steps


def load_catalog(settings: Settings) -> Catalog:
    """The Hub's GGUF quants and step branches (waiting at most HUB_TIMEOUT_S), or the demo suite."""
    cat = Catalog(DEMO_ALIAS, "", {DEMO_ALIAS: [q for q in SUPPORTED_QUANTS if q not in ("F32", "BF16")],
                                   "pythia": list(HUB_MB)},
                  {DEMO_ALIAS: demo_steps(settings.demo_dir), "pythia": _offline_steps(settings)})
    if settings.offline:
        cat.banner = demo_banner("This app runs offline.", settings)
        return cat
    pool = ThreadPoolExecutor(2)
    unreachable: tuple = (TimeoutError, ConnectionError)
    try:
        from ..sources.hub import Hub, HubUnreachable

        unreachable += (HubUnreachable,)
        hub = Hub(settings)
        files = pool.submit(hub.list_gguf_files, settings.gguf_repo)
        steps = pool.submit(hub.list_steps, settings.checkpoint_repo)
        quants, step_list = files.result(HUB_TIMEOUT_S), steps.result(HUB_TIMEOUT_S)
        cat.quants["pythia"] = ["F16"] + [q for q in quants if q in QUANTS and q != "F16"]
        found = sorted(int(s[0] if isinstance(s, (tuple, list)) else s) for s in step_list)
        cat.steps["pythia"] = found or cat.steps["pythia"]
        cat.family = "pythia"
    except Exception as e:  # the demo suite still works; the banner and the log say which failure it was
        if isinstance(e, unreachable):
            log.warning("the Hub could not be reached (%s: %s); defaulting to the demo suite", type(e).__name__, e)
            cat.banner = demo_banner("The Hugging Face Hub could not be reached.", settings)
        else:  # an answer we name (no such repo, refused access): its message; anything else, a bug: its traceback
            if isinstance(e, PythiaCompareError):
                log.warning("reading the Hub's model lists failed (%s: %s); defaulting to the demo suite",
                            type(e).__name__, scrub(str(e), settings.hf_token))
            else:
                log.exception("reading the Hub's model lists failed; defaulting to the demo suite")
            cat.banner = demo_banner(f"Reading the Hugging Face Hub's model lists failed ({type(e).__name__}: "
                                     f"{scrub(str(e), settings.hf_token)[:200]}); the server log has the details.",
                                     settings)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return cat


def _offline_steps(settings: Settings) -> list[int]:
    """The checkpoint repo's steps without asking the Hub: the list remembered from its last answer, else the
    built-in list of a known repo (v0: 143, current: 154), else none."""
    try:
        from ..sources.hub import Hub

        return Hub(settings.replace(offline=True)).checkpoint_steps(settings.checkpoint_repo) or []
    except Exception as e:  # an unreadable memo: the built-in list, and the log says why
        log.warning("the remembered step list of %s cannot be read (%s: %s); offering the built-in list",
                    settings.checkpoint_repo, type(e).__name__, scrub(str(e), settings.hf_token))
        return builtin_steps(settings.checkpoint_repo) or []


# ------------------------------------------------------------------------------------------ inputs
def form_int(value, name: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,400}\s*", value):
        return int(value)  # exactly as typed, however large (a float would round it)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        f = float(value)
        if not math.isfinite(f) or f != int(f):
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise BadInput(f"{name} must be a whole number, got {str(value)[:40]!r}") from None


def _float(value, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{name} must be a number, got {str(value)[:40]!r}") from None
    if not math.isfinite(f):
        raise BadInput(f"{name} must be a finite number")
    return f


# The page's summary: the CLI's columns (report.SUMMARY_COLUMNS), the numbers a reader compares first, so that a
# phone's first screen of the table shows them beside the variant (pinned), not its role and spec.
PAGE_SUMMARY_FIRST = ["variant", "PPL", "PPL ±", "mean KLD", "KLD ±", "same top %", "bpw", "size MB",
                      "top-1 next token", "top-1 p", "n scored"]


def page_summary(columns: list[str], rows: list[list]) -> tuple[list[str], list[list]]:
    """report.summary_table's (columns, rows) in the page's order: PAGE_SUMMARY_FIRST, then the rest as the CLI
    has them (role, spec, quant, timings)."""
    order = [columns.index(c) for c in PAGE_SUMMARY_FIRST if c in columns]
    order += [i for i in range(len(columns)) if i not in order]
    return [columns[i] for i in order], [[r[i] for i in order] for r in rows]


def table_cells(columns: list[str], rows: list[list]) -> list[list[str]]:
    """A report table's cells exactly as the CLI prints them (report.text_table: format_table, controls shown)."""
    return [[c.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") for c in r]
            for r in report.format_table(columns, rows)]


# ------------------------------------------------------------------------------------------ one run
def streamed(work: Callable[[], Iterator[Event]], max_seconds: float | None = None,
             snapshots: bool = True) -> Iterator[tuple[str, float, str, Run | None]]:
    """Run `work()` on one thread of its own; yield (kind, fraction, message, run) for each compare.Event.

    Gradio advances a sync generator on whichever worker thread is free, but a comparison holds model locks
    across its steps, so it runs start to end on its own thread. Every "progress" and "done" event is yielded, in
    order. An "update" is a copy of the live run (Run.copy, taken on that thread: the run keeps changing), made
    only when the consumer is ready for one (threads.in_thread's `offer`): it has handled the last one and then
    waited SNAPSHOT_PACE times as long, so at most one snapshot is pending, a slow page costs no memory per event,
    and drawing snapshots takes at most 1 / (1 + SNAPSHOT_PACE) of the time. A variant's generation shows from
    its first token, then at most every UPDATE_EVERY_S. Updates skipped are never owed: the next one (or "done")
    holds everything. Closing this generator (the browser went away) stops the work at its next event, and so
    does running past `max_seconds` (policy.stopped_message says why). With `snapshots` False no update is
    copied or yielded (a caller that wants only the progress and the finished run: the "/compare" API).
    """
    def produce(put) -> None:
        last, last_message = 0.0, ""
        start = time.monotonic()
        it = work()
        try:
            for ev in it:
                if max_seconds is not None and ev.kind != "done" and time.monotonic() - start > max_seconds:
                    raise NotAllowed(stopped_message(max_seconds))
                if ev.kind != "update":
                    put((ev.kind, ev.fraction, ev.message, ev.run if ev.kind == "done" else None))
                    continue
                if not snapshots:
                    continue
                now = time.monotonic()
                generating = ev.message.endswith(": generating")
                if generating and ev.message == last_message and now - last < UPDATE_EVERY_S:
                    continue  # a variant's first token always shows, then a few redraws a second
                # milestones (tokenized, the first chunk, a variant scored, its first token) always show; the
                # other chunks and tokens as paced
                urgent = (not ev.message.startswith("scored chunk") or ev.message.startswith("scored chunk 1/")) \
                    and not (generating and ev.message == last_message)
                if put.offer(lambda: (ev.kind, ev.fraction, ev.message, ev.run.copy()), urgent=urgent):
                    last, last_message = now, ev.message
        finally:
            getattr(it, "close", lambda: None)()

    yield from in_thread(produce, name="pythia-compare-run", pace=SNAPSHOT_PACE)


def give_back_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim; elsewhere nothing happens).

    A run's snapshots and scores are made on one thread and freed on others, which leaves free but resident
    pages in glibc's per-thread heaps; the end of a run (the stored run read back, its JSON, gradio's copies and
    messages) would add its own pages on top. Trimmed first, the page's peak RSS for issue 18's repro at 30,000
    characters fell by about 16 MB (benchmarks/bench_page.py). Never raises."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


class Dashboard:
    """The dashboard's work for one process: settings, one ModelPool (models stay loaded), the run log."""

    def __init__(self, settings: Settings, pool: ModelPool | None = None, store: RunStore | None = None,
                 backup: Backup | None = None):
        self.settings = settings
        self.backup = backup  # told of every save and delete, before the page is (backup.py)
        if pool is None:
            from ..runs.pool import ModelPool

            pool = ModelPool(settings)
        self.pool = pool
        self.store = store or RunStore(settings.db_path, owner_secret=settings.owner_secret)
        self.demo_final = demo_final_step(settings)  # `demo@step<last>` is `demo`

    def tidy_cache(self) -> None:
        """At start and after each run: the `.part` files of killed builds swept (any app), and in a public app
        the model cache and the Hugging Face revisions pythia-compare used pruned together to
        Settings.cache_budget_bytes, least recently used first across both, as `cache prune` (sources/budget.py;
        what a run in progress uses is left). Never raises: a cache that cannot be tidied is logged and left."""
        from ..sources.budget import CacheBudget

        try:
            budget = CacheBudget(self.settings)
            swept = budget.models.sweep_parts()
            if swept:
                log.info("swept %d unfinished file(s) a stopped build left in the model cache", len(swept))
            if self.settings.public:
                done = budget.prune(self.settings.cache_budget_bytes)
                if done.entries or done.revisions:
                    log.info("pruned %d cached model file(s) and %d Hugging Face revision(s) (%.0f MB) to the cache "
                             "budget of %.0f MB; %.0f MB left", len(done.entries), len(done.revisions),
                             done.freed_bytes / 1e6, self.settings.cache_budget_bytes / 1e6, done.left_bytes / 1e6)
        except Exception:  # noqa: BLE001 - tidying is never worth a failed start or run
            log.exception("tidying the caches %s and %s failed", self.settings.home, self.settings.hf_cache_dir)

    def owner_of(self, owner: object) -> str | None:
        """The browser's owner token if it is one, else None."""
        return owner if isinstance(owner, str) and OWNER_RE.fullmatch(owner) else None

    def input_text(self, prompt: str | None, text: str | None, text_file: str | None) -> str:
        """The text to score: an uploaded .txt, else the long text, else the prompt; every cap checked here."""
        s = self.settings
        if text_file:
            path = Path(getattr(text_file, "name", None) or str(text_file))
            if path.suffix.lower() != ".txt":
                raise BadInput(f"the uploaded file {path.name!r} is not a .txt file; upload UTF-8 plain text")
            size = path.stat().st_size if path.is_file() else -1
            if size < 0 or size > s.max_upload_bytes:
                raise BadInput(f"the uploaded file is {max(size, 0)} bytes; the limit is {s.max_upload_bytes}")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise BadInput(f"the uploaded file is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        if isinstance(text, str) and text.strip():
            if len(text) > s.max_text_chars:
                raise BadInput(f"the text has {len(text)} characters; the limit is {s.max_text_chars}")
            return text
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadInput("the prompt is empty; type a prompt, paste a longer text or upload a .txt file")
        if len(prompt) > s.max_prompt_chars:
            raise BadInput(f"the prompt has {len(prompt)} characters; the limit is {s.max_prompt_chars} "
                           f"(paste longer texts into the text box for corpus scoring)")
        return prompt

    def prepare(self, family: str, quants: list[str] | None, steps: list[int] | None, specs: str | None,
                reference: str | None, prompt: str | None, text: str | None, text_file: str | None, scoring: str,
                ctx: float, top_k: float, max_tokens: float, temperature: float,
                seed: float, lens: bool = False, lambada_file: str | None = None,
                lambada_limit: float | None = None) -> tuple[list[str], str, RunParams]:
        """The page's inputs checked and turned into (specs, text, params); BadInput names what is wrong. `lens`:
        the logit lens at the last token (prompt runs; compare.py refuses it for a corpus run).

        Scoring "lambada" (Benchmark: LAMBADA) ignores the prompt and text boxes: it scores an uploaded LAMBADA
        JSONL (`lambada_file`; refused in public mode), else the Hub dataset, its first `lambada_limit` examples
        (0 or empty: all of them; public mode caps them)."""
        if specs is not None and len(str(specs)) > MAX_SPECS_CHARS:
            raise BadInput(f"the spec box holds {len(str(specs))} characters; the limit is {MAX_SPECS_CHARS}")
        for value, what in ((prompt, "the prompt"), (text, "the text"), (specs, "the spec box"),
                            (reference, "the reference")):
            if isinstance(value, str):
                check_unicode(value, what)  # a lone surrogate: not text
        chosen = collect_specs(family, quants, steps, specs, demo_final=self.demo_final)
        if reference is not None and not isinstance(reference, str):
            raise BadInput(f"the reference must be a spec, or \"none\" for no reference, not {short_repr(reference)}")
        ref = given_reference(reference)  # blank or "none": no reference, the CLI's rule
        n = count_variants(chosen, ref, self.demo_final)
        if n > self.settings.max_variants:
            raise SpecError(too_many(n, self.settings.max_variants))
        if family == DEMO_ALIAS:
            _no_hub_specs_beside_the_demo(split_specs(specs))
        lambada_mode = str(scoring or "") == "lambada"
        run_text = "" if lambada_mode else self.input_text(prompt, text, text_file)
        given = dict(ctx=ctx, top_k=top_k, max_tokens=max_tokens, temperature=temperature, seed=seed)
        numbers = {}
        for lim in LIMITS.values():  # the one table of limits (params.py), which the CLI and the widgets read too
            value = (form_int if lim.whole else _float)(given[lim.field], lim.label.lower())
            numbers[lim.field] = _within(value, lim.label, lim.lo, lim.hi, lim.unit)
        params = RunParams.from_settings(self.settings, scoring=str(scoring or "auto"), reference=ref, **numbers)
        if lambada_mode:
            if lambada_file and self.settings.public:
                raise BadInput("public mode scores the LAMBADA dataset of the Hub only; remove the uploaded file")
            if lambada_file:
                path = Path(getattr(lambada_file, "name", None) or str(lambada_file))
                if path.suffix.lower() not in (".jsonl", ".json"):
                    raise BadInput(f"the uploaded file {path.name!r} is not a .jsonl file; upload LAMBADA JSONL, one "
                                   f'{{"text": ...}} per line')
                params.lambada_file = path
            limit = form_int(lambada_limit, "LAMBADA examples") if lambada_limit not in (None, "") else 0
            params.limit = limit or None
        params.lens = bool(lens)
        return chosen, run_text, params

    def run(self, specs: list[str], text: str, params: RunParams, owner: str | None,
            snapshots: bool = True) -> Iterator[tuple[str, float, str, Run | None]]:
        """Stream one comparison (see `streamed`); the "done" item carries the run as stored under its new id."""
        def work() -> Iterator[Event]:
            return iter_comparison(specs, text, params, settings=self.settings, pool=self.pool)

        limit = self.settings.max_run_seconds_public if self.settings.public else None
        for kind, fraction, message, run in streamed(work, max_seconds=limit, snapshots=snapshots):
            if kind == "done":
                give_back_free_memory()  # before the stored run, its JSON and gradio's copies of it are made
                saved, run = self.store.save(run, owner=self.owner_of(owner)), None  # one run in memory at a time
                run = self.store.get_run(saved)
                give_back_free_memory()  # what saving and reading back freed, before gradio's share of the end
                if self.backup is not None:
                    self.backup.record(run.to_json(), owner=self.owner_of(owner))
                if self.settings.public:
                    self.tidy_cache()
            yield kind, fraction, message, run
            run = None  # not held while the next event is made

    def find(self, run_id: object) -> Run | None:
        """The stored run, or None for any id that names none (malformed and hostile ones included).

        Raises RunLogError when the run log cannot be read (a damaged database is not a missing run), and
        RunFormatError for a stored run that breaks the run format."""
        if not isinstance(run_id, str) or not 0 < len(run_id) <= 64:
            return None
        try:
            return read_run(self.store, run_id)
        except RunNotFound:
            return None

    def status(self, run: Run | dict) -> str:
        """A run in markdown: its id or its progress, tokens, scoring, reference; then why a number is n/a.

        A variant counts as scored once every token the run scores has its log-probability (in corpus mode
        every chunk, not only the first); mid-run, corpus mode also says how many chunks are done.
        """
        run = as_run(run)
        if run.lambada is not None:  # LAMBADA: examples, not tokens (report.lambada_head says where they came from)
            n = len(run.lambada.targets)
            least = min((e.lambada.n if e.lambada else 0) for e in run.entries()) if run.entries() else 0
            head = f"**Run `{run.run_id}`**" if run.run_id else f"**Running** · {least} of {n} examples scored"
            notes = "".join(f"\n- {x}" for x in report.run_notes(run))
            return (f"{head} · {report.lambada_head(run).split('  ', 1)[1]} · {len(run.entries())} models"
                    + (f"\n{notes}" if notes else ""))
        p, entries, want = run.params, run.entries(), expected_scored(run)
        done = sum(1 for e in entries if e.ppl is not None and e.n_scored >= want)
        head = f"**Run `{run.run_id}`**" if run.run_id else f"**Running** · {done} of {len(entries)} scored"
        if not run.run_id and p.scoring == "corpus" and p.ctx >= 3:
            per, chunks = p.ctx - 1 - p.ctx // 2, run.input.n_tokens // p.ctx
            least = min(e.n_scored for e in entries) if entries else 0
            head += f" · chunk {min(least // per, chunks) if per else 0} of {chunks} done"
        ref = f"reference {report.plain_markdown(run.reference.label)}" if run.reference else "no reference"
        line = (f"{head} · {run.input.n_tokens} tokens · {p.scoring} scoring · ctx {p.ctx} · {ref} "
                f"· {len(entries)} models")
        if run.run_id and p.scoring == "corpus":
            line += " · the scored text is in “Longer text for corpus scoring”"
        # warnings and overrides, per variant: labels and warnings are the run's text, shown as text (never an image)
        notes = "".join(f"\n- {report.plain_markdown(n)}" for n in report.run_notes(run))
        note = report.uncertainty_note(run)
        return line + (f"\n{notes}" if notes else "") + (f"\n\n{note}" if note else "")

    def history(self, query: str | None, owner: str | None) -> list[list]:
        """Rows of HISTORY_COLUMNS, newest first. Public deployments list only the owner's runs.
        Raises RunLogError when the run log cannot be read (never an empty list in its place)."""
        token = self.owner_of(owner)
        if self.settings.public and not token:
            return []
        try:
            found = self.store.list(query=str(query or "")[:MAX_QUERY_CHARS],
                                    owner=token if self.settings.public else None, limit=100)
        except PythiaCompareError:
            raise
        except Exception as e:  # a damaged or replaced database file: not an empty history
            log.exception("listing the history: the run log %s cannot be read", self.store.path)
            raise log_unreadable(self.store, e) from e
        return history_rows(found)

    def delete(self, run_id: object, owner: str | None) -> bool:
        """Delete a run (public deployments: only the owner's). False when there is no such run to delete."""
        token = self.owner_of(owner)
        if not isinstance(run_id, str) or not run_id or (self.settings.public and not token):
            return False
        try:
            self.store.delete(run_id, owner=token if self.settings.public else None)
            if self.backup is not None:
                self.backup.deleted(run_id)
            return True
        except RunNotFound:
            return False


def read_run(store: RunStore, run_id: str) -> Run:
    """store.get_run, with a run log that cannot be read (a damaged or replaced database file) said as such, on
    the page and in the server's log (RunLogError); RunNotFound and RunFormatError (a stored run that breaks the
    format: its own message, not "not found") pass as they are."""
    try:
        return store.get_run(run_id)
    except PythiaCompareError:
        raise
    except Exception as e:
        log.exception("opening run %r: the run log %s cannot be read", run_id[:80], store.path)
        raise log_unreadable(store, e) from e


def log_unreadable(store: RunStore, e: Exception) -> RunLogError:
    """The one message for a run log that cannot be read, naming the file and the database's own words."""
    return RunLogError(f"the run log cannot be read ({store.path.name}: {type(e).__name__}: {e}); the database "
                       f"file may be damaged or replaced: restore it from a backup, or start the app with a new "
                       f"run log (PYTHIA_COMPARE_DB)")


# ------------------------------------------------------------------------------------------ downloads
DOWNLOAD_PATH = "pc-download"  # a run's files: <page>/pc-download/<run id>.json and .zip, made when asked for
DOWNLOAD_TYPES = {"json": "application/json; charset=utf-8", "zip": "application/zip"}


def download_name(run_id: str, fmt: str) -> str:
    """The file name a run's download is saved under: pythia-compare-<run id>.json or .zip."""
    return f"pythia-compare-{run_id}.{fmt}"


def download(store: RunStore, name: str) -> tuple[bytes, str, str]:
    """A run's download by the last part of its link, "<run id>.json" (the run JSON as `runs export` writes it) or
    "<run id>.zip" (summary.csv and tokens.csv, as `runs export --format zip`): (bytes, media type, file name).

    Made from the stored run each time it is asked for, so nothing is kept on disk and opening a run costs
    nothing for its downloads. RunNotFound for a run the log does not hold, BadInput for another name, and
    RunLogError (log_unreadable) for a log that cannot be read.
    """
    run_id, dot, fmt = name.rpartition(".")
    if not dot or fmt not in DOWNLOAD_TYPES:
        raise BadInput(f"there is no download {name[:80]!r}; a run's downloads are <run id>.json and <run id>.zip")
    run = read_run(store, run_id)
    data = run_to_json_text(run).encode("utf-8") if fmt == "json" else run_to_zip(run)
    return data, DOWNLOAD_TYPES[fmt], download_name(run.run_id, fmt)


DOWNLOAD_CACHE_BYTES = 64 * 1024**2  # finished downloads kept in memory, least recently used dropped first


class ClientGone(Exception):
    """The client of a download left before its file was made: nothing is made for it."""


class Downloads:
    """A run's downloads for the link server (ui.py's /pc-download route): each file made once and then served
    from a cache bounded by `budget` bytes (least recently used dropped first; a run deleted since is not
    served). Requests for one run take turns (a lock per run, so the file is made once); other runs' downloads
    never wait for them. A request whose client has left before its turn makes nothing (ClientGone).

    `made` counts the files made, `skipped` the requests of clients that had left, `answered` every request
    answered (made, cached, skipped or failed)."""

    def __init__(self, open_store: Callable[[], RunStore], budget: int = DOWNLOAD_CACHE_BYTES):
        self._open_store, self._store = open_store, None
        self.budget = budget
        self._cache: OrderedDict[str, tuple[bytes, str, str]] = OrderedDict()
        self._held = 0
        self._locks: dict[str, list] = {}  # run id -> [asyncio.Lock, requests using it]
        self._guard = threading.Lock()
        self.made = self.skipped = self.answered = 0

    def store(self) -> RunStore:
        with self._guard:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    async def serve(self, name: str, gone: Callable[[], object]) -> tuple[bytes, str, str]:
        """download(store, name), made at most once per run and format while cached. `gone()` (awaitable) says
        whether the client has left; it is asked when this request's turn comes. Raises what download raises."""
        run_id, dot, fmt = name.rpartition(".")
        if not dot or fmt not in DOWNLOAD_TYPES:
            raise BadInput(f"there is no download {name[:80]!r}; a run's downloads are <run id>.json and "
                           f"<run id>.zip")
        slot = self._locks.setdefault(run_id, [asyncio.Lock(), 0])
        slot[1] += 1
        try:
            async with slot[0]:
                if await gone():
                    self.skipped += 1
                    raise ClientGone(name)
                store = await asyncio.to_thread(self.store)
                hit = self._cache.get(name)
                if hit is not None:
                    if await asyncio.to_thread(store.has, run_id):
                        self._cache.move_to_end(name)
                        return hit
                    self._drop(name)
                result = await asyncio.to_thread(download, store, name)
                self.made += 1
                self._keep(name, result)
                return result
        finally:
            self.answered += 1
            slot[1] -= 1
            if slot[1] == 0:
                self._locks.pop(run_id, None)

    def _keep(self, name: str, result: tuple[bytes, str, str]) -> None:
        size = len(result[0])
        if size > self.budget // 4:
            return  # a file that would crowd out the others is made each time
        self._cache[name] = result
        self._held += size
        while self._held > self.budget:
            self._drop(next(iter(self._cache)))

    def _drop(self, name: str) -> None:
        dropped = self._cache.pop(name, None)
        if dropped is not None:
            self._held -= len(dropped[0])


# ------------------------------------------------------------------------------------------ second pass helpers
def _within(value, label: str, lo: float, hi: float, unit: str = ""):
    """value if lo ≤ value ≤ hi, else BadInput naming the page's field and its range."""
    if not lo <= value <= hi:
        shown = value if isinstance(value, int) else f"{value:g}"
        raise BadInput(f"{label} {shown} is out of range; use {lo:g} … {hi:g}{unit}")
    return value


def _no_hub_specs_beside_the_demo(typed: list[str]) -> None:
    """With the demo suite chosen, a bare `Q4_K_M` or `step3000` (the real Pythia on the Hub) is refused,
    saying how to write the demo suite's variant instead."""
    for spec in typed:
        try:
            v = parse_spec(spec)
        except SpecError:
            continue  # named later, by the run itself
        if v.repo is None and v.kind in ("gguf", "checkpoint"):
            demo = f"{DEMO_ALIAS}@{v.revision}" if v.spec.startswith("step") else f"{DEMO_ALIAS}:{v.quant}"
            if v.spec.startswith("step") and v.quant != "F16":
                demo += f":{v.quant}"
            raise BadInput(f"{spec!r} names the real Pythia-410M on the Hugging Face Hub, but the demo suite is "
                           f"chosen under Models; write {demo} for the demo suite's variant, or choose "
                           f"Pythia-410M-deduped under Models")


def expected_scored(run: Run) -> int:
    """How many tokens each entry scores once the run is done (prompt: n − 1; corpus: its chunks' targets)."""
    p, n = run.params, run.input.n_tokens
    if p.scoring == "corpus" and p.ctx >= 3:  # (runs take ctx ≥ 8: params.LIMITS)
        return (n // p.ctx) * (p.ctx - 1 - p.ctx // 2)
    return n - 1


def history_rows(found: list[dict]) -> list[list]:
    """RunStore.list() rows as the History tab's rows (HISTORY_COLUMNS), which the library's list_runs() returns
    too."""
    return [[r["run_id"], str(r.get("created_at") or "")[:19].replace("T", " "), r.get("preview") or "",
             r.get("n_tokens"), r.get("scoring"),
             ", ".join(str(v.get("label") or v.get("spec")) for v in r.get("variants") or []),
             r.get("reference") or "", settings_text(r.get("params") or {})] for r in found]


def settings_text(p: dict) -> str:
    """A run's settings in a few words, so that runs differing only in temperature or seed tell apart."""
    if not p:
        return ""
    t = float(p.get("temperature") or 0.0)
    return (f"ctx {p.get('ctx')} · top-k {p.get('top_k')} · {p.get('max_tokens')} new · "
            + ("greedy" if t == 0 else f"T {t:g} · seed {p.get('seed')}"))


def controls_for(run: Run | dict, cat: Catalog, max_prompt_chars: int) -> dict:
    """The page's controls set to what produced `run`, so that Run repeats it: the same specs in the same order,
    reference, text and settings.

    Keys: family, quants, steps, specs (the free-form box), reference, prompt (None: leave as it is), text,
    scoring, ctx, top_k, max_tokens, temperature, seed, lens. A spec goes to a quant box or the step list only when
    that control spells it exactly so and keeps the variants' order (quants, then steps, then free-form specs);
    any other goes to the free-form box. The reference is chosen too (it runs first whatever its place).
    """
    run = as_run(run)
    specs = [v.spec for v in run.variants]
    ref_spec = run.reference.spec if run.reference else ""
    family = DEMO_ALIAS if any(_is_demo(s) for s in specs + [ref_spec] if s) else "pythia"
    quants_offered, steps_offered = cat.quants.get(family) or [], cat.steps.get(family) or []

    def control(spec: str) -> tuple[int, object]:
        """(0, quant) | (1, step) | (2, spec): where `spec` goes so that collect_specs gives it back as it is."""
        prefix = f"{DEMO_ALIAS}:" if family == DEMO_ALIAS else ""
        if spec.startswith(prefix) and spec[len(prefix):] in quants_offered:
            return 0, spec[len(prefix):]
        m = re.fullmatch((f"{DEMO_ALIAS}@" if family == DEMO_ALIAS else "") + r"step(\d+)", spec)
        if m and int(m.group(1)) in steps_offered:
            return 1, int(m.group(1))
        return 2, spec

    quants: list[str] = []
    steps: list[int] = []
    free: list[str] = []
    phase = 0
    for spec in specs:
        where, value = control(spec)
        if where < phase:  # putting it there would run it earlier than it ran
            where, value = 2, spec
        phase = where
        (quants, steps, free)[where].append(value)
    if ref_spec:
        where, value = control(ref_spec)
        (quants, steps, free)[where].insert(0, value)
    text, p = run.input.text, run.params
    if p.scoring == "lambada":  # the examples came from a file or the Hub dataset, not from the text box
        text = ""
    as_prompt = p.scoring == "prompt" and len(text) <= max_prompt_chars
    return {"family": family, "quants": quants, "steps": steps, "specs": " ".join(free), "reference": ref_spec,
            "prompt": text if as_prompt else None, "text": "" if as_prompt else text,
            "scoring": p.scoring, "ctx": p.ctx, "top_k": p.top_k, "max_tokens": p.max_tokens,
            "temperature": p.temperature, "seed": p.seed, "lens": p.lens_positions is not None}


# ------------------------------------------------------------------------------------------ published numbers
PUBLISHED_COLUMNS = ["variant", "checkpoint", "LAMBADA acc", "LAMBADA PPL", "PIQA acc", "WinoGrande acc",
                     "ARC-Easy acc", "ARC-Challenge acc", "SciQ acc", "LogiQA acc", "WSC acc"]
_PUBLISHED_CELLS = [("lambada_openai", "acc"), ("lambada_openai", "ppl"), ("piqa", "acc"), ("winogrande", "acc"),
                    ("arc_easy", "acc"), ("arc_challenge", "acc"), ("sciq", "acc"), ("logiqa", "acc"),
                    ("wsc", "acc")]
NO_PUBLISHED_DEMO = ("No published numbers for demo: the demo suite is a tiny model trained by this project, which "
                     "EleutherAI never evaluated.")
PUBLISHED_TABLE_NOTE = (published.SOURCE_NOTE + " A step EleutherAI did not evaluate says \"" + published.NOT_PUBLISHED
                        + "\"; no neighbour's value stands in. Quants (ours or the Hub's) get the numbers of the "
                        "unquantized checkpoint they were made from.")
_QUANT_NOTE = (" The Hub's GGUF files (bare quants such as Q4_K_M) are made from the v0 final checkpoint, so they "
               "get v0 step143000's numbers (the file global_step71500: v0 ran 71,500 steps of 4M tokens, named "
               "for 2M-token steps on the Hub).")
_STEP0_NOTE = " step0 and step1 have identical weights and identical scores (EleutherAI/pythia#83)."


def _published_cell(got: dict | None, metric: str) -> str:
    if not got or got.get(metric) is None:
        return "–"
    value, err = got[metric], got.get(f"{metric}_stderr")
    digits = 4 if metric != "ppl" else 5
    return report.fmt_num(value, digits) + ("" if err is None else f" ± {report.fmt_num(err, 2)}")


def published_table(run: Run | dict, settings: Settings) -> tuple[str, dict | None]:
    """What the Compare tab shows beside a run: (a note, a table or None) of EleutherAI's published zero-shot
    numbers for its variants that are Pythia checkpoints (the reference first, as the summary).

    A demo run gets NO_PUBLISHED_DEMO and no table; a run of local files or other repos gets nothing ("", None).
    A step EleutherAI did not evaluate gets a row saying published.NOT_PUBLISHED, never a neighbour's value.
    """
    run = as_run(run)
    rows, demo, quants, early = [], False, False, False
    for e in run.entries():
        point = published.training_point(e.spec, e.source.repo if e.source else None, settings)
        if point is None:
            demo = demo or _is_demo(e.spec)
            continue
        repo, step = point
        got = published.scores(repo, step)
        label = f"{repo.rsplit('/', 1)[-1]} step{step}"
        quants = quants or (e.source is not None and e.source.repo != repo)
        early = early or step in (0, 1)
        if got is None:
            rows.append([e.label, label, published.NOT_PUBLISHED] + [""] * (len(_PUBLISHED_CELLS) - 1))
        else:
            rows.append([e.label, label] + [_published_cell(got.get(t), m) for t, m in _PUBLISHED_CELLS])
    if not rows:
        return (NO_PUBLISHED_DEMO if demo else ""), None
    note = PUBLISHED_TABLE_NOTE + (_QUANT_NOTE if quants else "") + (_STEP0_NOTE if early else "")
    return note, {"headers": PUBLISHED_COLUMNS, "data": rows}


def _is_demo(spec: str) -> bool:
    try:
        return parse_spec(spec).is_demo
    except SpecError:
        return False
