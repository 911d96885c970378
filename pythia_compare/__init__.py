"""pythia-compare: put GGUF quant levels and training checkpoints of Pythia-410M-deduped side by side.

The library (pythia_compare.api, docs/library.md) is re-exported here, loaded on first use: `import pythia_compare`
stays light (no gradio, plotly, pandas or llama_cpp until a function needs them).

    import pythia_compare as pc
    r = pc.compare("demo:Q8_0", "demo", prompt="def f(x):", offline=True)
    r.summary()
"""

from .config import __version__

# The public names of pythia_compare.api; none equals a module or subpackage of this package (importing one would
# replace the name on the package).
_API = ("compare", "open_run", "list_runs", "open_sweep", "published", "Notebook", "open_notebook", "close",
        "session", "model_pool", "Result", "SweepResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pythia_compare' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
