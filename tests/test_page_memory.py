"""A run through the page costs the memory the same run costs in the CLI (issue 18, item 1), and a public
deployment bounds a run's work.

The memory test runs issue 18's repro (variants of the demo suite against `demo`, corpus scoring of the held-out
text repeated, ctx 512) at a size CI affords, once by the CLI and once through the launched app's /compare (as
the issue did, with gradio_client), each in a process of its own (tests/page_memory.py), and compares what the
run adds to each process's peak RSS (resource.getrusage's ru_maxrss) over its idle self. No timings.
"""

from __future__ import annotations


from tests.page_memory import REPRO_SPECS, cli_run, page_run, repro_text
from tests.ui_support import demo_suite

SPECS = REPRO_SPECS  # the issue's 8 variants
CHARS = 40_000  # about 35 chunks of 512 tokens of the demo suite's tokenizer
NEW_TOKENS = 8
# Issue 18's bound: the page's run stays within 1.2x what the CLI's adds, plus the models the page keeps loaded
# (the RSS its model pool gives back when closed; the CLI closes its models before it saves and prints the run).
ISSUE_BOUND = 1.2
# And without that allowance: measured (benchmarks/bench_page.py, docs/benchmarks.md) the page adds 1.14-1.21x of
# what the CLI adds at 30,000-40,000 characters since "/compare" makes no snapshots and sends the JSON once; it
# added 1.39-1.43x when the page built the run JSON beside its snapshots, 3.3x when snapshots piled up
# (O(chunks^2)). 1.35 fails both of those.
RAW_BOUND = 1.35


def test_a_corpus_run_through_the_page_adds_a_bounded_multiple_of_the_memory_the_cli_adds(tmp_path_factory):
    demo = demo_suite(tmp_path_factory.mktemp("demo-standin"))
    text = repro_text(CHARS)
    cli = cli_run(tmp_path_factory.mktemp("cli"), demo, text, NEW_TOKENS, SPECS)
    page = page_run(tmp_path_factory.mktemp("page"), demo, text, NEW_TOKENS, SPECS)
    assert cli.run["input"]["n_tokens"] >= 30 * 512  # tens of chunks
    # the same run: the page's numbers are the CLI's
    assert [e["ppl"] for e in page.run["variants"]] == [e["ppl"] for e in cli.run["variants"]]
    said = (f"the page's run added {page.added_kb / 1024:.0f} MB to its process (peak {page.peak_kb / 1024:.0f} MB "
            f"over {page.base_kb / 1024:.0f} MB idle; its loaded models hold {page.models_kb / 1024:.0f} MB); the "
            f"CLI's added {cli.added_kb / 1024:.0f} MB (peak {cli.peak_kb / 1024:.0f} MB over "
            f"{cli.base_kb / 1024:.0f} MB for its imports)")
    assert page.added_kb <= ISSUE_BOUND * cli.added_kb + page.models_kb, said
    assert page.added_kb <= RAW_BOUND * cli.added_kb, said
