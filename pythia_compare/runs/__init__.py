"""The runs wing: one comparison and its log.

Owns the loaded models under a memory budget (pool), running a comparison (compare), the numbers (metrics: pure
numpy; lambada: lm-eval's LAMBADA rules; lens: the logit lens, pure numpy on the GGUF's final norm and
unembedding), the typed run contract (run), tables (report), exports (export), the run log in SQLite (store,
runrows, migrations), its Hub-dataset backup (backup), EleutherAI's published benchmark numbers (published); notebooks: the typed notebook (notebook), its revisions
in the run log (notebookstore) and running its cells (notebookrun).

May import: sources, models and the shared base. Must never import sweeps, web or an entry point: a run
knows nothing of grids or pages (the sweep log opens over a RunStore from above, never the other way).
"""
