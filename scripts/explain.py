"""`python scripts/explain.py --model-path MODEL --images FILE_OR_DIR... [--method ...]` (= `defax explain ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("explain")
