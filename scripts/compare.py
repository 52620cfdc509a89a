"""`python scripts/compare.py RUN_DIR... [--output DIR]` (= `defax compare ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("compare")
