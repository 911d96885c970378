"""hub.py against a fake Hub on 127.0.0.1 (tests/fakehub.py), through the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from tests.fakehub import FakeHub, commit_sha

from pythia_compare.config import Settings
from pythia_compare.errors import HubError, MissingOnHub, OfflineMissing
from pythia_compare.sources.hub import Hub, HubUnreachable, quant_from_filename

CKPT = "EleutherAI/pythia-410m-deduped-v0"
GGUF = "RichardErkhov/EleutherAI_-_pythia-410m-deduped-v0-gguf"
GATED = "acme/gated-model"
TOKEN = "hf_fake_secret_token_123"
# Out of order on purpose: the server lists branches as given, and "step1000" < "step2" as strings.
STEPS = [1000, 2, 143000, 0, 512, 4, 1, 3000, 8, 2000]
STEM = "pythia-410m-deduped-v0"
GGUF_FILES = {
    f"{STEM}.Q2_K.gguf": b"GGUF-q2k" * 100,
    f"{STEM}.Q3_K.gguf": b"GGUF-q3k" * 100,
    f"{STEM}.Q3_K_S.gguf": b"GGUF-q3ks" * 100,
    f"{STEM}.Q4_K.gguf": b"GGUF-q4k" * 100,
    f"{STEM}.Q4_K_M.gguf": b"GGUF-q4km" * 100,
    f"{STEM}.Q5_K.gguf": b"GGUF-q5k" * 100,
    f"{STEM}-q8_0.gguf": b"GGUF-q80" * 100,
    f"{STEM}.f16.gguf": b"GGUF-f16" * 100,
    f"{STEM}.Q6_K_L.gguf": b"GGUF-q6kl" * 100,  # not a llama.cpp ftype: skipped
    "notes.gguf": b"GGUF-none",  # no quant in the name: skipped
    "README.md": b"# quants\n",
}


def ckpt_files(step: int) -> dict[str, bytes]:
    return {"config.json": json.dumps({"step": step}).encode(), "tokenizer.json": b'{"model": {}}',
            "model.safetensors": hashlib.sha256(b"w%d" % step).digest() * 64}


@pytest.fixture
def hub_server():
    hub = FakeHub()
    for step in STEPS:
        hub.add_revision(CKPT, f"step{step}", ckpt_files(step))
    hub.add_revision(CKPT, "main", ckpt_files(143000), commit=commit_sha(f"{CKPT}@step143000"))
    hub.add_revision(GGUF, "main", GGUF_FILES)
    hub.add_revision(GATED, "main", {"config.json": b"{}", "m.Q8_0.gguf": b"GGUF-gated" * 50})
    hub.gated[GATED] = TOKEN
    with hub:
        yield hub


def settings_for(tmp_path: Path, endpoint: str, **kw) -> Settings:
    return Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                    hub_endpoint=endpoint, **kw)


@pytest.fixture
def hub(hub_server, tmp_path) -> Hub:
    return Hub(settings_for(tmp_path, hub_server.endpoint))


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


# --- listing ---

def test_steps_are_listed_in_numeric_order_with_their_commit_shas(hub):
    steps = hub.list_steps(CKPT)
    assert [s for s, _ in steps] == [0, 1, 2, 4, 8, 512, 1000, 2000, 3000, 143000]
    assert all(sha == commit_sha(f"{CKPT}@step{s}") for s, sha in steps)


def test_a_revision_resolves_to_its_commit_and_none_means_main(hub):
    assert hub.resolve_commit(CKPT, "step3000") == commit_sha(f"{CKPT}@step3000")
    assert hub.resolve_commit(CKPT, None) == commit_sha(f"{CKPT}@step143000")
    sha = commit_sha(f"{CKPT}@step2")
    assert hub.resolve_commit(CKPT, sha) == sha


def test_gguf_files_are_read_as_canonical_quants_with_the_hub_aliases(hub):
    files = hub.list_gguf_files(GGUF)
    assert files == {
        "Q2_K": f"{STEM}.Q2_K.gguf",
        "Q3_K_M": f"{STEM}.Q3_K.gguf",  # alias Q3_K
        "Q3_K_S": f"{STEM}.Q3_K_S.gguf",
        "Q4_K_M": f"{STEM}.Q4_K_M.gguf",  # the canonical spelling wins over the alias Q4_K
        "Q5_K_M": f"{STEM}.Q5_K.gguf",
        "Q8_0": f"{STEM}-q8_0.gguf",
        "F16": f"{STEM}.f16.gguf",
    }


@pytest.mark.parametrize("name, quant", [
    ("pythia-410m-deduped-v0.Q4_K_M.gguf", "Q4_K_M"), ("pythia-410m-deduped-v0.Q3_K.gguf", "Q3_K_M"),
    ("model-q8_0.gguf", "Q8_0"), ("model.F16.gguf", "F16"), ("model_bf16.gguf", "BF16"),
    ("sub/dir/model.IQ4_XS.gguf", "IQ4_XS"), ("model.Q4_0_4_4.gguf", None), ("model.Q6_K_L.gguf", None),
    ("model-Q8_0-00001-of-00002.gguf", None), ("model.Q4_K_M.bin", None), ("model.gguf", None),
])
def test_quant_names_are_read_from_file_names(name, quant):
    assert quant_from_filename(name) == quant


# --- downloads ---

def test_a_pinned_download_returns_the_served_bytes_from_the_given_cache_and_asks_for_the_commit(hub, hub_server,
                                                                                                tmp_path):
    commit = hub.resolve_commit(GGUF, None)
    name = f"{STEM}.Q4_K_M.gguf"
    path = hub.download(GGUF, name, commit)
    assert path.read_bytes() == GGUF_FILES[name]
    assert path.resolve().is_relative_to((tmp_path / "hf").resolve())
    resolves = [r for r in hub_server.requests if "/resolve/" in r.path]
    assert resolves and all(r.path == f"/{GGUF}/resolve/{commit}/{name}" for r in resolves)
    assert len(hub_server.downloads_of(name)) == 1
    # A second call is served from the cache without a request.
    before = len(hub_server.requests)
    assert hub.download(GGUF, name, commit) == path
    assert len(hub_server.requests) == before


def test_a_connection_cut_mid_file_is_resumed_by_huggingface_hub_with_a_range_request(hub, hub_server, tmp_path):
    # huggingface_hub writes in 10 MiB chunks and resumes from what it wrote: cut after the first chunk.
    big = os.urandom(11 * 1024 * 1024)
    commit = hub_server.add_revision(GGUF, "big", {"big.Q8_0.gguf": big})
    hub_server.fail_next_download("big.Q8_0.gguf", after_bytes=10 * 1024 * 1024 + 4096)
    final = tmp_path / "hf" / f"models--{GGUF.replace('/', '--')}" / "snapshots" / commit / "big.Q8_0.gguf"
    seen = []
    hub_server.before_download = lambda r: seen.append(
        (final.exists(), sorted(p.stat().st_size for p in (tmp_path / "hf").rglob("*.incomplete"))))

    path = hub.download(GGUF, "big.Q8_0.gguf", commit)

    assert path == final and path.read_bytes() == big
    gets = hub_server.downloads_of("big.Q8_0.gguf")
    assert [r.headers.get("range") for r in gets] == [None, f"bytes={10 * 1024 * 1024}-"]
    # When the resume was asked for, the final path did not exist; the first part sat in an .incomplete file.
    assert seen == [(False, [0]), (False, [10 * 1024 * 1024])]
    assert not list((tmp_path / "hf").rglob("*.incomplete"))


def test_a_download_that_fails_midway_leaves_no_partial_file_and_a_retry_gets_the_right_bytes(hub, hub_server,
                                                                                            tmp_path):
    commit = hub.resolve_commit(GGUF, None)
    name = f"{STEM}.Q2_K.gguf"
    hub_server.fail_next_download(name, after_bytes=100)
    hub_server.refuse_next_download(name, status=503)  # huggingface_hub's own resume meets a down CDN

    with pytest.raises(HubError) as err:
        hub.download(GGUF, name, commit)
    assert not isinstance(err.value, MissingOnHub)
    assert name in str(err.value) and "503" in str(err.value) and "run again" in str(err.value)
    storage = tmp_path / "hf" / f"models--{GGUF.replace('/', '--')}"
    assert not (storage / "snapshots" / commit / name).exists()
    assert files_under(storage / "blobs") == [] and not list(storage.rglob("*.incomplete"))

    path = hub.download(GGUF, name, commit)
    assert path.read_bytes() == GGUF_FILES[name]
    assert len(hub_server.downloads_of(name)) == 3


def test_a_download_whose_bytes_do_not_match_the_lfs_sha256_is_deleted_and_refused(hub, hub_server, tmp_path):
    commit = hub.resolve_commit(GGUF, None)
    name = f"{STEM}-q8_0.gguf"
    hub_server.corrupt_next_download(name)
    with pytest.raises(HubError, match="sha256"):
        hub.download(GGUF, name, commit)
    storage = tmp_path / "hf" / f"models--{GGUF.replace('/', '--')}"
    assert not (storage / "snapshots" / commit / name).exists() and files_under(storage / "blobs") == []
    assert hub.download(GGUF, name, commit).read_bytes() == GGUF_FILES[name]


# --- friendly errors ---

def test_a_missing_repo_gives_missing_on_hub_naming_it(hub):
    with pytest.raises(MissingOnHub, match="no model repo 'nobody/nothing'.*HF_TOKEN"):
        hub.resolve_commit("nobody/nothing", None)
    with pytest.raises(MissingOnHub, match="nobody/nothing"):
        hub.list_steps("nobody/nothing")
    with pytest.raises(MissingOnHub, match="nobody/nothing"):
        hub.download("nobody/nothing", "config.json", commit_sha("x"))


def test_a_missing_revision_names_the_nearest_steps(hub):
    with pytest.raises(MissingOnHub) as err:
        hub.resolve_commit(CKPT, "step1500")
    msg = str(err.value)
    assert "step1500" in msg and "nearest are step1000, step2000" in msg and "step0 … step143000" in msg
    with pytest.raises(MissingOnHub, match="no revision 'experimental'.*main"):
        hub.resolve_commit(CKPT, "experimental")


def test_a_missing_file_lists_what_exists(hub):
    commit = hub.resolve_commit(GGUF, None)
    with pytest.raises(MissingOnHub) as err:
        hub.download(GGUF, f"{STEM}.Q5_K_S.gguf", commit)
    msg = str(err.value)
    assert f"{STEM}.Q5_K_S.gguf" in msg and "Q4_K_M" in msg and "Q8_0" in msg and "Q6_K_L" not in msg
    with pytest.raises(MissingOnHub, match="no file 'vocab.json'.*config.json, model.safetensors, tokenizer.json"):
        hub.download(CKPT, "vocab.json", hub.resolve_commit(CKPT, "step4"))


def test_a_gated_repo_needs_a_token_and_the_token_never_leaves_the_hub_or_shows_in_errors(hub_server, tmp_path):
    anonymous = Hub(settings_for(tmp_path, hub_server.endpoint))
    with pytest.raises(HubError) as err:
        anonymous.resolve_commit(GATED, None)
    assert not isinstance(err.value, MissingOnHub) and "gated" in str(err.value) and "HF_TOKEN" in str(err.value)

    wrong = Hub(settings_for(tmp_path, hub_server.endpoint, hf_token="hf_wrong_token_456"))
    with pytest.raises(HubError) as err:
        wrong.resolve_commit(GATED, None)
    assert "does not have access" in str(err.value) and "hf_wrong_token_456" not in str(err.value)

    granted = Hub(settings_for(tmp_path, hub_server.endpoint, hf_token=TOKEN))
    path = granted.download(GATED, "m.Q8_0.gguf", granted.resolve_commit(GATED, None))
    assert path.read_bytes() == b"GGUF-gated" * 50
    (cdn_get,) = hub_server.downloads_of("m.Q8_0.gguf")
    assert cdn_get.server == "cdn" and "authorization" not in cdn_get.headers
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub_server.requests if r.server == "hub")


# --- offline and unreachable ---

def test_offline_with_a_warm_cache_gives_the_same_files_with_the_server_stopped(hub, hub_server, tmp_path):
    commit = hub.resolve_commit(GGUF, "main")
    name = f"{STEM}.Q4_K_M.gguf"
    online_quants = hub.list_gguf_files(GGUF, commit)
    path = hub.download(GGUF, name, commit)
    hub.resolve_commit(CKPT, "step1000")
    hub_server.stop()

    offline = Hub(settings_for(tmp_path, hub_server.endpoint, offline=True))
    assert offline.resolve_commit(GGUF, None) == commit
    assert offline.list_gguf_files(GGUF) == online_quants  # the listing was remembered, not just the cached file
    assert offline.download(GGUF, name, commit) == path and path.read_bytes() == GGUF_FILES[name]
    assert offline.list_steps(CKPT) == [(1000, commit_sha(f"{CKPT}@step1000"))]
    # Not offline but unreachable: the same cached answers.
    unreachable = Hub(settings_for(tmp_path, hub_server.endpoint))
    assert unreachable.resolve_commit(GGUF, "main") == commit
    assert unreachable.list_gguf_files(GGUF, commit) == online_quants
    assert unreachable.download(GGUF, name, commit) == path


def test_offline_with_a_cold_cache_names_the_missing_file_and_offers_the_demo_suite(hub_server, tmp_path):
    offline = Hub(settings_for(tmp_path, hub_server.endpoint, offline=True))
    with pytest.raises(OfflineMissing) as err:
        offline.resolve_commit(CKPT, "step3000")
    assert all(s in str(err.value) for s in (CKPT, "step3000", "without --offline", "demo@step0"))
    commit = commit_sha(f"{CKPT}@step3000")
    with pytest.raises(OfflineMissing) as err:
        offline.download(CKPT, "model.safetensors", commit)
    assert all(s in str(err.value) for s in (CKPT, "model.safetensors", commit, "demo:Q4_K_M"))
    with pytest.raises(OfflineMissing, match="demo"):
        offline.download_checkpoint(CKPT, commit)
    assert hub_server.requests == []  # offline sends nothing


def test_connection_refused_gives_a_clear_error_that_suggests_offline_and_demo(hub_server, tmp_path):
    hub_server.stop()
    hub = Hub(settings_for(tmp_path, hub_server.endpoint))
    commit = commit_sha(f"{CKPT}@step3000")
    for call in (lambda: hub.resolve_commit(CKPT, "step3000"), lambda: hub.list_steps(CKPT),
                 lambda: hub.list_gguf_files(CKPT, commit), lambda: hub.download(CKPT, "config.json", commit),
                 lambda: hub.download_checkpoint(CKPT, commit)):
        with pytest.raises(HubUnreachable) as err:
            call()
        msg = str(err.value)
        assert "cannot reach the Hub at http://127.0.0.1" in msg and "--offline" in msg and "demo@step0" in msg
        assert not isinstance(err.value, MissingOnHub)


# --- checkpoints ---

def test_a_checkpoint_download_fetches_only_config_tokenizer_and_the_preferred_weights(hub, hub_server):
    files = {**ckpt_files(7), "pytorch_model.bin": b"pickle" * 10, "README.md": b"hi", "flax_model.msgpack": b"x"}
    commit = hub_server.add_revision(CKPT, "both-formats", files)
    folder = hub.download_checkpoint(CKPT, commit)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub_server.requests if "/resolve/" in r.path}
    assert fetched == {"config.json", "model.safetensors", "tokenizer.json"}


def test_sharded_and_pickle_checkpoints_bring_every_file_they_need(hub, hub_server):
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    sharded = {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode(),
               "model-00001-of-00002.safetensors": b"s1" * 99, "model-00002-of-00002.safetensors": b"s2" * 99}
    folder = hub.download_checkpoint(CKPT, hub_server.add_revision(CKPT, "sharded", sharded))
    assert sorted(p.name for p in folder.iterdir()) == sorted(sharded)
    pickled = {"config.json": b"{}", "tokenizer.json": b"{}", "pytorch_model.bin": b"pk" * 50}
    folder = hub.download_checkpoint(CKPT, hub_server.add_revision(CKPT, "pickled", pickled))
    assert (folder / "pytorch_model.bin").read_bytes() == pickled["pytorch_model.bin"]


def test_a_checkpoint_without_a_tokenizer_is_refused_naming_the_file(hub, hub_server):
    commit = hub_server.add_revision(CKPT, "no-tokenizer", {"config.json": b"{}", "model.safetensors": b"w" * 10})
    with pytest.raises(MissingOnHub, match="has no tokenizer.json.*config.json, model.safetensors"):
        hub.download_checkpoint(CKPT, commit)


def test_a_checkpoint_downloaded_once_is_found_offline(hub, hub_server, tmp_path):
    commit = hub.resolve_commit(CKPT, "step512")
    folder = hub.download_checkpoint(CKPT, commit)
    hub_server.stop()
    offline = Hub(settings_for(tmp_path, hub_server.endpoint, offline=True))
    assert offline.download_checkpoint(CKPT, offline.resolve_commit(CKPT, "step512")) == folder
    assert json.loads((folder / "config.json").read_text()) == {"step": 512}
