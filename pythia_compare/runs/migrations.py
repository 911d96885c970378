"""Schema of the run log: append-only migrations registered with sqlite-utils' `Migrations`.

Owns the tables, columns, indexes and full-text index of the SQLite run log. Each function is one step, named
mNNN_what; once released a step is never edited or reordered, only followed by new ones (a database records
which steps it has had in `_sqlite_migrations`). Never reads or writes runs: store.py does.

Tables (plain columns for scalars; JSON text only where the shape varies; every table has an `extra` JSON
column, NULL unless a run held keys this schema has no column for, see store.py):

- runs: one row per run: input text and tokens, the parameters, versions, owner.
- run_variants: one row per model of a run; position 0 is the reference when the run has one, then the
  variants in the order given. role is 'reference' or 'variant'.
- run_kld: the KL-divergence statistics of one (run_id, position) against the run's reference.
- runs_fts: FTS5 index of runs.text, kept current by triggers.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

migrations = Migrations("pythia_compare")

@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    """runs, run_variants and run_kld, with indexes on run_id and created_at."""
    db["runs"].create({
        "id": str,
        "created_at": str,  # UTC ISO 8601, e.g. 2025-01-01T12:00:00.123456+00:00
        "text": str,
        "n_tokens": int,
        "tokens": str,  # JSON list of token texts
        "scoring": str,  # 'prompt' | 'corpus'
        "ctx": int,
        "top_k": int,
        "max_tokens": int,
        "temperature": float,
        "seed": int,
        "flash_attn": int,  # 0 | 1
        "reference_spec": str,  # NULL when the run has no reference
        "schema": int,  # the run JSON's schema version
        "versions": str,  # JSON {"pythia_compare": str, "llama_cpp_python": str}
        "extra": str,  # JSON, NULL normally
    }, pk="id", not_null={"created_at", "text"})
    db["run_variants"].create({
        "run_id": str,
        "position": int,
        "role": str,
        "spec": str,
        "label": str,
        "repo": str,
        "commit_sha": str,
        "file": str,
        "sha256": str,
        "bytes": int,
        "quant": str,
        "ppl": float,
        "ppl_err": float,
        "n_scored": int,
        "token_logprobs": str,  # JSON [float], one per scored position
        "next_token": str,  # JSON [{"id", "text", "prob"}]
        "generation": str,  # JSON null | {"text", "tokens": [...]}
        "load_s": float,
        "score_s": float,
        "generate_s": float,
        "extra": str,
    }, pk=("run_id", "position"), foreign_keys=[("run_id", "runs", "id")], not_null={"role", "spec"})
    kld: dict = {"run_id": str, "position": int}
    kld.update({name: float for name in (  # one column per scalar KL statistic (runrows.KLD_STATS)
        "mean", "mean_err", "max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1", "p0_1", "min",
        "dp_mean", "dp_mean_err", "dp_rms", "dp_rms_err", "dp_max", "dp_p99_9", "dp_p99", "dp_p95", "dp_p90",
        "dp_p75", "dp_median", "dp_p25", "dp_p10", "dp_p5", "dp_p1", "dp_p0_1", "dp_min", "same_top",
        "same_top_err", "ppl_ratio", "ppl_ratio_err", "ln_ratio", "ln_ratio_err", "ppl_diff", "ppl_diff_err",
        "cor_ln_ppl", "ppl", "ppl_err", "ppl_ref", "ppl_ref_err")})
    kld.update({"per_token": str, "dp_per_token": str, "extra": str})  # JSON [float]
    db["run_kld"].create(kld, pk=("run_id", "position"), foreign_keys=[("run_id", "runs", "id")])
    db["runs"].create_index(["created_at"])
    db["run_variants"].create_index(["run_id"])
    db["run_kld"].create_index(["run_id"])


@migrations()
def m002_runs_fts(db: sqlite_utils.Database) -> None:
    """Full-text search on runs.text (FTS5, external content, triggers keep it current; existing rows indexed)."""
    db["runs"].enable_fts(["text"], create_triggers=True)


@migrations()
def m003_owner(db: sqlite_utils.Database) -> None:
    """runs.owner: who may delete a run on a shared deployment (NULL: nobody in particular)."""
    db["runs"].add_column("owner", str)
    db["runs"].create_index(["owner"])


@migrations()
def m004_owner_hmac(db: sqlite_utils.Database) -> None:
    """runs.owner_hmac: the owner as HMAC-SHA256(PYTHIA_COMPARE_OWNER_SECRET, browser token), hex.

    A migration cannot know the secret, so existing rows keep their raw token in runs.owner, which marks them
    as not yet hashed; RunStore, opened with a secret, moves every such token into owner_hmac and clears
    runs.owner (store.py, `_hash_raw_owners`). Rows written with a secret never hold the raw token.
    """
    db["runs"].add_column("owner_hmac", str)
    db["runs"].create_index(["owner_hmac"])


# ------------------------------------------------------------------------------------------ sweeps (issue 12)
# m010_…–m019_… are the sweeps' range. See docs/sweeps.md.


@migrations()
def m010_sweeps(db: sqlite_utils.Database) -> None:
    """sweeps (one row per planned steps × quants grid, holding its text once) and sweep_cells (one row per
    (step, quant, hub) cell: pending | done | failed, the cell's run id and headline numbers); sweeps_fts."""
    db["sweeps"].create({
        "id": str,
        "created_at": str,  # UTC ISO 8601
        "name": str,
        "repo": str,  # the checkpoint repo of the steps ('demo' for the demo suite)
        "steps": str,  # JSON [int], ascending
        "quants": str,  # JSON [str], the converted + quantized quants of every step
        "hub_repo": str,  # GGUF repo of the hub cells, NULL when there are none
        "hub_quants": str,  # JSON [str], the hub repo's files added at the final step ([] when none)
        "reference": str,  # 'F16' (each step's own F16) or a spec every cell is compared with
        "ctx": int,
        "max_chunks": int,  # NULL: every chunk of the text
        "text": str,  # the text every cell scores (stored once per sweep)
        "text_sha256": str,  # sha256 of the text file as given to `sweep plan`
        "n_tokens": int,  # tokens of `text`
        "tokens": str,  # JSON token texts of `text`, set by the first cell written (NULL before)
        "params": str,  # JSON {"top_k", "max_tokens", "temperature", "seed"} of the cell runs
        "n_cells": int,
        "extra": str,
    }, pk="id", not_null={"created_at", "text", "steps", "quants"})
    db["sweep_cells"].create({
        "sweep_id": str,
        "step": int,
        "quant": str,
        "hub": int,  # 1: the hub repo's own GGUF file, 0: converted + quantized here
        "position": int,  # order in the grid (steps ascending, then quants as given, hub cells last)
        "status": str,  # 'pending' | 'done' | 'failed'
        "run_id": str,  # the cell's run (runs.id) when done
        "error": str,  # the last failure's message
        "attempts": int,
        "seconds": float,  # wall time of the cell's share of its step (done cells)
        "updated_at": str,
        "ppl": float,
        "ppl_err": float,
        "kld_mean": float,
        "kld_mean_err": float,
        "kld_p99": float,
        "ln_ratio": float,
        "ln_ratio_err": float,
        "bytes": int,  # the GGUF file's size
        "bpw": float,  # bits per weight: tensor bytes × 8 / parameters (llama.cpp's count)
        "extra": str,
    }, pk=("sweep_id", "step", "quant", "hub"), foreign_keys=[("sweep_id", "sweeps", "id")],
        not_null={"status", "position"})
    db["sweep_cells"].create_index(["sweep_id", "position"])
    db["sweeps"].create_index(["created_at"])
    db["sweeps"].enable_fts(["text", "name"], create_triggers=True)


@migrations()
def m011_runs_sweep_id(db: sqlite_utils.Database) -> None:
    """runs.sweep_id: set on a sweep cell's run, whose text (runs.text = '') and tokens (NULL) live in the
    sweeps row; the runs FTS index therefore holds a sweep's text zero times (sweeps_fts holds it once)."""
    db["runs"].add_column("sweep_id", str)
    db["runs"].create_index(["sweep_id"])


@migrations()
def m012_sweep_lambada(db: sqlite_utils.Database) -> None:
    """LAMBADA sweeps (issue 23): sweeps.scoring ('corpus' for every sweep planned before) and sweeps.lambada (JSON:
    what the cells score, {"file", "path", "sha256", "repo", "revision", "limit", "n_file", "n"}, NULL for corpus
    sweeps); sweep_cells' LAMBADA figures (NULL in corpus sweeps)."""
    db["sweeps"].add_column("scoring", str, not_null_default="corpus")
    db["sweeps"].add_column("lambada", str)
    db["sweep_cells"].add_column("lambada_n", int)
    for name in ("lambada_acc", "lambada_acc_stderr", "lambada_ppl", "lambada_ppl_stderr"):
        db["sweep_cells"].add_column(name, float)


# ------------------------------------------------------------------------------------------ notebooks (issue 22)
# m020_…–m029_… are the notebooks' range. See docs/notebook.md; runs/notebookstore.py reads and writes them.


@migrations()
def m020_notebooks(db: sqlite_utils.Database) -> None:
    """notebooks (one row per notebook: its owner and latest revision), notebook_revisions (append-only: one row
    per save, the notebook JSON without its cells' bodies), notebook_revision_cells (a revision's cells in order,
    by hash) and notebook_cells (each cell body once, by its sha256, however many revisions hold it)."""
    db["notebooks"].create({
        "id": str,
        "created_at": str,  # UTC ISO 8601 of revision 1
        "updated_at": str,  # of the latest revision
        "latest": int,  # the latest revision's number
        "title": str,  # the latest revision's title (for listing)
        "owner": str,  # as runs.owner: the raw token when the log has no owner secret
        "owner_hmac": str,  # as runs.owner_hmac
        "extra": str,
    }, pk="id", not_null={"created_at", "latest"})
    db["notebook_revisions"].create({
        "notebook_id": str,
        "revision": int,  # 1, 2, … never reused
        "created_at": str,
        "base": int,  # the revision this one was saved over (NULL for 1)
        "title": str,
        "variants": str,  # JSON {"specs", "reference"}
        "settings": str,  # JSON {"ctx", "top_k", "max_tokens", "temperature", "seed"}
        "schema": int,
        "bytes": int,  # the revision's notebook JSON, UTF-8 (≤ params.NOTEBOOK.max_revision_bytes)
        "extra": str,
    }, pk=("notebook_id", "revision"), foreign_keys=[("notebook_id", "notebooks", "id")],
        not_null={"created_at", "variants", "settings"})
    db["notebook_cells"].create({
        "hash": str,  # sha256 hex of `body`
        "body": str,  # the cell's JSON (notebook.Cell.to_json), compact, keys sorted
    }, pk="hash", not_null={"body"})
    db["notebook_revision_cells"].create({
        "notebook_id": str,
        "revision": int,
        "position": int,
        "hash": str,
    }, pk=("notebook_id", "revision", "position"), foreign_keys=[("hash", "notebook_cells", "hash")])
    db["notebook_revision_cells"].create_index(["hash"])
    db["notebooks"].create_index(["updated_at"])
    db["notebooks"].create_index(["owner_hmac"])
