"""Rules that had two homes and now have one: a quant read from a file name, the thread-to-generator bridge."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import pytest

from pythia_compare.sources import hub, resolver as sources
from pythia_compare import variants
from pythia_compare.config import Settings
from pythia_compare.errors import PythiaCompareError
from pythia_compare.sources.resolver import Resolver
from pythia_compare.variants import parse_spec, quant_from_filename
from tests.ggufcraft import parse


# ------------------------------------------------------------------------------------------ quant from a file name
@pytest.mark.parametrize("name, quant", [
    ("model.Q6_K_L.gguf", None),  # a quant llama.cpp does not have, not Q6_K (local files used to say Q6_K)
    ("model-Q4_0_4_4.gguf", None),  # an ARM repacking, not Q4_0 (local files used to say Q4_0)
    ("model-Q4_K_M-00001-of-00003.gguf", None),  # one part of a split model (local files used to say Q4_K_M)
    ("pythia-410m-deduped.q4_k.gguf", "Q4_K_M"),  # an alias, either case
    ("model_Q8_0.gguf", "Q8_0"),
    ("models/x-F16.gguf", "F16"),
    ("model.Q4_K_M.bin", None),  # not a GGUF name
])
def test_a_gguf_file_name_gives_one_quant_reading_for_the_hub_and_local_files(name, quant):
    assert quant_from_filename(name) == quant
    assert hub.quant_from_filename is variants.quant_from_filename  # the Hub's listings read it the same way
    assert not hasattr(sources, "_quant_from_name")


def _without_file_type(src, dst):
    """A copy of a real GGUF whose `general.file_type` key is renamed: its quant must come from its name."""
    data = bytearray(src.read_bytes())
    kv = parse(bytes(data)).kvs["general.file_type"]
    last = kv.at + 8 + len("general.file_type") - 1
    data[last:last + 1] = b"X"
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("name, shown", [("tiny.Q6_K_L.gguf", "unknown"), ("tiny-Q4_K_M-00001-of-00002.gguf", "unknown"),
                                         ("tiny.Q2_K.gguf", "Q2_K")])
def test_a_local_gguf_without_its_file_type_is_labelled_by_the_same_name_rule(tiny_ggufs, tmp_path, name, shown):
    path = _without_file_type(tiny_ggufs["Q4_K_M"], tmp_path / name)
    settings = Settings(db_path=tmp_path / "runs.db", home=tmp_path / "home", hf_cache_dir=tmp_path / "hf",
                        offline=True, hub_endpoint="http://127.0.0.1:9")
    resolved = Resolver(settings).resolve(parse_spec(str(path)))
    assert resolved.source["quant"] == shown


# ------------------------------------------------------------------------------------------ thread -> generator
def test_the_bridge_yields_each_item_while_the_work_is_still_running():
    from pythia_compare.threads import in_thread

    seen = threading.Event()
    log = []

    def work(put):
        put("first")
        assert seen.wait(60), "the consumer never saw the first item while the work ran"
        log.append(threading.current_thread().name)
        put("second")

    out = []
    for item in in_thread(work, name="bridge-test"):
        out.append(item)
        seen.set()
    assert out == ["first", "second"] and log == ["bridge-test"]


def test_the_bridge_raises_the_works_error_on_the_consumers_side():
    from pythia_compare.threads import in_thread

    def work(put):
        put(1)
        raise ValueError("the work broke")

    gen = in_thread(work)
    assert next(gen) == 1
    with pytest.raises(ValueError, match="the work broke"):
        next(gen)


def test_closing_the_bridge_stops_the_work_at_its_next_item_and_runs_its_cleanup():
    from pythia_compare.threads import in_thread

    cleaned, closed, reached = threading.Event(), threading.Event(), []

    def work(put):
        try:
            put(0)
            assert closed.wait(60)
            put(1)  # nobody reads it any more: this raises, and the work goes no further
            reached.append(1)
        finally:
            cleaned.set()

    gen = in_thread(work)
    assert next(gen) == 0
    gen.close()
    closed.set()
    assert cleaned.wait(60) and reached == []


def test_a_dashboard_run_and_a_variants_resolution_go_through_the_one_bridge(monkeypatch):
    from pythia_compare.runs import compare
    from pythia_compare.web import dashboard
    from pythia_compare import threads
    from pythia_compare.runs.compare import Event

    calls = []
    real = threads.in_thread

    def counted(work, *a, **kw):
        calls.append(work)
        return real(work, *a, **kw)

    monkeypatch.setattr(compare, "in_thread", counted)
    monkeypatch.setattr(dashboard, "in_thread", counted)
    run = {"x": 1}
    out = list(dashboard.streamed(lambda: iter([Event("update", "tokenized", 0.5, run), Event("done", "done", 1.0, run)])))
    assert [o[0] for o in out] == ["update", "done"] and out[0][3] == run and out[0][3] is not run and len(calls) == 1
    with pytest.raises(PythiaCompareError, match="nowhere.gguf"):
        list(compare.iter_comparison(["./nowhere.gguf"], "text", compare.RunParams(max_tokens=0),
                                     settings=Settings(home=Path(tempfile.mkdtemp()), offline=True), pool=None))
    assert len(calls) == 2  # the resolution of the variant ran on the bridge too


# ------------------------------------------------------------------------------------------ plots and report
def test_report_tables_have_one_home_and_plots_uses_every_name_it_imports_from_report():
    import ast
    import inspect

    from pythia_compare.web import plots
    from pythia_compare.runs import report

    for name in ("summary_table", "kl_table", "format_table", "format_cell", "variant_colors", "SUMMARY_COLUMNS",
                 "KL_TABLE_NOTE", "STAT_COLUMN", "REFERENCE_COLOR"):
        assert hasattr(report, name) and not hasattr(plots, name), name  # not re-exported by plots
    tree = ast.parse(inspect.getsource(plots))
    imported = [a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "runs.report"
                for a in n.names]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert imported and [name for name in imported if name not in used] == []
    assert "table data" not in plots.__doc__.splitlines()[0].lower()  # its docstring claims no tables
