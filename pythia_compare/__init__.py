"""pythia-compare: put GGUF quant levels and training checkpoints of Pythia-410M-deduped side by side."""

from .config import __version__

__all__ = ["__version__"]
