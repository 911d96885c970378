"""The residual stream after every layer, read out of llama.cpp while it evaluates a prompt (the logit lens's input).

Owns the lens's own llama.cpp context: made from a loaded engine.Model's llama_model with the model's own context
settings (engine.Model._context_params: threads, batch, KV type, flash attention) plus an eval callback
(`llama_context_params.cb_eval`), used for one capture and freed after it, so runs without the lens never pay for the
callback. Owns the ctypes bindings of the few ggml functions the callback needs (from the libggml-base.so that
llama-cpp-python bundles) and the reading of the GPT-NeoX graph's node names. Never decodes the residual stream into
tokens (lens.py does), never reads the GGUF's weights, never touches the run, the database or the network.

How the callback works (llama.cpp's ggml_backend_sched_eval_callback): the scheduler asks, node by node, whether the
callback wants a node (ask=True); every yes splits the graph there and synchronises, so it says yes only to the
per-layer outputs `l_out-<layer>` and to `result_norm` / `result_output`. It is then called again with the node
computed (ask=False) and copies out only the rows of the positions asked. What it must handle:
- the last layer (and result_*) hold only the output rows (llama.cpp's get_rows on the flagged positions), so the
  positions asked are flagged as outputs and their rows there are counted among the outputs;
- llama.cpp cuts a decode call longer than n_ubatch into micro-batches, each a graph of its own: a layer index that
  does not grow starts the next micro-batch, whose first position follows the previous one's (one sequence, cut in
  order), and a non-last layer's row count is checked against it;
- a tensor with no buffer is skipped; nothing the callback does can raise into llama.cpp (an error is kept and
  reported after the decode), and the ctypes callback object stays referenced as long as its context lives.
If no `l_out` node is seen (a llama.cpp whose graph names its nodes otherwise) the capture says the lens is
unavailable (`Capture.missing`) and the model's own logits are still returned.

The lens context counts in the pool's memory budget: its estimated size (lens_context_bytes) is added to the
model's extra_bytes while it lives, after the pool's may_grow agreed (else BudgetError).
"""

from __future__ import annotations

import bisect
import ctypes
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import llama_cpp

from . import engine
from ..errors import BudgetError, ModelFileError

MAX_POSITIONS = 8  # positions one lens run may ask for
_GGML_TYPE_F32 = 0
_L_OUT = re.compile(rb"^l_out-(\d+)$")


class _TensorHead(ctypes.Structure):
    """The first fields of ggml.h's struct ggml_tensor (type, buffer, ne[4], nb[4]): all the callback reads by
    layout; the name goes through ggml_get_name."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4)]


_ggml = None


def _ggml_base():
    """libggml-base.so beside llama_cpp's libllama (already loaded by it: the same handle), with the signatures of the
    functions the callback calls."""
    global _ggml
    if _ggml is None:
        lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
        found = sorted(lib_dir.glob("libggml-base.so*")) + sorted(lib_dir.glob("libggml-base.dylib"))
        if not found:
            raise ModelFileError(f"the logit lens needs libggml-base beside llama_cpp's library in {lib_dir}; "
                                 f"reinstall llama-cpp-python {engine.llama_cpp_version()}")
        lib = ctypes.CDLL(str(found[0]))
        lib.ggml_get_name.argtypes, lib.ggml_get_name.restype = [ctypes.c_void_p], ctypes.c_char_p
        lib.ggml_nrows.argtypes, lib.ggml_nrows.restype = [ctypes.c_void_p], ctypes.c_int64
        lib.ggml_nelements.argtypes, lib.ggml_nelements.restype = [ctypes.c_void_p], ctypes.c_int64
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        lib.ggml_backend_tensor_get.restype = None
        _ggml = lib
    return _ggml


@dataclass
class Capture:
    """What one lens capture read, for `positions` (sorted, unique token indices of the prompt):
    layers (len(positions), n_layer, n_embd) float32: the residual stream after each layer (l_out), None if unavailable;
    norm (len(positions), n_embd): result_norm (the final LayerNorm's output), None if not seen;
    logits (len(outputs), n_vocab): the model's own logits at `outputs` (the positions, or more: see capture);
    missing: why the lens is unavailable ('' when it is available)."""
    positions: list[int]
    n_layer: int
    layers: np.ndarray | None
    norm: np.ndarray | None
    logits: np.ndarray
    outputs: list[int]
    missing: str = ""

    def logits_at_positions(self) -> np.ndarray:
        """The model's logits at `positions` (rows of `logits`)."""
        return self.logits[[self.outputs.index(p) for p in self.positions]]


def lens_context_bytes(model: engine.Model, n_ctx: int, n_ubatch: int) -> int:
    """An estimate of what a lens context costs on top of the mapped file: its KV cache (exact: 2 × layers × n_ctx ×
    n_embd × the KV type's size), its output buffer and its compute buffer (the micro-batch's widest tensors: the
    feed-forward's 4·n_embd, the attention scores, the logits)."""
    m = model._model
    n_layer, n_embd = int(llama_cpp.llama_model_n_layer(m)), int(llama_cpp.llama_model_n_embd(m))
    n_head = int(llama_cpp.llama_model_n_head(m))
    kv = 2 * n_layer * n_ctx * n_embd * (4 if model.settings.kv_f32 else 2)
    compute = 4 * n_ubatch * (8 * n_embd + n_head * n_ctx + model.n_vocab)
    return kv + compute + 4 * n_ubatch * model.n_vocab


class _Reader:
    """The eval callback's state for one capture. decode() feeds one llama_decode call; the callback fills the rows."""

    def __init__(self, n_layer: int, n_embd: int, positions: list[int], outputs: list[int], n_ubatch: int):
        self.lib = _ggml_base()
        self.n_layer, self.n_embd, self.n_ubatch = n_layer, n_embd, n_ubatch
        self.positions, self.outputs = positions, outputs
        self.index = {p: i for i, p in enumerate(positions)}
        self.layers = np.full((len(positions), n_layer, n_embd), np.nan, dtype=np.float32)
        self.norm = np.full((len(positions), n_embd), np.nan, dtype=np.float32)
        self.seen_layers: set[int] = set()
        self.seen_norm = False
        self.error = ""
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._callback)  # referenced as long as ctx lives

    def begin_call(self, start: int, end: int) -> None:
        """A llama_decode call of tokens [start, end) begins; its first micro-batch starts at `start`."""
        self.call_end = end
        self.ub_start, self.last_il, self.after_result = start, -1, False

    def _ub_range(self) -> tuple[int, int]:
        return self.ub_start, min(self.call_end, self.ub_start + self.n_ubatch)

    def _next_ubatch(self) -> None:
        self.ub_start = self._ub_range()[1]
        self.last_il, self.after_result = -1, False

    def _callback(self, t, ask, user_data) -> bool:
        try:
            name = self.lib.ggml_get_name(t) or b""
            if ask:
                return bool(_L_OUT.match(name)) or name.startswith(b"result_")
            self._take(t, name)
        except BaseException as e:  # nothing may cross into llama.cpp: kept and reported after the decode
            if not self.error:
                self.error = f"{type(e).__name__}: {e}"
        return True

    def _take(self, t, name: bytes) -> None:
        head = _TensorHead.from_address(t)
        if not head.buffer:  # no data to read
            return
        m = _L_OUT.match(name)
        if m:
            il = int(m.group(1))
            if il <= self.last_il or self.after_result:  # the layers start again: the next micro-batch
                self._next_ubatch()
            self.last_il = il
            if not 0 <= il < self.n_layer:
                raise ValueError(f"node {name.decode()} names a layer the model does not have ({self.n_layer})")
            self._rows(t, head, name, il == self.n_layer - 1, self.layers[:, il])
            self.seen_layers.add(il)
        elif name == b"result_norm":
            self.after_result = True
            self._rows(t, head, name, True, self.norm)
            self.seen_norm = True
        elif name.startswith(b"result_"):
            self.after_result = True  # result_output: the logits, read after the decode from llama.cpp's buffer

    def _rows(self, t, head: _TensorHead, name: bytes, outputs_only: bool, into: np.ndarray) -> None:
        """Copy the rows of this micro-batch's asked positions from tensor t into `into` (row per position)."""
        lo, hi = self._ub_range()
        asked = [p for p in self.positions if lo <= p < hi]
        if not asked:
            return
        if head.type != _GGML_TYPE_F32 or head.ne[0] != self.n_embd or head.nb[0] != 4:
            raise ValueError(f"node {name.decode()} is not an F32 row of {self.n_embd} (type {head.type}, "
                             f"ne0 {head.ne[0]})")
        n_rows = int(self.lib.ggml_nrows(t))
        outs = [p for p in self.outputs if lo <= p < hi]
        if outputs_only and n_rows == len(outs):  # only the output rows, in order
            rows = [outs.index(p) for p in asked]
        elif n_rows == hi - lo:  # every token of the micro-batch
            rows = [p - lo for p in asked]
        else:
            raise ValueError(f"node {name.decode()} has {n_rows} rows for a micro-batch of {hi - lo} tokens with "
                             f"{len(outs)} outputs")
        nb1 = int(head.nb[1])
        for p, r in zip(asked, rows):
            dst = into[self.index[p]]
            self.lib.ggml_backend_tensor_get(t, dst.ctypes.data, r * nb1, 4 * self.n_embd)


def capture(model: engine.Model, tokens: list[int], positions: list[int], *, outputs: list[int] | None = None,
            n_ubatch: int | None = None, n_threads: int | None = None) -> Capture:
    """Evaluate `tokens` from an empty cache in a lens context of its own and return the residual stream after
    every layer and result_norm at `positions` (sorted, unique token indices), and the model's logits at `outputs`
    (sorted, unique, holding `positions`; default: `positions`), so that a prompt run scores from the same decode.
    n_ubatch: the context's micro-batch (default: the model's batch size; smaller cuts each decode call into several
    micro-batches)."""
    want = [int(p) for p in positions]
    if not want or want != sorted(set(want)) or want[0] < 0 or want[-1] >= len(tokens):
        raise ValueError(f"lens positions must be sorted, unique and lie in 0..{len(tokens) - 1}")
    if len(want) > MAX_POSITIONS:
        raise ValueError(f"at most {MAX_POSITIONS} lens positions")
    outs = want if outputs is None else [int(p) for p in outputs]
    if outs != sorted(set(outs)) or not set(want) <= set(outs) or outs[-1] >= len(tokens) or outs[0] < 0:
        raise ValueError("outputs must be sorted, unique token indices holding every lens position")
    n = len(tokens)
    with model.lock:
        n_ctx = engine.round_ctx(n)
        cparams = model._context_params(n_ctx)
        if n_ubatch:
            cparams.n_ubatch = max(1, min(int(n_ubatch), cparams.n_batch))
        n_layer = int(llama_cpp.llama_model_n_layer(model._model))
        n_embd = int(llama_cpp.llama_model_n_embd(model._model))
        reader = _Reader(n_layer, n_embd, want, outs, int(cparams.n_ubatch))
        cparams.cb_eval = reader.callback
        cparams.cb_eval_user_data = None
        cost = lens_context_bytes(model, n_ctx, int(cparams.n_ubatch))
        if not model.may_grow(cost):
            raise BudgetError(f"the logit lens of {model.path.name!r} needs about {cost / 1e6:.1f} MB more (a "
                              f"context of its own) than the memory budget leaves; raise the budget "
                              f"(PYTHIA_COMPARE_MEMORY_BUDGET) or compare fewer variants")
        model.extra_bytes += cost
        ctx = None
        try:
            ctx = llama_cpp.llama_init_from_model(model._model, cparams)
            if not ctx:
                raise ModelFileError(f"llama.cpp could not create a lens context of {n_ctx} tokens for "
                                     f"{model.path.name!r}")
            threads = max(1, int(n_threads or model.settings.n_threads))
            llama_cpp.llama_set_n_threads(ctx, threads, threads)
            logits = _decode(model, ctx, reader, tokens, outs, int(cparams.n_batch))
        finally:
            if ctx:
                llama_cpp.llama_free(ctx)
            model.extra_bytes -= cost
    return _result(reader, want, outs, logits)


def _decode(model: engine.Model, ctx, reader: _Reader, tokens: list[int], want: list[int], n_batch: int):
    """The decode loop: n_batch tokens per llama_decode call, the `want` positions flagged as outputs; returns the
    model's logits at them (float32, copied while valid)."""
    out = np.empty((len(want), model.n_vocab), dtype=np.float32)
    batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
    try:
        for start in range(0, len(tokens), n_batch):
            end = min(len(tokens), start + n_batch)
            flagged = [p for p in want if start <= p < end]
            engine.fill_batch(batch, tokens[start:end], start, [p - start for p in flagged])
            reader.begin_call(start, end)
            model._decode(ctx, batch)
            if flagged:  # llama.cpp's output rows of this call: the flagged positions, in order
                first = bisect.bisect_left(want, flagged[0])
                out[first:first + len(flagged)] = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx),
                                                                        shape=(len(flagged), model.n_vocab))
    finally:
        llama_cpp.llama_batch_free(batch)
    return out


def _result(reader: _Reader, want: list[int], outs: list[int], logits: np.ndarray) -> Capture:
    if reader.error:
        missing = f"the eval callback failed: {reader.error}"
    elif not reader.seen_layers:
        missing = ("llama.cpp's graph has no l_out node (this llama-cpp-python names the layer outputs otherwise), "
                   "so the residual stream cannot be read")
    elif len(reader.seen_layers) < reader.n_layer:
        missing = (f"llama.cpp's graph showed l_out nodes of {len(reader.seen_layers)} of {reader.n_layer} layers")
    elif np.isnan(reader.layers).any():
        missing = "some asked positions were never seen in the layer outputs"
    else:
        missing = ""
    norm = reader.norm if reader.seen_norm and not np.isnan(reader.norm).any() else None
    return Capture(positions=want, n_layer=reader.n_layer, layers=None if missing else reader.layers, norm=norm,
                   logits=logits, outputs=outs, missing=missing)
