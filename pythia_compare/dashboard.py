"""What the dashboard decides, in plain Python: choices, input caps, one run on its own thread, links, history.

Owns turning the page's selections into spec strings and RunParams, the input caps enforced on the server, the
catalog the selectors offer (the Hub's lists, or the demo suite with a banner saying so), running a comparison
on a thread of its own while streaming snapshots of it, saving it with its owner, opening stored runs by any
id, the history list and owner-scoped deletes, export files, and scrubbing error messages of paths and tokens.
Never imports gradio (ui.py puts this on the page), never draws (plots.py), never formats a number its own way
(report.py) and never writes SQL (store.py).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import queue
import re
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from . import report
from .compare import Event, RunParams, check_unicode, iter_comparison
from .config import Settings
from .errors import BadInput, RunNotFound, SpecError
from .export import run_to_csv
from .sources import demo_steps
from .store import RunStore
from .variants import DEMO_ALIAS, PYTHIA_STEPS, QUANTS, SUPPORTED_QUANTS, parse_spec

if TYPE_CHECKING:
    from .engine import ModelPool

log = logging.getLogger("pythia_compare.dashboard")

HUB_TIMEOUT_S = 4.0  # how long start-up waits for the Hub's lists before falling back to the demo suite
UPDATE_EVERY_S = 0.2  # generation streaming: at most this often a snapshot (each variant's result comes at once)
MAX_SPECS_CHARS = 2000  # the free-form spec box
MAX_QUERY_CHARS = 500  # history search text
OWNER_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")  # a browser's owner token (secrets.token_urlsafe)
# Pythia-410M-deduped GGUF sizes on the Hub (MB, DESIGN.md); other quants are estimated from bits per weight.
HUB_MB = {"F16": 813, "Q8_0": 433, "Q6_K": 335, "Q4_K_M": 267, "Q2_K": 174}
PYTHIA_PARAMS = 406.5e6  # weights of Pythia-410M: F16 file bytes / 2
DEFAULT_QUANTS = {"pythia": ["Q8_0", "Q6_K", "Q4_K_M", "Q2_K"], DEMO_ALIAS: ["F16", "Q8_0", "Q4_K_M", "Q2_K"]}
DEMO_BANNER = (
    "**Demo models, not Pythia.** {why} The variants below are a small demo suite trained on this project's "
    "own text and bundled with it, so that the dashboard works with no network. Their numbers say nothing "
    "about Pythia-410M. To compare the real models, start the app with network access (without "
    "`PYTHIA_COMPARE_OFFLINE`), or download them while online with `python -m pythia_compare compare Q8_0 "
    "Q4_K_M --prompt hi` and then use them offline from the cache.")
NOT_FOUND = ("### Run not found\nNo stored run matches this link. It may have been deleted, or the link was "
             "cut short. Start a new comparison below, or find past runs in the History tab.")
HISTORY_COLUMNS = ["run", "created (UTC)", "text", "tokens", "scoring", "variants", "reference"]

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


def collect_specs(family: str, quants: list[str] | None, steps: list[int] | None, free: str | None) -> list[str]:
    """Selections -> spec strings in order (quants, steps, free-form), each once.

    pythia: `Q4_K_M`, `step3000`; demo: `demo:Q4_K_M`, `demo@step300`; free-form specs as typed.
    """
    demo = family == DEMO_ALIAS
    out = [f"{DEMO_ALIAS}:{q}" if demo else str(q) for q in quants or []]
    out += [f"{DEMO_ALIAS}@step{int(s)}" if demo else f"step{int(s)}" for s in steps or []]
    unique: dict = {}
    for spec in out + split_specs(free):  # each variant once, however spelt; a bad spec is reported later
        try:
            unique.setdefault(parse_spec(spec).key, spec)
        except SpecError:
            unique.setdefault(spec, spec)
    return list(unique.values())


def _precision(spec: str) -> tuple[float, float]:
    v = parse_spec(spec)
    step = v.step if v.step is not None else (math.inf if v.kind != "local" else -1)
    return (QUANTS[v.quant].bpw if v.quant in QUANTS else 0.0, step)


def default_reference(specs: list[str]) -> str:
    """The highest-precision spec chosen (ties: the later checkpoint); '' when fewer than two are chosen."""
    ranked = []
    for s in specs:
        try:
            ranked.append((_precision(s), s))
        except SpecError:
            continue
    return max(ranked, key=lambda r: r[0])[1] if len(specs) >= 2 and ranked else ""


def reference_choices(specs: list[str]) -> list[tuple[str, str]]:
    return [("none (no KL divergence)", "")] + [(c, c) for c in specs]


def log_spaced(steps: list[int], n: int = 5) -> list[int]:
    """About n steps spread evenly on a log(step + 1) axis, always the first and the last."""
    if len(steps) <= n:
        return list(steps)
    hi = math.log10(steps[-1] + 1)
    return sorted({min(steps, key=lambda s: abs(math.log10(s + 1) - hi * i / (n - 1))) for i in range(n)})


def quant_choices(family: str, available: list[str]) -> list[tuple[str, str]]:
    """(label, value) per quant, highest precision first: bits per weight and, for Pythia, file size."""
    out = []
    for q in sorted(available, key=lambda q: -QUANTS[q].bpw):
        label = f"{q} · {QUANTS[q].bpw:g} bpw"
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
                  {DEMO_ALIAS: demo_steps(settings.demo_dir), "pythia": list(PYTHIA_STEPS)})
    if settings.offline:
        cat.banner = DEMO_BANNER.format(why="This app runs offline.")
        return cat
    pool = ThreadPoolExecutor(2)
    try:
        from .hub import Hub

        hub = Hub(settings)
        files = pool.submit(hub.list_gguf_files, settings.gguf_repo)
        steps = pool.submit(hub.list_steps, settings.checkpoint_repo)
        quants, step_list = files.result(HUB_TIMEOUT_S), steps.result(HUB_TIMEOUT_S)
        cat.quants["pythia"] = ["F16"] + [q for q in quants if q in QUANTS and q != "F16"]
        found = sorted(int(s[0] if isinstance(s, (tuple, list)) else s) for s in step_list)
        cat.steps["pythia"] = found or list(PYTHIA_STEPS)
        cat.family = "pythia"
    except Exception as e:  # unreachable Hub, timeout, odd answer: the demo suite still works
        log.warning("the Hub's lists are unavailable (%s); defaulting to the demo suite", type(e).__name__)
        cat.banner = DEMO_BANNER.format(why="The Hugging Face Hub could not be reached.")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return cat


# ------------------------------------------------------------------------------------------ inputs
def _int(value, name: str) -> int:
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


def table_cells(columns: list[str], rows: list[list]) -> list[list[str]]:
    """A report table's cells exactly as the CLI prints them (report.text_table: format_table, controls shown)."""
    return [[c.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") for c in r]
            for r in report.format_table(columns, rows)]


# ------------------------------------------------------------------------------------------ one run
def streamed(work: Callable[[], Iterator[Event]]) -> Iterator[tuple[str, float, str, dict | None]]:
    """Run `work()` on one thread of its own; yield (kind, fraction, message, run) for each compare.Event.

    Gradio advances a sync generator on whichever worker thread is free, but a comparison holds model locks
    across its steps, so it runs start to end on its own thread. "update" runs are deep copies taken on that
    thread (the live dict keeps changing); a variant's generation shows from its first token, then at most
    every UPDATE_EVERY_S. Closing this generator (the browser went away) stops the work at its next event.
    """
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        last, last_message = 0.0, ""
        try:
            it = work()
            try:
                for ev in it:
                    run = ev.run if ev.kind == "done" else None
                    if ev.kind == "update":
                        now = time.monotonic()
                        if (ev.message.endswith(": generating") and ev.message == last_message
                                and now - last < UPDATE_EVERY_S):
                            continue  # a variant's first token always shows, then a few redraws a second
                        last, last_message, run = now, ev.message, copy.deepcopy(ev.run)
                    events.put((ev.kind, ev.fraction, ev.message, run))
                    if stop.is_set():
                        return
            finally:
                getattr(it, "close", lambda: None)()
            events.put(None)
        except BaseException as e:  # handed over and raised on the consumer's side
            events.put(e)

    threading.Thread(target=produce, name="pythia-compare-run", daemon=True).start()
    try:
        while (item := events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class Dashboard:
    """The dashboard's work for one process: settings, one ModelPool (models stay loaded), the run log."""

    def __init__(self, settings: Settings, pool: ModelPool | None = None, store: RunStore | None = None):
        self.settings = settings
        if pool is None:
            from .engine import ModelPool

            pool = ModelPool(settings)
        self.pool = pool
        self.store = store or RunStore(settings.db_path)
        self.export_dir = Path(tempfile.mkdtemp(prefix="pythia-compare-export-"))

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
                seed: float) -> tuple[list[str], str, RunParams]:
        """The page's inputs checked and turned into (specs, text, params); BadInput names what is wrong."""
        if specs is not None and len(str(specs)) > MAX_SPECS_CHARS:
            raise BadInput(f"the spec box holds {len(str(specs))} characters; the limit is {MAX_SPECS_CHARS}")
        for value, what in ((prompt, "the prompt"), (text, "the text"), (specs, "the spec box"),
                            (reference, "the reference")):
            if isinstance(value, str):
                check_unicode(value, what)  # a lone surrogate: not text
        chosen = collect_specs(family, quants, steps, specs)
        if len(chosen) > self.settings.max_variants:
            raise SpecError(f"{len(chosen)} variants chosen; the limit is {self.settings.max_variants} per run "
                            f"(reference included); unselect some")
        run_text = self.input_text(prompt, text, text_file)
        params = RunParams.from_settings(
            self.settings, scoring=str(scoring or "auto"), ctx=_int(ctx, "context"), top_k=_int(top_k, "top-k"),
            max_tokens=_int(max_tokens, "max new tokens"), temperature=_float(temperature, "temperature"),
            seed=_int(seed, "seed"), reference=(reference or "").strip() or None)
        return chosen, run_text, params

    def run(self, specs: list[str], text: str, params: RunParams,
            owner: str | None) -> Iterator[tuple[str, float, str, dict | None]]:
        """Stream one comparison (see `streamed`); the "done" item carries the run as stored under its new id."""
        def work() -> Iterator[Event]:
            return iter_comparison(specs, text, params, settings=self.settings, pool=self.pool)

        for kind, fraction, message, run in streamed(work):
            if kind == "done":
                run = self.store.get(self.store.save(run, owner=self.owner_of(owner)))
            yield kind, fraction, message, run

    def find(self, run_id: object) -> dict | None:
        """The stored run, or None for any id that names none (malformed and hostile ones included)."""
        if not isinstance(run_id, str) or not 0 < len(run_id) <= 64:
            return None
        try:
            return self.store.get(run_id)
        except RunNotFound:
            return None
        except Exception:
            log.exception("opening a stored run failed")
            return None

    def export(self, run: dict) -> tuple[Path, Path]:
        """The run as JSON and CSV files to download: (json path, csv path)."""
        base = self.export_dir / f"pythia-compare-{run['run_id']}"
        jpath, cpath = base.with_suffix(".json"), base.with_suffix(".csv")
        if run.get("run_id") and jpath.exists() and cpath.exists():
            return jpath, cpath  # a stored run never changes: its files are written once (links reopen fast)
        jpath.write_text(json.dumps(run, ensure_ascii=False, indent=1), encoding="utf-8")
        cpath.write_text(run_to_csv(run), encoding="utf-8", newline="")  # the CSV keeps its CRLF
        return jpath, cpath

    def status(self, run: dict) -> str:
        """One line (markdown) about a run: its id or its progress, tokens, scoring, reference."""
        p, inp = run.get("params") or {}, run.get("input") or {}
        entries = ([run["reference"]] if run.get("reference") else []) + list(run.get("variants") or [])
        done = sum(1 for e in entries if e.get("ppl") is not None)
        head = f"**Run `{run['run_id']}`**" if run.get("run_id") else f"**Running** · {done} of {len(entries)} scored"
        if not p:
            return head
        ref = f"reference {run['reference']['label']}" if run.get("reference") else "no reference"
        return (f"{head} · {inp.get('n_tokens')} tokens · {p.get('scoring')} scoring · ctx {p.get('ctx')} · {ref} "
                f"· {len(entries)} models")

    def history(self, query: str | None, owner: str | None) -> list[list]:
        """Rows of HISTORY_COLUMNS, newest first. Public deployments list only the owner's runs."""
        token = self.owner_of(owner)
        if self.settings.public and not token:
            return []
        try:
            found = self.store.list(query=str(query or "")[:MAX_QUERY_CHARS],
                                    owner=token if self.settings.public else None, limit=100)
        except Exception:
            log.exception("history search failed")
            return []
        return [[r["run_id"], str(r.get("created_at") or "")[:19].replace("T", " "), r.get("preview") or "",
                 r.get("n_tokens"), r.get("scoring"),
                 ", ".join(str(v.get("label") or v.get("spec")) for v in r.get("variants") or []),
                 r.get("reference") or ""] for r in found]

    def delete(self, run_id: object, owner: str | None) -> bool:
        """Delete a run (public deployments: only the owner's). False when there is no such run to delete."""
        token = self.owner_of(owner)
        if not isinstance(run_id, str) or not run_id or (self.settings.public and not token):
            return False
        try:
            self.store.delete(run_id, owner=token if self.settings.public else None)
            return True
        except RunNotFound:
            return False
