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


def venv_seeing(python: str | Path, path: Path) -> Path:
    """A fresh virtual environment at `path` (with pip) that sees the packages of the interpreter `python`, and
    returns its python. Not `--system-site-packages`: that shows the *base* interpreter's packages, which are
    not the ones a venv running the tests installed. Instead a .pth file in the new venv lists `python`'s own
    site directories, after the new venv's site-packages (so what is installed into it wins). Their .pth files
    are not run (an editable install of this project there stays out of sight)."""
    ask = ("import site, sys; dirs = site.getsitepackages(); "
           "dirs += [site.getusersitepackages()] if site.ENABLE_USER_SITE else []; print('\\n'.join(dirs))")
    dirs = subprocess.run([str(python), "-c", ask], capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
                          ).stdout.split("\n")
    subprocess.run([str(python), "-m", "venv", str(path)], check=True)
    py = path / "bin" / "python"
    site_dir = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
    (Path(site_dir) / "_pc_outer_site.pth").write_text("".join(f"{d}\n" for d in dirs if d and Path(d).is_dir()))
    return py


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
    "test_plots_drawn": {"browser", "slow"},
    "test_hardening": {"slow"},  # starts the app in a subprocess once per module
    "test_page_memory": {"slow"},  # issue 18: the repro by the CLI and through the launched app, a process each
    "test_uploads": {"slow"},  # issue 18: launches the app twice
    "test_downloads": {"slow"},  # issue 18: launches the app
    "test_hardening::test_a_full_queue_says_busy_try_again_instead_of_hanging": {"browser"},
    "test_peer": {"peer", "slow"},
    "test_lambada_peer": {"peer", "slow"},
    "test_lambada_page": {"browser", "slow"},  # lm-eval itself, transformers, a checkpoint conversion
    "test_lambada::test_the_cli_prints_the_lambada_table_and_the_json_holds_the_figures": {"slow"},
    "test_lambada::test_bad_lambada_input_exits_2_with_a_clear_error_and_writes_no_run": {"slow"},  # 5 CLI processes
    "test_lambada::test_a_bad_lambada_file_exits_2_naming_its_line_and_writes_no_run": {"slow"},
    "test_demo_trends": {"slow"},
    "test_packaging::test_a_fresh_venv_with_pip_install_dot_runs_the_demo_compare_from_its_own_copy": {"slow"},
    "test_packaging::test_the_packaging_venv_sees_the_packages_of_a_venv_that_runs_the_tests_not_only_the_base_interpreters":
        {"slow"},
    "test_convert::test_f32_logits_of_both_weight_formats_match_transformers": {"slow"},
    "test_lens::test_the_last_layers_lens_matches_the_models_own_logits_for_every_supported_quant_type": {"slow"},
    "test_lens::test_the_captured_stream_and_the_lens_equal_transformers_on_a_demo_checkpoint": {"slow"},
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
    "test_cli::test_variants_with_different_vocabularies_stop_the_run_naming_both_files": {"slow"},
    "test_checkpoint::test_a_transformers_sharded_safetensors_checkpoint_reads_back": {"slow"},
    "test_cache::test_a_full_disk_while_quantizing_leaves_no_partial_file": {"slow"},
    "test_cache::test_converting_a_directory_to_a_quant_writes_one_gguf_and_nothing_else": {"slow"},
    "test_convert::test_lm_head_name_tied_embeddings_and_legacy_buffers_convert": {"slow"},
    "test_convert::test_f16_and_bf16_files_hold_the_rounded_weights_and_run": {"slow"},
    "test_ci": {"slow"},  # runs pytest twice in subprocesses
    "test_engine::test_scan_hands_over_every_requested_row_in_place_in_blocks_of_at_most_max_outputs": {"slow"},
    "test_engine::test_scoring_in_small_batches_asks_only_for_the_positions_scored": {"slow"},
    "test_cli::test_models_over_the_memory_budget_exit_2_naming_the_budget": {"slow"},
    "test_demo_assets::test_no_long_piece_of_the_heldout_text_appears_in_the_training_text": {"slow"},
    # issue 8 (tokenization): the 50k-vocabulary models and the CLI processes
    "test_tokenization::test_the_46_gpt_neox_20b_cases_tokenize_as_hugging_face_does_through_the_engine": {"slow"},
    "test_tokenization::test_a_gpt_neox_gguf_without_a_pre_tokenizer_loads_with_mpt_and_tokenizes_the_46_cases_the_same":
        {"slow"},
    "test_tokenization::test_without_the_override_the_pre_less_file_splits_the_cases_differently_and_llama_cpp_warns":
        {"slow"},
    "test_tokenization::test_llama_cpps_two_vocabulary_files_have_one_vocabulary_hash": {"slow"},
    "test_tokenization::test_this_projects_converter_and_llama_cpps_give_the_gpt_neox_20b_vocabulary_one_hash":
        {"slow"},
    "test_tokenization::test_the_cli_prints_identical_perplexities_for_a_pre_less_gguf_and_its_converted_twin":
        {"slow"},
    "test_tokenization::test_the_cli_prints_a_variants_load_warnings_on_stderr": {"slow"},
    # issue 9 (safety, backup): app.py processes, probes, Chromium, a fresh venv
    "test_safety::test_a_crafted_gguf_named_in_the_cli_exits_2_naming_the_file_and_what_is_wrong": {"slow"},
    "test_safety::test_a_crafted_gguf_named_as_a_path_on_a_local_app_is_refused_and_the_app_keeps_serving": {"slow"},
    "test_safety::test_a_crafted_gguf_fetched_from_the_hub_by_a_public_app_is_refused_and_the_app_keeps_serving":
        {"slow"},
    "test_safety::test_a_probe_verdict_is_kept_by_content_so_a_hostile_file_is_refused_at_once_the_next_time":
        {"slow"},
    "test_safety::test_a_public_app_refuses_every_local_path_with_one_message_before_opening_anything": {"slow"},
    "test_safety::test_a_public_app_fetches_nothing_from_a_repo_off_its_allow_list": {"slow"},
    "test_safety::test_a_public_run_carries_no_server_path_in_its_json_or_on_its_page": {"browser", "slow"},
    "test_safety::test_a_public_run_converts_at_most_its_cap_of_checkpoints_and_the_next_run_goes_on_from_the_cache":
        {"slow"},
    "test_safety::test_odd_numbers_and_text_in_the_cli_exit_2_naming_the_field": {"slow"},
    "test_safety::test_odd_numbers_and_lone_surrogates_through_the_api_get_a_message_naming_the_field": {"slow"},
    "test_safety::test_odd_numbers_typed_on_the_page_get_a_message_naming_the_field": {"browser", "slow"},
    "test_backup_app": {"browser", "slow"},
    "test_space_boot": {"slow"},
    # issue 12 (sweeps): CLI sweeps in processes, real Slurm, Chromium, a real demo sweep per module
    "test_sweep::test_a_demo_sweep_runs_every_cell_and_status_says_done": {"slow"},
    "test_sweep::test_every_cell_opens_as_a_full_run_with_the_numbers_of_compare": {"slow"},
    "test_sweep::test_the_sweep_text_is_stored_and_indexed_once_and_cell_runs_stay_out_of_the_run_list": {"slow"},
    "test_sweep::test_a_run_deletes_the_files_it_built_for_a_step_but_keeps_files_that_were_there_before":
        {"slow"},
    "test_sweep::test_shard_dbs_merge_into_one_sweep_with_the_numbers_of_one_process_and_merge_is_idempotent":
        {"slow"},
    "test_sweep::test_a_shard_killed_mid_cell_then_rerun_has_every_cell_once": {"slow"},
    "test_sweep::test_a_bad_checkpoint_fails_its_cells_with_the_error_the_shard_goes_on_and_a_rerun_retries":
        {"slow"},
    "test_sweep::test_bad_input_exits_2_with_a_clear_message_and_writes_nothing": {"slow"},
    "test_sweep::test_a_hub_checkpoint_repo_sweep_adds_hub_quants_and_deletes_only_what_it_downloaded": {"slow"},
    "test_sweep::test_a_sweep_wide_reference_compares_every_cell_with_one_model_and_its_files_go_at_the_end":
        {"slow"},
    "test_sweep::test_a_hub_file_of_another_model_fails_only_its_own_cell": {"slow"},
    "test_slurm": {"slow"},
    "test_sweep_lambada": {"slow"},  # issue 23: LAMBADA sweeps through the CLI, a process per command
    "test_ui_sweeps": {"slow"},
    "test_e2e_sweeps": {"browser", "slow"},
    "test_lens_browser": {"browser", "slow"},
    "test_e2e_published": {"browser", "slow"},
    "test_published::test_the_import_tool_rebuilds_the_bundle_from_an_evals_tree_and_a_git_dir_alike": {"slow"},
    "test_published::test_the_import_tool_refuses_a_tree_that_is_not_the_pythia_repo_and_writes_nothing": {"slow"},
    # issue 11 (dashboard second pass): CLI processes, real demo runs through the handlers
    "test_cli_pass2": {"slow"},
    "test_dashboard_pass2": {"slow"},
    # issue 21 (the library): a real ipykernel, Chromium and CLI processes; demo runs through the API
    "test_notebook": {"browser", "slow"},
    "test_api::test_every_api_name_still_works_after_every_submodule_is_imported": {"slow"},
    "test_api::test_a_second_compare_on_the_same_variants_loads_nothing_and_close_frees_them": {"slow"},
    "test_api::test_compare_gives_the_numbers_of_the_cli_and_logs_the_run_where_db_says": {"slow"},
    "test_api::test_a_result_gives_the_cli_table_the_tokens_csv_rows_the_figures_and_a_link": {"slow"},
    "test_api::test_list_runs_is_the_history_table_newest_first_and_searches_the_text": {"slow"},
    "test_api::test_a_run_id_that_does_not_exist_raises_run_not_found_naming_the_id_and_what_lists_runs": {"slow"},
    "test_api::test_a_text_path_reads_the_file_and_a_missing_one_names_it": {"slow"},
    "test_api::test_open_sweep_gives_the_grid_the_figures_and_the_cells_runs": {"slow"},
    "test_api::test_a_run_on_cached_files_imports_neither_the_converter_nor_gguf": {"slow"},
    # issue 10 (the fast tier under 30 s): a fixed second, or seconds of one library, that no fixture can share
    "test_hub::test_a_connection_cut_mid_file_is_resumed_by_huggingface_hub_with_a_range_request": {"slow"},  # 1 s
    "test_hub::test_a_download_that_fails_midway_leaves_no_partial_file_and_a_retry_gets_the_right_bytes":
        {"slow"},  # huggingface_hub waits 1 s before it resumes
    "test_plots::test_figures_redraw_identically_from_the_stored_json": {"slow"},  # 10 full figure sets: 2 s
    "test_backup::test_with_bad_backup_settings_the_app_starts_serves_its_runs_and_says_backup_is_off":
        {"slow"},  # a whole gradio app per case, five cases: 2 s
    # issue 22 (notebooks): app.py processes with Chromium; llama.cpp runs, CLI processes; a Jupyter kernel
    "test_notebooks_ui": {"browser", "slow"},
    "test_notebooks_exec": {"slow"},
    "test_notebooks::test_running_all_five_cells_loads_each_model_once_and_a_failing_cell_does_not_stop_the_others":
        {"slow"},
    "test_notebooks::test_the_ipynb_is_valid_nbformat_4_with_notes_code_and_embedded_outputs": {"slow"},
    "test_notebooks::test_the_html_export_is_one_page_with_plotly_inlined_once_and_notes_safe": {"slow"},
    "test_notebooks::test_a_history_run_opens_as_a_one_cell_notebook_and_a_compare_run_joins_one": {"slow"},
    "test_notebooks::test_the_cli_lists_shows_runs_exports_and_deletes_a_notebook": {"slow"},
    "test_notebooks::test_a_notebook_keeps_at_most_200_revisions_and_then_offers_a_copy": {"slow"},
}