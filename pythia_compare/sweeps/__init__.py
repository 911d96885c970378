"""The sweeps wing: the steps × quants grid.

Owns planning, running (in one process or as Slurm array shards) and merging a sweep (sweep), the sweep log in
the run log's SQLite file (store: SweepStore, opened over a RunStore), Slurm job scripts (slurm) and the
`sweep` command group of the CLI (cli).

May import: runs, sources, models and the shared base. Must never import web or the entry points (cli.py,
api.py): the page's Sweeps tab (web/sweepview, web/sweepplots) reads sweeps, never the reverse.
"""
