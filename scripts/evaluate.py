"""`python scripts/evaluate.py --model-path RUN_DIR/model.keras --data PATH` (= `defax evaluate ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("evaluate")
