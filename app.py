"""Entry point for `python app.py` and for the Hugging Face Space: builds the dashboard, launches it as a script.

Owns nothing but wiring: settings from the environment, `demo` at module level (what Spaces and
`gradio app.py` look for), and launch with ui.launch_kwargs, the one source of the hardened launch settings.
"""

from pythia_compare.config import Settings
from pythia_compare.ui import build_demo, launch_kwargs

settings = Settings.from_env()
demo = build_demo(settings)

if __name__ == "__main__":
    demo.launch(**launch_kwargs(settings))
