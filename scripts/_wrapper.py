"""Shared by the scripts: run `defax <command> ...` from a source checkout."""

import sys
from pathlib import Path


def run(*command: str) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # works without `pip install` too
        sys.path.insert(0, root)
    from defax_keras.cli import main

    sys.exit(main([*command, *sys.argv[1:]]))
