"""pythia-compare: put GGUF quant levels and training checkpoints of Pythia-410M-deduped side by side."""

__version__ = "0.1.0"
