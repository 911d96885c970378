"""Helpers shared by the test modules (import them as `from tests.support import …`): the repository root, the
quants every engine test covers, and the CLI run in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The quants every engine test covers (issue: at least these).
TEST_QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m pythia_compare ARGS` in a fresh process (the installed package); returns CompletedProcess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pythia_compare", *args], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=str(ROOT))


# Test tiers, applied by tests/conftest.py and nowhere else (pytest.ini registers the markers). CI runs every tier; the fast local
# tier is `pytest -m "not slow"`. Keys: a module, or module::test name (parametrized variants included).
# - browser: drives headless Chromium; peer: runs llama.cpp's llama-perplexity (both are slow too);
# - slow: a new process per model load, a transformers model, every quant type, a fresh venv: seconds each.
TIERS: dict[str, set[str]] = {
    "test_e2e": {"browser", "slow"},
    "test_hardening": {"slow"},  # starts the app in a subprocess once per module
    "test_hardening::test_a_full_queue_says_busy_try_again_instead_of_hanging": {"browser"},
    "test_peer": {"peer", "slow"},
    "test_demo_trends": {"slow"},
    "test_packaging::test_a_fresh_venv_with_pip_install_dot_runs_the_demo_compare_from_its_own_copy": {"slow"},
    "test_convert::test_f32_logits_of_both_weight_formats_match_transformers": {"slow"},
    "test_engine::test_every_supported_quant_type_runs_in_a_fresh_process": {"slow"},
    "test_engine::test_generation_streams_tokens_whose_text_joins_into_the_decoded_output": {"slow"},
    "test_engine::test_listed_quants_give_finite_log_probs_in_process": {"slow"},
    "test_cli::test_compare_prints_ppl_and_the_kl_block_and_json_follows_the_schema": {"slow"},
    "test_cli::test_models_scored_side_by_side_on_several_cores_give_the_numbers_of_one_at_a_time": {"slow"},
    "test_cli::test_runs_list_show_export_and_delete": {"slow"},
    "test_cache::test_cache_list_and_prune_through_the_cli": {"slow"},
    "test_cache::test_two_processes_building_the_same_entry_do_the_work_once": {"slow"},
    "test_sources::test_compare_of_steps_through_the_cli_against_the_fake_hub": {"slow"},
    "test_cli::test_bad_input_exits_2_with_a_clear_error_and_writes_no_run": {"slow"},  # 16 CLI processes
    "test_cli::test_variants_that_tokenize_differently_stop_the_run_naming_the_variant": {"slow"},
    "test_checkpoint::test_a_transformers_sharded_safetensors_checkpoint_reads_back": {"slow"},
    "test_cache::test_a_full_disk_while_quantizing_leaves_no_partial_file": {"slow"},
    "test_cache::test_converting_a_directory_to_a_quant_writes_one_gguf_and_nothing_else": {"slow"},
    "test_convert::test_lm_head_name_tied_embeddings_and_legacy_buffers_convert": {"slow"},
    "test_convert::test_f16_and_bf16_files_hold_the_rounded_weights_and_run": {"slow"},
    "test_ci": {"slow"},  # runs pytest twice in subprocesses
    "test_engine::test_the_in_place_logits_view_equals_the_copy_and_copies_when_rows_span_batches": {"slow"},
    "test_engine::test_scoring_in_small_batches_asks_only_for_the_positions_scored": {"slow"},
    "test_cli::test_models_over_the_memory_budget_exit_2_naming_the_budget": {"slow"},
    "test_demo_assets::test_no_long_piece_of_the_heldout_text_appears_in_the_training_text": {"slow"},
}
