"""Inference through llama.cpp: what one loaded GGUF model can compute (pool.py keeps models loaded).

Owns every call into llama_cpp for running models (quantize.py owns the quantizer): loading with the
settings that keep every quant type safe, tokenizing, per-position logits and log-probabilities,
next-token top-k and streamed generation. Never touches the network, the database or gradio, and
never computes statistics across variants (metrics.py does).

Design notes:
- The low-level API is used instead of `llama_cpp.Llama`, so that (a) logits are requested only at the
  positions being scored (the batch's logits flags), (b) `llama_model_params.use_extra_bufts` can be
  turned off: on Xeons with AMX, ggml's AMX matmul crashes on quantized weights, and (c) llama.cpp's log
  goes to Python logging through our own `llama_log_set` callback instead of redirecting the process's
  stdout and stderr (which `Llama(verbose=False)` does, and which is not thread-safe).
- Loading reads the file's vocabulary from its metadata header first (ggufmeta.py): a gptneox file saved
  without tokenizer.ggml.pre is loaded with tokenizer.ggml.pre=mpt through llama.cpp's kv_overrides (else
  llama.cpp would pre-tokenize with 'default', unlike the model's training), and `Model.vocab_sha256` says
  which files may be compared. What llama.cpp warns about during the load is kept as `Model.warnings`: the log
  callback is process-wide, but llama.cpp logs a load on the thread that called it, so each load collects its
  own lines in a thread-local list and two loads at once never mix them.
- A `Model` is not thread-safe in llama.cpp, so every operation holds the model's own lock.
- pool.py's `ModelPool` keeps these models loaded under a memory budget (file bytes, which llama.cpp maps), evicting
  the least recently used model that no run holds.
"""

from __future__ import annotations

import bisect
import codecs
import ctypes
import logging
import re
import struct
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

import llama_cpp

from . import ggufmeta, loadplan
from ..config import Settings
from ..errors import ModelFileError

log = logging.getLogger("pythia_compare.llama_cpp")
_init_lock = threading.Lock()
_initialized = False


_last_error = threading.local()
_repacked = threading.local()  # MiB of weights the current load on this thread repacked (CPU_REPACK buffers)


_capture = threading.local()  # .lines: the warnings of the load running on this thread (None: not loading)
_WARN, _ERROR, _CONT = 3, 4, 5  # GGML_LOG_LEVEL_WARN / _ERROR / _CONT


@llama_cpp.llama_log_callback
def _log_to_python(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    line = (text or b"").decode("utf-8", "replace").rstrip("\n")
    if level in (_WARN, _ERROR) or "error" in line:  # a warning or an error, or an error at another level
        _last_error.text = line
    if "REPACK model buffer size" in line:  # what a load with extra buffer types copied (load_plan)
        _repacked.mib = getattr(_repacked, "mib", 0.0) + _mib_of(line)
    lines = getattr(_capture, "lines", None)
    if lines is not None:  # llama.cpp logs a load's messages on the thread that called the load
        if level in (_WARN, _ERROR) or (level == _CONT and getattr(_capture, "warning", False)):
            lines.append(line)
            _capture.warning = True
        elif level != _CONT:
            _capture.warning = False
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s", line)


def _tidy_warnings(lines: list[str]) -> list[str]:
    """llama.cpp's warning lines as messages: the 'function: ' prefix, banners of '*' and blank lines dropped,
    repeats removed (order kept)."""
    out: list[str] = []
    for line in lines:
        text = re.sub(r"^[A-Za-z_][\w:]*:(?:\s+|$)", "", line.strip()).strip().strip("*").strip()
        if text and text not in out:
            out.append(text)
    return out


def last_llama_error() -> str:
    """The last error line llama.cpp logged on this thread ('' if none), for error messages."""
    return getattr(_last_error, "text", "")


def init_backend() -> None:
    """Route llama.cpp's log to Python logging (DEBUG) and initialise the backend, once per process."""
    global _initialized
    with _init_lock:
        if not _initialized:
            llama_cpp.llama_log_set(_log_to_python, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _initialized = True


def llama_cpp_version() -> str:
    return str(getattr(llama_cpp, "__version__", "unknown"))


# --- load settings per CPU and per phase: the rule and its tables live in loadplan.py ---
_cpu: dict | None = None


def cpu_info() -> dict:
    """The CPU as load_plan sees it: {"model", "vendor", "amx" (bool), "amx_flags", "ggml" (llama.cpp's system
    info line), "x86" (bool), "summary"}. Computed once per process (see parse_cpu)."""
    global _cpu
    if _cpu is None:
        import platform

        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
        init_backend()
        ggml = llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
        _cpu = loadplan.parse_cpu(cpuinfo, ggml, platform.machine())
    return _cpu


def load_plan(settings: Settings, quant: str | None, phase: str, cpu: dict | None = None) -> dict:
    """loadplan.load_plan on this machine's CPU (cpu_info) unless another CPU's parse_cpu dict is given."""
    return loadplan.load_plan(settings, quant, phase, cpu or cpu_info())


def _model_quant(model) -> str | None:
    """The QUANTS name of a loaded model's general.file_type, or None."""
    buf = ctypes.create_string_buffer(32)
    n = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, 32)
    if n <= 0:
        return None
    try:
        return _quant_name(int(buf.value.decode()))
    except ValueError:
        return None


def _quant_name(ftype: int | None) -> str | None:
    """The QUANTS name of a llama.cpp file type (general.file_type), or None."""
    from ..variants import QUANTS

    return next((q.name for q in QUANTS.values() if q.ftype == ftype), None) if ftype is not None else None


def _mib_of(line: str) -> float:
    try:
        return float(line.split("=")[-1].split()[0])
    except (ValueError, IndexError):
        return 0.0


@dataclass
class GeneratedToken:
    id: int
    text: str  # the text this token adds (concatenation over tokens == the generation's text)
    prob: float  # the model's probability of this token (temperature 1)
    top: list[dict] = field(default_factory=list)  # alternatives: [{"id", "text", "prob"}], descending


def fill_batch(batch, tokens: list[int], first_pos: int, logits_at: list[int]) -> None:
    """Put `tokens` into a llama.cpp batch as sequence 0 at positions first_pos, first_pos + 1, …, asking for
    logits at the indices (into `tokens`) listed in logits_at. The one place a batch is filled."""
    wanted = set(logits_at)
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = first_pos + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1 if i in wanted else 0
    batch.n_tokens = len(tokens)


def check_gguf_file(path: str | Path) -> Path:
    """Raise ModelFileError unless `path` is an existing, readable file that starts with the GGUF magic."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist; give the path of a .gguf file")
    if not p.is_file():
        raise ModelFileError(f"model file {str(path)!r} is not a file; give the path of a .gguf file")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{p.name!r} is not a GGUF file (it does not start with 'GGUF'); convert it with "
                             f"`python -m pythia_compare convert` or give a .gguf file")
    return p


class Model:
    """One loaded GGUF model with one llama.cpp context. Every method takes the model's lock."""

    def __init__(self, path: str | Path, settings: Settings, n_ctx: int, *, fix_pre: bool = True):
        init_backend()
        self.path = check_gguf_file(path)
        self.file_bytes = self.path.stat().st_size
        self.settings = settings
        # A plain Lock, not an RLock: a streaming generate() may be resumed on another thread (gradio
        # moves generators between workers), and a Lock may be released by a thread that did not take it.
        self.lock = threading.Lock()
        try:  # the vocabulary as stored, read before loading: it decides the overrides
            header: ggufmeta.GGUFVocab | None = ggufmeta.read_vocab(self.path)
            header_error = ""
        except (OSError, ValueError, struct.error) as e:  # llama.cpp reports a damaged file below
            header, header_error = None, str(e)
        # fix_pre False loads a pre-less GPT-NeoX file as llama.cpp would on its own (tests show the difference).
        self.overrides: dict[str, str] = ggufmeta.load_overrides(header) if header and fix_pre else {}
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # planned by the header's file type; _plan_phases checks it against the loaded model's
        self.load_plans = {"score": load_plan(settings, _quant_name(header.file_type if header else None), "score")}
        mparams.use_extra_bufts = self.load_plans["score"]["extra_bufts"]
        if self.overrides:
            self._kv_overrides = _kv_override_array(self.overrides)  # alive as long as the model (and its copy)
            mparams.kv_overrides = self._kv_overrides
        self._mparams = mparams  # the generation handle loads with a copy of these (load_plan)
        self._gen = None  # the generation handle, loaded lazily: see _generation_ctx
        self.tokens_generated = 0  # over this model's life: what a pooled model has shown it will generate
        self.generation_load_s: float | None = None  # the last generate call's load of the handle (None: none)
        self._gen_waiting = ""  # why a planned handle is not loaded yet (load_info reports it)
        self.extra_bytes = 0  # memory the generation handle costs on top of the file (its repacked weights)
        self.may_grow = lambda nbytes: True  # the pool's say on extra_bytes (ModelPool sets it)
        _last_error.text = ""
        _capture.lines, _capture.warning = [], False
        try:
            self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        finally:
            captured, _capture.lines = _capture.lines, None
        # What llama.cpp warned about while loading this file; kept with the model, so every run that
        # uses it (a pooled model too) reports them.
        self.warnings: list[str] = _tidy_warnings(captured)
        if not self._model:
            detail = last_llama_error().split(": ")[-1]
            raise ModelFileError(f"llama.cpp could not load {self.path.name!r} ({detail or 'unknown error'}): the "
                                 f"file is truncated, corrupt or of an unsupported architecture; re-download or "
                                 f"re-convert it")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._model))
        # what variants.bits_per_weight divides: every tensor's bytes, every tensor's parameters (model_size)
        self.n_params = int(llama_cpp.llama_model_n_params(self._model))
        self.tensor_bytes = int(llama_cpp.llama_model_size(self._model))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_id = int(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_id = int(llama_cpp.llama_vocab_eos(self._vocab))
        if header is None:
            llama_cpp.llama_model_free(self._model)
            self._model = None
            raise ModelFileError(f"cannot read the vocabulary in the metadata of {self.path.name!r} "
                                 f"({header_error}); re-download or re-convert it")
        # Variants are comparable when this is equal: same tokens and types, merges, specials, n_vocab.
        self.vocab_sha256 = ggufmeta.vocab_sha256(header, n_vocab=self.n_vocab, bos_id=self.bos_id,
                                                  eos_id=self.eos_id, add_bos=self.add_bos)
        self._ctx = None
        self.n_ctx = 0
        self._piece_cache: dict[int, bytes] = {}
        self._plan_phases()
        self._ensure_context(n_ctx)

    # --- lifecycle ---
    def _ensure_context(self, n_ctx: int) -> None:
        if self._ctx is not None and self.n_ctx >= n_ctx:
            return
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        ctx = llama_cpp.llama_init_from_model(self._model, self._context_params(n_ctx))
        if not ctx:
            raise ModelFileError(f"llama.cpp could not create a context of {n_ctx} tokens for {self.path.name!r}")
        self._ctx = ctx
        self.n_ctx = n_ctx

    def _context_params(self, n_ctx: int):
        s = self.settings
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = min(s.n_batch, n_ctx)
        cparams.n_ubatch = min(s.n_batch, n_ctx)
        cparams.n_seq_max = 1
        cparams.n_threads = s.n_threads
        cparams.n_threads_batch = s.n_threads
        cparams.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if s.flash_attn
                                   else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        if s.kv_f32:
            cparams.type_k = llama_cpp.GGML_TYPE_F32
            cparams.type_v = llama_cpp.GGML_TYPE_F32
        return cparams

    # --- load settings per phase (load_plan) ---
    def _plan_phases(self) -> None:
        """Now that the loaded model's quant is known, plan both phases; reload the scoring handle only if its
        plan differs from the one the header's file type gave (a header without general.file_type)."""
        self.quant = _model_quant(self._model)
        score = load_plan(self.settings, self.quant, "score")
        if score["extra_bufts"] != self.load_plans["score"]["extra_bufts"]:
            self._mparams.use_extra_bufts = score["extra_bufts"]
            model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), self._mparams)
            if not model:
                raise ModelFileError(f"llama.cpp could not load {self.path.name!r} a second time")
            llama_cpp.llama_model_free(self._model)
            self._model = model
            self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.load_plans = {"score": score, "generate": load_plan(self.settings, self.quant, "generate")}
        self._gen_state = "shared" if self.load_plans["generate"]["extra_bufts"] == score["extra_bufts"] else "planned"

    def _generation_ctx(self, n_ctx: int, n_tokens: int = 0):
        """(context, its n_ctx) to generate n_tokens with; the caller holds the lock. When the plan asks for other
        load settings for generation than for scoring, a second llama_model is loaded with those settings, but
        only once it pays for its load: when the tokens this model has generated so far and n_tokens reach
        loadplan.break_even_tokens (a one-shot run does not; a long-lived app's pooled model does). Its load
        time is kept apart (generation_load_s). The weights it does not repack are the same mmapped file pages,
        the ones it repacks are copies (extra_bytes). It is kept only if llama.cpp did repack something and the
        pool has room."""
        self.generation_load_s = None
        if self._gen_state == "planned":
            need = loadplan.break_even_tokens(self.settings, cpu_info())
            if self.tokens_generated + n_tokens >= need:
                t = time.perf_counter()
                self._load_generation_handle(n_ctx)
                self.generation_load_s = time.perf_counter() - t
                self._gen_waiting = ""
            else:
                self._gen_waiting = (f"not loaded yet: {self.tokens_generated + n_tokens} tokens to generate so far do "
                                     f"not pay for its load (about {need:.0f} do)")
        if self._gen is None:
            self._ensure_context(n_ctx)
            return self._ctx, self.n_ctx
        model, ctx, have = self._gen
        if have < n_ctx:
            llama_cpp.llama_free(ctx)
            ctx = llama_cpp.llama_init_from_model(model, self._context_params(n_ctx))
            if not ctx:
                raise ModelFileError(f"llama.cpp could not create a context of {n_ctx} tokens for {self.path.name!r}")
            self._gen = (model, ctx, n_ctx)
            have = n_ctx
        return ctx, have

    def _load_generation_handle(self, n_ctx: int) -> None:
        plan = self.load_plans["generate"]
        # a guess of the cost before loading: the file (repacking copies the weights of the types it repacks)
        if not self.may_grow(self.file_bytes):
            self._gen_state = "shared"
            plan.update(extra_bufts=False, reason=plan["reason"] + "; not loaded: no room under the memory budget")
            return
        mparams = llama_cpp.llama_model_params()
        ctypes.pointer(mparams)[0] = self._mparams
        mparams.use_extra_bufts = True
        _repacked.mib = 0.0
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        repacked = int(getattr(_repacked, "mib", 0.0) * 1024 * 1024)
        ctx = llama_cpp.llama_init_from_model(model, self._context_params(n_ctx)) if model else None
        if not ctx or repacked == 0:
            if ctx:
                llama_cpp.llama_free(ctx)
            if model:
                llama_cpp.llama_model_free(model)
            self._gen_state = "shared"
            why = "llama.cpp repacked no weights on this CPU" if model and ctx else "the repacked load failed"
            plan.update(extra_bufts=False, reason=plan["reason"] + f"; not used: {why}")
            return
        self._gen = (model, ctx, n_ctx)
        self._gen_state = "loaded"
        self.extra_bytes = repacked
        plan["repacked_mb"] = round(repacked / 1e6, 1)

    def _free_generation_handle(self) -> None:
        if self._gen is not None:
            model, ctx, _ = self._gen
            llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(model)
            self._gen = None
            self.extra_bytes = 0
            if self._gen_state == "loaded":
                self._gen_state = "planned"

    def load_info(self) -> dict:
        """The load settings of each phase, for the run JSON's "load": whether extra buffer types (ggml's CPU
        weight repacking) are on for scoring and for generation, and why."""
        score, gen = self.load_plans["score"], self.load_plans.get("generate", self.load_plans["score"])
        if self._gen_waiting and self._gen_state == "planned":  # planned, but generation ran on the scoring handle
            gen = {"extra_bufts": score["extra_bufts"], "reason": f"{gen['reason']}; {self._gen_waiting}"}
        out = {"extra_bufts_score": bool(score["extra_bufts"]), "extra_bufts_generate": bool(gen["extra_bufts"]),
               "quant": self.quant, "cpu": cpu_info()["summary"],
               "reason": score["reason"] if score["reason"] == gen["reason"]
               else f"scoring: {score['reason']}; generation: {gen['reason']}"}
        if "repacked_mb" in gen:
            out["generate_extra_mb"] = gen["repacked_mb"]
        return out

    def close(self) -> None:
        with self.lock:
            self._free_generation_handle()
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                llama_cpp.llama_model_free(self._model)
                self._model = None

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass

    # --- tokens ---
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as Hugging Face tokenizers gives them for GPT-NeoX's tokenizer.json: the text
        is NFC-normalized first (the tokenizer's normalizer, which llama.cpp does not apply), special tokens
        written in the text (<|endoftext|>) become their ids, and BOS is prepended when the vocab says so
        and add_special is true. (llama-perplexity differs only on text holding such special-token strings
        or non-NFC characters.)"""
        with self.lock:
            return _tokenize(self._vocab, text, add_special, parse_special)

    def piece(self, token_id: int) -> bytes:
        """The raw bytes of one token (special tokens rendered as their text)."""
        cached = self._piece_cache.get(token_id)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, -n, 0, True)
        out = buf.raw[:n]
        self._piece_cache[token_id] = out
        return out

    def token_text(self, token_id: int) -> str:
        """Display text of one token on its own: valid UTF-8 as is, other bytes as <0xNN>."""
        return bytes_to_text(self.piece(token_id))

    # --- logits ---
    def logits(self, tokens: list[int], positions: list[int], *, n_threads: int | None = None) -> np.ndarray:
        """Logits at `positions` after evaluating `tokens` from an empty KV cache.

        Returns float32 (len(positions), n_vocab). Evaluation runs in n_batch pieces and asks llama.cpp
        for logits only at the requested positions, copied straight into the result.
        """
        out = np.empty((len(positions), self.n_vocab), dtype=np.float32)

        def take(row: int, pos: int, ptr) -> None:
            out[row] = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

        self._eval(tokens, positions, take, n_threads)
        return out

    def scan(self, tokens: list[int], positions: list[int], consume: Callable[[int, np.ndarray], None], *,
             n_threads: int | None = None) -> None:
        """Evaluate `tokens` from an empty cache and hand over the logits at `positions` (sorted, unique) as
        they come, without a copy: consume(row, block) is called after each llama_decode call with a
        read-only (n, n_vocab) float32 view of llama.cpp's own output rows for positions[row:row + n], valid
        only during the call (the model's lock is held). A call holds at most Settings.max_outputs rows, so
        the logits llama.cpp keeps stay bounded however many positions are asked for."""
        want = self._check_positions(tokens, positions)
        if not want:
            return

        def block(row: int, n: int) -> None:
            view = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n, self.n_vocab))
            view.flags.writeable = False
            consume(row, view)

        with self.lock:
            self._decode_locked(tokens, want, None, n_threads, block)

    def _eval(self, tokens: list[int], positions: list[int], take, n_threads: int | None = None) -> None:
        """Evaluate `tokens` from an empty cache in n_batch pieces, calling take(row, position, logits_ptr)
        for each requested position (sorted, unique) while its logits are valid. n_threads: this call's
        llama.cpp threads (default: Settings.n_threads)."""
        want = self._check_positions(tokens, positions)
        if tokens:
            with self.lock:
                self._decode_locked(tokens, want, take, n_threads)

    @staticmethod
    def _check_positions(tokens: list[int], positions: list[int]) -> list[int]:
        want = [int(p) for p in positions]
        if want != sorted(set(want)):
            raise ValueError("positions must be sorted and unique")
        if want and (want[0] < 0 or want[-1] >= len(tokens)):
            raise ValueError(f"positions must lie in 0..{len(tokens) - 1}")
        return want

    def _decode_locked(self, tokens: list[int], want: list[int], take, n_threads: int | None = None,
                       block=None) -> None:
        """The decode loop of _eval and scan; the caller holds the lock. Each llama_decode call takes up to
        n_batch tokens and ends early after Settings.max_outputs requested positions. take(row, position,
        logits_ptr) is called per requested position, block(first_row, n) once per call that produced rows."""
        n = len(tokens)
        self._ensure_context(round_ctx(n))
        threads = max(1, int(n_threads or self.settings.n_threads))
        llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        n_batch = min(self.settings.n_batch, self.n_ctx)
        batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        try:
            row = 0
            for start, end, rows in _decode_calls(n, want, n_batch, max(1, self.settings.max_outputs)):
                flagged = [p - start for p in want[row:row + rows]]
                fill_batch(batch, tokens[start:end], start, flagged)
                self._decode(self._ctx, batch)
                if take is not None:
                    for j, i in enumerate(flagged):
                        take(row + j, start + i, llama_cpp.llama_get_logits_ith(self._ctx, i))
                if block is not None and rows:
                    block(row, rows)
                row += rows
        finally:
            llama_cpp.llama_batch_free(batch)

    def top_k(self, logits: np.ndarray, k: int) -> list[dict]:
        """[{"id", "text", "prob"}] of the k most probable tokens of one logits row, descending."""
        return self._top_of(softmax(logits), k)

    def _top_of(self, probs: np.ndarray, k: int) -> list[dict]:
        """top_k of a row already turned into probabilities."""
        k = max(1, min(int(k), probs.shape[0]))
        idx = np.argpartition(-probs, k - 1)[:k]
        idx = idx[np.lexsort((idx, -probs[idx]))]
        return [{"id": int(i), "text": self.token_text(int(i)), "prob": float(probs[i])} for i in idx]

    # --- generation ---
    def _pick_next(self, ctx, temperature: float, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """(the last decoded position's logits in `ctx` as float64, the next token): argmax at temperature 0,
        else sampled from softmax(logits / temperature) with `rng`."""
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        if temperature <= 0:
            return row, int(np.argmax(row))
        return row, int(rng.choice(self.n_vocab, p=softmax(row / temperature)))

    def generate(self, prompt_tokens: list[int], max_tokens: int, *, temperature: float = 0.0, seed: int = 0,
                 n_alternatives: int = 5) -> Iterator[GeneratedToken]:
        """Stream up to max_tokens new tokens after the prompt, greedy (temperature 0) or sampled with a seed.

        Stops early at end-of-sequence. The model lock is held for the whole generation.
        """
        if max_tokens <= 0 or not prompt_tokens:
            return
        with self.lock:
            ctx, n_ctx = self._generation_ctx(round_ctx(len(prompt_tokens) + max_tokens), max_tokens)
            llama_cpp.llama_set_n_threads(ctx, self.settings.n_threads, self.settings.n_threads)
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            batch = llama_cpp.llama_batch_init(max(len(prompt_tokens), 1), 0, 1)
            try:
                feed = partial(self._feed, ctx, batch, min(self.settings.n_batch, n_ctx))
                for tok in self._stream(ctx, feed, prompt_tokens, max_tokens, temperature,
                                        np.random.default_rng(seed), n_alternatives):
                    self.tokens_generated += 1
                    yield tok
            finally:
                llama_cpp.llama_batch_free(batch)

    def _feed(self, ctx, batch, n_batch: int, tokens: list[int], pos: int) -> int:
        """Decode `tokens` at positions pos, pos + 1, … in n_batch pieces, with logits at the last token only;
        returns the position after them."""
        for start in range(0, len(tokens), n_batch):
            piece = tokens[start:start + n_batch]
            last = start + len(piece) == len(tokens)
            fill_batch(batch, piece, pos, [len(piece) - 1] if last else [])
            self._decode(ctx, batch)
            pos += len(piece)
        return pos

    def _decode(self, ctx, batch) -> None:
        """One llama_decode call; a failure raises, naming the file."""
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc} on {self.path.name!r}")

    def _stream(self, ctx, feed: Callable[[list[int], int], int], prompt_tokens: list[int], max_tokens: int,
                temperature: float, rng: np.random.Generator, n_alternatives: int) -> Iterator[GeneratedToken]:
        """generate's loop: one token picked and (but for the last) fed back per step. Each token is yielded
        one step late, so the last one can flush the UTF-8 decoder."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pos = feed(prompt_tokens, 0)
        held: GeneratedToken | None = None
        for produced in range(max_tokens):
            row, tok = self._pick_next(ctx, temperature, rng)
            if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                break
            if held is not None:
                yield held
            probs = softmax(row)
            held = GeneratedToken(id=tok, text=decoder.decode(self.piece(tok)), prob=float(probs[tok]),
                                  top=self._top_of(probs, n_alternatives))
            if produced == max_tokens - 1:
                break  # no need to evaluate the last token
            pos = feed([tok], pos)
        if held is not None:
            held.text += decoder.decode(b"", final=True)
            yield held


def _decode_calls(n: int, want: list[int], n_batch: int, max_outputs: int) -> Iterator[tuple[int, int, int]]:
    """How _decode_locked cuts n tokens into llama_decode calls: (start, end, rows) per call, each call at most
    n_batch tokens and at most max_outputs of the wanted positions (sorted), `rows` of them in [start, end)."""
    start = row = 0
    while start < n:
        end = min(n, start + n_batch)
        rows = bisect.bisect_left(want, end, row) - row
        if rows > max_outputs:  # end the call right after its max_outputs-th wanted position
            end = want[row + max_outputs - 1] + 1
            rows = max_outputs
        yield start, end, rows
        start, row = end, row + rows


def _kv_override_array(overrides: dict[str, str]):
    """llama.cpp's kv_overrides: string overrides, then an entry with an empty key that ends the array."""
    arr = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()
    for i, (key, val) in enumerate(overrides.items()):
        k, v = key.encode(), val.encode()
        if len(k) >= 128 or len(v) >= 128:
            raise ValueError(f"metadata override {key}={val} is longer than llama.cpp's 127 bytes")
        arr[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
        arr[i].key = k
        arr[i].value.val_str = v
    return arr


def _tokenize(vocab, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """llama.cpp's token ids of NFC-normalized `text` with `vocab` (the caller holds any lock it needs)."""
    data = unicodedata.normalize("NFC", text).encode("utf-8")
    cap = len(data) + 16
    buf = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


def round_ctx(n: int) -> int:
    return max(256, -(-n // 256) * 256)


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities of one logits row, float64 (n_vocab,)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def bytes_to_text(data: bytes) -> str:
    """UTF-8 text of a token's bytes; bytes that are not valid UTF-8 on their own shown as <0xNN>."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        out = []
        i = 0
        while i < len(data):
            for j in range(min(len(data), i + 4), i, -1):
                try:
                    out.append(data[i:j].decode("utf-8"))
                    i = j
                    break
                except UnicodeDecodeError:
                    continue
            else:
                out.append(f"<0x{data[i]:02X}>")
                i += 1
        return "".join(out)


class Vocabulary:
    """A GGUF's tokenizer alone (llama.cpp's vocab_only load: no weights read), tokenizing as Model.tokenize
    does (NFC first, special tokens parsed, BOS when the vocab adds it). For counting a text's tokens before
    any model is built (sweep plan). Call close() when done."""

    def __init__(self, path: str | Path):
        init_backend()
        mparams = llama_cpp.llama_model_default_params()
        mparams.vocab_only = True
        _last_error.text = ""
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelFileError(f"llama.cpp could not load the vocabulary of {Path(path).name!r} "
                                 f"({last_llama_error().split(': ')[-1] or 'unknown error'})")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, exactly as Model.tokenize gives them (NFC, special tokens parsed, BOS if asked)."""
        return _tokenize(self._vocab, text, True, True)

    def piece(self, token_id: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, -n, 0, True)
        return buf.raw[:n]

    def close(self) -> None:
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None


def model_size(path: str | Path) -> tuple[int, int]:
    """(parameters, tensor bytes) of a GGUF as llama.cpp counts them (vocab_only=False load, no context)."""
    init_backend()
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise ModelFileError(f"llama.cpp could not load {Path(path).name!r}")
    try:
        return int(llama_cpp.llama_model_n_params(model)), int(llama_cpp.llama_model_size(model))
    finally:
        llama_cpp.llama_model_free(model)
