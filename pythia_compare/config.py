"""Settings: one dataclass holding every knob of pythia_compare, and the one place env vars are read.

Owns defaults and environment overrides. Never touches the network, the database or llama.cpp.
The CLI builds Settings from flags layered over `Settings.from_env()`; the dashboard does the same.
huggingface_hub reads HF_* variables once at import, so the Hub endpoint and cache dir are resolved
here and passed to hub.py explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__version__ = "0.1.0"  # the package's version (pyproject reads it here; the package top re-exports it)
PACKAGE_DIR = Path(__file__).resolve().parent


def _assets_dir() -> Path:
    """The bundled assets (demo suite, css): pythia_compare/assets in an installed copy (pyproject.toml maps the
    repository's top-level assets/ there), the top-level assets/ beside the package in a source checkout."""
    installed = PACKAGE_DIR / "assets"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "assets"


ASSETS_DIR = _assets_dir()

DEFAULT_GGUF_REPO = "RichardErkhov/EleutherAI_-_pythia-410m-deduped-v0-gguf"
DEFAULT_CHECKPOINT_REPO = "EleutherAI/pythia-410m-deduped-v0"
# LAMBADA's Hub dataset (docs/metrics.md, "Where the data comes from"): lm-eval's lambada_openai data, pinned
DEFAULT_LAMBADA_REPO = "EleutherAI/lambada_openai"
DEFAULT_LAMBADA_REVISION = "900124bf3b8235c6daf21033af9948b3f07346c4"
DEFAULT_ENDPOINT = "https://huggingface.co"


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pythia-compare"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pythia-compare"


def _hf_cache_dir() -> Path:
    # huggingface_hub's own rule: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface")
    return Path(hf_home) / "hub"


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_size(text: str) -> int:
    """'512M', '2GB', '1.5GiB', '1000' -> bytes. Raises ValueError naming the accepted forms."""
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2,
             "g": 1024**3, "gb": 1024**3, "gib": 1024**3, "t": 1024**4, "tb": 1024**4, "tib": 1024**4}
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abgikmt")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -1.0
    if unit not in units or value < 0:
        raise ValueError(f"size {text!r} is not a size; use bytes or a number with K, M, G or T (e.g. 512M, 8G)")
    return int(value * units[unit])


def parse_minutes(text: str) -> float:
    """'5', '0.5' -> minutes (a finite number > 0). Raises ValueError naming the variable and a working value."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise ValueError(f"PYTHIA_COMPARE_BACKUP_MINUTES={text!r} is not a number of minutes > 0; use e.g. 5 or 0.5")
    return value


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _generation_handle(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"PYTHIA_COMPARE_GENERATION_HANDLE={mode!r} is not a choice; use auto, on or off")
    return mode


def _repos(text: str) -> tuple[str, ...]:
    return tuple(r for r in re.split(r"[\s,]+", text) if r)


# Settings.from_env's plain variables, in the order they are read: (variable, field, conversion); a variable that
# is unset or empty leaves the field's default. The others (offline, the Hub cache, backup) are read by hand.
_FROM_ENV = (
    ("PYTHIA_COMPARE_DB", "db_path", _path),
    ("PYTHIA_COMPARE_HOME", "home", _path),
    ("PYTHIA_COMPARE_DEMO_DIR", "demo_dir", _path),
    ("HF_ENDPOINT", "hub_endpoint", lambda text: text.rstrip("/")),
    ("HF_TOKEN", "hf_token", str),
    ("PYTHIA_COMPARE_GGUF_REPO", "gguf_repo", str),
    ("PYTHIA_COMPARE_CHECKPOINT_REPO", "checkpoint_repo", str),
    ("PYTHIA_COMPARE_LAMBADA_REPO", "lambada_repo", str),
    ("PYTHIA_COMPARE_LAMBADA_REVISION", "lambada_revision", str),
    ("PYTHIA_COMPARE_THREADS", "n_threads", int),
    ("PYTHIA_COMPARE_FLASH_ATTN", "flash_attn", _truthy),
    ("PYTHIA_COMPARE_GENERATION_HANDLE", "generation_handle", _generation_handle),
    ("PYTHIA_COMPARE_MEMORY_BUDGET", "memory_budget_bytes", parse_size),
    ("PYTHIA_COMPARE_CACHE_BUDGET", "cache_budget_bytes", parse_size),
    ("PYTHIA_COMPARE_PUBLIC", "public", _truthy),
    ("PYTHIA_COMPARE_ALLOWED_REPOS", "allowed_repos", _repos),
    ("PYTHIA_COMPARE_UPLOAD_QUOTA_CLIENT", "upload_quota_client_bytes", parse_size),
    ("PYTHIA_COMPARE_UPLOAD_QUOTA_TOTAL", "upload_quota_total_bytes", parse_size),
    ("PYTHIA_COMPARE_MAX_RUN_TOKENS", "max_run_tokens_public", int),
    ("PYTHIA_COMPARE_MAX_RUN_SECONDS", "max_run_seconds_public", float),
    ("PYTHIA_COMPARE_PROBE_TIMEOUT", "probe_timeout_s", float),
    ("PYTHIA_COMPARE_PROBE_MEMORY", "probe_memory_margin_bytes", parse_size),
    ("PYTHIA_COMPARE_OWNER_SECRET", "owner_secret", str),
)


@dataclass
class Settings:
    # --- where things live ---
    db_path: Path = field(default_factory=lambda: _data_dir() / "runs.db")  # SQLite run log (PYTHIA_COMPARE_DB)
    home: Path = field(default_factory=_cache_dir)  # converted/quantized GGUF cache (PYTHIA_COMPARE_HOME)
    demo_dir: Path = ASSETS_DIR / "demo"  # the bundled offline demo suite, repo alias `demo`
    # --- Hugging Face Hub ---
    offline: bool = False  # never touch the network; use cached files or fail naming them (PYTHIA_COMPARE_OFFLINE=1)
    hub_endpoint: str = DEFAULT_ENDPOINT  # Hub base URL, passed explicitly to huggingface_hub (HF_ENDPOINT)
    hf_cache_dir: Path = field(default_factory=_hf_cache_dir)  # huggingface_hub's cache (HF_HUB_CACHE / HF_HOME)
    hf_token: str | None = None  # token for gated/private repos (HF_TOKEN); never logged or shown
    gguf_repo: str = DEFAULT_GGUF_REPO  # repo behind bare quant specs like `Q4_K_M` (PYTHIA_COMPARE_GGUF_REPO)
    checkpoint_repo: str = DEFAULT_CHECKPOINT_REPO  # repo behind `step3000` specs (PYTHIA_COMPARE_CHECKPOINT_REPO)
    # the dataset --scoring lambada downloads without --lambada-file, and its pinned commit
    # (PYTHIA_COMPARE_LAMBADA_REPO, PYTHIA_COMPARE_LAMBADA_REVISION)
    lambada_repo: str = DEFAULT_LAMBADA_REPO
    lambada_revision: str = DEFAULT_LAMBADA_REVISION
    # --- inference ---
    n_threads: int = field(default_factory=_usable_cores)  # llama.cpp threads: the cores this process may use
    n_batch: int = 512  # tokens per llama_decode call (and per logits request)
    # rows of logits one llama_decode call computes while scoring: a call ends early once it holds this many,
    # which bounds llama.cpp's logits memory per context (its output buffer and the graph's output tensor,
    # max_outputs x n_vocab x 4 bytes each): half of what one call for a 512-token chunk's scored half would hold
    max_outputs: int = 128
    flash_attn: bool = True  # flash attention in llama.cpp: faster; off gives llama-perplexity's exact numbers
    kv_f32: bool = False  # F32 KV cache instead of F16 (exact parity tests)
    extra_bufts: bool = False  # ggml CPU extra buffer types (AMX, weight repacking); off: AMX crashes on quants
    # a second, repacked llama.cpp handle for generation (never on AMX CPUs): "auto" where loadplan.load_plan's
    # measurements find it faster on this CPU, "on" for every quantized model, "off" never
    # (PYTHIA_COMPARE_GENERATION_HANDLE=auto|on|off)
    generation_handle: str = "auto"
    memory_budget_bytes: int = 6 * 1024**3  # models held loaded at once, in bytes (PYTHIA_COMPARE_MEMORY_BUDGET)
    # the cache budget: the model cache (Settings.home) and the Hugging Face revisions pythia-compare used
    # (Settings.hf_cache_dir) together; a public app prunes both to this at start and after each run, least
    # recently used first across both, as `cache prune --max-size` does (sources/budget.py;
    # PYTHIA_COMPARE_CACHE_BUDGET, e.g. 20G)
    cache_budget_bytes: int = 20 * 1024**3
    # --- run defaults and limits ---
    ctx: int = 512  # context / corpus chunk size in tokens
    top_k: int = 10  # next-token alternatives kept per variant
    max_tokens: int = 32  # tokens generated after a prompt (0: no generation)
    temperature: float = 0.0  # 0 is greedy; > 0 samples with `seed`
    seed: int = 0  # sampling seed
    max_variants: int = 8  # variants per run, reference included
    max_prompt_chars: int = 4_000  # prompt length cap, enforced on the server
    max_text_chars: int = 400_000  # corpus text length cap
    max_upload_bytes: int = 1024 * 1024  # largest .txt upload the dashboard accepts
    # uploads kept by gradio (6 hours) per client address and in all: past these, uploads are refused for a while
    # (PYTHIA_COMPARE_UPLOAD_QUOTA_CLIENT, PYTHIA_COMPARE_UPLOAD_QUOTA_TOTAL, e.g. 32M, 1G)
    upload_quota_client_bytes: int = 32 * 1024**2
    upload_quota_total_bytes: int = 1024**3
    # --- deployment ---
    public: bool = False  # a public deployment: each browser sees only its own runs (on when SPACE_ID is set)
    # --- public mode and hostile files (issue 9: policy.py, probe.py) ---
    # Public mode: Hub repos a run may name (None: gguf_repo and checkpoint_repo; `demo` is always allowed)
    # (PYTHIA_COMPARE_ALLOWED_REPOS, comma- or space-separated)
    allowed_repos: tuple[str, ...] | None = None
    max_conversions_public: int = 2  # public mode: checkpoints converted/quantized anew per run (cached ones are free)
    # public mode: a run's work, in token evaluations: models × (input tokens + new tokens), refused past this
    # once the text is tokenized (PYTHIA_COMPARE_MAX_RUN_TOKENS; 8 variants of a 400,000-character text fit)
    max_run_tokens_public: int = 1_000_000
    # public mode: a run is stopped after this many seconds, so one run never holds the models for long
    # (PYTHIA_COMPARE_MAX_RUN_SECONDS)
    max_run_seconds_public: float = 900.0
    probe: bool = True  # first load of a GGUF never loaded here before happens in a throwaway subprocess
    probe_timeout_s: float = 120.0  # the probe's wall-clock limit (PYTHIA_COMPARE_PROBE_TIMEOUT)
    # the probe's address-space limit over its own needs: this margin plus 3× the file's size
    # (PYTHIA_COMPARE_PROBE_MEMORY, e.g. 2G)
    probe_memory_margin_bytes: int = 1024**3
    # --- backup of the run log to a Hub dataset (backup.py; off unless backup_repo is set) ---
    backup_repo: str | None = None  # owner/name of the dataset runs are pushed to (PYTHIA_COMPARE_BACKUP_REPO)
    backup_minutes: float = 5.0  # minutes between pushes (PYTHIA_COMPARE_BACKUP_MINUTES)
    owner_secret: str | None = None  # HMAC key for browsers' owner tokens (PYTHIA_COMPARE_OWNER_SECRET); never shown

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then environment variables, then explicit keyword overrides (None means unset)."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for name, key, convert in _FROM_ENV:  # the plain ones: set and not empty, converted
            if env.get(name):
                values[key] = convert(env[name])
        if _truthy(env.get("PYTHIA_COMPARE_OFFLINE")) or _truthy(env.get("HF_HUB_OFFLINE")):
            values["offline"] = True
        if env.get("HF_HUB_CACHE"):
            values["hf_cache_dir"] = Path(env["HF_HUB_CACHE"]).expanduser()
        elif env.get("HF_HOME"):
            values["hf_cache_dir"] = Path(env["HF_HOME"]).expanduser() / "hub"
        if env.get("PYTHIA_COMPARE_BACKUP_REPO", "").strip():
            values["backup_repo"] = env["PYTHIA_COMPARE_BACKUP_REPO"].strip()
        if env.get("PYTHIA_COMPARE_BACKUP_MINUTES", "").strip():
            try:
                values["backup_minutes"] = parse_minutes(env["PYTHIA_COMPARE_BACKUP_MINUTES"])
            except ValueError:
                values["backup_minutes"] = math.nan  # backup.py turns the backup off and says why; the app runs
        values.update({k: v for k, v in overrides.items() if v is not None})
        if env.get("SPACE_ID"):  # a Space faces the internet: nothing turns public mode off there
            values.update(public=True, probe=True)
        return cls(**values)
