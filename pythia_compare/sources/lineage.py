"""Which training run a variant comes from, and what a run should warn about when it mixes them.

Owns the rule that decides whether two variants are checkpoints of one training run: the default GGUF repo's
quants are made from the v0 checkpoint repo (`EleutherAI/pythia-410m-deduped-v0`), so the two count as one;
every other repo is its own training run; the bundled demo suite is its own; a local file's origin is
unknown and never warned about. Also the wording of the nearest-steps hint shared by every step refusal.
Pure: no network, no files, no llama.cpp.
"""

from __future__ import annotations

from ..config import DEFAULT_CHECKPOINT_REPO, DEFAULT_GGUF_REPO, Settings
from ..variants import DEMO_ALIAS

# GGUF repos whose files were converted from a checkpoint repo: the checkpoint repo is their training run.
GGUF_MADE_FROM = {DEFAULT_GGUF_REPO: DEFAULT_CHECKPOINT_REPO}


def training_run(repo: str | None, settings: Settings | None = None) -> str | None:
    """The training run of a variant whose source repo is `repo` (None for a local file: unknown)."""
    if not repo:
        return None
    if repo == DEMO_ALIAS:
        return "the demo suite"
    made_from = dict(GGUF_MADE_FROM)
    if settings is not None and settings.gguf_repo == DEFAULT_GGUF_REPO:
        made_from.setdefault(settings.gguf_repo, DEFAULT_CHECKPOINT_REPO)
    return made_from.get(repo, repo)


def mixed_run_warnings(resolved: list, settings: Settings | None = None) -> list[str]:
    """A warning when the variants (sources.Resolved) come from more than one training run, naming each run
    and its variants; [] otherwise."""
    runs: dict[str, list[str]] = {}
    for r in resolved:
        run = training_run((r.source or {}).get("repo"), settings)
        if run is not None:
            runs.setdefault(run, []).append(r.variant.label)
    if len(runs) < 2:
        return []
    parts = "; ".join(f"{run} ({', '.join(labels)})" for run, labels in runs.items())
    return [f"this run mixes checkpoints of different training runs: {parts}. The Hub's GGUF quants are made "
            f"from the v0 checkpoints ({DEFAULT_CHECKPOINT_REPO}); v0 and the current Pythia models are different "
            f"training runs, so differences between them are not due to quantization or training step alone."]


def nearest_steps(steps: list[int], want: int) -> list[int]:
    """The steps either side of `want` (the last below, the first above), ascending; at either end of the list,
    the two nearest."""
    below = [s for s in steps if s < want]
    above = [s for s in steps if s > want]
    if below and above:
        return [max(below), min(above)]
    return sorted(sorted(steps, key=lambda s: (abs(s - want), s))[:2])


def describe_steps(steps: list[int]) -> str:
    """'143 checkpoints, step1000 … step143000' for a sorted step list."""
    if not steps:
        return "no checkpoints"
    return f"{len(steps)} checkpoint{'s' if len(steps) != 1 else ''}, step{steps[0]} … step{steps[-1]}"
