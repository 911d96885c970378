"""Specs all the way to a loaded model through the real download path: a fake Hub on 127.0.0.1 serves a tiny
checkpoint repo (as EleutherAI's, with stepN branches) and a GGUF repo (as RichardErkhov's); the default
repo names are used, exactly as they would be against huggingface.co."""

import json

import pytest

from tests.support import run_cli
from tests.fakehub import FakeHub, files_from_dir
from pythia_compare.config import DEFAULT_CHECKPOINT_REPO, DEFAULT_GGUF_REPO, Settings
from pythia_compare.errors import OfflineMissing, SpecError
from pythia_compare.sources.resolver import Resolver
from pythia_compare.variants import parse_spec


@pytest.fixture(scope="module")
def fake_hub(tiny_ckpt, tiny_ggufs):
    hub = FakeHub()
    files = files_from_dir(tiny_ckpt)
    for step in (0, 1000, 3000, 143000):
        hub.add_revision(DEFAULT_CHECKPOINT_REPO, f"step{step}", files)
    hub.add_revision(DEFAULT_CHECKPOINT_REPO, "main", files)
    hub.add_revision(DEFAULT_GGUF_REPO, "main", {
        "pythia-410m-deduped-v0.Q8_0.gguf": tiny_ggufs["Q8_0"].read_bytes(),
        "pythia-410m-deduped-v0.Q4_K.gguf": tiny_ggufs["Q4_K_M"].read_bytes(), "README.md": b"# gguf"})
    with hub:
        yield hub


def _settings(tmp_path, endpoint, **kw):
    return Settings(db_path=tmp_path / "r.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                    hub_endpoint=endpoint, **kw)


def test_a_checkpoint_spec_downloads_converts_quantizes_and_caches(fake_hub, tmp_path):
    r = Resolver(_settings(tmp_path, fake_hub.endpoint))
    said = []
    res = r.resolve(parse_spec("step3000:Q4_K_M"), progress=said.append)
    assert res.path.read_bytes()[:4] == b"GGUF"
    src = res.source
    assert src["repo"] == DEFAULT_CHECKPOINT_REPO and len(src["commit"]) == 40 and src["quant"] == "Q4_K_M"
    assert any("converting" in m for m in said) and any("quantizing" in m for m in said)
    assert any(f"/resolve/{src['commit']}/" in q.path for q in fake_hub.requests)  # pinned to the commit
    again = Resolver(_settings(tmp_path, fake_hub.endpoint)).resolve(parse_spec("step3000:Q4_K_M"),
                                                                       progress=said.append)
    assert again.path == res.path and again.source == src  # cached: no second conversion
    assert sum("converting" in m for m in said) == 1


def test_a_quant_spec_downloads_the_gguf_repo_file_pinned_with_its_sha256(fake_hub, tmp_path, tiny_ggufs):
    import hashlib

    res = Resolver(_settings(tmp_path, fake_hub.endpoint)).resolve(parse_spec("Q4_K_M"))
    assert res.source["file"] == "pythia-410m-deduped-v0.Q4_K.gguf"  # the Hub's Q4_K alias
    assert res.source["sha256"] == hashlib.sha256(tiny_ggufs["Q4_K_M"].read_bytes()).hexdigest()
    assert str(tmp_path / "hf") in str(res.path)
    with pytest.raises(Exception) as e:
        Resolver(_settings(tmp_path, fake_hub.endpoint)).resolve(parse_spec("Q2_K"))
    assert "Q8_0" in str(e.value) and "Q4_K_M" in str(e.value)  # says which quants exist


def test_offline_a_warm_cache_still_works_and_a_cold_one_offers_demo(fake_hub, tmp_path):
    online = _settings(tmp_path, fake_hub.endpoint)
    Resolver(online).resolve(parse_spec("step1000"))
    warm = Resolver(online.replace(offline=True)).resolve(parse_spec("step1000"))
    assert warm.path.exists()
    with pytest.raises(OfflineMissing) as e:
        Resolver(online.replace(offline=True)).resolve(parse_spec("step0"))
    assert "demo" in str(e.value) and "step0" in str(e.value)


def test_compare_of_steps_through_the_cli_against_the_fake_hub(fake_hub, tmp_path):
    proc = run_cli(["--db", str(tmp_path / "r.db"), "--home", str(tmp_path / "home"), "compare", "step0",
                    "step3000:Q8_0", "--prompt", "Steps compared on one prompt.", "--json", "--max-tokens", "2",
                    "--reference", "none"],
                   env={"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "hf")})
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert [v["label"] for v in run["variants"]] == ["step0 F16", "step3000 Q8_0"]
    assert all(len(v["source"]["commit"]) == 40 for v in run["variants"])


def test_the_demo_alias_is_explicit_and_names_its_steps(demo_dir, tmp_path):
    s = Settings(db_path=tmp_path / "r.db", home=tmp_path / "home", offline=True)
    res = Resolver(s).resolve(parse_spec("demo@step0:Q8_0"))
    assert res.source["repo"] == "demo" and res.source["quant"] == "Q8_0" and len(res.source["commit"]) == 40
    with pytest.raises(SpecError, match="step0"):
        Resolver(s).resolve(parse_spec("demo@step7"))
