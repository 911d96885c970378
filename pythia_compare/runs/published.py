"""EleutherAI's published lm-eval numbers for Pythia-410M-deduped, by Hub repo, Hub step and task.

Owns reading the bundled JSON (assets/published/pythia-410m-deduped-evals.json, made by
tools/import_pythia_evals.py from github.com/EleutherAI/pythia's evals/, Apache-2.0; docs/published.md), the
lookups (`scores`, `lookup`, `published`), and which training run and step a variant is, for the question "what
did EleutherAI measure here?" (`training_point`): bare quant specs are the default GGUF repo's files, made from
the v0 checkpoint repo's final step (sources/lineage.py), so they answer with v0 step143000.
A step without its own file answers None ("not published for this step"), never a neighbour's value; v0 and the
current models are different training runs and are never mixed. A repo with no numbers is a clear error naming
the repos that have them.
Pure: reads one bundled file, no network, no SQLite, no llama.cpp; pandas only inside `published`.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..config import ASSETS_DIR, DEFAULT_GGUF_REPO, Settings
from ..errors import BadInput
from ..sources.lineage import training_run
from ..variants import DEMO_ALIAS, FINAL_STEP, Variant, parse_spec

PUBLISHED_FILE = ASSETS_DIR / "published" / "pythia-410m-deduped-evals.json"
NOT_PUBLISHED = "not published for this step"
# What the page and the figures call each task, in the order they show them.
TASK_NAMES = {"lambada_openai": "LAMBADA", "piqa": "PIQA", "winogrande": "WinoGrande", "arc_easy": "ARC-Easy",
              "arc_challenge": "ARC-Challenge", "sciq": "SciQ", "logiqa": "LogiQA", "wsc": "WSC",
              "wikitext": "WikiText"}
SOURCE_NOTE = ("EleutherAI's own lm-evaluation-harness results (github.com/EleutherAI/pythia, evals/), not measured "
               "here: zero-shot, on the Hugging Face checkpoint at that step.")


class NoPublishedNumbers(BadInput):
    """Published numbers asked for a repo, task or shot count the bundle does not have."""


@functools.lru_cache(maxsize=4)
def _bundle(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def bundle(path: Path | None = None) -> dict:
    """The bundled JSON, read once (its layout: docs/published.md)."""
    return _bundle(str(path or PUBLISHED_FILE))


def provenance() -> dict:
    """Where the numbers come from: {"repo", "commit", "license", "made_by", "folders"}."""
    return dict(bundle()["source"])


def repos() -> list[str]:
    """The Hub repos that have published numbers."""
    return list(bundle()["runs"])


def tasks() -> dict[str, list[str]]:
    """Task -> its kept metrics (each with a '<metric>_stderr' where the source file has one)."""
    return {t: list(m) for t, m in bundle()["tasks"].items()}


def run_of(repo: str | None) -> str:
    """The repo whose numbers answer for `repo`: itself, or the checkpoint repo a GGUF repo was made from
    (lineage.training_run). Raises NoPublishedNumbers naming the repos that have numbers."""
    have = repos()
    if repo in have:
        return repo
    run = training_run(repo) if repo else None
    if run in have:
        return run
    what = "the demo suite (a tiny model trained here, never evaluated by EleutherAI)" if repo == DEMO_ALIAS \
        else f"{repo!r}" if repo else "a local file (its origin is unknown)"
    raise NoPublishedNumbers(f"no published numbers for {what}; they exist for {', '.join(have)} (and "
                             f"{DEFAULT_GGUF_REPO}, whose files are v0 step{FINAL_STEP})")


def _files(repo: str, shots: int) -> list[dict]:
    run = bundle()["runs"][run_of(repo)]
    files = [f for f in run["files"] if f["num_fewshot"] == shots]
    if not files:
        have = sorted({f["num_fewshot"] for f in run["files"]})
        raise NoPublishedNumbers(f"no {shots}-shot numbers published for {run_of(repo)}; it has "
                                 f"{', '.join(f'{s}-shot' for s in have)}")
    return files


def steps(repo: str, shots: int = 0) -> list[int]:
    """The Hub steps of `repo` with published `shots`-shot numbers, ascending."""
    return [f["step"] for f in _files(repo, shots)]


def _check_task(task: str) -> None:
    if task not in bundle()["tasks"]:
        raise NoPublishedNumbers(f"no published numbers for task {task!r}; the bundled tasks are "
                                 f"{', '.join(bundle()['tasks'])}")


def scores(repo: str, step: int, shots: int = 0) -> dict | None:
    """{task: {metric: value, metric_stderr: value}} of `repo` at Hub step `step`, or None when that step has no
    published numbers (NOT_PUBLISHED): never a neighbour's."""
    for f in _files(repo, shots):
        if f["step"] == int(step):
            return {t: dict(m) for t, m in f["scores"].items()}
    return None


def lookup(repo: str, step: int, task: str, shots: int = 0) -> dict | None:
    """One task's published metrics at one Hub step ({"acc": …, "acc_stderr": …, …}); None when the step has no
    published numbers or its file lacks the task (the current models' files have no wikitext)."""
    _check_task(task)
    got = scores(repo, step, shots)
    return None if got is None else got.get(task)


def source_file(repo: str, step: int, shots: int = 0) -> str | None:
    """The path, in EleutherAI/pythia, of the file behind `repo` at `step` (None: not published)."""
    return next((f["path"] for f in _files(repo, shots) if f["step"] == int(step)), None)


def published(repo: str, task: str, shots: int = 0):
    """A pandas DataFrame of one task's published numbers over training: columns step (the Hub step),
    source_step (the step the file names: v0's global_step, half the Hub step), the task's metrics and their
    standard errors, num_fewshot and path; one row per published step, ascending."""
    import pandas as pd

    _check_task(task)
    metrics = bundle()["tasks"][task]
    cols = ["step", "source_step"] + [c for m in metrics for c in (m, f"{m}_stderr")] + ["num_fewshot", "path"]
    rows = []
    for f in _files(repo, shots):
        got = f["scores"].get(task)
        if got is None:
            continue
        rows.append({"step": f["step"], "source_step": f["source_step"],
                     **{c: got.get(c) for m in metrics for c in (m, f"{m}_stderr")},
                     "num_fewshot": f["num_fewshot"], "path": f["path"]})
    return pd.DataFrame(rows, columns=cols)


def training_point(spec: str, source_repo: str | None = None,
                   settings: Settings | None = None) -> tuple[str, int] | None:
    """(the repo with published numbers, Hub step) that a variant is a checkpoint of, or None when it is not a
    Pythia checkpoint we have numbers for (the demo suite, a local file, another repo).

    `source_repo` is the repo the variant was resolved from (a run's source.repo), which names the checkpoint
    repo a bare `step3000` used. Bare quants (`Q4_K_M`) are the default GGUF repo's files: v0 step143000. A
    checkpoint repo without a step (`main`) is its final step.
    """
    try:
        v: Variant = parse_spec(spec)
    except BadInput:
        return None
    if v.kind == "local" or v.is_demo:
        return None
    repo = source_repo or v.repo or (settings.gguf_repo if v.kind == "gguf" and settings else
                                     settings.checkpoint_repo if settings else None)
    if v.kind == "gguf" and not repo:
        repo = DEFAULT_GGUF_REPO
    try:
        run = run_of(repo)
    except NoPublishedNumbers:
        return None
    if run != repo or v.kind == "gguf":  # a GGUF repo's files: made from its checkpoint repo's final step
        return run, FINAL_STEP
    step = v.step
    if step is None and v.revision in (None, "main"):
        step = FINAL_STEP
    return (run, step) if step is not None else None
