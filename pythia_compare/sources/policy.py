"""What a public deployment accepts: the one policy every run passes, whichever door it came in by.

Owns the rules of public mode (Settings.public, forced on by SPACE_ID): only Hub and demo specs, never a path
on the server; only the Hub repos the operator allows (Settings.allowed_repos, default the GGUF and checkpoint
repos of Settings; `demo` always); and at most Settings.max_conversions_public checkpoints converted anew per
run. compare.iter_comparison checks a run's variants here before anything is resolved, and resolver.Resolver
checks again per variant and per conversion, so the CLI, the API and the page all follow it. Never opens a
file, never touches the network and never loads a model.

The refusal of a local path is one fixed message: it says nothing about the path, so it cannot tell whether
the path exists, is a folder or is readable.
"""

from __future__ import annotations

from ..config import Settings
from ..errors import BadInput
from ..variants import DEMO_ALIAS, Variant

LOCAL_REFUSED = ("this is a public deployment: it runs models from the Hugging Face Hub and the bundled demo "
                 "suite only, never a file on the server; name a quant (Q4_K_M), a step (step3000), a Hub repo "
                 "(owner/name:Q8_0) or the demo suite (demo:Q4_K_M)")


class NotAllowed(BadInput):
    """A public deployment refuses this variant (a server path, a repo off its allow-list, too many conversions)."""


def allowed_repos(settings: Settings) -> list[str]:
    """The Hub repos a public run may name: Settings.allowed_repos, else the GGUF and checkpoint repos."""
    repos = settings.allowed_repos if settings.allowed_repos is not None else (settings.gguf_repo,
                                                                               settings.checkpoint_repo)
    return [r for r in dict.fromkeys(repos) if r]


def repo_of(variant: Variant, settings: Settings) -> str | None:
    """The Hub repo a variant would fetch from (None for a local file); `demo` for the bundled suite."""
    if variant.kind == "local":
        return None
    if variant.kind == "gguf":
        return settings.gguf_repo
    if variant.kind == "checkpoint" and variant.repo is None:
        return settings.checkpoint_repo
    return variant.repo


def check_variant(variant: Variant, settings: Settings) -> None:
    """Raise NotAllowed if a public deployment may not run this variant; nothing is opened or fetched."""
    if not settings.public:
        return
    if variant.kind == "local":
        raise NotAllowed(LOCAL_REFUSED)
    repo = repo_of(variant, settings)
    if repo == DEMO_ALIAS:
        return
    allowed = allowed_repos(settings)
    if repo is None or repo.lower() not in {r.lower() for r in allowed}:
        raise NotAllowed(f"variant {variant.spec!r}: this public deployment runs models of "
                         f"{', '.join(allowed + [DEMO_ALIAS])} only, not of {repo!r}; pick one of those, or run "
                         f"pythia-compare on your own machine to compare any repo")


def check_run(variants: list[Variant], settings: Settings) -> None:
    """Check every variant of a run (reference included) before any of them is resolved."""
    for v in variants:
        check_variant(v, settings)


def check_conversion(variant: Variant, done: int, settings: Settings) -> None:
    """Before a run converts one more Hub checkpoint (`done` converted already): NotAllowed past the cap."""
    if settings.public and done >= settings.max_conversions_public:
        raise NotAllowed(f"variant {variant.spec!r} needs a checkpoint converted to GGUF, and this public deployment "
                         f"converts at most {settings.max_conversions_public} per run; the ones converted so far "
                         f"are cached, so run again to add more, or choose GGUF quants of the final checkpoint")
