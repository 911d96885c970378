"""Sweeps: a steps × quants grid of corpus (or LAMBADA) runs, planned once, run in shards, merged, reported.

Owns planning a grid (the step spec, the quants, the text check at the sweep's ctx; for a LAMBADA sweep the
examples' file, its sha256 and the limit, and checking that a shard scores those same examples), assigning cells to shards
(deterministic, by step), running a shard (each step in one pass through compare.iter_comparison: the step's
reference once per chunk for all its quants, in groups that fit the memory budget; then one run per cell),
cleaning up a step's files, merging shard databases and the status report. Owns no SQL (store.py beside it does) and knows
nothing of Slurm but the array variables SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT
(slurm.py writes and submits the scripts). Never parses command lines (cli.py) and never draws (sweepplots.py).

A cell is (step, quant, hub). Its GGUF comes from this project's converter and llama.cpp's quantizer
(`<repo>@step<N>:<quant>`), or, for a hub cell, the GGUF repo's own file (`<gguf repo>:<quant>`, final step).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..config import Settings
from ..errors import BadInput, InputTextError, PythiaCompareError
from ..files import read_bounded, sha256_file
from ..params import LIMITS
from ..runs import lambada
from ..variants import DEMO_ALIAS, bits_per_weight, normalize_quant, parse_spec, quant_rank
from .store import SweepStore

DEFAULT_MAX_CHUNKS = 64  # the estimate: 64 chunks of 512 tokens per cell
SWEEP_TOP_K = 10
SWEEP_SCORINGS = ("corpus", "lambada")  # what a sweep's cells score: a text, or the LAMBADA examples


class SweepError(BadInput):
    """A sweep's input cannot work: a step spec, an empty grid, a text too short, a shard out of range."""


@dataclass(frozen=True)
class Cell:
    step: int
    quant: str
    hub: bool = False

    @property
    def label(self) -> str:
        return f"step{self.step} {self.quant}{' (hub)' if self.hub else ''}"


# ------------------------------------------------------------------------------------------ planning


def available_steps(settings: Settings, repo: str, hub=None) -> list[int]:
    """The steps the repo has: the demo suite's step folders, or the repo's stepN branches on the Hub."""
    if repo == DEMO_ALIAS:
        from ..sources.resolver import demo_steps

        return demo_steps(settings.demo_dir)
    hub = hub or _hub(settings)
    return [s for s, _commit in hub.list_steps(repo)]


def parse_steps(spec: str, available: list[int], repo: str = "the repo") -> list[int]:
    """A step spec -> the steps, ascending. `all`; `A-B/S` (every step of the repo's list on A, A+S, … ≤ B);
    `log:N` (N steps of the list, log-spaced by step, step 0 kept when there); or a comma list `1000,2000`.
    Every step must be in `available` (the repo's list). Raises SweepError naming what would work."""
    avail = sorted(set(available))
    if not avail:
        raise SweepError(f"{repo} has no steps (no stepN branches or folders), so there is nothing to sweep")
    s = (spec or "").strip().lower().replace(" ", "")
    have = f"{repo} has {len(avail)} steps, {_show_steps(avail)}"
    forms = "use all, A-B/S (e.g. 1000-143000/1000), log:N (e.g. log:12) or a comma list (e.g. 1000,2000)"
    if s == "all":
        return avail
    if s.startswith("log:"):
        try:
            n = int(s[4:])
        except ValueError:
            raise SweepError(f"step spec {spec!r}: log:N needs a whole number N; {forms}") from None
        if not 1 <= n <= len(avail):
            raise SweepError(f"step spec {spec!r}: N must be 1 … {len(avail)} ({have})")
        return _log_pick(avail, n)
    if "-" in s:
        body, _, stride = s.partition("/")
        a, _, b = body.partition("-")
        try:
            lo, hi, step = int(a), int(b), int(stride or 1)
        except ValueError:
            raise SweepError(f"step spec {spec!r} is not a step spec; {forms}") from None
        if step < 1 or lo > hi:
            raise SweepError(f"step spec {spec!r}: needs A ≤ B and a stride ≥ 1; {forms}")
        picked = [x for x in avail if lo <= x <= hi and (x - lo) % step == 0]
        if not picked:
            raise SweepError(f"step spec {spec!r} selects none of the repo's steps ({have})")
        return picked
    parts = [p for p in s.replace("step", "").split(",") if p]
    try:
        wanted = sorted({int(p) for p in parts})
    except ValueError:
        raise SweepError(f"step spec {spec!r} is not a step spec; {forms}") from None
    if not wanted:
        raise SweepError(f"step spec {spec!r} names no steps; {forms}")
    missing = [x for x in wanted if x not in set(avail)]
    if missing:
        raise SweepError(f"step spec {spec!r}: {repo} has no step {', '.join(map(str, missing))} ({have})")
    return wanted


def _show_steps(steps: list[int]) -> str:
    if len(steps) <= 8:
        return ", ".join(map(str, steps))
    return ", ".join(map(str, steps[:4])) + ", …, " + ", ".join(map(str, steps[-2:]))


def _log_pick(avail: list[int], n: int) -> list[int]:
    """n steps of `avail`, nearest to log-spaced targets between the smallest positive and the largest step;
    step 0 (when present) counts as one of the n. Always distinct, always n of them."""
    if n >= len(avail):
        return list(avail)
    out: list[int] = []
    rest = list(avail)
    if 0 in rest and n >= 2:
        out.append(0)
        rest.remove(0)
        n -= 1
    positive = [x for x in rest if x > 0] or rest
    lo, hi = math.log(max(positive[0], 1)), math.log(max(positive[-1], 1))
    pool = list(positive)
    for i in range(n):
        target = lo + (hi - lo) * (i / (n - 1) if n > 1 else 1.0)
        best = min(pool, key=lambda x: (abs(math.log(max(x, 1)) - target), x))
        out.append(best)
        pool.remove(best)
    return sorted(out)


def parse_quants(text: str | Iterable[str]) -> list[str]:
    """'F16,Q8_0,q4_k' -> canonical names in the order given (duplicates refused)."""
    names = [q for q in (text.split(",") if isinstance(text, str) else list(text)) if q.strip()]
    if not names:
        raise SweepError("--quants names no quant; give a comma list, e.g. F16,Q8_0,Q4_K_M")
    out: list[str] = []
    for q in names:
        c = normalize_quant(q, what="quant")
        if c in out:
            raise SweepError(f"--quants names {c} twice; list each quant once")
        out.append(c)
    return out


def cell_order(cells: list[dict]) -> list[dict]:
    """A sweep's cells by step, then the seed repo's own files after the made ones, then quant by bits per weight
    (variants.quant_rank): one order for the page's table and `sweep show`, however the sweep listed its quants."""
    return sorted(cells, key=lambda c: (int(c["step"]), bool(c.get("hub")), quant_rank(c.get("quant"))))


def grid(steps: list[int], quants: list[str], hub_quants: list[str]) -> list[Cell]:
    """The cells in grid order: steps ascending × quants as given, then the hub cells at the final step."""
    cells = [Cell(s, q) for s in steps for q in quants]
    cells += [Cell(steps[-1], q, True) for q in hub_quants]
    return cells


def plan_sweep(settings: Settings, store, **kwargs) -> tuple[str, int]:
    """make_plan(settings, **kwargs), then record the sweep in `store`; return (sweep id, number of cells)."""
    plan, cells = make_plan(settings, **kwargs)
    return SweepStore(store).create(plan, [(c.step, c.quant, c.hub) for c in cells]), len(cells)


def make_plan(settings: Settings, *, steps: str, quants: str | list[str], text: str | None = None,
              text_sha256: str | None = None, repo: str | None = None, reference: str | None = None,
              ctx: int = 512, max_chunks: int | None = DEFAULT_MAX_CHUNKS, name: str | None = None,
              hub_quants: bool = False, hub=None, scoring: str = "corpus", lambada_file: str | Path | None = None,
              limit: int | str | None = None) -> tuple[dict, list[Cell]]:
    """Check everything and return (the plan for SweepStore.create, the cells); writes nothing.

    scoring "corpus" (the default): the text is tokenized with the repo's tokenizer (tokenizer.json + config.json
    of the final step, a small download or the cache; for the demo suite its step folder) through llama.cpp from
    a vocabulary-only GGUF: no weights. It must give at least 2·ctx tokens; with max_chunks it is cut to
    max_chunks·ctx + ctx/2 tokens (the cut text is what every cell scores).
    scoring "lambada": no text; the cells score the LAMBADA examples of `lambada_file` (else the Hub dataset at
    Settings.lambada_repo / lambada_revision), the first `limit` of them, and the plan records which (file name,
    sha256, repo and revision or the local path, limit); max_chunks does not apply.
    Raises SweepError/BadInput before anything is written.
    """
    repo = repo or settings.checkpoint_repo
    lim = LIMITS["ctx"]  # the one table of run limits (params.py)
    if scoring not in SWEEP_SCORINGS:
        raise SweepError(f"--scoring {str(scoring)[:24]!r}: a sweep scores a text (--scoring corpus, the default) "
                         f"or the LAMBADA examples (--scoring lambada)")
    if not isinstance(ctx, int) or not lim.lo <= ctx <= lim.hi:
        raise SweepError(f"{lim.flag} {ctx} is out of range; use {lim.lo:g} … {lim.hi:g}{lim.unit}")
    lam_record = None
    if scoring == "lambada":
        if isinstance(text, str) and text.strip():
            raise InputTextError("--scoring lambada scores the LAMBADA examples, so a LAMBADA sweep takes no text; "
                                 "leave out --text-file (a LAMBADA file goes in --lambada-file)")
        if limit is not None and lambada_file is None:  # the number itself, before the Hub dataset is downloaded
            lambada.check_limit(limit, None)
        max_chunks = None
    else:
        if lambada_file is not None or limit is not None:
            raise InputTextError("--lambada-file and --limit belong to LAMBADA sweeps; add --scoring lambada (and "
                                 "leave out --text-file), or leave them out")
        if max_chunks is not None and (not isinstance(max_chunks, int) or max_chunks < 2):
            raise SweepError(f"--max-chunks {max_chunks}: corpus scoring needs at least 2 chunks; use 2 or more")
        if not isinstance(text, str) or not text.strip():
            raise InputTextError("the sweep's text is empty; give a UTF-8 text file with --text-file (or "
                                 "--scoring lambada for a LAMBADA sweep)")
        if len(text) > settings.max_text_chars:
            raise InputTextError(f"the text has {len(text)} characters; the limit is {settings.max_text_chars}")
    qs = sorted(parse_quants(quants), key=quant_rank)  # highest precision first, however they were given
    ref = "F16"
    if reference is not None and reference.strip().upper() not in ("F16", ""):
        ref = parse_spec(reference).spec
    hub_dataset = scoring == "lambada" and lambada_file is None
    hub_obj = hub or (None if repo == DEMO_ALIAS and not hub_quants and not hub_dataset else _hub(settings))
    step_list = parse_steps(steps, available_steps(settings, repo, hub_obj), repo)
    hq: list[str] = []
    hub_repo = None
    if hub_quants:
        hub_repo = settings.gguf_repo
        files = hub_obj.list_gguf_files(hub_repo)
        hq = sorted(files, key=quant_rank)
        if not hq:
            raise SweepError(f"--hub-quants: {hub_repo} has no GGUF files of a known quant")
    cells = grid(step_list, qs, hq)
    if not cells:
        raise SweepError("the grid is empty: give at least one step and one quant")
    if scoring == "lambada":
        lam_record, scored_text = _lambada_plan(settings, lambada_file, limit, hub_obj)
        n_tokens, text_sha256 = None, lam_record["sha256"]
        default_name = f"{repo} LAMBADA {len(step_list)} steps × {len(qs)} quants"
    else:
        scored_text, n_tokens = _check_text(settings, repo, step_list[-1], text, ctx, max_chunks, hub_obj)
        text_sha256 = text_sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest()
        default_name = f"{repo} {len(step_list)} steps × {len(qs)} quants"
    plan = {"name": name or default_name, "repo": repo, "steps": step_list,
            "quants": qs, "hub_repo": hub_repo, "hub_quants": hq, "reference": ref, "ctx": ctx,
            "max_chunks": max_chunks, "text": scored_text, "text_sha256": text_sha256, "n_tokens": n_tokens,
            "params": {"top_k": SWEEP_TOP_K, "max_tokens": 0, "temperature": 0.0, "seed": 0},
            "scoring": scoring, "lambada": lam_record}
    return plan, cells


def _lambada_plan(settings: Settings, lambada_file: str | Path | None, limit, hub) -> tuple[dict, str]:
    """(what a LAMBADA sweep's cells score: {"file", "path", "sha256", "repo", "revision", "limit", "n_file",
    "n"}; the examples' texts one per line, as each cell's run records its input). The file is read and checked
    as `compare --scoring lambada` reads it (lambada.parse, lambada.check_limit: the same messages)."""
    if lambada_file is not None:
        path = Path(lambada_file).expanduser()
        raw = read_bounded(path, "--lambada-file", lambada.MAX_FILE_BYTES, lambada.FILE_HINT, lambada.LambadaFileError)
        repo = revision = None
        name, where = path.name, str(path.resolve())
    else:
        repo, revision, name, where = settings.lambada_repo, settings.lambada_revision, lambada.HUB_FILE, None
        raw = hub.download_dataset_file(repo, name, revision).read_bytes()
    examples = lambada.parse(raw, name)
    n = lambada.check_limit(limit, len(examples)) if limit is not None else len(examples)
    record = {"file": name, "path": where, "sha256": hashlib.sha256(raw).hexdigest(), "repo": repo,
              "revision": revision, "limit": n if limit is not None else None, "n_file": len(examples), "n": n}
    return record, "\n".join(ex.text for ex in examples[:n])


def lambada_source(settings: Settings, plan: dict, lambada_file: str | Path | None = None,
                   hub=None) -> tuple[Path | None, Settings]:
    """What a shard of a LAMBADA sweep scores: (the local file, or None for the Hub dataset; the settings its
    runs use, pinned to the plan's dataset repo and revision), once the file's sha256 is the plan's, so shards and
    a resume score the examples the plan recorded. `lambada_file` gives the plan's local file at another path
    (another machine); another file is refused. SweepError before anything is written. A corpus sweep: (None,
    settings), and a `lambada_file` is refused."""
    sweep = plan.get("id") or "this sweep"
    if (plan.get("scoring") or "corpus") != "lambada":
        if lambada_file is not None:
            raise SweepError(f"--lambada-file: sweep {sweep} is a corpus sweep (it scores its text); leave it out")
        return None, settings
    lam = plan["lambada"] if isinstance(plan["lambada"], dict) else json.loads(plan["lambada"])
    what = f"{lam['file']} (sha256 {lam['sha256'][:16]}…)"
    if lam.get("repo") is not None:
        if lambada_file is not None:
            raise SweepError(f"--lambada-file: sweep {sweep} scores the Hub dataset {lam['repo']}@"
                             f"{lam['revision'][:12]}; leave out --lambada-file")
        path = (hub or _hub(settings)).download_dataset_file(lam["repo"], lam["file"], lam["revision"])
        given, local = f"{lam['repo']}@{lam['revision'][:12]}", None
        run_settings = settings.replace(lambada_repo=lam["repo"], lambada_revision=lam["revision"])
    else:
        given = str(lambada_file if lambada_file is not None else lam["path"])
        path = local = Path(given).expanduser()
        run_settings = settings
        if not path.is_file():
            raise SweepError(f"sweep {sweep} scores the LAMBADA file {what}, which is not at {given}; give it "
                             f"with --lambada-file PATH")
    sha = sha256_file(path)
    if sha != lam["sha256"]:
        raise SweepError(f"the LAMBADA file at {given} is not the one sweep {sweep} was planned with: its sha256 is "
                         f"{sha[:16]}…, the plan's {what}; give that file with --lambada-file (another file would "
                         f"score other examples), or plan a new sweep")
    return local, run_settings


def _hub(settings: Settings):
    from ..sources.hub import Hub

    return Hub(settings)


def _check_text(settings: Settings, repo: str, step: int, text: str, ctx: int, max_chunks: int | None,
                hub) -> tuple[str, int]:
    """(the text the cells will score, its token count); SweepError when it is too short at ctx."""
    from ..sources.convert import write_vocab_gguf
    from ..models.engine import Vocabulary

    with tempfile.TemporaryDirectory(prefix="pythia-compare-vocab-") as tmp:
        if repo == DEMO_ALIAS:
            src = settings.demo_dir / f"step{step}"
        else:
            commit = hub.resolve_commit(repo, f"step{step}")
            src = Path(hub.download(repo, "tokenizer.json", commit)).parent
            hub.download(repo, "config.json", commit)
        vocab_path = write_vocab_gguf(src, Path(tmp) / "vocab.gguf")
        vocab = Vocabulary(vocab_path)
        try:
            ids = vocab.tokenize(text)
            if len(ids) < 2 * ctx:
                raise SweepError(f"the text has {len(ids)} tokens ({repo}'s tokenizer); corpus scoring at --ctx "
                                 f"{ctx} needs at least {2 * ctx}; give a longer text or a smaller --ctx "
                                 f"(at most {len(ids) // 2})")
            keep = max_chunks * ctx + ctx // 2 if max_chunks else None
            if keep is None or len(ids) // ctx <= max_chunks:  # it has no more chunks than that anyway
                return text, len(ids)
            start = 1 if vocab.add_bos else 0
            prefix = b"".join(vocab.piece(i) for i in ids[start:keep]).decode("utf-8", "replace")
            if not unicodedata.normalize("NFC", text).startswith(prefix):
                return text, len(ids)  # cannot cut cleanly (should not happen with byte-level BPE): score it all
            return prefix, len(vocab.tokenize(prefix))
        finally:
            vocab.close()


# ------------------------------------------------------------------------------------------ sharding


def shard_of_env(environ: dict | None = None) -> tuple[int, int] | None:
    """(index, count) from a Slurm array task's environment, or None outside one."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        lo = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
    except (KeyError, ValueError):
        raise SweepError("inside a Slurm array, but SLURM_ARRAY_TASK_ID/_MIN/_COUNT are not numbers; "
                         "give --shard i/n") from None
    return task - lo, count


def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/5' -> (2, 5); None -> the Slurm array's shard, else (0, 1). SweepError when out of range."""
    if text is None:
        return shard_of_env() or (0, 1)
    a, sep, b = str(text).partition("/")
    try:
        i, n = int(a), int(b)
    except ValueError:
        raise SweepError(f"--shard {text!r} is not i/n; give e.g. --shard 0/4 (0-based)") from None
    if not sep or n < 1 or not 0 <= i < n:
        raise SweepError(f"--shard {text!r} is out of range: i must be 0 … n-1 and n ≥ 1 (e.g. 0/{max(n, 1)})")
    return i, n


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The cells of shard `index` of `count`: whole steps, the k-th distinct step (ascending) to shard k mod
    count, so one download serves every quant of a step. Every cell is in exactly one shard."""
    if count < 1 or not 0 <= index < count:
        raise SweepError(f"shard {index}/{count} is out of range: the index must be 0 … {count - 1}")
    steps = sorted({c.step for c in cells})
    mine = {s for k, s in enumerate(steps) if k % count == index}
    return [c for c in cells if c.step in mine]


# ------------------------------------------------------------------------------------------ running


@dataclass
class ShardReport:
    sweep_id: str
    shard: tuple[int, int]
    db: Path
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0  # wall time of the whole shard
    score_seconds: float = 0.0  # wall time of the corpus passes alone (tokenized -> done), the rest is overhead


def run_shard(settings: Settings, store, sweep_id: str, shard: tuple[int, int] = (0, 1), *, out_store=None,
              keep: bool = False, pool=None, resolver=None, progress: bool = True,
              on_cell: Callable[[Cell, str], None] | None = None,
              skip: set[tuple[int, str, bool]] | None = None,
              lambada_file: str | Path | None = None) -> ShardReport:
    """Run the not-yet-done cells of one shard, writing each finished cell in one transaction.

    `store` holds the plan; cells go to `out_store` (a shard DB, which gets the plan copied in) or to `store`.
    A cell that fails (download error, bad checkpoint, a model llama.cpp refuses) is recorded with its error and
    the shard goes on; a rerun retries it. `pool`: a ModelPool to share (the dashboard's); by default the shard
    makes its own and empties it after each step. `on_cell(cell, "done" | "failed")` is called as cells finish.
    Unless `keep`, a step's files that this shard fetched or built are deleted once the step's cells are done (a
    sweep-wide --reference's at the shard's end). Progress goes to stderr through tqdm (with an ETA).
    A LAMBADA sweep's shard first checks that it scores the plan's examples (lambada_source; `lambada_file`: the
    plan's file at another path) and writes nothing when it does not.
    """
    from tqdm import tqdm

    from ..runs.pool import ModelPool
    from ..sources.resolver import Resolver

    plan = SweepStore(store).plan(sweep_id)
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise SweepError(f"shard {index}/{count} is out of range: the index must be 0 … {count - 1}")
    lambada_path, settings = lambada_source(settings, plan, lambada_file, resolver.hub if resolver is not None and
                                            plan.get("scoring") == "lambada" else None)
    target = out_store or store
    if out_store is not None:
        SweepStore(out_store).copy_plan(store, sweep_id)
    cells = [Cell(s, q, h) for s, q, h in plan["cells"]]
    done = {(c["step"], c["quant"], c["hub"]) for c in SweepStore(target).cells(sweep_id) if c["status"] == "done"}
    if target is not store:  # cells already done in the plan's own run log are not run again in a shard
        done |= {(c["step"], c["quant"], c["hub"]) for c in SweepStore(store).cells(sweep_id) if c["status"] == "done"}
    done |= set(skip or ())  # (step, quant, hub) done elsewhere, e.g. in the plan's run log
    todo = [c for c in shard_cells(cells, index, count) if (c.step, c.quant, c.hub) not in done]
    report = ShardReport(sweep_id, shard, Path(target.path))
    report.skipped = len(shard_cells(cells, index, count)) - len(todo)
    own_pool = pool is None
    pool = pool or ModelPool(settings)
    resolver = resolver or Resolver(settings)
    t_start = time.perf_counter()
    bar = tqdm(total=len(todo), file=sys.stderr, disable=not progress, unit="cell", dynamic_ncols=True,
               desc=f"sweep {sweep_id} shard {index}/{count}", smoothing=0.1,
               bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} cells [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
    before_all = _cache_paths(resolver)
    try:
        for step in sorted({c.step for c in todo}):
            step_cells = [c for c in todo if c.step == step]
            _run_step(settings, plan, target, step, step_cells, pool, resolver, keep, bar, report, on_cell,
                      own_pool, lambada_path)
        if plan["reference"] != "F16" and todo and not keep:  # the sweep-wide reference, if this shard made it
            try:
                ref_res = resolver.resolve(parse_spec(plan["reference"]))
            except Exception:  # noqa: BLE001 - its cells already say why; nothing of it to delete
                ref_res = None
            if ref_res is not None:
                if own_pool:
                    pool.close()
                _cleanup(settings, resolver, before_all, [ref_res.path, *_step_cache_files(
                    resolver, before_all, ref_res.source.get("commit"))], keep)
    finally:
        bar.close()
        if own_pool:
            pool.close()
    report.seconds = time.perf_counter() - t_start
    return report


def _spec(plan: dict, cell: Cell) -> str:
    if cell.hub:
        return f"{plan['hub_repo']}:{cell.quant}"
    return f"{plan['repo']}@step{cell.step}:{cell.quant}"


def _run_step(settings, plan, store, step, cells, pool, resolver, keep, bar, report, on_cell,
              own_pool: bool = True, lambada_path: Path | None = None) -> None:
    """Score one step's pending cells: resolve each file, then one pass per group of quants that fits."""
    s = _Step(settings, plan, store, step, cells, resolver, bar, report, on_cell, lambada_path)
    t0 = time.perf_counter()
    if s.resolve_files():
        work = _passes(s.ready, s.ref_res.path, s.ref_cell, settings.memory_budget_bytes)
        s.score(work, pool, prep_s=time.perf_counter() - t0)  # building the step's files, shared out over its cells
        if own_pool:
            pool.close()  # the step's models are not needed again; their files may be deleted next
    _cleanup(settings, resolver, s.before, s.made, keep, s.snapshot)


class _Step:
    """One step of a shard, in named parts: its files (resolve_files), scoring its passes (score, _one_pass; the
    passes are _passes') and storing each pass's cells (record). Holds what the parts share: the reference, the
    cells ready to score, the files made for the step (for _cleanup) and its checkpoint's snapshot folder."""

    def __init__(self, settings, plan, store, step, cells, resolver, bar, report, on_cell, lambada_path=None):
        self.settings, self.plan, self.store, self.step, self.cells = settings, plan, store, step, cells
        self.lambada_path = lambada_path  # a LAMBADA sweep's local file (lambada_source), None: the Hub dataset
        self.resolver, self.bar, self.report, self.on_cell = resolver, bar, report, on_cell
        self.sweep_id = plan["id"]
        self.own_ref = plan["reference"] == "F16"
        self.ref_spec = f"{plan['repo']}@step{step}:F16" if self.own_ref else plan["reference"]
        self.before = _cache_paths(resolver)
        self.made: list[Path] = []  # files this step resolved (deleted afterwards if they were not there before)
        self.snapshot: Path | None = None  # the step's checkpoint folder in the HF cache
        self.ref_res = None  # the reference's resolved file
        self.ready: list[tuple[Cell, object]] = []  # (cell, its resolved file), the cells to score against it
        self.ref_cell: Cell | None = None  # the step's own F16 cell: the reference itself, scored with no reference
        self.sizes: dict[str, tuple[int, int]] = {}  # _size's memo

    def fail(self, cs: list[Cell], error: BaseException | str) -> None:
        msg = error if isinstance(error, str) else _describe(error)
        for c in cs:
            SweepStore(self.store).record_cell_failure(self.sweep_id, c.step, c.quant, c.hub, msg)
            self.report.failed += 1
            _advance(self.bar, 1)
            if self.on_cell:
                self.on_cell(c, "failed")

    def resolve_files(self) -> bool:
        """The reference first (every cell of the step needs it), then each cell's own file; a cell whose file
        cannot be made is recorded failed. False, with every cell recorded failed, when the reference cannot."""
        plan, step, resolver, bar = self.plan, self.step, self.resolver, self.bar
        try:
            bar.set_postfix_str(f"step{step}: building F16" if self.own_ref else f"step{step}: reference",
                                refresh=False)
            self.ref_res = resolver.resolve(parse_spec(self.ref_spec))
            if self.own_ref:  # a sweep-wide reference serves every step: the shard deletes it at its end
                self.made.append(self.ref_res.path)
            if self.own_ref and plan["repo"] != DEMO_ALIAS and self.ref_res.source.get("commit"):
                self.snapshot = resolver.hub.snapshot_dir(plan["repo"], self.ref_res.source["commit"])
        except Exception as e:  # noqa: BLE001 - recorded per cell, the shard goes on
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            self.fail(self.cells, f"the reference {self.ref_spec} could not be made: {_describe(e)}")
            return False
        for c in self.cells:
            if self.own_ref and not c.hub and c.quant == "F16":
                self.ref_cell = c
                continue
            try:
                bar.set_postfix_str(f"{c.label}: building", refresh=False)
                res = resolver.resolve(parse_spec(_spec(plan, c)))
                self.made.append(res.path)
                self.ready.append((c, res))
                if self.snapshot is None and not c.hub and plan["repo"] != DEMO_ALIAS and res.source.get("commit"):
                    self.snapshot = resolver.hub.snapshot_dir(plan["repo"], res.source["commit"])
            except Exception as e:  # noqa: BLE001
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                self.fail([c], e)
        step_commit = self.ref_res.source.get("commit") if self.own_ref else next(
            (r.source.get("commit") for c, r in self.ready if not c.hub), None)
        self.made += _step_cache_files(resolver, self.before, step_commit)  # e.g. the F16 base of quantized cells
        return True

    def score(self, work: list[tuple[list, bool]], pool, prep_s: float) -> None:
        """Run the passes in order. A pass of several cells that fails is queued again cell by cell (one bad file
        must not fail the others); a single cell's failure is recorded. Each pass's cells are stored as it ends."""
        from ..runs.compare import RunParams

        params = RunParams(scoring="corpus", ctx=int(self.plan["ctx"]), top_k=int(self.plan["params"]["top_k"]),
                           max_tokens=0, temperature=0.0, seed=0)
        if self.plan.get("scoring") == "lambada":  # the single-run LAMBADA path, on the plan's examples
            lam = self.plan["lambada"]
            params.scoring, params.lambada_file, params.limit = "lambada", self.lambada_path, lam.get("limit")
        while work:
            group, with_ref_cell = work.pop(0)
            members = [c for c, _ in group] + ([self.ref_cell] if with_ref_cell else [])
            t = time.perf_counter()
            try:
                run = self._one_pass(group, members, params, pool)
            except Exception as e:  # noqa: BLE001
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
                if len(members) > 1:  # one bad file must not fail the others: score them one by one
                    work[:0] = [([m], False) for m in group] + ([([], True)] if with_ref_cell else [])
                else:
                    self.fail(members, e)
                continue
            seconds = (time.perf_counter() - t + prep_s * len(members) / max(1, len(self.cells))) / len(members)
            self.record(run, group, with_ref_cell, seconds)

    def _one_pass(self, group: list, members: list[Cell], params, pool) -> dict | None:
        """One compare.iter_comparison pass: the group's quants against the reference (or the F16 alone, with no
        reference); the run JSON. The bar moves with the pass and is set back after it (record moves it by cells)."""
        from ..runs.compare import iter_comparison

        specs = [_spec(self.plan, c) for c, _ in group]
        if group:
            params.reference = self.ref_spec
        else:
            specs, params.reference = [self.ref_spec], None
        self.bar.set_postfix_str(f"step{self.step}: scoring {', '.join(c.quant for c in members)}", refresh=False)
        run = None
        last = 0.0
        t_scoring = time.perf_counter()
        try:
            run_settings = self.settings.replace(max_variants=max(self.settings.max_variants, len(specs) + 1))
            text = "" if params.scoring == "lambada" else self.plan["text"]  # LAMBADA: the examples, no text
            for ev in iter_comparison(specs, text, params, settings=run_settings, pool=pool,
                                      resolver=self.resolver):
                if ev.kind == "update" and ev.message == "tokenized":
                    t_scoring = time.perf_counter()
                if ev.kind == "update" and ev.fraction > last:
                    _advance(self.bar, (ev.fraction - last) * len(members) * 0.999)
                    last = ev.fraction
                if ev.kind == "done":
                    run = ev.run.to_json()  # the cell's run is cut from the run JSON (_cell_run)
        except Exception:
            _advance(self.bar, -last * len(members) * 0.999)
            raise
        _advance(self.bar, -last * len(members) * 0.999)
        self.report.score_seconds += time.perf_counter() - t_scoring  # the corpus pass itself, wall time
        return run

    def record(self, run: dict, group: list, with_ref_cell: bool, seconds: float) -> None:
        """Split a pass's run into one run per cell and store each with its cell (one transaction each)."""
        for c, entry, ref_entry in _split(run, group, with_ref_cell, self.ref_cell):
            cell_run = _cell_run(run, entry, ref_entry)
            summary = _summary(entry, ref_entry)
            summary.update(_size(entry["source"], self.resolver,
                                 self.ref_res if c is self.ref_cell else dict(group).get(c), self.sizes))
            SweepStore(self.store).save_cell_run(self.sweep_id, c.step, c.quant, c.hub, cell_run, summary, seconds)
            self.report.done += 1
            _advance(self.bar, 1)
            if self.on_cell:
                self.on_cell(c, "done")


def _passes(ready: list[tuple[Cell, object]], ref_path: Path, ref_cell: Cell | None,
            budget: int) -> list[tuple[list, bool]]:
    """Work items: (a group of (cell, resolved file) scored in one pass, whether the step's own F16 cell comes out
    of that pass as well). Groups fit the memory budget beside the reference (only the budget splits a step: the
    dashboard's per-run variant limit is for people reading tables); the hub's own files in groups of their own."""
    groups: list[list[tuple[Cell, object]]] = []
    for c, res in ready:
        size = Path(res.path).stat().st_size
        if (groups and groups[-1][-1][0].hub == c.hub
                and ref_path.stat().st_size + sum(Path(r.path).stat().st_size for _, r in groups[-1]) + size
                <= budget):
            groups[-1].append((c, res))
        else:
            groups.append([(c, res)])
    work: list[tuple[list, bool]] = [(g, ref_cell is not None and i == 0) for i, g in enumerate(groups)]
    if ref_cell is not None and not groups:
        work.append(([], True))  # the step's F16 cell alone: a run of the F16 with no reference
    return work


def _advance(bar, by: float) -> None:
    """Move the progress bar by a (fractional) number of cells, rounded so it never passes its total."""
    bar.n = min(float(bar.total), round(bar.n + by, 6))
    bar.update(0)  # draws at tqdm's own pace (mininterval)


def _split(run: dict, group: list, with_ref_cell: bool, ref_cell: Cell | None):
    """(cell, its entry, the reference entry or None) for every cell of a group's run."""
    out = []
    if not group:  # the F16 alone
        out.append((ref_cell, run["variants"][0], None))
        return out
    ref_entry = run["reference"]
    for (c, _res), entry in zip(group, run["variants"]):
        out.append((c, entry, ref_entry))
    if with_ref_cell:
        out.append((ref_cell, {**ref_entry, "kld": None}, None))
    return out


def _cell_run(run: dict, entry: dict, ref_entry: dict | None) -> dict:
    """The run of one cell: the group's run with only this cell's variant (and the reference)."""
    cell = {k: v for k, v in run.items()}
    cell["params"] = {**run["params"], "reference": run["params"]["reference"] if ref_entry else None}
    cell["reference"] = ref_entry
    cell["variants"] = [entry]
    return cell


def _summary(entry: dict, ref_entry: dict | None) -> dict:
    kld = entry.get("kld") if ref_entry is not None else None
    lam = entry.get("lambada") or {}  # a LAMBADA run's figures (its token-level ppl is empty)
    return {"ppl": entry["ppl"], "ppl_err": entry["ppl_err"],
            "kld_mean": kld["mean"] if kld else None, "kld_mean_err": kld["mean_err"] if kld else None,
            "kld_p99": kld["p99"] if kld else None, "ln_ratio": kld["ln_ratio"] if kld else None,
            "ln_ratio_err": kld["ln_ratio_err"] if kld else None,
            "lambada_n": lam.get("n"), "lambada_acc": lam.get("acc"), "lambada_acc_stderr": lam.get("acc_stderr"),
            "lambada_ppl": lam.get("ppl"), "lambada_ppl_stderr": lam.get("ppl_stderr")}


def _size(source: dict, resolver, res, memo: dict) -> dict:
    """{"bytes", "bpw"} of a cell's file; bpw by the one rule, variants.bits_per_weight."""
    from ..models.engine import model_size

    if source.get("bpw") is not None:  # measured when the run loaded the file
        return {"bytes": source.get("bytes"), "bpw": source["bpw"]}
    if res is None:
        return {"bytes": source.get("bytes"), "bpw": None}
    key = str(res.path)
    if key not in memo:
        memo[key] = model_size(res.path)
    n_params, tensor_bytes = memo[key]
    return {"bytes": source.get("bytes"), "bpw": bits_per_weight(n_params, tensor_bytes)}


def _describe(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if isinstance(e, PythiaCompareError) else f"{type(e).__name__}: {text}"


# ------------------------------------------------------------------------------------------ cleanup


def _cache_paths(resolver) -> set[Path]:
    return {e.path for e in resolver.cache.entries()} | set(_hf_files(resolver))


def _hf_files(resolver) -> list[Path]:
    root = Path(resolver.settings.hf_cache_dir).expanduser()
    if not root.is_dir():
        return []
    return [p for d in root.glob("models--*") for p in (d / "snapshots").glob("*/**/*") if p.is_symlink() or p.is_file()]


def _step_cache_files(resolver, before: set[Path], commit: str | None) -> list[Path]:
    """Cache entries of the step's commit made during this step (intermediates such as the F16 base)."""
    return [e.path for e in resolver.cache.entries()
            if e.path not in before and commit and e.key.get("commit") == commit]


def _cleanup(settings: Settings, resolver, before: set[Path], made: list[Path], keep: bool,
             snapshot: Path | None = None) -> None:
    """Delete the step's files that were not there before it (built GGUFs, downloaded snapshot files)."""
    resolver.release()  # the step's runs are over: what they held in use (Resolver.release) may go now
    if keep:
        return
    for p in dict.fromkeys(made):
        p = Path(p)
        if p in before:
            continue
        entry = next((e for e in resolver.cache.entries() if e.path == p), None)
        if entry is not None:
            resolver.cache.remove(entry)
        elif p.is_symlink() or p.is_file():
            _remove_hf_file(p)
    # the checkpoint files the step downloaded (weights, config, tokenizer) in its commit's HF snapshot folder
    if snapshot is not None and snapshot.is_dir():
        for p in sorted(snapshot.rglob("*")):
            if p not in before and (p.is_symlink() or p.is_file()):
                _remove_hf_file(p)


def _remove_hf_file(p: Path) -> None:
    """Remove a Hugging Face cache snapshot link and the blob it points at."""
    try:
        blob = p.resolve() if p.is_symlink() else None
        p.unlink(missing_ok=True)
        if blob is not None and blob.is_file() and blob.parent.name == "blobs":
            blob.unlink(missing_ok=True)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------ merge, status


def merge_shards(db_path: str | Path, paths: list[str | Path], sweep_id: str | None = None) -> dict:
    """Merge shard databases into the run log at `db_path`. Checks every input first (it exists, holds exactly
    one sweep, the same one, and `sweep_id` when given); nothing is written, and the run log is not even
    created, unless all pass. Idempotent: a second merge adds nothing."""
    from ..runs.store import RunStore
    from .store import SweepMismatch, sweep_ids_in_file

    if not paths:
        raise SweepError("sweep merge needs at least one shard database")
    found: dict[str, list[str]] = {}
    target = Path(db_path).expanduser().resolve()
    for p in paths:
        path = Path(p).expanduser()
        if not path.is_file():
            raise SweepError(f"shard database {str(p)!r} does not exist; give the files `sweep run --out` wrote")
        if path.resolve() == target:
            raise SweepError(f"shard database {str(p)!r} is the --db itself; merge shards into another file")
        ids = sweep_ids_in_file(path)  # RunLogError (exit 2) when it is not a SQLite file
        if not ids:
            raise SweepError(f"{str(p)!r} holds no sweep; give the shard databases `sweep run --out` wrote")
        if len(ids) > 1:
            raise SweepError(f"{str(p)!r} holds {len(ids)} sweeps ({', '.join(ids)}); a shard holds one")
        found.setdefault(ids[0], []).append(str(p))
    if len(found) > 1:
        parts = "; ".join(f"{sid}: {', '.join(ps)}" for sid, ps in found.items())
        raise SweepMismatch(f"these shards belong to different sweeps ({parts}); merge one sweep at a time")
    (sid,) = found
    if sweep_id is not None and sid != sweep_id:
        raise SweepMismatch(f"the shards belong to sweep {sid}, not {sweep_id}")
    totals = {"sweep": sid, "shards": len(paths), "added": 0, "failed": 0, "skipped": 0}
    sources = [RunStore(p) for p in paths]
    store = RunStore(db_path)
    try:
        for src in sources:  # plans must agree before anything is written
            store_plan = SweepStore(src).plan(sid)
            if sid in SweepStore(store).ids():
                mine = SweepStore(store).plan(sid)
                if {k: mine[k] for k in _PLAN_KEYS} != {k: store_plan[k] for k in _PLAN_KEYS}:
                    raise SweepMismatch(f"--db holds another sweep under the id {sid} (grid, text or parameters "
                                        f"differ from {src.path}'s); merge into a separate --db")
        for src in sources:
            counts = SweepStore(store).merge_from(src, sid)
            for k in ("added", "failed", "skipped"):
                totals[k] += counts[k]
    finally:
        for src in sources:
            src.close()
        store.close()
    return totals


_PLAN_KEYS = ("repo", "steps", "quants", "hub_repo", "hub_quants", "reference", "ctx", "max_chunks", "text",
              "text_sha256", "params", "cells", "scoring", "lambada")


def status(store, sweep_id: str) -> dict:
    """SweepStore(store).status plus "eta_s": pending cells × mean seconds of a done cell (None before any is done)."""
    s = SweepStore(store).status(sweep_id)
    s["eta_s"] = s["pending"] * s["cell_seconds"] if s["cell_seconds"] is not None else None
    return s
