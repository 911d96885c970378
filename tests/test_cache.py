"""The cache of converted/quantized files: one build per entry across processes, full disks, list/prune."""

import json
import subprocess
import sys
import uuid

import pytest

from tests.support import ROOT, run_cli
from pythia_compare.sources.cache import Cache, file_sha256
from pythia_compare.errors import DiskFull

_BUILDER = r"""
import sys, time
from pathlib import Path
from pythia_compare.sources.cache import Cache
from pythia_compare.sources.convert import convert_checkpoint
log = Path(sys.argv[3])
def build(target):
    with open(log, "a") as f:
        f.write("build\n")
    time.sleep(1.0)  # widen the window in which a second process could start the same build
    convert_checkpoint(Path(sys.argv[2]), target, "F16")
e = Cache(sys.argv[4]).get_or_build({"repo": "t", "commit": "c", "quant": "F16"}, "m-F16.gguf", build)
print(e.sha256)
"""


def test_two_processes_building_the_same_entry_do_the_work_once(tiny_ckpt, tmp_path):
    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(ROOT), str(tiny_ckpt), str(log),
                               str(tmp_path / "home")], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert log.read_text().count("build") == 1
    assert outs[0] == outs[1] and len(outs[0]) == 64
    entry = Cache(tmp_path / "home").entries()[0]
    assert file_sha256(entry.path) == outs[0]
    assert [p.name for p in entry.path.parent.iterdir() if p.suffix == ".part"] == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs: writes past it fail with ENOSPC, as on a full disk."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", f"pc-{uuid.uuid4().hex[:6]}", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_leaves_no_partial_file_and_says_how_much_room_is_needed(tiny_ckpt, tiny_disk):
    from pythia_compare.sources.convert import convert_checkpoint

    cache = Cache(tiny_disk / "home")
    key = {"repo": "t", "commit": "c", "quant": "F32"}
    with pytest.raises(DiskFull) as e:
        cache.get_or_build(key, "m-F32.gguf", lambda target: convert_checkpoint(tiny_ckpt, target, "F32"))
    assert "MB" in str(e.value) or "bytes" in str(e.value)
    leftovers = [p for p in (tiny_disk / "home").rglob("*") if p.is_file() and p.name != ".lock"]
    assert leftovers == []
    assert cache.entries() == []


def test_a_full_disk_while_quantizing_leaves_no_partial_file(tiny_ggufs, tiny_disk):
    from pythia_compare.models.quantize import quantize_file

    big = tiny_disk / "filler"
    big.write_bytes(b"\0" * (2 * 1024 * 1024 - 600 * 1024))  # leave ~600 kB: too little for Q8_0 of F16
    with pytest.raises(DiskFull, match="MB"):
        quantize_file(tiny_ggufs["F16"], tiny_disk / "m-Q8_0.gguf", "Q8_0")
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]


def test_cache_list_and_prune_through_the_cli(demo_dir, tmp_path):
    base = ["--offline", "--db", str(tmp_path / "r.db"), "--home", str(tmp_path / "home")]
    hf = {"HF_HUB_CACHE": str(tmp_path / "hf")}  # the budget counts the Hugging Face cache too: this test's own
    out = tmp_path / "demo-q8.gguf"
    proc = run_cli([*base, "convert", "demo@step0", "--out", str(out), "--quant", "Q8_0"], env=hf)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"GGUF"
    listed = run_cli([*base, "cache", "list"], env=hf)
    assert listed.returncode == 0 and "F16" in listed.stdout and "Q8_0" in listed.stdout
    entries = Cache(tmp_path / "home").entries()
    assert len(entries) == 2 and all(json.loads((e.path.parent / "meta.json").read_text())["sha256"] == e.sha256
                                     for e in entries)
    keep = max(e.bytes for e in entries)
    pruned = run_cli([*base, "cache", "prune", "--max-size", str(keep)], env=hf)
    assert pruned.returncode == 0 and "removed 1 files" in pruned.stdout
    assert len(Cache(tmp_path / "home").entries()) == 1
    bad = run_cli([*base, "cache", "prune", "--max-size", "lots"], env=hf)
    assert bad.returncode == 2 and "--max-size" in bad.stderr


def test_converting_a_directory_to_a_quant_writes_one_gguf_and_nothing_else(tiny_ckpt, tmp_path):
    out = tmp_path / "out" / "m.gguf"
    out.parent.mkdir()
    proc = run_cli(["--home", str(tmp_path / "h"), "convert", str(tiny_ckpt), "--out", str(out), "--quant", "Q4_K_M"])
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.parent.iterdir()] == ["m.gguf"]
    from pythia_compare.sources.resolver import _gguf_quant

    assert _gguf_quant(out) == "Q4_K_M"
    assert out.stat().st_mode & 0o777 == 0o644, "the written model must be readable like any other file"


def test_file_hashes_are_remembered_across_processes(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"x" * 1000)
    memo = tmp_path / "memo.json"
    digest = file_sha256(f, memo)
    assert json.loads(memo.read_text()) == {f"{f.resolve()}|1000|{f.stat().st_mtime_ns}": digest}
    import hashlib

    assert digest == hashlib.sha256(b"x" * 1000).hexdigest()
