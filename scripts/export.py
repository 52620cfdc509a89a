"""`python scripts/export.py --model-path MODEL --output EXPORT_BASE [--format ...]` (= `defax export ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("export")
