"""checkpoint.py: HF checkpoints read into numpy, checked against torch / safetensors / transformers.

torch is used here only to write real files and to give the expected values; the reader never imports it.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as np_save_file
from safetensors.torch import load_file as torch_load_file
from safetensors.torch import save_file as torch_save_file

from pythia_compare.sources.checkpoint import (checkpoint_files, read_config, read_tensors,
                                       read_tokenizer_json)
from pythia_compare.errors import CheckpointError, UnsafePickle

CONFIG = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
          "intermediate_size": 32, "vocab_size": 16}


def expected(t: torch.Tensor) -> np.ndarray:
    """What read_tensors should give for a torch tensor: bf16 as float32, everything else as is."""
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def assert_same(got: dict[str, np.ndarray], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for name, t in want.items():
        e = expected(t)
        assert got[name].dtype == e.dtype, name
        assert got[name].shape == e.shape, name
        assert got[name].tobytes() == np.ascontiguousarray(e).tobytes(), name  # bit-exact


def listing(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


def refused(ckpt_dir: Path, fn, *phrases: str, error: type = CheckpointError) -> Exception:
    """fn(ckpt_dir) raises `error` whose message holds every phrase, and the dir is left unchanged."""
    before = listing(ckpt_dir)
    with pytest.raises(error) as info:
        fn(ckpt_dir)
    msg = str(info.value)
    for phrase in phrases:
        assert phrase in msg, msg
    assert listing(ckpt_dir) == before
    return info.value


def torch_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    shared = torch.randn(4, 3, generator=g)
    return {
        "gpt_neox.embed_in.weight": torch.randn(16, 8, generator=g),
        "gpt_neox.layers.0.attention.query_key_value.weight": torch.randn(24, 8, generator=g).half(),
        "embed_out.weight": torch.randn(16, 8, generator=g).to(torch.bfloat16),
        "transposed": base.t(),                       # non-contiguous view of a whole storage
        "sliced": base[1:4, 2:],                      # offset + strided view
        "shared.a": shared,                           # two tensors on one storage
        "shared.b": shared[2],
        "param": torch.nn.Parameter(torch.randn(3, generator=g)),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "mask": torch.tril(torch.ones(3, 3, dtype=torch.bool)),
        "steps": torch.arange(5),
    }


def write_dir(d: Path, config: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config or CONFIG))
    return d


# --------------------------------------------------------------------------- pytorch_model.bin

def test_a_torch_saved_state_dict_reads_back_bit_exact_with_views_and_shared_storage(tmp_path):
    state = torch_state()
    torch.save(state, write_dir(tmp_path) / "pytorch_model.bin")
    got = read_tensors(tmp_path)
    assert_same(got, state)
    assert got["gpt_neox.layers.0.attention.query_key_value.weight"].dtype == np.float16
    assert got["embed_out.weight"].dtype == np.float32  # bf16 comes back as exact float32
    got["shared.a"][2] = 0  # arrays on a shared storage do not alias each other
    assert got["shared.b"].tobytes() == state["shared.b"].numpy().tobytes()


def test_an_nn_module_state_dict_with_its_metadata_attribute_reads_back(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).to(torch.float16)
    state = model.state_dict()
    assert hasattr(state, "_metadata")  # pickled with a BUILD opcode on the OrderedDict
    torch.save(state, write_dir(tmp_path) / "pytorch_model.bin")
    assert_same(read_tensors(tmp_path), dict(state))


def test_dtypes_torch_saves_as_untyped_storage_plus_dtype_read_back(tmp_path):
    # torch 2.13 writes uint16/uint32 via _rebuild_tensor_v3 + torch.storage.UntypedStorage + torch.<dtype>
    state = {"u16": torch.tensor([1, 65535, 7], dtype=torch.uint16),
             "u32": torch.tensor([0, 2**32 - 1], dtype=torch.uint32)}
    torch.save(state, write_dir(tmp_path) / "pytorch_model.bin")
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin") as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    assert b"_rebuild_tensor_v3" in pkl and b"UntypedStorage" in pkl
    assert_same(read_tensors(tmp_path), state)


def test_a_dtype_numpy_cannot_hold_is_refused_by_name(tmp_path):
    torch.save({"w": torch.zeros(2, dtype=torch.float8_e4m3fn)}, write_dir(tmp_path) / "pytorch_model.bin")
    err = refused(tmp_path, read_tensors, "pytorch_model.bin", "unsupported dtype torch.float8_e4m3fn")
    assert type(err) is CheckpointError  # a real torch dtype, not a hostile global


def test_a_big_endian_archive_is_byteswapped(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "le.bin")
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    write_dir(tmp_path / "ck")
    rewrite_zip(tmp_path / "le.bin", tmp_path / "ck" / "pytorch_model.bin",
                {"byteorder": b"big", "data/0": values.astype(">f4").tobytes()})
    got = read_tensors(tmp_path / "ck")["w"]
    assert got.dtype == np.float32 and got.tobytes() == values.tobytes()


def test_sharded_bin_checkpoints_read_through_their_index(tmp_path):
    state = torch_state()
    names = list(state)
    write_dir(tmp_path)
    shards = {"pytorch_model-00001-of-00002.bin": names[:5], "pytorch_model-00002-of-00002.bin": names[5:]}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, tmp_path / shard)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}))
    assert_same(read_tensors(tmp_path), state)
    assert checkpoint_files(tmp_path) == [tmp_path / "config.json", tmp_path / "pytorch_model.bin.index.json",
                                          *(tmp_path / s for s in sorted(shards))]


# --------------------------------------------------------------------------- safetensors

def test_a_numpy_written_safetensors_file_reads_back_equal(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float16),
              "c": np.arange(6, dtype=np.int64).reshape(2, 3), "d": np.array([True, False])}
    np_save_file(arrays, str(write_dir(tmp_path) / "model.safetensors"))
    got = read_tensors(tmp_path)
    assert set(got) == set(arrays)
    for k, a in arrays.items():
        assert got[k].dtype == a.dtype and np.array_equal(got[k], a)


def test_a_torch_written_safetensors_file_with_bf16_reads_back_bit_exact(tmp_path):
    state = {k: v.detach().contiguous() for k, v in torch_state().items() if k != "shared.b"}
    state["edge"] = torch.tensor([3e38, -0.0, 1e-40, float("inf"), 1.0 / 3], dtype=torch.bfloat16)
    torch_save_file(state, str(write_dir(tmp_path) / "model.safetensors"))
    got = read_tensors(tmp_path)
    assert_same({k: got[k] for k in state}, state)


def test_a_transformers_sharded_safetensors_checkpoint_reads_back(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(tmp_path, max_shard_size="8KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (tmp_path / "model.safetensors.index.json").is_file()
    got = read_tensors(tmp_path)
    want = {k: v for s in shards for k, v in torch_load_file(str(tmp_path / s)).items()}
    assert set(got) == set(want) and len(got) == len(model.state_dict())
    for k, t in want.items():
        assert got[k].dtype == np.float16 and np.array_equal(got[k], t.numpy()), k
    assert np.array_equal(got["gpt_neox.embed_in.weight"], model.state_dict()["gpt_neox.embed_in.weight"])
    assert read_config(tmp_path)["hidden_size"] == 16
    files = checkpoint_files(tmp_path)
    assert [p.name for p in files] == ["config.json", "model.safetensors.index.json", *shards]


def test_safetensors_is_preferred_when_both_formats_exist(tmp_path):
    write_dir(tmp_path)
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    np_save_file({"w": np.ones(2, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    assert np.array_equal(read_tensors(tmp_path)["w"], np.ones(2))
    assert [p.name for p in checkpoint_files(tmp_path)] == ["config.json", "model.safetensors"]


# --------------------------------------------------------------------------- config and tokenizer

def test_config_and_a_real_bpe_tokenizer_json_are_read(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.save(str(write_dir(tmp_path) / "tokenizer.json"))
    assert read_config(tmp_path) == CONFIG
    assert read_tokenizer_json(tmp_path)["model"]["vocab"] == {"a": 0, "b": 1, "ab": 2}


# --------------------------------------------------------------------------- hostile pickles

def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _arg(v: object) -> bytes:
    return pickle.dumps(v, protocol=2)[2:-1]  # the value's opcodes without PROTO and STOP


def call_pickle(module: str, name: str, args: tuple, stack_global: bool) -> bytes:
    """{'weight': module.name(*args)} as a pickle, naming the global by GLOBAL or STACK_GLOBAL."""
    ref = (_str(module) + _str(name) + b"\x93") if stack_global else f"c{module}\n{name}\n".encode()
    proto = b"\x80\x04" if stack_global else b"\x80\x02"
    return proto + b"}(" + _str("weight") + ref + b"(" + b"".join(map(_arg, args)) + b"tRu."


def torch_layout_zip(path: Path, data_pkl: bytes) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/data/0", b"\0" * 8)
        zf.writestr("archive/version", "3\n")


def payloads(canary: Path) -> dict[str, tuple[str, str, tuple]]:
    touch = f"touch {canary}"
    return {
        "os.system": ("os", "system", (touch,)),
        "posix.system": ("posix", "system", (touch,)),
        "builtins.eval": ("builtins", "eval", (f"open({str(canary)!r}, 'w').close()",)),
        "subprocess.Popen": ("subprocess", "Popen", (["touch", str(canary)],)),
        "subprocess.call": ("subprocess", "call", (["touch", str(canary)],)),
    }


@pytest.mark.parametrize("stack_global", [False, True], ids=["GLOBAL", "STACK_GLOBAL"])
@pytest.mark.parametrize("which", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen",
                                   "subprocess.call"])
def test_a_code_running_pickle_is_refused_and_never_runs(tmp_path, which, stack_global):
    canary = tmp_path / "CANARY"
    module, name, args = payloads(canary)[which]
    torch_layout_zip(write_dir(tmp_path / "ck") / "pytorch_model.bin",
                     call_pickle(module, name, args, stack_global))
    refused(tmp_path / "ck", read_tensors, "pytorch_model.bin", f"global {which}", error=UnsafePickle)
    assert not canary.exists()


@pytest.mark.parametrize("which", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_the_hostile_payloads_do_run_code_under_plain_pickle(tmp_path, which):
    # Proves the refusals above are real: the same bytes, unpickled without the allow-list, run code.
    canary = tmp_path / "CANARY"
    module, name, args = payloads(canary)[which]
    result = pickle.loads(call_pickle(module, name, args, stack_global=True))["weight"]
    if which == "subprocess.Popen":
        result.wait()
    assert canary.exists()


@pytest.mark.parametrize("module, name", [
    ("mymodule", "thing"),                          # an unknown global
    ("torch", "_rebuild_tensor_v2"),                # an allowed name from the wrong module
    ("os", "FloatStorage"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),  # a real torch._utils function, not allowed
    ("torch", "load"),                              # an allowed module, a name outside the list
    ("builtins", "getattr"),
])
def test_a_global_outside_the_allow_list_is_refused_by_name(tmp_path, module, name):
    canary = tmp_path / "CANARY"
    torch_layout_zip(write_dir(tmp_path / "ck") / "pytorch_model.bin",
                     call_pickle(module, name, (f"touch {canary}",), stack_global=False))
    refused(tmp_path / "ck", read_tensors, f"global {module}.{name}", error=UnsafePickle)
    assert not canary.exists()


def test_setting_the_state_of_an_allowed_global_is_refused(tmp_path):
    # BUILD on the _rebuild_tensor_v2 stand-in would otherwise let a pickle change its attributes.
    data = b"\x80\x02}(" + _str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n}" + _str("x") + b"K\x01sbu."
    torch_layout_zip(write_dir(tmp_path) / "pytorch_model.bin", data)
    refused(tmp_path, read_tensors, "set the state", error=UnsafePickle)


# --------------------------------------------------------------------------- malformed inputs

def rewrite_zip(src: Path, dst: Path, changes: dict[str, bytes | None]) -> None:
    """Copy a torch zip, replacing (bytes) or dropping (None) entries named relative to its prefix."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            rel = info.filename.split("/", 1)[1]
            if rel in changes:
                if changes[rel] is not None:
                    zout.writestr(info.filename, changes[rel])
            else:
                zout.writestr(info.filename, zin.read(info))


def test_a_truncated_zip_is_refused_and_leaves_no_file(tmp_path):
    torch.save(torch_state(), tmp_path / "full.bin")
    raw = (tmp_path / "full.bin").read_bytes()
    (write_dir(tmp_path / "ck") / "pytorch_model.bin").write_bytes(raw[: len(raw) // 2])
    refused(tmp_path / "ck", read_tensors, "pytorch_model.bin", "not a readable zip archive")


def test_a_zip_missing_a_storage_entry_is_refused_by_entry_name(tmp_path):
    torch.save({"w": torch.ones(3), "v": torch.ones(2)}, tmp_path / "full.bin")
    write_dir(tmp_path / "ck")
    rewrite_zip(tmp_path / "full.bin", tmp_path / "ck" / "pytorch_model.bin", {"data/1": None})
    refused(tmp_path / "ck", read_tensors, "storage entry full/data/1 is missing")


def test_a_storage_entry_of_the_wrong_length_is_refused(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "full.bin")
    write_dir(tmp_path / "ck")
    rewrite_zip(tmp_path / "full.bin", tmp_path / "ck" / "pytorch_model.bin", {"data/0": b"\0" * 8})
    refused(tmp_path / "ck", read_tensors, "holds 8 bytes", "says 12")


def test_a_flipped_byte_in_a_storage_entry_fails_the_zip_checksum(tmp_path):
    torch.save({"w": torch.arange(64, dtype=torch.float32)}, tmp_path / "full.bin")
    raw = bytearray((tmp_path / "full.bin").read_bytes())
    at = raw.index(np.arange(64, dtype=np.float32).tobytes())
    raw[at + 100] ^= 0xFF
    (write_dir(tmp_path / "ck") / "pytorch_model.bin").write_bytes(bytes(raw))
    refused(tmp_path / "ck", read_tensors, "pytorch_model.bin", "CRC")


def test_torchs_legacy_non_zip_format_is_refused_with_the_reason(tmp_path):
    torch.save({"w": torch.ones(2)}, write_dir(tmp_path) / "pytorch_model.bin",
               _use_new_zipfile_serialization=False)
    refused(tmp_path, read_tensors, "pytorch_model.bin", "not a readable zip archive", "pre-1.6")


def test_a_zip_that_is_not_torchs_layout_is_refused(tmp_path):
    with zipfile.ZipFile(write_dir(tmp_path) / "pytorch_model.bin", "w") as zf:
        zf.writestr("readme.txt", "hello")
    refused(tmp_path, read_tensors, "not torch's layout", "data.pkl")


def test_a_pickled_value_that_is_not_a_tensor_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "step": 7}, write_dir(tmp_path) / "pytorch_model.bin")
    refused(tmp_path, read_tensors, "'step' is a int, not a tensor")


def test_a_view_larger_than_its_storage_is_refused_before_allocating(tmp_path):
    # A stride-0 view of 10**12 elements over a 2-element storage would otherwise allocate 4 TB on copy.
    persid = _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu") + b"K\x02"
    view = b"((" + persid + b"tQ" + b"K\x00" + _arg((10**12,)) + _arg((0,)) + b"\x89" + _arg({}) + b"t"
    data = b"\x80\x02}(" + _str("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + view + b"Ru."
    torch_layout_zip(write_dir(tmp_path) / "pytorch_model.bin", data)
    refused(tmp_path, read_tensors, "'w'", "does not fit its storage of 2 elements")


def test_an_index_naming_a_shard_outside_the_directory_is_refused(tmp_path):
    np_save_file({"a": np.ones(2, dtype=np.float32)}, str(tmp_path / "outside.safetensors"))
    (write_dir(tmp_path / "ck") / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "../outside.safetensors"}}))
    refused(tmp_path / "ck", read_tensors, "'../outside.safetensors'", "plain file names")


def safetensors_bytes(header: dict, data: bytes, claimed_len: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if claimed_len is None else claimed_len) + h + data


@pytest.mark.parametrize("header, data, claimed, phrase", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 10**6,
     "header length 1000000 bytes is larger than the file"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlap"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, None,
     "outside the data area of 8 bytes"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "needs 12 bytes"),
    ({"a": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8, None,
     "unsupported dtype 'F8_E4M3'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "lacks dtype, shape or data_offsets"),
], ids=["header-past-end", "overlapping", "offsets-past-end", "shape-mismatch", "dtype", "no-offsets"])
def test_a_malformed_safetensors_header_is_refused_before_loading(tmp_path, header, data, claimed, phrase):
    (write_dir(tmp_path) / "model.safetensors").write_bytes(safetensors_bytes(header, data, claimed))
    refused(tmp_path, read_tensors, "model.safetensors", phrase)


def test_an_index_naming_a_missing_shard_is_refused_by_shard_name(tmp_path):
    np_save_file({"a": np.ones(2, dtype=np.float32)}, str(write_dir(tmp_path) / "model-1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}))
    refused(tmp_path, read_tensors, "model.safetensors.index.json", "missing", "model-2.safetensors")
    refused(tmp_path, checkpoint_files, "model-2.safetensors")


def test_an_index_whose_shard_lacks_a_listed_tensor_is_refused(tmp_path):
    np_save_file({"a": np.ones(2, dtype=np.float32)}, str(write_dir(tmp_path) / "model-1.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-1.safetensors", "b": "model-1.safetensors"}}))
    refused(tmp_path, read_tensors, "do not hold", "'b'")


def test_a_directory_without_weights_says_what_it_looked_for(tmp_path):
    write_dir(tmp_path)
    refused(tmp_path, read_tensors, "no weights", "model.safetensors", "pytorch_model.bin", "config.json")


def test_a_config_missing_required_keys_lists_them(tmp_path):
    write_dir(tmp_path, {"hidden_size": 8, "vocab_size": 16})
    refused(tmp_path, read_config, "config.json",
            "num_hidden_layers, num_attention_heads, intermediate_size")


def test_a_missing_or_invalid_config_is_refused_by_file_name(tmp_path):
    refused(tmp_path, read_config, "config.json not found")
    (tmp_path / "config.json").write_text("{not json")
    refused(tmp_path, read_config, "config.json is not valid JSON")


def test_a_tokenizer_of_the_wrong_model_type_is_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}}))
    refused(tmp_path, read_tokenizer_json, "tokenizer.json", "'WordPiece'", "byte-level BPE")
    (tmp_path / "tokenizer.json").write_text("[1, 2")
    refused(tmp_path, read_tokenizer_json, "tokenizer.json is not valid JSON")


def test_reading_a_bin_checkpoint_never_imports_torch(tmp_path):
    torch.save(torch_state(), write_dir(tmp_path) / "pytorch_model.bin")
    code = ("import sys; from pathlib import Path; from pythia_compare.sources.checkpoint import read_tensors; "
            f"n = len(read_tensors(Path({str(tmp_path)!r}))); "
            "print(n, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    assert out == [str(len(torch_state())), "False"]
