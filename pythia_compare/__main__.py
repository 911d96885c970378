"""`python -m pythia_compare`: the CLI (cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
