"""Tiny GPT-NeoX checkpoints in Hugging Face layout, for tests: random weights, a real tokenizer.

Owns building checkpoint directories (config.json, tokenizer.json, model.safetensors or
pytorch_model.bin) that look like Pythia's: a byte-level BPE tokenizer trained here with HF
`tokenizers` (NFC normalizer and ByteLevel pre-tokenizer as GPT-NeoX-20B's, special "<|endoftext|>"
id 0 and "<|padding|>" id 1, non-special added tokens for runs of 2-24 spaces), a vocab padded past the
tokenizer's size, and random weights. Never converts, quantizes or runs a model.

The safetensors path needs only numpy and safetensors; fmt="bin" and `make_hf_checkpoint` (weights
made by transformers' own GPTNeoXForCausalLM) import torch, so only the tests that need them pay for it.
d_model and d_ff default to multiples of 256, which llama.cpp's K-quants need for their row sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ENDOFTEXT = "<|endoftext|>"
PADDING = "<|padding|>"
SPACE_RUNS = range(24, 1, -1)  # GPT-NeoX-20B adds runs of 24 down to 2 spaces as non-special tokens

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Researchers compare quantized language models by "
    "perplexity and by the divergence of their next-token distributions from a reference model.",
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.",
    "I've been told he's there; we'll see if they're right. You'd think I'm sure, but we're not. Don't!",
    "def add(a, b):\n    return a + b\n\n\nclass Model:\n    def __init__(self, n_layer=2):\n"
    "        self.n_layer = n_layer\n\n    def forward(self, x):\n        for i in range(self.n_layer):\n"
    "            x = x + 1\n        return x\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\nif (x != y && z >= 0) { return -1; }\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1000 2024 3.14159 2.71828 1e-5 65536 123456789.",
    "Crème brûlée, naïve café, façade, jalapeño, Ångström, Straße, smörgåsbord, déjà vu, über.",
    "Привет, как дела? Это тест. Ελληνικά γράμματα. שלום עולם. مرحبا بالعالم. नमस्ते दुनिया.",
    "日本語のテキスト。中文文本测试。한국어 텍스트입니다. ภาษาไทย.",
    "Emoji: 🚀 🦙 😀 👍🏽 👨‍👩‍👧 ❤️ ✅ 🇺🇸 and more.",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}  <html><body>Hello</body></html>",
    "    indented line\n\tTabbed line\n\n\nMultiple blank lines above.\r\nWindows line end.\r\n",
]


def make_tokenizer(path: str | Path, *, vocab_size: int = 1500) -> Path:
    """Train a GPT-NeoX-like byte-level BPE on a built-in corpus; write it as tokenizer.json at `path`.

    `path` is the file to write, or a directory to write tokenizer.json into. vocab_size is the
    trainer's target (the two special tokens included); the 23 space-run tokens come on top.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    path = Path(path)
    if path.is_dir() or not path.suffix:
        path.mkdir(parents=True, exist_ok=True)
        path = path / "tokenizer.json"
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(ENDOFTEXT, special=True, normalized=False),
                        AddedToken(PADDING, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [line for _ in range(3) for line in _CORPUS] + _pseudo_words(4000)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(" " * n, special=False, normalized=True) for n in SPACE_RUNS])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def _pseudo_words(n: int) -> list[str]:
    """n lines of made-up words from a fixed syllable set (fixed seed), so BPE has merges to learn."""
    rng = np.random.default_rng(1234)
    syllables = ["ka", "to", "ri", "mu", "sen", "dal", "vor", "qu", "ish", "ple", "zon", "tra", "ex", "ly", "ng",
                 "é", "ö", "ñ", "th", "ch", "wo", "rd", "ing", "ed", "er", "st", "an", "on"]
    lines = []
    for _ in range(n // 8):
        words = ["".join(rng.choice(syllables, size=rng.integers(1, 4))) for _ in range(8)]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        lines.append(" ".join(words) + rng.choice([".", ",", "!", "?", ";", ""]))
    return lines


def tokenizer_size(tokenizer_json: str | Path) -> int:
    """Number of ids a tokenizer.json defines (largest id + 1)."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    ids = list(data["model"]["vocab"].values()) + [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) + 1


def config_dict(*, d_model: int = 256, n_layer: int = 2, n_head: int = 4, d_ff: int = 1024, vocab_size: int,
                rotary_pct: float = 0.25, rope_theta: float = 10000.0, parallel_residual: bool = True,
                config_style: str = "pythia", tie_word_embeddings: bool = False,
                max_position_embeddings: int = 2048, layer_norm_eps: float = 1e-5) -> dict:
    """A GPT-NeoX config.json as Pythia's ("pythia") or as transformers 5 writes it ("transformers5")."""
    cfg = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "bos_token_id": 0,
           "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": d_model, "initializer_range": 0.02,
           "intermediate_size": d_ff, "layer_norm_eps": layer_norm_eps,
           "max_position_embeddings": max_position_embeddings, "num_attention_heads": n_head,
           "num_hidden_layers": n_layer, "tie_word_embeddings": tie_word_embeddings, "use_cache": True,
           "use_parallel_residual": parallel_residual, "vocab_size": vocab_size}
    if config_style == "pythia":
        cfg.update({"rotary_pct": rotary_pct, "rotary_emb_base": rope_theta, "torch_dtype": "float16",
                    "transformers_version": "4.24.0"})
    elif config_style == "transformers5":
        cfg.update({"attention_bias": True, "dtype": "float32", "transformers_version": "5.24.0",
                    "rope_parameters": {"partial_rotary_factor": rotary_pct, "rope_theta": rope_theta,
                                        "rope_type": "default"}})
    else:
        raise ValueError(f"config_style {config_style!r}: use 'pythia' or 'transformers5'")
    return cfg


def random_weights(cfg: dict, *, seed: int = 0, head_name: str = "embed_out.weight",
                   dtype: str = "float32") -> dict[str, np.ndarray]:
    """Random GPT-NeoX weights by Hugging Face name, shapes as torch stores them (out, in)."""
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

    def mat(rows: int, cols: int) -> np.ndarray:  # scaled so every block moves the logits
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(dtype)

    def norm(n: int) -> tuple[np.ndarray, np.ndarray]:
        return ((1.0 + 0.1 * rng.standard_normal(n)).astype(dtype), (0.1 * rng.standard_normal(n)).astype(dtype))

    def bias(n: int) -> np.ndarray:
        return (0.05 * rng.standard_normal(n)).astype(dtype)

    w: dict[str, np.ndarray] = {"gpt_neox.embed_in.weight": (rng.standard_normal((v, d)) * 0.05).astype(dtype)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}."
        w[p + "input_layernorm.weight"], w[p + "input_layernorm.bias"] = norm(d)
        w[p + "post_attention_layernorm.weight"], w[p + "post_attention_layernorm.bias"] = norm(d)
        w[p + "attention.query_key_value.weight"] = mat(3 * d, d)
        w[p + "attention.query_key_value.bias"] = bias(3 * d)
        w[p + "attention.dense.weight"] = mat(d, d)
        w[p + "attention.dense.bias"] = bias(d)
        w[p + "mlp.dense_h_to_4h.weight"] = mat(f, d)
        w[p + "mlp.dense_h_to_4h.bias"] = bias(f)
        w[p + "mlp.dense_4h_to_h.weight"] = mat(d, f)
        w[p + "mlp.dense_4h_to_h.bias"] = bias(d)
    w["gpt_neox.final_layer_norm.weight"], w["gpt_neox.final_layer_norm.bias"] = norm(d)
    if head_name:
        w[head_name] = (rng.standard_normal((v, d)) * 0.1).astype(dtype)
    return w


def make_checkpoint(directory: str | Path, *, d_model: int = 256, n_layer: int = 2, n_head: int = 4,
                    d_ff: int = 1024, vocab_size: int | None = None, rotary_pct: float = 0.25,
                    rope_theta: float = 10000.0, parallel_residual: bool = True, seed: int = 0,
                    fmt: str = "safetensors", config_style: str = "pythia", head_name: str = "embed_out.weight",
                    tie_word_embeddings: bool = False, dtype: str = "float32",
                    legacy_buffers: bool = False) -> Path:
    """Write a tiny random GPT-NeoX checkpoint directory in Hugging Face layout; returns the directory.

    vocab_size defaults to the tokenizer's size rounded up to a multiple of 128 (as Pythia's 50304 pads
    the tokenizer's 50277 ids). fmt "safetensors" needs no torch; "bin" writes pytorch_model.bin with
    torch.save. head_name "" with tie_word_embeddings=True writes no output head. legacy_buffers adds
    the non-weight buffers old Pythia checkpoints carry (attention.bias mask, masked_bias, inv_freq).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok_path = make_tokenizer(directory / "tokenizer.json")
    n_tok = tokenizer_size(tok_path)
    if vocab_size is None:
        vocab_size = -(-n_tok // 128) * 128
    cfg = config_dict(d_model=d_model, n_layer=n_layer, n_head=n_head, d_ff=d_ff, vocab_size=vocab_size,
                      rotary_pct=rotary_pct, rope_theta=rope_theta, parallel_residual=parallel_residual,
                      config_style=config_style, tie_word_embeddings=tie_word_embeddings)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    weights = random_weights(cfg, seed=seed, head_name=head_name, dtype=dtype)
    if legacy_buffers:
        n_pos, rot = cfg["max_position_embeddings"], int(rotary_pct * (d_model // n_head))
        for i in range(n_layer):
            p = f"gpt_neox.layers.{i}.attention."
            weights[p + "bias"] = np.tril(np.ones((n_pos, n_pos), dtype=bool))[None, None]
            weights[p + "masked_bias"] = np.array(-1e9, dtype=np.float32)
            weights[p + "rotary_emb.inv_freq"] = (1.0 / rope_theta ** (np.arange(0, rot, 2) / rot)).astype(np.float32)
    write_weights(directory, weights, fmt)
    return directory


def write_weights(directory: str | Path, weights: dict[str, np.ndarray], fmt: str = "safetensors") -> Path:
    """Write `weights` as model.safetensors (numpy only) or pytorch_model.bin (torch.save); returns the file."""
    directory = Path(directory)
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        path = directory / "model.safetensors"
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, str(path), metadata={"format": "pt"})
    elif fmt == "bin":
        import torch

        path = directory / "pytorch_model.bin"
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, str(path))
    else:
        raise ValueError(f"fmt {fmt!r}: use 'safetensors' or 'bin'")
    return path


def make_hf_checkpoint(directory: str | Path, *, fmt: str = "safetensors", d_model: int = 256, n_layer: int = 2,
                       n_head: int = 4, d_ff: int = 1024, rotary_pct: float = 0.25, rope_theta: float = 10000.0,
                       parallel_residual: bool = True, seed: int = 0, config_style: str = "transformers5"):
    """A checkpoint made by transformers itself; returns (directory, model) with the model in eval mode.

    Builds GPTNeoXForCausalLM from a config of `config_style`, sets every parameter (biases and norms
    too) to seeded random values, and saves it: fmt "safetensors" via save_pretrained, fmt "bin" via
    torch.save(model.state_dict()) plus config.json. config_style "pythia" rewrites config.json in
    Pythia's old key names (rotary_pct, rotary_emb_base); transformers reads both.
    """
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok_path = make_tokenizer(directory / "tokenizer.json")
    vocab_size = -(-tokenizer_size(tok_path) // 128) * 128
    cfg = config_dict(d_model=d_model, n_layer=n_layer, n_head=n_head, d_ff=d_ff, vocab_size=vocab_size,
                      rotary_pct=rotary_pct, rope_theta=rope_theta, parallel_residual=parallel_residual,
                      config_style=config_style)
    model = GPTNeoXForCausalLM(GPTNeoXConfig.from_dict(cfg)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_in" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            elif "lm_head" in name or "embed_out" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
            else:  # attention and MLP matrices: large enough that every block moves the logits
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    if fmt == "safetensors":
        model.save_pretrained(str(directory))
    elif fmt == "bin":
        torch.save(model.state_dict(), str(directory / "pytorch_model.bin"))
    else:
        raise ValueError(f"fmt {fmt!r}: use 'safetensors' or 'bin'")
    if config_style == "transformers5":
        model.config.save_pretrained(str(directory))  # config.json exactly as transformers writes it
    else:
        (directory / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    return directory, model


def save_torch_bin(model, like: str | Path, directory: str | Path) -> Path:
    """Save `model` as `torch.save(model.state_dict())` in `directory`, with config.json and tokenizer.json
    copied from the checkpoint directory `like`; returns the directory."""
    import shutil

    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(Path(like) / name, directory / name)
    torch.save(model.state_dict(), str(directory / "pytorch_model.bin"))
    return directory
