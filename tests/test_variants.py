import pytest

from pythia_compare.errors import SpecError
from pythia_compare.variants import PYTHIA_STEPS, SUPPORTED_QUANTS, V0_STEPS, builtin_steps, parse_spec, parse_specs


@pytest.mark.parametrize("spec, kind, quant, repo, revision", [
    ("Q4_K_M", "gguf", "Q4_K_M", None, None),
    ("q8_0", "gguf", "Q8_0", None, None),
    ("Q4_K", "gguf", "Q4_K_M", None, None),
    ("F16", "checkpoint", "F16", None, "step143000"),
    ("step3000", "checkpoint", "F16", None, "step3000"),
    ("step3000:Q4_K_M", "checkpoint", "Q4_K_M", None, "step3000"),
    ("EleutherAI/pythia-410m-deduped:Q8_0", "repo", "Q8_0", "EleutherAI/pythia-410m-deduped", None),
    ("EleutherAI/pythia-410m-deduped@step1000:Q5_K_M", "checkpoint", "Q5_K_M", "EleutherAI/pythia-410m-deduped", "step1000"),
    ("demo@step0", "checkpoint", "F16", "demo", "step0"),
    ("demo:Q4_K_M", "checkpoint", "Q4_K_M", "demo", None),
    ("./models/file.gguf", "local", None, None, None),
])
def test_every_documented_spec_form_parses_to_its_variant(spec, kind, quant, repo, revision):
    v = parse_spec(spec)
    assert (v.kind, v.quant, v.repo, v.revision) == (kind, quant, repo, revision)
    assert parse_spec(v.spec) == v  # the canonical spec parses back to the same variant


def test_labels_are_short_human_names():
    assert parse_spec("step3000:Q4_K_M").label == "step3000 Q4_K_M"
    assert parse_spec("Q8_0").label == "Q8_0"
    assert parse_spec("demo@step0").label == "demo step0 F16"
    assert parse_spec("./a/b/m.gguf").label == "m.gguf"


def test_the_builtin_fallback_lists_143_v0_checkpoints_and_154_current_ones():
    v0, current = builtin_steps("EleutherAI/pythia-410m-deduped-v0"), builtin_steps("EleutherAI/pythia-410m-deduped")
    assert v0 == V0_STEPS and len(v0) == 143 and v0[0] == 1000 and v0[-1] == 143000
    assert all(b - a == 1000 for a, b in zip(v0, v0[1:]))
    assert current == PYTHIA_STEPS and len(current) == 154 and current[:3] == [0, 1, 2] and current[-1] == 143000
    assert 512 in current and 1000 in current and 1500 not in current
    assert builtin_steps("someone/other-model") is None


def test_a_step_spec_parses_without_knowing_the_repo_its_branches_decide_later():
    # variants.py never touches the network: whether the repo has the step is the resolver's check (sources/resolver.py).
    assert parse_spec("step1500").revision == "step1500"
    assert parse_spec("step512:Q8_0").revision == "step512"


@pytest.mark.parametrize("spec, words", [
    ("Q9_K", ["unknown", "Q4_K_M"]),
    ("IQ2_XS", ["importance matrix", "Q4_K_M"]),
    ("Q2_K_S", ["importance matrix"]),
    ("step3000:", ["after ':'"]),
    ("demo@", ["after '@'"]),
    ("", ["empty"]),
    ("not a spec!", ["cannot read"]),
    ("owner/repo@../../x", ["revision"]),
])
def test_bad_specs_get_an_error_that_names_them_and_what_would_work(spec, words):
    with pytest.raises(SpecError) as e:
        parse_spec(spec)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("pair", [("Q4_K_M", "q4_k"), ("demo", "demo:F16"), ("F16", "step143000"),
                                  ("step143000:F16", "step143000")])
def test_the_same_variant_twice_is_refused_however_it_is_spelt(pair):
    with pytest.raises(SpecError, match="twice"):
        parse_specs(list(pair))
    assert parse_spec(pair[0]).key == parse_spec(pair[1]).key


def test_supported_quants_exclude_importance_matrix_types():
    assert "Q2_K" in SUPPORTED_QUANTS and "IQ4_NL" in SUPPORTED_QUANTS
    assert not any(q.startswith(("IQ1", "IQ2", "IQ3")) for q in SUPPORTED_QUANTS)
