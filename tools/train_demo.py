"""Train the bundled offline demo suite: tiny GPT-NeoX checkpoints in Hugging Face layout.

Owns building the demo tokenizer (byte-level BPE made the way GPT-NeoX-20B's is), training a tiny
GPTNeoXForCausalLM on Python's own standard library source (PSF license, present on every machine with
this Python), and writing step{N}/ folders (config.json in Pythia's style, tokenizer.json, float16
model.safetensors), heldout.txt and the PPL table. Never touches the network, never imports torch,
transformers or tokenizers at module import (the tests import `training_files` / `read_training_text`
without them), and is never imported by pythia_compare.

Reproduce (dev-only packages, CPU):
    pip install torch==2.13.0 transformers==5.24.0 tokenizers==0.23.3
    python tools/train_demo.py            # writes assets/demo/
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "assets" / "demo"

# --- data -----------------------------------------------------------------------------------------------
# The held-out modules: scored, never trained on (and never seen by the tokenizer trainer).
HELDOUT_MODULES: tuple[str, ...] = ("colorsys.py", "graphlib.py")
# Build-specific or generated modules that differ between machines with the same Python version.
EXCLUDED_PREFIXES: tuple[str, ...] = ("_sysconfigdata",)
MAX_TRAIN_CHARS = 4_000_000  # fixed size of the training text (files in sorted order, the last one cut)
FILE_SEPARATOR = "\n"  # joins files in the training text; in token space each file ends with <|endoftext|>

# --- tokenizer ------------------------------------------------------------------------------------------
EOT = "<|endoftext|>"  # id 0: bos, eos and unk, as in GPT-NeoX-20B
PAD = "<|padding|>"  # id 1, as in GPT-NeoX-20B
BPE_VOCAB = 977  # specials + 256 byte symbols + merges
SPACE_RUNS = tuple(range(24, 1, -1))  # added tokens for runs of 24 .. 2 spaces, like GPT-NeoX-20B's
# tokenizer size = 977 + 23 = 1000; the model's vocab is padded to a multiple of 128 as Pythia's is.
VOCAB_SIZE = 1024

# --- model and training ---------------------------------------------------------------------------------
SEED = 1234
D_MODEL = 256  # K-quant rows need multiples of 256
N_LAYER = 2
N_HEAD = 4
D_FF = 512  # a multiple of 256 too (ffn_down rows)
MAX_POS = 2048
SEQ_LEN = 512  # the CLI's default ctx: positions the model is scored at are positions it trained at
BATCH = 4  # 2048 tokens a step: about one pass over the training text in STEPS steps
STEPS = 800
SAVE_STEPS: tuple[int, ...] = (0, 25, 100, 300, 800)  # log-like, as Pythia's early checkpoints
PEAK_LR = 3e-3
MIN_LR = 1e-4
WARMUP = 40
WEIGHT_DECAY = 0.1
EVAL_CTX: tuple[int, ...] = (128, 512)  # llama-perplexity style corpus PPL at these contexts
N_THREADS = 2


def stdlib_dir() -> Path:
    """The running Python's standard library folder (e.g. /root/.pyenv/versions/3.11.7/lib/python3.11)."""
    return Path(sysconfig.get_paths()["stdlib"])


def _candidate_modules(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*.py")
                  if p.is_file() and not p.name.startswith(EXCLUDED_PREFIXES))


def training_files(root: Path | None = None) -> list[Path]:
    """Top-level stdlib modules trained on, sorted by name; the held-out modules are left out."""
    root = stdlib_dir() if root is None else root
    return [p for p in _candidate_modules(root) if p.name not in HELDOUT_MODULES]


def heldout_files(root: Path | None = None) -> list[Path]:
    """The held-out modules, in HELDOUT_MODULES order. Raises FileNotFoundError naming a missing one."""
    root = stdlib_dir() if root is None else root
    paths = [root / name for name in HELDOUT_MODULES]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"held-out module {p.name} not found in {root}")
    return paths


def _read(path: Path) -> str:
    # Universal newlines: the text is the same whatever line endings a file has.
    return path.read_text(encoding="utf-8")


def training_documents(root: Path | None = None) -> list[str]:
    """The training text as one string per file, cut so that all together hold MAX_TRAIN_CHARS chars."""
    docs: list[str] = []
    left = MAX_TRAIN_CHARS
    for p in training_files(root):
        if left <= 0:
            break
        text = _read(p)[:left]
        docs.append(text)
        left -= len(text)
    return docs


def read_training_text(root: Path | None = None) -> str:
    """Every training document joined by FILE_SEPARATOR: the text the model and tokenizer learn from."""
    return FILE_SEPARATOR.join(training_documents(root))


def read_heldout_text(root: Path | None = None) -> str:
    """The held-out evaluation text (what heldout.txt holds): the held-out modules joined by a newline."""
    return "\n".join(_read(p) for p in heldout_files(root))


# --- tokenizer ------------------------------------------------------------------------------------------

def _split_space_runs(text: str) -> list[str]:
    """Cut `text` where the added space-run tokens will cut it, so BPE learns no merges for them."""
    import re
    return [piece for piece in re.split(r" {2,}", text) if piece]


def build_tokenizer(docs: list[str]):
    """A GPT-NeoX-style byte-level BPE trained on `docs`: a tokenizers.Tokenizer of BPE_VOCAB + 23 tokens."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)  # adds no BOS
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(EOT, special=True, normalized=False),
                        AddedToken(PAD, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

    def pieces():
        for doc in docs:
            for line in doc.splitlines(keepends=True):
                yield from _split_space_runs(line)

    tok.train_from_iterator(pieces(), trainer=trainer)
    tok.add_tokens([AddedToken(" " * n, normalized=True, special=False) for n in SPACE_RUNS])
    # tokenizers' ByteLevel decoder takes no options; write GPT-NeoX's (no effect on decoding).
    spec = json.loads(tok.to_str())
    spec["decoder"].update(add_prefix_space=False, trim_offsets=True)
    tok = Tokenizer.from_str(json.dumps(spec))
    if tok.token_to_id(EOT) != 0 or tok.token_to_id(PAD) != 1:
        raise RuntimeError("special tokens did not land at ids 0 and 1")
    if tok.get_vocab_size(with_added_tokens=True) > VOCAB_SIZE:
        raise RuntimeError(f"tokenizer holds {tok.get_vocab_size()} tokens, more than vocab_size {VOCAB_SIZE}")
    return tok


def _tokenizer_files(out: Path, tok) -> None:
    tok.save(str(out / "tokenizer.json"))
    config = {"add_bos_token": False, "add_eos_token": False, "bos_token": EOT, "eos_token": EOT,
              "unk_token": EOT, "pad_token": None, "clean_up_tokenization_spaces": False,
              "model_max_length": MAX_POS, "tokenizer_class": "GPTNeoXTokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# --- model ----------------------------------------------------------------------------------------------

def pythia_config() -> dict:
    """config.json in Pythia's style (rotary_pct / rotary_emb_base, separate embed_out)."""
    import transformers
    return {
        "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
        "hidden_size": D_MODEL, "initializer_range": 0.02, "intermediate_size": D_FF, "layer_norm_eps": 1e-5,
        "max_position_embeddings": MAX_POS, "model_type": "gpt_neox", "num_attention_heads": N_HEAD,
        "num_hidden_layers": N_LAYER, "rotary_emb_base": 10000, "rotary_pct": 0.25,
        "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": transformers.__version__,
        "use_cache": True, "use_parallel_residual": True, "vocab_size": VOCAB_SIZE,
    }


def _save_checkpoint(model, out: Path, tok) -> None:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in model.state_dict().items():
        if name.endswith(("inv_freq", "masked_bias", "attention.bias")):
            continue  # buffers, not weights
        if name == "lm_head.weight":
            name = "embed_out.weight"  # Pythia's name for the separate output head
        tensors[name] = t.detach().to(torch.float16).contiguous().clone()
    save_file(dict(sorted(tensors.items())), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(pythia_config(), indent=2, sort_keys=True) + "\n")
    _tokenizer_files(out, tok)


def corpus_ppl(model, ids: list[int], ctx: int) -> tuple[float, int]:
    """llama-perplexity's corpus PPL: ctx-sized chunks, leftover dropped, second half of each chunk scored
    (logits at positions ctx/2 .. ctx-2 predict the next token). Returns (ppl, n_scored)."""
    import torch

    n_chunks = len(ids) // ctx
    if n_chunks < 1:
        raise ValueError(f"corpus PPL at ctx {ctx} needs >= {2 * ctx} tokens, got {len(ids)}")
    x = torch.tensor(ids[:n_chunks * ctx], dtype=torch.long).view(n_chunks, ctx)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n_chunks, 8):
            xb = x[i:i + 8]
            logits = model(input_ids=xb, use_cache=False).logits.float()
            first = ctx // 2
            lp = torch.log_softmax(logits[:, first:ctx - 1], dim=-1)
            tgt = xb[:, first + 1:ctx]
            nll = -lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            total += float(nll.double().sum())
            count += nll.numel()
    return math.exp(total / count), count


def _lr(step: int, total: int) -> float:
    """Linear warmup, then cosine decay from PEAK_LR to MIN_LR over `total` steps."""
    if step < WARMUP:
        return PEAK_LR * (step + 1) / WARMUP
    frac = (step - WARMUP) / max(1, total - WARMUP)
    return MIN_LR + 0.5 * (PEAK_LR - MIN_LR) * (1 + math.cos(math.pi * min(1.0, frac)))


def train(out: Path, steps: int = STEPS, save_steps: tuple[int, ...] = SAVE_STEPS) -> tuple[list[dict], dict]:
    """Build the tokenizer, train, save every step of `save_steps` under `out`.

    Returns the table rows and {heldout, n_heldout_tokens, n_train_tokens}."""
    import numpy as np
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(SEED)
    torch.set_num_threads(N_THREADS)
    torch.use_deterministic_algorithms(True)

    t0 = time.time()
    docs = training_documents()
    heldout = read_heldout_text()
    _check_heldout_unseen(heldout, FILE_SEPARATOR.join(docs))
    tok = build_tokenizer(docs)
    stream: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        stream.extend(enc.ids)
        stream.append(0)  # <|endoftext|> ends every document, as in Pythia's training data
    data = torch.tensor(stream, dtype=torch.long)
    heldout_ids = tok.encode(heldout, add_special_tokens=False).ids
    print(f"training text: {len(docs)} files, {sum(map(len, docs))} chars, {len(stream)} tokens; "
          f"held-out: {len(heldout)} chars, {len(heldout_ids)} tokens; tokenizer {tok.get_vocab_size()} tokens "
          f"({time.time() - t0:.1f}s)", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.txt").write_text(heldout, encoding="utf-8")
    cfg = GPTNeoXConfig(**{k: v for k, v in pythia_config().items()
                           if k not in ("architectures", "torch_dtype", "transformers_version")})
    model = GPTNeoXForCausalLM(cfg)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=PEAK_LR, betas=(0.9, 0.95), eps=1e-8)
    # Data order: one seeded numpy generator in this thread draws every window's start.
    rng = np.random.default_rng(SEED)
    starts = rng.integers(0, len(stream) - SEQ_LEN - 1, size=(steps, BATCH))

    rows: list[dict] = []
    recent: list[float] = []

    def save_and_score(step: int) -> None:
        ckpt = out / f"step{step}"
        _save_checkpoint(model, ckpt, tok)
        saved = GPTNeoXForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32)  # what ships, f16 weights
        saved.eval()
        row = {"step": step, "train_loss": (sum(recent) / len(recent)) if recent else None}  # JSON null: step 0 has no loss
        for ctx in EVAL_CTX:
            row[f"ppl_ctx{ctx}"], row[f"n_scored_ctx{ctx}"] = corpus_ppl(saved, heldout_ids, ctx)
        rows.append(row)
        print(f"saved step{step}: train loss {row['train_loss'] or float('nan'):.4f}, "
              + ", ".join(f"held-out PPL ctx{c} {row[f'ppl_ctx{c}']:.3f}" for c in EVAL_CTX)
              + f" ({time.time() - t0:.0f}s)", flush=True)

    if 0 in save_steps:
        save_and_score(0)
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = _lr(step - 1, steps)
        idx = torch.from_numpy(starts[step - 1])
        batch = torch.stack([data[i:i + SEQ_LEN + 1] for i in idx.tolist()])
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        recent = (recent + [float(loss.detach())])[-20:]
        if step % 100 == 0:
            print(f"step {step}: loss {sum(recent) / len(recent):.4f} ({time.time() - t0:.0f}s)", flush=True)
        if step in save_steps:
            model.eval()
            save_and_score(step)
            model.train()
    return rows, {"heldout": heldout, "n_heldout_tokens": len(heldout_ids), "n_train_tokens": len(stream)}


def _check_heldout_unseen(heldout: str, training: str, window: int = 100, stride: int = 50) -> None:
    """Raise if any `window`-char piece of the held-out text (every `stride` chars) is in the training text."""
    for i in range(0, max(1, len(heldout) - window + 1), stride):
        piece = heldout[i:i + window]
        if piece in training:
            raise RuntimeError(f"held-out text at char {i} also appears in the training text: {piece!r}")


def table(rows: list[dict]) -> str:
    """The step / train loss / held-out PPL table as Markdown."""
    head = "| step | train loss | " + " | ".join(f"held-out PPL (ctx {c})" for c in EVAL_CTX) + " |"
    sep = "|---:|---:|" + "---:|" * len(EVAL_CTX)
    lines = [head, sep]
    for r in rows:
        loss = "—" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
        lines.append(f"| {r['step']} | {loss} | " + " | ".join(f"{r[f'ppl_ctx{c}']:.3f}" for c in EVAL_CTX) + " |")
    return "\n".join(lines)


def n_params() -> int:
    """Parameters of the demo architecture (embed_in, layers, final norm, embed_out)."""
    layer = (4 * D_MODEL * D_MODEL + 4 * D_MODEL  # query_key_value + dense, with biases
             + 2 * D_MODEL * D_FF + D_FF + D_MODEL  # dense_h_to_4h + dense_4h_to_h
             + 4 * D_MODEL)  # two layer norms
    return 2 * VOCAB_SIZE * D_MODEL + N_LAYER * layer + 2 * D_MODEL


def readme(rows: list[dict], out: Path, heldout: str, n_heldout_tokens: int, n_train_tokens: int,
           minutes: float, cpu_minutes: float) -> str:
    """assets/demo/README.md: provenance, license, command, architecture and the PPL table."""
    import tokenizers
    import torch
    import transformers

    train_text = read_training_text()
    files = training_files()
    used = len(training_documents())
    sha = hashlib.sha256(train_text.encode("utf-8")).hexdigest()
    held_sha = hashlib.sha256(heldout.encode("utf-8")).hexdigest()
    steps = ", ".join(f"step{r['step']}" for r in rows)
    ckpt_mb = sum(f.stat().st_size for f in out.glob("step*/*") if f.is_file()) / 1e6
    v = sys.version_info
    return f"""# The bundled demo suite (`demo`)

Tiny GPT-NeoX language models trained **here, on this project's machine**, so that pythia-compare works
offline and its tests have real checkpoints to convert, quantize and compare. **These are NOT Pythia**
and were not made by EleutherAI: same architecture family and file layout as Pythia's checkpoints
(GPTNeoXForCausalLM, Pythia-style config.json, a GPT-NeoX-style byte-level BPE tokenizer), but
{n_params() / 1e6:.2f}M parameters and a few minutes of training on Python source code.

## Contents

- `step0/` … `step{rows[-1]['step']}/` — checkpoints {steps}, each in Hugging Face layout:
  `config.json` (Pythia's style: `rotary_pct`, `rotary_emb_base`, `use_parallel_residual`, `bos_token_id` =
  `eos_token_id` = 0, `tie_word_embeddings` false, `torch_dtype` float16), `model.safetensors` (float16,
  Pythia's tensor names, separate `embed_out.weight`), `tokenizer.json`, `tokenizer_config.json`,
  `special_tokens_map.json`. step0 is the random initialization. Checkpoints total {ckpt_mb:.1f} MB.
- `heldout.txt` — the held-out evaluation text ({len(heldout)} characters, {n_heldout_tokens} tokens,
  sha256 `{held_sha[:16]}…`): CPython {v.major}.{v.minor}'s standard library modules
  {", ".join(f"`{m}`" for m in HELDOUT_MODULES)}, joined by a newline. Neither the tokenizer nor the model
  saw them: the training script checks that no 100-character piece of it occurs in the training text, and
  `tests/test_demo_assets.py` checks it again.
- `train_log.json` — the table below, machine-readable.

## Where the text comes from, and its license

Training text: the top-level modules (`*.py`) of the standard library of the Python that runs the script
(here CPython {v.major}.{v.minor}.{v.micro}, `sysconfig.get_paths()["stdlib"]`), in sorted file-name order, without
the held-out modules and without the build-specific `_sysconfigdata*` module; the first
{MAX_TRAIN_CHARS:,} characters ({used} of {len(files)} files, {n_train_tokens:,} tokens; sha256 of the text
`{sha[:16]}…`). It is read from the machine at training time; nothing is downloaded.
CPython's standard library is distributed under the **Python Software Foundation License Version 2**
(a permissive, GPL-compatible license; the full text is `LICENSE.txt` in the same stdlib folder). The
checkpoints and `heldout.txt` are derived from that text and carry its notice:
Copyright (c) 2001-2023 Python Software Foundation; All Rights Reserved.

## Reproduce

```
pip install torch==2.13.0 transformers==5.24.0 tokenizers==0.23.3
python tools/train_demo.py            # writes assets/demo/ ; add --out DIR to write elsewhere
```
Seeded (seed {SEED}; one numpy generator draws every training window in the main thread),
`torch.use_deterministic_algorithms(True)`, {N_THREADS} CPU threads. Made with Python {v.major}.{v.minor}.{v.micro},
torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__};
it took {minutes:.1f} minutes of wall time and {cpu_minutes:.1f} CPU-minutes here (2 cores shared with other work). A different Python patch release has slightly different
standard library text, and so gives slightly different weights.

## Architecture and training

| | |
|---|---|
| model | GPTNeoXForCausalLM, {N_LAYER} layers, hidden {D_MODEL}, {N_HEAD} heads (head size {D_MODEL // N_HEAD}), intermediate {D_FF}, gelu |
| position | rotary on 25% of each head (`rotary_pct` 0.25, base 10000), `max_position_embeddings` {MAX_POS}; trained on {SEQ_LEN}-token windows |
| residual | parallel (`use_parallel_residual` true), layer norm eps 1e-5, separate `embed_out` |
| vocab | tokenizer {BPE_VOCAB + len(SPACE_RUNS)} tokens, `vocab_size` {VOCAB_SIZE} (padded to a multiple of 128, as Pythia pads 50277 to 50304) |
| K-quant rows | every weight row is a multiple of 256 ({D_MODEL}, {D_FF}), so Q2_K … Q6_K apply to every matrix |
| training | {rows[-1]['step']} steps × {BATCH} × {SEQ_LEN} tokens, AdamW (0.9, 0.95), lr {PEAK_LR} (warmup {WARMUP}, cosine to {MIN_LR}), weight decay {WEIGHT_DECAY}, grad clip 1.0, fp32; saved as float16 |

Tokenizer: built the way GPT-NeoX-20B's is, with HF `tokenizers`: a BPE model, NFC normalizer, ByteLevel
pre-tokenizer (`add_prefix_space` false, `trim_offsets` true), ByteLevel post-processor that adds no BOS,
ByteLevel decoder; `<|endoftext|>` at id 0 (bos, eos and unk) and `<|padding|>` at id 1, both special; and
added (non-special, normalized) tokens for runs of 2 to 24 spaces. Merges were learned on the training
text cut at runs of two or more spaces (where the added tokens cut it).

## Held-out perplexity

Measured by the training script with transformers on the saved float16 weights (loaded as float32),
the way `llama-perplexity` does it: the text tokenized whole (no BOS), cut into ctx-token chunks, the
leftover dropped, and the second half of each chunk scored. Train loss: mean of the last 20 steps.

{table(rows)}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default assets/demo)")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (a short run for trying things)")
    args = ap.parse_args(argv)
    save_steps = tuple(s for s in SAVE_STEPS if s <= args.steps)
    if args.steps not in save_steps:
        save_steps += (args.steps,)
    t0, c0 = time.time(), time.process_time()
    rows, info = train(args.out, args.steps, save_steps)
    (args.out / "train_log.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.out / "README.md").write_text(readme(rows, args.out, info["heldout"], info["n_heldout_tokens"],
                                               info["n_train_tokens"], (time.time() - t0) / 60,
                                               (time.process_time() - c0) / 60))
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
