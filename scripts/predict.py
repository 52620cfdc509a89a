"""`python scripts/predict.py --model-path MODEL IMAGE_OR_DIR... [--format table|csv|json]` (= `defax predict ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("predict")
