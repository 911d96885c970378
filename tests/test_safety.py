"""A public Space faces the internet (issue 9, safety): hostile GGUF files, server paths, odd numbers and text.

Every crafted file of ggufcraft.CASES goes three ways, as an attacker would send it: through the CLI, through the
API of a running local app (`python app.py`, as a path spec) and through the API of a running public app (SPACE_ID
set, PYTHIA_COMPARE_PUBLIC=0 trying to turn it off) that fetches it from the fake Hub as `crafted/<case>:Q8_0`.
Each gets a refusal naming the file and what is wrong, and the server still answers: a demo run succeeds after
it. A public app refuses every local path with one message, whatever is at the path. Real parts throughout: real
llama.cpp in the probe subprocess, real app.py processes, the real huggingface_hub client against the fake Hub.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.support import ROOT, run_cli
from tests.fakehub import FakeHub, files_from_dir
from tests.ggufcraft import CASES, build_corpus
from pythia_compare.runs.compare import RunParams, iter_comparison
from pythia_compare.config import Settings
from pythia_compare.errors import ModelFileError
from pythia_compare.sources.policy import LOCAL_REFUSED, NotAllowed, check_variant
from pythia_compare.sources.probe import VERDICTS, ensure_loadable
from pythia_compare.sources.resolver import _gguf_quant, gguf_scan
from pythia_compare.variants import parse_spec
from tests.ui_support import PROMPT, app_env, free_port, launch_chromium, start_app, stop, wait_until_up

IDS = [c.name for c in CASES]
GOOD = "crafted/good"
CKPT = "crafted/ckpt"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("safety")


@pytest.fixture(scope="module")
def tiny_dir(work) -> Path:
    from tests.tinymodels import make_checkpoint

    return make_checkpoint(work / "ckpt", seed=3)


@pytest.fixture(scope="module")
def valid_gguf(work, tiny_dir) -> Path:
    """A small real model (2.5 MB, Q8_0 by llama.cpp's quantizer): the file every crafted one is made from."""
    from pythia_compare.sources.convert import convert_checkpoint
    from pythia_compare.models.quantize import quantize_file

    f16 = convert_checkpoint(tiny_dir, work / "tiny-F16.gguf", "F16")
    return quantize_file(f16, work / "tiny-Q8_0.gguf", "Q8_0")


@pytest.fixture(scope="module")
def corpus(work, valid_gguf) -> dict[str, Path]:
    return build_corpus(valid_gguf, work / "crafted")


@pytest.fixture(scope="module")
def hub(corpus, valid_gguf, tiny_dir):
    """The fake Hub: each crafted file as the Q8_0 GGUF of its own repo, a good one, and a checkpoint repo."""
    h = FakeHub()
    for name, path in corpus.items():
        h.add_revision(f"crafted/{name}", "main", {f"{name}.Q8_0.gguf": path.read_bytes()})
    h.add_revision(GOOD, "main", {"good.Q8_0.gguf": valid_gguf.read_bytes()})
    ckpt = files_from_dir(tiny_dir)
    for step in (1, 2, 3):
        h.add_revision(CKPT, f"step{step}", ckpt)
    with h:
        yield h


@pytest.fixture(scope="module")
def local_app(work, demo_dir):
    """`python app.py` offline on this machine (not public): local paths are specs like any other."""
    d = work / "local-app"
    d.mkdir()
    proc, url = start_app(d, demo_dir)
    yield proc, url, d
    stop(proc)


@pytest.fixture(scope="module")
def public_app(work, demo_dir, hub):
    """`python app.py` as on a Space: SPACE_ID set (PYTHIA_COMPARE_PUBLIC=0 must not undo it), online against
    the fake Hub, the crafted repos on its allow-list."""
    d = work / "public-app"
    d.mkdir()
    port = free_port()
    env = app_env(d, demo_dir, port)
    env.pop("PYTHIA_COMPARE_OFFLINE")
    allowed = [f"crafted/{c.name}" for c in CASES] + [GOOD]
    env.update({"SPACE_ID": "someone/pythia-compare", "PYTHIA_COMPARE_PUBLIC": "0", "HF_ENDPOINT": hub.endpoint,
                "PYTHIA_COMPARE_ALLOWED_REPOS": ",".join(allowed)})
    log = open(d / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=str(d), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, proc, d / "app.log")
        yield proc, url, d
    finally:
        stop(proc)


_CLIENTS: dict[str, Client] = {}


def call(url: str, specs: str, *, family: str = "demo", **over) -> tuple[bool, object]:
    """One /compare call through gradio_client: (True, run JSON) or (False, the error message shown)."""
    args = dict(family=family, quants=[], steps=[], specs=specs, reference="", prompt=PROMPT, text="",
                text_file=None, scoring="auto", ctx=512, top_k=5, max_tokens=1, temperature=0, seed=0, owner=None)
    args.update(over)
    if url not in _CLIENTS:
        _CLIENTS[url] = Client(url, verbose=False)
    try:
        return True, _CLIENTS[url].predict(*args.values(), api_name="/compare")
    except AppError as e:
        return False, str(e)


def assert_still_serving(proc: subprocess.Popen, url: str) -> None:
    assert proc.poll() is None, f"the server process ended with {proc.returncode}"
    ok, run = call(url, "demo:Q2_K")
    assert ok and run["run_id"] and run["variants"][0]["ppl"] > 1, run


def assert_names(message: str, file_name: str, case) -> None:
    assert file_name in message, message
    assert re.search(case.says, message), (case.name, message)
    assert "MemoryError" not in message and "Something went wrong" not in message, message


# ------------------------------------------------------------------------------------------ hostile files
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_crafted_gguf_named_in_the_cli_exits_2_naming_the_file_and_what_is_wrong(case, corpus, work):
    proc = run_cli(["--offline", "--db", str(work / "cli.db"), "--home", str(work / "cli-home"), "compare",
                    str(corpus[case.name]), "--prompt", PROMPT, "--max-tokens", "1"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert_names(proc.stderr, f"{case.name}.gguf", case)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_crafted_gguf_named_as_a_path_on_a_local_app_is_refused_and_the_app_keeps_serving(case, corpus,
                                                                                          local_app):
    proc, url, _ = local_app
    ok, message = call(url, str(corpus[case.name]))
    assert not ok
    assert_names(message, f"{case.name}.gguf", case)
    assert str(corpus[case.name].parent) not in message  # the page shows no server path
    assert_still_serving(proc, url)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_crafted_gguf_fetched_from_the_hub_by_a_public_app_is_refused_and_the_app_keeps_serving(case, public_app,
                                                                                                hub):
    proc, url, _ = public_app
    ok, message = call(url, f"crafted/{case.name}:Q8_0")
    assert not ok
    assert_names(message, f"{case.name}.Q8_0.gguf", case)
    assert hub.downloads_of(f"{case.name}.Q8_0.gguf"), "the file was not fetched: the loader was never reached"
    assert_still_serving(proc, url)


def test_the_header_reader_bounds_every_length_and_count_of_any_bytes(corpus, valid_gguf):
    """The crafted files and 400 random damages of a real header: a quant, None, or ModelFileError; never an
    allocation the file asked for (MemoryError), nor any other exception."""
    data = valid_gguf.read_bytes()
    rng = random.Random(9)
    damaged = valid_gguf.parent / "damaged.gguf"
    samples = list(corpus.values())
    for i in range(400):
        out = bytearray(data[: rng.choice([24, 200, 3000, len(data)])])
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(4, min(len(out), 4096))
            out[at] = rng.randrange(256) if i % 2 else out[at] ^ 0xFF
        damaged.write_bytes(bytes(out))
        samples.append(damaged)
        for reader in (_gguf_quant, gguf_scan):
            try:
                reader(damaged)
            except ModelFileError as e:
                assert "damaged.gguf" in str(e)
        samples.pop()
    for path in samples:
        for reader in (_gguf_quant, gguf_scan):
            try:
                reader(path)
            except ModelFileError as e:
                assert path.name in str(e)
    assert gguf_scan(valid_gguf)[0]["gptneox.block_count"] == 2


def test_a_probe_verdict_is_kept_by_content_so_a_hostile_file_is_refused_at_once_the_next_time(corpus, valid_gguf,
                                                                                               tmp_path):
    settings = Settings(home=tmp_path / "home", db_path=tmp_path / "r.db", offline=True)
    bad = corpus["block-count-huge"]
    with pytest.raises(ModelFileError, match="block_count is 2147483647") as first:
        ensure_loadable(bad, settings)
    ensure_loadable(valid_gguf, settings)
    table = json.loads((tmp_path / "home" / VERDICTS).read_text())
    assert sorted(v["ok"] for v in table.values()) == [False, True]
    # A probe now could not finish in a microsecond: the answers below come from the verdicts.
    hurried = settings.replace(probe_timeout_s=1e-6)
    renamed = tmp_path / "innocent-name.gguf"
    shutil.copyfile(bad, renamed)
    with pytest.raises(ModelFileError) as again:
        ensure_loadable(renamed, hurried)
    assert str(again.value) == str(first.value).replace("block-count-huge.gguf", "innocent-name.gguf")
    ensure_loadable(valid_gguf, hurried)
    fresh = tmp_path / "fresh.gguf"
    fresh.write_bytes(valid_gguf.read_bytes() + b"\0" * 32)  # new content: a new probe, which times out
    with pytest.raises(ModelFileError, match="took longer than"):
        ensure_loadable(fresh, hurried)


# ------------------------------------------------------------------------------------------ public mode
def _upload(url: str, name: str, data: bytes) -> str:
    r = httpx.post(url + "gradio_api/upload", files={"files": (name, data, "application/octet-stream")}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_a_public_app_refuses_every_local_path_with_one_message_before_opening_anything(public_app, valid_gguf,
                                                                                       corpus):
    proc, url, d = public_app
    # Uploads are capped at 1 MiB: a hostile header and a bit of data, and a file of any other content.
    uploaded = _upload(url, "model.gguf", corpus["block-count-huge"].read_bytes()[:500_000])
    uploaded_good = _upload(url, "notes.txt", b"just text\n")
    assert Path(uploaded).is_file() and Path(uploaded).is_absolute()
    paths = ["/etc/shadow", "/etc/nonexistent", "/etc", "/etc/passwd", uploaded, uploaded_good, str(valid_gguf),
             str(d / "home"), "./model.gguf", "../../../../etc/hostname", "~/.bashrc", "model.gguf"]
    messages = {}
    for p in paths:
        ok, messages[p] = call(url, p)
        assert not ok
        ok, as_reference = call(url, "demo:Q2_K", reference=p)
        assert not ok and as_reference == messages[p]
    assert set(messages.values()) == {LOCAL_REFUSED}, messages
    # Nothing was opened: no file was hashed or probed.
    for name in ("sha256-memo.json", VERDICTS):
        f = d / "home" / name
        assert not f.exists() or not any(p in f.read_text() for p in (uploaded, uploaded_good, "/etc")), name
    assert_still_serving(proc, url)


def test_a_public_app_fetches_nothing_from_a_repo_off_its_allow_list(public_app, hub):
    proc, url, _ = public_app
    before = len(hub.requests)
    for spec in ("someone/else:Q8_0", "someone/else@step1000", "etc/shadow"):
        ok, message = call(url, spec)
        assert not ok and "public deployment runs models of" in message and GOOD in message, message
    assert not [r for r in hub.requests[before:] if "someone/else" in r.path or "etc/shadow" in r.path]


def test_a_public_run_carries_no_server_path_in_its_json_or_on_its_page(public_app, hub):
    from playwright.sync_api import sync_playwright

    proc, url, d = public_app
    ok, run = call(url, f"{GOOD}:Q8_0")
    assert ok, run
    assert [v["source"]["file"] for v in run["variants"]] == ["good.Q8_0.gguf"]
    ok, demo_run = call(url, "demo:Q2_K", reference="demo:F16")  # files this app built in its cache
    assert ok, demo_run
    assert [e["source"]["file"] for e in (demo_run["reference"], *demo_run["variants"])] == [
        "demo-step800-F16.gguf", "demo-step800-Q2_K.gguf"]
    for r in (run, demo_run):
        text = json.dumps(r, ensure_ascii=False)
        for server_path in (str(d), str(ROOT), "/tmp/", "/root", "/home/"):
            assert server_path not in text, server_path
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.goto(f"{url}?run={run['run_id']}")
        page.locator("#pc-status").get_by_text(run["run_id"], exact=False).wait_for(timeout=60_000)
        page.wait_for_function("() => document.querySelector('#pc-summary').innerText.includes('good Q8_0')",
                               timeout=60_000)
        shown, html = page.locator("body").inner_text(), page.content()
        browser.close()
    for server_path in (str(d), str(ROOT), str(Path.home())):  # the app's folders: run log, caches, demo suite
        assert server_path not in shown and server_path not in html, server_path


def test_a_space_is_public_whatever_pythia_compare_public_says():
    assert Settings.from_env({"SPACE_ID": "a/b", "PYTHIA_COMPARE_PUBLIC": "0"}).public is True
    assert Settings.from_env({"SPACE_ID": "a/b"}, public=False).public is True
    assert Settings.from_env({"PYTHIA_COMPARE_PUBLIC": "0"}).public is False
    assert Settings.from_env({"PYTHIA_COMPARE_PUBLIC": "1"}).public is True
    s = Settings.from_env({"PYTHIA_COMPARE_ALLOWED_REPOS": "a/b, c/d e/f"})
    assert s.allowed_repos == ("a/b", "c/d", "e/f")


def test_public_mode_takes_the_default_repos_and_the_demo_suite_and_nothing_else_by_default():
    public = Settings(public=True)
    for spec in ("Q4_K_M", "step3000", "step3000:Q4_K_M", "demo", "demo@step0:Q2_K",
                 f"{public.gguf_repo}:Q8_0", f"{public.checkpoint_repo}@step1000"):
        check_variant(parse_spec(spec), public)
    for spec in ("someone/model:Q8_0", "/etc/shadow", "./m.gguf"):
        with pytest.raises(NotAllowed):
            check_variant(parse_spec(spec), public)
        check_variant(parse_spec(spec), Settings())  # a local install takes them all


def test_a_public_run_converts_at_most_its_cap_of_checkpoints_and_the_next_run_goes_on_from_the_cache(hub,
                                                                                                    tmp_path):
    from pythia_compare.runs.pool import ModelPool

    settings = Settings(public=True, allowed_repos=(CKPT,), max_conversions_public=2, hub_endpoint=hub.endpoint,
                        home=tmp_path / "home", hf_cache_dir=tmp_path / "hf", db_path=tmp_path / "r.db")
    specs = [f"{CKPT}@step{s}" for s in (1, 2, 3)]
    params = RunParams(max_tokens=0, top_k=3)
    pool = ModelPool(settings)
    try:
        with pytest.raises(NotAllowed, match="at most 2 per run") as e:
            list(iter_comparison(specs, PROMPT, params, settings=settings, pool=pool))
        assert "step3" in str(e.value)
        step3 = hub._revision(CKPT, "step3").commit
        assert not [r for r in hub.requests if f"/resolve/{step3}/" in r.path]  # its weights were not fetched
        events = list(iter_comparison(specs, PROMPT, params, settings=settings, pool=pool))
        assert [v.label for v in events[-1].run.variants] == ["ckpt step1 F16", "ckpt step2 F16",
                                                              "ckpt step3 F16"]
    finally:
        pool.close()


# ------------------------------------------------------------------------------------------ odd input
CLI_ODD = [(["--temperature", "nan"], "temperature"), (["--temperature", "inf"], "temperature"),
           (["--temperature", "-inf"], "temperature"), (["--ctx", "9" * 30], "ctx"),
           (["--seed", str(2**64)], "seed"), (["--top-k", "abc"], "top-k"), (["--max-tokens", "1e3"], "max-tokens"),
           (["--prompt", "ab\udcffcd"], "--prompt")]


@pytest.mark.parametrize("extra,field", CLI_ODD, ids=[f"{a[0]} {a[1][:8]!r}" for a, _ in CLI_ODD])
def test_odd_numbers_and_text_in_the_cli_exit_2_naming_the_field(extra, field, tmp_path):
    args = ["--offline", "--db", str(tmp_path / "r.db"), "--home", str(tmp_path / "home"), "compare", "demo:Q2_K"]
    if "--prompt" not in extra:
        args += ["--prompt", PROMPT]
    proc = run_cli(args + extra)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr and "Traceback" not in proc.stderr and "null" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r.db").exists()  # nothing written


NUMERIC = {"ctx": (9, "context"), "top_k": (10, "top-k"), "max_tokens": (11, "max new tokens"),
           "temperature": (12, "temperature"), "seed": (13, "seed")}
ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "123456789012345678901234567890", '"abc"', '"1e400"', "-5"]
TEXT_FIELDS = {"the spec box": 3, "the reference": 4, "the prompt": 5, "the text": 6}


def _raw_call(url: str, fn_index: int, data: str, session: str) -> dict:
    """A /compare call written by hand (JSON with NaN and lone-surrogate escapes, which gradio_client cannot send)."""
    body = ('{"data": %s, "fn_index": %d, "session_hash": "%s", "event_data": null, "trigger_id": null}'
            % (data, fn_index, session)).encode()
    joined = httpx.post(url + "gradio_api/queue/join", content=body, headers={"Content-Type": "application/json"},
                        timeout=60)
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", url + "gradio_api/queue/data", params={"session_hash": session}, timeout=300) as st:
        for line in st.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    return msg
    raise AssertionError("the call never completed")


def _fields() -> list[str]:
    return ['"demo"', "[]", "[]", '"demo:Q2_K"', '""', json.dumps(PROMPT), '""', "null", '"auto"', "512", "5", "1",
            "0", "0", "null", "false", "null", "0"]  # ... seed, owner, then the lens and the LAMBADA file and count


def test_odd_numbers_and_lone_surrogates_through_the_api_get_a_message_naming_the_field(local_app):
    proc, url, _ = local_app
    config = httpx.get(url + "config", timeout=60).json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "compare")
    n = 0
    for name, (at, label) in NUMERIC.items():
        for odd in ODD_NUMBERS:
            fields = _fields()
            fields[at] = odd
            n += 1
            msg = _raw_call(url, fn_index, "[" + ", ".join(fields) + "]", f"odd{n:04d}")
            assert msg["success"] is False, (name, odd, msg)
            error = (msg.get("output") or {}).get("error") or ""
            assert label in error.lower() or name.replace("_", "-") in error, (name, odd, error)
    for label, at in TEXT_FIELDS.items():
        fields = _fields()
        fields[at] = '"ab\\ud800cd"'
        n += 1
        msg = _raw_call(url, fn_index, "[" + ", ".join(fields) + "]", f"odd{n:04d}")
        error = (msg.get("output") or {}).get("error") or ""
        assert msg["success"] is False and label in error and "surrogate" in error, (label, error)
    assert_still_serving(proc, url)


def test_odd_numbers_typed_on_the_page_get_a_message_naming_the_field(local_app):
    from playwright.sync_api import sync_playwright

    proc, url, _ = local_app
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        page.goto(url)
        page.locator("#pc-settings").click()
        box = page.get_by_label("Context", exact=True)
        box.fill("99999")
        box.press("Tab")
        page.locator("#pc-run").click()
        toast = page.get_by_text("out of range", exact=False).first
        toast.wait_for(timeout=60_000)
        shown = toast.inner_text()
        browser.close()
    assert "Context 99999" in shown and "8 … 8192" in shown, shown  # the field as the page labels it
