"""Errors raised by the pythia_compare library.

Owns the exception hierarchy. The library raises these with context (which variant, what exists, what
would work); only ui.py turns them into gr.Error and only cli.py into exit codes:
BadInput and its subclasses exit 2, every other error exits 1.
"""

from __future__ import annotations


class PythiaCompareError(Exception):
    """Base of every error this package raises on purpose."""


class BadInput(PythiaCompareError):
    """The user's input cannot work; the message names the input and what would work (exit code 2)."""


class SpecError(BadInput):
    """A variant spec does not parse, or names an unknown or unsupported quant."""


class InputTextError(BadInput):
    """The prompt or text is empty, too short or too long for the chosen scoring mode."""


class ModelFileError(BadInput):
    """A local model file is missing, not a GGUF, truncated, or not loadable by llama.cpp."""


class TokenizerMismatch(BadInput):
    """Variants of one run have different vocabularies (tokens, merges or special tokens), so one token id
    would not mean the same to each."""


class BudgetError(BadInput):
    """The models of one run do not fit under the memory budget together."""


class RunNotFound(BadInput):
    """No stored run has the given id."""


class NotYetSupported(BadInput):
    """A spec that parses but names a capability this version does not have yet."""


class HubError(PythiaCompareError):
    """A Hugging Face Hub repo, revision or file could not be found or fetched."""


class MissingOnHub(HubError, BadInput):
    """The repo, revision or file does not exist on the Hub (a user's typo, so exit code 2)."""


class OfflineMissing(HubError, BadInput):
    """Offline and the needed file is not cached; the message names the file and offers the demo suite."""


class CheckpointError(BadInput):
    """A Hugging Face checkpoint (config.json, weights, tokenizer.json) is missing, malformed or unsafe."""


class UnsafePickle(CheckpointError):
    """A pytorch_model.bin pickle asks for a global outside the tensor allow-list."""


class DiskFull(PythiaCompareError):
    """Writing a file ran out of space; nothing partial is left and the message says how much is needed."""
