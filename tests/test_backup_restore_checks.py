"""A restore against the local fake Hub, with a hostile or damaged backup dataset (issue 18, items 2 and 3): every
kind of file name a dataset's listing can hold, lines of a schema this release does not read, runs over the
page's caps, and labels that hold Markdown.

Real huggingface_hub client code (dataset_info, hf_hub_download) talks to tests/fakehub.py on 127.0.0.1; real
SQLite files; the status the page shows rendered by a real CommonMark renderer (markdown-it, gradio's own
Markdown dependency).
"""

from __future__ import annotations

import json

import pytest
from markdown_it import MarkdownIt

from pythia_compare.errors import RunNotFound
from pythia_compare.web.dashboard import Dashboard
from tests.fakehub import FakeHub
from tests.store_runs import full_run
from tests.test_backup import REPO, WRITE, settings_of, start


@pytest.fixture
def hub():
    with FakeHub() as h:
        h.add_token(WRITE, "alice")
        yield h


@pytest.fixture
def started():
    backups: list = []
    yield backups
    for b in backups:
        b.close()


def line(run_id: str, **changes) -> bytes:
    run = full_run(seed=len(run_id), text=f"the run {run_id}")
    run.update(run_id=run_id, created_at="2026-01-02T03:04:05.000006+00:00")
    run.update(changes)
    return (json.dumps({"backup": 1, "owner": None, "run": run}) + "\n").encode()


# Names a dataset's listing can hold that the backup never writes: each is skipped, named, and never fetched.
ODD_NAMES = {
    "a '..' part (the issue's)": "runs/../escape.jsonl",
    "'..' deeper down": "runs/inst/../../escape.jsonl",
    "a '.' part": "runs/./here.jsonl",
    "an empty part": "runs//empty.jsonl",
    "a part that is '..' only at the end": "runs/inst/...jsonl",
    "a backslash": "runs/inst\\..\\back.jsonl",
    "a space": "runs/inst/with space.jsonl",
    "a new line": "runs/inst/new\nline.jsonl",
    "a tab": "runs/inst/tab\t.jsonl",
    "a NUL": "runs/inst/nul\x00.jsonl",
    "non-ASCII letters": "runs/inst/ümlaut.jsonl",
    "percent-encoding": "runs/%2e%2e/pct.jsonl",
    "a question mark": "runs/inst/q?x=1.jsonl",
    "a hash": "runs/inst/h#frag.jsonl",
    "a colon": "runs/C:/drive.jsonl",
    "a part starting with a dot": "runs/.hidden/x.jsonl",
    "a part starting with a dash": "runs/-rf/x.jsonl",
    "a part of 300 characters": "runs/" + "a" * 300 + ".jsonl",
    "capital letters in the folder": "RUNS/inst/caps.jsonl",
    "a capital extension": "runs/inst/caps.JSONL",
    "a trailing slash": "runs/inst/slash.jsonl/",
    "Markdown in the name": "runs/inst/![x](http:__127.0.0.1:9_beacon).jsonl",
}
# Names the backup writes (and the plain names around them): restored.
GOOD_NAMES = ["runs/20261207T020528Z-0a1b2c3d/2026-12-07T02Z.jsonl", "runs/top.jsonl", "runs/a/b/c_d-e.f.jsonl"]


def test_every_kind_of_odd_file_name_is_skipped_and_named_and_the_rest_is_restored(tmp_path, hub, started):
    files = {name: line(f"good{i:02d}_run") for i, name in enumerate(GOOD_NAMES)}
    files.update({name: line(f"odd{i:02d}_run") for i, name in enumerate(ODD_NAMES.values())})
    files.update({"README.md": b"# runs\n", "data/other.jsonl": line("elsewhere_run")})
    hub.add_dataset(REPO, files)

    backup, store = start(settings_of(tmp_path, hub, "fresh"), started)
    assert backup.on, backup.reason  # the issue: "Backup is off: an unexpected ValueError"
    assert backup.restore.imported == len(GOOD_NAMES)
    assert sorted(r["run_id"] for r in store.list(limit=100)) == [f"good{i:02d}_run" for i in range(len(GOOD_NAMES))]
    skipped = "\n".join(backup.restore.skipped)
    for kind, name in ODD_NAMES.items():
        assert json.dumps(name[:100], ensure_ascii=False)[:-1] in skipped, kind  # quoted, escaped, maybe cut
        assert not hub.downloads_of(name.rsplit("/", 1)[-1]), f"{kind}: fetched"
    assert len(backup.restore.skipped) == len(ODD_NAMES)  # README.md and data/ are not the backup's: left alone
    assert "Restore skipped" in backup.status_markdown()


def test_the_page_names_a_skipped_file_as_text_even_when_its_name_is_markdown(tmp_path, hub, started):
    name = ODD_NAMES["Markdown in the name"]
    hub.add_dataset(REPO, {name: line("odd_run_0001"), GOOD_NAMES[0]: line("good_run_001")})
    backup, store = start(settings_of(tmp_path, hub, "fresh"), started)
    assert backup.on and backup.restore.imported == 1
    html = MarkdownIt("commonmark").render(backup.status_markdown())
    assert "Restore skipped" in html and "<img" not in html and html.count("<a ") == 1  # the dataset's own link
    assert name in html


# ------------------------------------------------------------------------------------------ item 3: the lines
def test_lines_of_a_schema_this_release_does_not_read_are_skipped_and_a_later_valid_line_keeps_the_id(
        tmp_path, hub, started):
    lines = [line("shared_id_001", schema=0), line("shared_id_001"), line("future_run_01", schema=999),
             line("no_schema_001", schema="1")]
    hub.add_dataset(REPO, {"runs/inst/2026-01-02T03Z.jsonl": b"".join(lines)})
    backup, store = start(settings_of(tmp_path, hub, "fresh"), started)
    assert backup.on and backup.restore.imported == 1
    assert store.get_run("shared_id_001").input.text == "the run shared_id_001"  # opens: not a dead link
    for gone in ("future_run_01", "no_schema_001"):
        with pytest.raises(RunNotFound):
            store.get(gone)
    skipped = "\n".join(backup.restore.skipped)
    assert "line 1: run JSON: schema 0 is not a schema of pythia-compare" in skipped
    assert "line 3: run JSON: schema 999 is newer than this pythia-compare reads" in skipped
    assert "line 4: run JSON: schema must be an integer" in skipped


def test_a_restored_run_over_the_pages_caps_is_skipped_and_named(tmp_path, hub, started):
    big = full_run(seed=1, text="x" * 5000)
    big.update(run_id="too_long_text", created_at="2026-01-02T03:04:05+00:00")
    many = full_run(seed=2)
    many.update(run_id="too_many_vars", created_at="2026-01-02T03:04:05+00:00")
    many["variants"] = many["variants"] * 5  # 10 variants and the reference
    data = b"".join(json.dumps({"backup": 1, "owner": None, "run": r}).encode() + b"\n" for r in (big, many))
    hub.add_dataset(REPO, {"runs/inst/2026-01-02T03Z.jsonl": data + line("within_caps_1")})
    backup, store = start(settings_of(tmp_path, hub, "fresh", max_text_chars=4000), started)
    assert backup.on and backup.restore.imported == 1 and store.get("within_caps_1")
    for gone in ("too_long_text", "too_many_vars"):
        with pytest.raises(RunNotFound):
            store.get(gone)
    skipped = "\n".join(backup.restore.skipped)
    assert "line 1: its text has 5000 characters; this app's limit is 4000" in skipped
    assert "line 2: it has 11 variants; this app's limit is 8" in skipped


BEACON = "![x](http://127.0.0.1:9/beacon.png)"


@pytest.mark.parametrize("where", ["reference", "variant", "warning"])
def test_a_label_or_warning_holding_markdown_is_shown_as_text_never_fetched(tmp_path, hub, started, where):
    run = full_run(seed=3)
    run.update(run_id="beacon_run_01", created_at="2026-01-02T03:04:05+00:00")
    if where == "reference":
        run["reference"]["label"] = BEACON
    elif where == "variant":
        run["variants"][0]["label"] = BEACON
        run["variants"][0]["warnings"] = ["<img src=http://127.0.0.1:9/w.png> a warning"]
    else:
        run["warnings"] = [BEACON + " <b>bold</b>"]
    hub.add_dataset(REPO, {"runs/inst/2026-01-02T03Z.jsonl": json.dumps({"backup": 1, "owner": None,
                                                                         "run": run}).encode()})
    settings = settings_of(tmp_path, hub, "fresh")
    backup, store = start(settings, started)
    assert backup.on and backup.restore.imported == 1
    status = Dashboard(settings, pool=object(), store=store).status(store.get_run("beacon_run_01"))
    html = MarkdownIt("commonmark").render(status)
    assert "<img" not in html and "<b>" not in html and "href=" not in html
    text = MarkdownIt("commonmark").render(status).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    assert BEACON in text.replace("&amp;", "&")  # the label reads as it was written
