"""The bundled demo suite behaves like a training run (issue 3, f): through exactly the conversion,
quantization and cache code that real checkpoints use, on its held-out text."""

import json

import pytest

from tests.support import ROOT, run_cli
from pythia_compare.sources.resolver import demo_steps

HELDOUT = ROOT / "assets" / "demo" / "heldout.txt"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-home")


def _compare(home, specs, reference=None):
    args = ["--offline", "--db", str(home / "runs.db"), "--home", str(home), "compare", *specs,
            "--text-file", str(HELDOUT), "--ctx", "128", "--max-tokens", "0", "--json"]
    if reference:
        args += ["--reference", reference]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_perplexity_falls_across_the_saved_steps(demo_dir, demo_home):
    steps = demo_steps(demo_dir)
    assert len(steps) >= 5 and steps[0] == 0
    run = _compare(demo_home, [f"demo@step{s}" for s in steps], reference="none")  # every step a variant
    assert run["params"]["scoring"] == "corpus"
    ppl = [v["ppl"] for v in run["variants"]]
    for before, after in zip(ppl, ppl[1:]):
        assert after <= before * 1.02, ppl  # each step at most 2% above the one before
    assert ppl[-1] * 3 <= ppl[0], ppl  # the final step at least 3x lower than step 0


def test_at_the_final_step_lower_bits_diverge_more_from_f16(demo_dir, demo_home):
    final = f"demo@step{demo_steps(demo_dir)[-1]}"
    run = _compare(demo_home, [f"{final}:Q8_0", f"{final}:Q4_K_M", f"{final}:Q2_K"], reference=final)
    q8, q4, q2 = (v["kld"]["mean"] for v in run["variants"])
    assert q2 > q4 > q8 > 0, (q2, q4, q8)
    assert run["variants"][2]["ppl"] > run["reference"]["ppl"]  # PPL(Q2_K) > PPL(F16)
