"""The web wing: the page.

Owns the gradio app (ui: the only module that imports gradio), the decisions behind it without gradio
(dashboard for runs, sweepview for the Sweeps tab, notebooks for the Notebook tab and its exports; notebookcli,
the `notebook` commands), the ASGI guards in front of gradio's app (guard: CORS, uploads, body size) and the
plotly figures (plots for a run, sweepplots for a sweep; both pure).

May import: every wing below it (sweeps, runs, sources, models) and the shared base. Must never import an entry
point (cli.py, api.py), and nothing below imports it.
"""
