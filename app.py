"""Entry point for `python app.py` and for the Hugging Face Space: builds the dashboard, launches it as a script.

Owns nothing but wiring: settings from the environment, the run backup (backup.py: restored before serving,
pushed at exit), `demo` at module level (what Spaces and `gradio app.py` look for), and launch with
ui.launch_kwargs, the one source of the hardened launch settings.
"""

from pythia_compare.runs.backup import Backup
from pythia_compare.config import Settings
from pythia_compare.web.ui import build_demo, launch_kwargs

settings = Settings.from_env()
backup = Backup.start(settings)  # before serving: restore from the backup dataset, then push to it (if configured)
demo = build_demo(settings, backup=backup)

if __name__ == "__main__":
    backup.close_on_exit()  # the last push at shutdown, SIGTERM included
    demo.launch(**launch_kwargs(settings))
