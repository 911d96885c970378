"""The checkpoint list per repo, on the fake Hub: a v0-like repo with 143 step branches and a current-like one with
154. The steps offered and accepted are the repo's own branches (remembered for offline use, a built-in list per
known repo as the last fallback); a step the repo lacks is refused before any download."""

from __future__ import annotations

import pytest
from tests.fakehub import FakeHub, files_from_dir

from pythia_compare.runs.compare import RunParams, iter_comparison
from pythia_compare.config import Settings
from pythia_compare.web.dashboard import Dashboard, load_catalog
from pythia_compare.runs.pool import ModelPool
from pythia_compare.sources.lineage import mixed_run_warnings
from pythia_compare.sources.resolver import Resolved
from pythia_compare.errors import SpecError
from pythia_compare.sources.hub import Hub
from pythia_compare.sources.resolver import Resolver
from pythia_compare.variants import PYTHIA_STEPS, V0_STEPS, parse_spec

V0 = "EleutherAI/pythia-410m-deduped-v0"
CURRENT = "EleutherAI/pythia-410m-deduped"


@pytest.fixture(scope="module")
def hub_server(tiny_ckpt):
    hub = FakeHub()
    ckpt = files_from_dir(tiny_ckpt)
    hub.add_step_branches(V0, V0_STEPS, files={3000: ckpt})
    hub.add_step_branches(CURRENT, PYTHIA_STEPS, files={3000: ckpt})
    for repo in (V0, CURRENT):
        hub.add_revision(repo, "main", {"config.json": b"{}"})
    hub.add_revision(V0 + "-gguf-like", "main", {"README.md": b"no steps here\n"})
    with hub:
        yield hub


def online(tmp_path, hub_server, **kw) -> Settings:
    return Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                    hub_endpoint=hub_server.endpoint, flash_attn=False, **kw)


def _downloads(hub_server, since: int) -> list[str]:
    return [r.path for r in hub_server.requests[since:] if "/resolve/" in r.path or r.server == "cdn"]


def test_the_v0_repo_offers_its_143_steps_and_the_current_repo_its_154(hub_server, tmp_path):
    hub = Hub(online(tmp_path, hub_server))
    assert hub.checkpoint_steps(V0) == V0_STEPS and len(V0_STEPS) == 143
    assert hub.checkpoint_steps(CURRENT) == PYTHIA_STEPS and len(PYTHIA_STEPS) == 154
    assert load_catalog(online(tmp_path, hub_server)).steps["pythia"] == V0_STEPS  # the default repo: v0
    assert load_catalog(online(tmp_path, hub_server, checkpoint_repo=CURRENT)).steps["pythia"] == PYTHIA_STEPS


def test_a_step_the_v0_repo_lacks_is_refused_before_any_download_naming_its_nearest_steps(hub_server, tmp_path):
    resolver = Resolver(online(tmp_path, hub_server))
    start = len(hub_server.requests)
    with pytest.raises(SpecError) as e:
        resolver.resolve(parse_spec("step512"))
    msg = str(e.value)
    assert f"{V0} has no checkpoint at step 512" in msg and "nearest it has are step1000, step2000" in msg
    assert "143 checkpoints, step1000 … step143000" in msg
    assert f"{CURRENT}@step512" in msg and "different training run" in msg
    assert _downloads(hub_server, start) == []
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.json"))


def test_a_run_refuses_a_missing_step_before_downloading_any_other_variant(hub_server, tmp_path, sample_text):
    settings = online(tmp_path, hub_server)
    start = len(hub_server.requests)
    events = iter_comparison(["step3000", "step1500:Q8_0"], sample_text, RunParams(max_tokens=0), settings=settings,
                             pool=None)
    with pytest.raises(SpecError, match=r"no checkpoint at step 1500; the nearest it has are step1000, step2000"):
        list(events)
    assert _downloads(hub_server, start) == []  # step3000 is fine, but nothing was fetched for it either


def test_the_current_repo_works_as_a_checkpoint_repo_with_its_own_steps(hub_server, tmp_path):
    resolver = Resolver(online(tmp_path, hub_server, checkpoint_repo=CURRENT))
    for spec in ("step0", "step512", "step3000", f"{CURRENT}@step1:Q4_K_M"):
        resolver.check_step(parse_spec(spec))  # no error: the current repo has them
    with pytest.raises(SpecError, match=r"the nearest it has are step512, step1000 \(154 checkpoints, step0 …"):
        resolver.check_step(parse_spec("step600"))
    with pytest.raises(SpecError, match=r"has no checkpoint at step 3; the nearest it has are step2, step4"):
        resolver.check_step(parse_spec(f"{CURRENT}@step3"))


def test_an_accepted_step_resolves_and_converts(hub_server, tmp_path):
    res = Resolver(online(tmp_path, hub_server)).resolve(parse_spec("step3000"))
    assert res.source["repo"] == V0 and res.path.is_file() and res.source["quant"] == "F16"


def test_offline_the_remembered_branch_list_decides_then_the_builtin_list_of_a_known_repo(hub_server, tmp_path):
    assert Hub(online(tmp_path, hub_server)).checkpoint_steps(CURRENT) == PYTHIA_STEPS  # remembered here
    offline = online(tmp_path, hub_server, offline=True)
    asked = len(hub_server.requests)
    assert Hub(offline).checkpoint_steps(CURRENT) == PYTHIA_STEPS
    with pytest.raises(SpecError, match="nearest it has are step2000, step3000"):
        Resolver(offline.replace(checkpoint_repo=CURRENT)).check_step(parse_spec("step2500"))
    fresh = offline.replace(home=tmp_path / "fresh-home")  # nothing remembered: the built-in lists
    assert Hub(fresh).checkpoint_steps(V0) == V0_STEPS
    with pytest.raises(SpecError, match="nearest it has are step1000, step2000"):
        Resolver(fresh).check_step(parse_spec("step1"))
    assert Hub(fresh).checkpoint_steps("someone/unknown-model") is None  # unknown: left to resolving
    assert len(hub_server.requests) == asked  # offline never asked the Hub


def test_an_unreachable_hub_falls_back_to_the_remembered_list(hub_server, tmp_path):
    Hub(online(tmp_path, hub_server)).checkpoint_steps(V0)
    down = online(tmp_path, hub_server).replace(hub_endpoint="http://127.0.0.1:9")
    assert Hub(down).checkpoint_steps(V0) == V0_STEPS


def test_the_offline_dashboard_offers_the_default_repos_steps(tmp_path):
    settings = Settings(home=tmp_path / "home", hf_cache_dir=tmp_path / "hf", offline=True)
    assert load_catalog(settings).steps["pythia"] == V0_STEPS
    assert load_catalog(settings.replace(checkpoint_repo=CURRENT)).steps["pythia"] == PYTHIA_STEPS


def _resolved(spec: str, repo: str | None) -> Resolved:
    return Resolved(parse_spec(spec), None, {"repo": repo})


def test_the_hub_quants_and_the_v0_checkpoints_count_as_one_training_run_and_the_current_repo_as_another():
    gguf = "RichardErkhov/EleutherAI_-_pythia-410m-deduped-v0-gguf"
    assert mixed_run_warnings([_resolved("Q8_0", gguf), _resolved("step3000", V0), _resolved("./a.gguf", None)]) == []
    assert mixed_run_warnings([_resolved("demo", "demo"), _resolved("demo@step0", "demo")]) == []
    (warning,) = mixed_run_warnings([_resolved("Q8_0", gguf), _resolved(f"{CURRENT}@step3000", CURRENT)])
    assert f"{V0} (Q8_0)" in warning and f"{CURRENT} (pythia-410m-deduped step3000 F16)" in warning
    assert "different training runs" in warning
    assert mixed_run_warnings([_resolved("demo", "demo"), _resolved("step3000", V0)])  # the demo is its own


def test_a_run_mixing_v0_and_current_checkpoints_warns_in_the_run_json_and_on_the_page(hub_server, tmp_path):
    settings = online(tmp_path, hub_server)
    dash = Dashboard(settings, pool=ModelPool(settings))
    run = None
    for kind, _f, _m, snapshot in dash.run(["step3000", f"{CURRENT}@step3000"], "Hello there, world. " * 4,
                                           RunParams(max_tokens=0), owner=None):
        run = snapshot if kind == "done" else run
    assert len(run.warnings) == 1 and "different training runs" in run.warnings[0]
    assert V0 in run.warnings[0] and CURRENT in run.warnings[0]
    assert "different training runs" in dash.status(run)
    dash.pool.close()
