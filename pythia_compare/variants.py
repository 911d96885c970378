"""Variant specs: the one grammar shared by the CLI, the dashboard, share links and the database.

Owns parsing spec strings into frozen `Variant`s (syntax only), and the catalogs of quant types and of the
known Pythia repos' training steps. Never touches the network, files or llama.cpp: resolving a Variant to a
GGUF file, and checking that its repo has the step, is sources/resolver.py.

    Q4_K_M                      the default GGUF repo's file of that quant (final checkpoint)
    step3000                    the default checkpoint repo at revision step3000, converted to GGUF F16
    step3000:Q4_K_M             that checkpoint converted, then quantized by llama.cpp
    REPO:Q8_0                   an explicit repo: its GGUF file of that quant, or its checkpoint quantized
    REPO@step1000:Q5_K_M        an explicit checkpoint repo at a revision
    demo, demo@step0, demo:Q2_K the bundled offline demo suite (an explicit alias, never a silent stand-in)
    ./path/file.gguf            a local file
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SpecError

DEMO_ALIAS = "demo"


@dataclass(frozen=True)
class QuantType:
    name: str  # llama.cpp ftype name, e.g. "Q4_K_M"
    ftype: int  # llama.cpp LLAMA_FTYPE_* value
    bpw: float  # approximate bits per weight of the whole file (for labels and size plots)
    needs_imatrix: bool = False  # llama.cpp makes it only with an importance matrix
    native: bool = False  # written by the converter itself (no llama.cpp quantize step)


_Q = QuantType
QUANTS: dict[str, QuantType] = {q.name: q for q in [
    _Q("F32", 0, 32.0, native=True), _Q("F16", 1, 16.0, native=True), _Q("BF16", 32, 16.0, native=True),
    _Q("Q8_0", 7, 8.5), _Q("Q6_K", 18, 6.56), _Q("Q5_K_M", 17, 5.69), _Q("Q5_K_S", 16, 5.54),
    _Q("Q5_1", 9, 6.0), _Q("Q5_0", 8, 5.5), _Q("Q4_K_M", 15, 4.89), _Q("Q4_K_S", 14, 4.58),
    _Q("Q4_1", 3, 5.0), _Q("Q4_0", 2, 4.5), _Q("Q3_K_L", 13, 4.27), _Q("Q3_K_M", 12, 3.91),
    _Q("Q3_K_S", 11, 3.5), _Q("Q2_K", 10, 3.0), _Q("IQ4_XS", 30, 4.25), _Q("IQ4_NL", 25, 4.5),
    _Q("IQ1_S", 24, 1.56, needs_imatrix=True), _Q("IQ1_M", 31, 1.75, needs_imatrix=True),
    _Q("IQ2_XXS", 19, 2.06, needs_imatrix=True), _Q("IQ2_XS", 20, 2.31, needs_imatrix=True),
    _Q("IQ2_S", 28, 2.5, needs_imatrix=True), _Q("IQ2_M", 29, 2.7, needs_imatrix=True),
    _Q("IQ3_XXS", 23, 3.06, needs_imatrix=True), _Q("Q2_K_S", 21, 2.6, needs_imatrix=True),
]}
QUANT_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# The types a user can ask for today, highest precision first.
SUPPORTED_QUANTS: list[str] = [q.name for q in QUANTS.values() if not q.needs_imatrix]

# The steps a checkpoint repo offers come from its own branch list (hub.py, remembered for offline use); these
# built-in lists of the known repos are only the offline fallback (`builtin_steps`).
# The current Pythia repos (EleutherAI/pythia-410m-deduped): 154 checkpoints, step0, log-spaced 1..512, then
# every 1000 up to 143000 (= main).
PYTHIA_STEPS: list[int] = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
# The v0 repos (EleutherAI/pythia-410m-deduped-v0, the default, which the Hub's GGUF quants were made from):
# 143 checkpoints, step1000 … step143000 every 1000. v0 and the current models are different training runs.
V0_STEPS: list[int] = list(range(1000, 143001, 1000))
FINAL_STEP = 143000
KNOWN_STEPS: dict[str, list[int]] = {"EleutherAI/pythia-410m-deduped-v0": V0_STEPS,
                                     "EleutherAI/pythia-410m-deduped": PYTHIA_STEPS}


def builtin_steps(repo: str | None) -> list[int] | None:
    """The built-in step list of a known checkpoint repo (a copy), or None for any other repo."""
    steps = KNOWN_STEPS.get(repo or "")
    return list(steps) if steps is not None else None

_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
_STEP_RE = re.compile(r"^step(\d+)$")


# Longest names first, so Q4_K_M wins over Q4_K; a name must stand alone between separators.
_QUANT_NAMES = sorted(list(QUANTS) + list(QUANT_ALIASES), key=len, reverse=True)
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def quant_from_filename(name: str) -> str | None:
    """The canonical quant of a GGUF file name ('x.Q4_K.gguf' -> 'Q4_K_M', 'x-q8_0.gguf' -> 'Q8_0'), or None.

    The one reading of a quant from a file name, for the Hub's listings (hub.py) and local files (sources/resolver.py).
    Case-insensitive; the quant must stand between separators, so 'Q4_0_4_4' or 'Q6_K_L' are not read as
    Q4_0 or Q6_K. Parts of a split GGUF ('-00001-of-00003.gguf') give None: one file is not the model.
    """
    base = name.rsplit("/", 1)[-1]
    if not base.lower().endswith(".gguf") or _SPLIT_RE.search(base):
        return None
    stem = base[: -len(".gguf")].upper()
    for q in _QUANT_NAMES:
        if re.search(rf"(?<![A-Z0-9]){re.escape(q)}(?![A-Z0-9]|_[A-Z0-9])", stem):
            return QUANT_ALIASES.get(q, q)
    return None


def normalize_quant(name: str, *, what: str = "quant") -> str:
    """Canonical llama.cpp ftype name for `name` (case-insensitive, Hub aliases accepted).

    Raises SpecError for unknown names and for importance-matrix-only types.
    """
    key = name.strip().upper()
    key = QUANT_ALIASES.get(key, key)
    if key not in QUANTS:
        raise SpecError(f"unknown {what} {name!r}; use one of: {', '.join(SUPPORTED_QUANTS)}")
    if QUANTS[key].needs_imatrix:
        raise SpecError(f"{what} {key} needs an importance matrix, which pythia-compare does not compute yet; "
                        f"use one of: {', '.join(SUPPORTED_QUANTS)}")
    return key


@dataclass(frozen=True)
class Variant:
    """One model variant. `kind` says how it becomes a GGUF file:

    - "local": `path` is a GGUF file on disk.
    - "gguf": `repo` is a GGUF repo; its file of `quant` at `revision` (None: main).
    - "checkpoint": `repo` is a Hugging Face GPT-NeoX checkpoint repo at `revision`, converted to F16 and
      quantized to `quant`. `repo == "demo"` is the bundled demo suite.
    - "repo": an explicit repo without a revision; sources/resolver.py decides GGUF or checkpoint by its files.
    """

    spec: str  # canonical spec string (what the database and links store)
    kind: str
    quant: str | None = None
    repo: str | None = None
    revision: str | None = None
    path: str | None = None
    # The demo suite's last step when the parser was told it (`demo@step800` is then `demo`); not part of ==.
    demo_final: str | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple:
        """What the variant is, whatever the spelling: `demo` and `demo:F16`, or `F16` and `step143000`, are
        one variant; so are `demo@step800` and `demo` when 800 is the demo suite's last step (parse_spec's
        demo_final)."""
        rev = None if self.is_demo and self.revision is not None and self.revision == self.demo_final \
            else self.revision
        return (self.kind, self.repo, rev, self.quant, self.path)

    @property
    def is_demo(self) -> bool:
        """A variant of the bundled demo suite (repo alias `demo`)."""
        return self.repo == DEMO_ALIAS

    @property
    def step(self) -> int | None:
        m = _STEP_RE.match(self.revision or "")
        return int(m.group(1)) if m else None

    @property
    def label(self) -> str:
        """Short human name, e.g. 'step3000 Q4_K_M', 'Q8_0', 'demo step0 F16', 'model.gguf'."""
        if self.kind == "local":
            return (self.path or "").replace("\\", "/").rsplit("/", 1)[-1]
        parts: list[str] = []
        if self.repo == DEMO_ALIAS:
            parts.append("demo")
        elif self.repo and self.kind in ("repo", "gguf") and self.spec.split(":")[0] == self.repo:
            parts.append(self.repo.rsplit("/", 1)[-1])
        elif self.repo and "/" in self.spec.split("@")[0].split(":")[0]:
            parts.append(self.repo.rsplit("/", 1)[-1])
        if self.revision:
            parts.append(self.revision)
        if self.quant:
            parts.append(self.quant)
        return " ".join(parts)


def _is_path(spec: str) -> bool:
    return spec.startswith(("./", "../", "/", "~")) or spec.lower().endswith(".gguf")


def _check_revision(rev: str, spec: str) -> str:
    if not _REV_RE.match(rev) or ".." in rev:
        raise SpecError(f"variant {spec!r}: revision {rev!r} is not a valid revision; use e.g. step3000 or main")
    return rev


def _quant_in(part: str, raw: str) -> str:
    """normalize_quant for the quant part of a spec; the error names the spec once (and the part if it differs)."""
    try:
        return normalize_quant(part)
    except SpecError as e:
        if part.strip().upper() == raw.strip().upper():
            raise
        raise SpecError(f"variant {raw!r}: {e}") from None


def parse_spec(spec: str, *, final_step: int = FINAL_STEP, demo_final: int | None = None) -> Variant:
    """Parse one spec string into a Variant. Raises SpecError naming the spec and what would work.

    `demo_final`, the demo suite's last step when known, makes `demo@step<demo_final>` the same variant
    (Variant.key) as `demo`."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty variant spec; use e.g. Q4_K_M, step3000, step3000:Q4_K_M, demo@step0 or ./model.gguf")
    raw = spec.strip()
    if len(raw) > 300:
        raise SpecError(f"variant spec is {len(raw)} characters long; a spec is at most 300")
    if _is_path(raw):
        return Variant(spec=raw, kind="local", path=raw)

    head, sep, quant_part = raw.rpartition(":")
    if not sep:
        head, quant_part = raw, ""
    elif not head:
        raise SpecError(f"variant {raw!r}: nothing before ':'; use e.g. step3000:Q4_K_M")
    if sep and not quant_part:
        raise SpecError(f"variant {raw!r}: nothing after ':'; use a quant such as {', '.join(SUPPORTED_QUANTS[:6])}")
    quant = _quant_in(quant_part, raw) if quant_part else None

    repo_part, at, rev_part = head.partition("@")
    if at and not rev_part:
        raise SpecError(f"variant {raw!r}: nothing after '@'; use e.g. {repo_part}@step1000")

    # Bare quant: `Q4_K_M`.
    if not sep and not at and re.fullmatch(r"(I?Q\d\w*|B?F\d+)", repo_part, re.IGNORECASE):
        q = _quant_in(repo_part, raw)
        if QUANTS[q].native:
            # The GGUF repo holds 2- to 8-bit files only: F16/F32/BF16 come from converting the final step.
            return Variant(spec=q, kind="checkpoint", quant=q, revision=f"step{final_step}")
        return Variant(spec=q, kind="gguf", quant=q)
    # Bare step: `step3000`, `step3000:Q4_K_M`.
    m = _STEP_RE.match(repo_part)
    if m and not at:
        step = int(m.group(1))  # whether the repo has it is checked against its branches (sources/resolver.py)
        q = quant or "F16"
        return Variant(spec=f"step{step}:{q}" if quant else f"step{step}", kind="checkpoint", quant=q,
                       revision=f"step{step}")
    # Demo alias.
    if repo_part.lower() == DEMO_ALIAS:
        rev = _check_revision(rev_part, raw) if at else None
        q = quant or "F16"
        canon = DEMO_ALIAS + (f"@{rev}" if rev else "") + (f":{quant}" if quant else "")
        return Variant(spec=canon, kind="checkpoint", quant=q, repo=DEMO_ALIAS, revision=rev,
                       demo_final=None if demo_final is None else f"step{int(demo_final)}")
    # Explicit repo.
    if _REPO_RE.match(repo_part):
        if at:
            rev = _check_revision(rev_part, raw)
            q = quant or "F16"
            return Variant(spec=f"{repo_part}@{rev}" + (f":{quant}" if quant else ""), kind="checkpoint", quant=q,
                           repo=repo_part, revision=rev)
        return Variant(spec=repo_part + (f":{quant}" if quant else ""), kind="repo", quant=quant, repo=repo_part)
    raise SpecError(
        f"cannot read variant {raw!r}; use a quant (Q4_K_M), a step (step3000, step3000:Q4_K_M), a repo "
        f"(owner/name:Q8_0, owner/name@step1000:Q5_K_M), the demo suite (demo@step0:Q4_K_M) or a local ./file.gguf")


def parse_specs(specs: list[str], *, demo_final: int | None = None) -> list[Variant]:
    """Parse several specs, refusing duplicates (the same variant twice, however spelt)."""
    out: list[Variant] = []
    seen: dict[tuple, str] = {}
    for s in specs:
        v = parse_spec(s, demo_final=demo_final)
        if v.key in seen:
            same = "" if seen[v.key] == v.spec else f" (as {seen[v.key]!r})"
            raise SpecError(f"variant {v.spec!r} is given twice{same}; list each variant once")
        seen[v.key] = v.spec
        out.append(v)
    return out
