"""`python scripts/robustness.py --model-path MODEL --data PATH` (= `defax robustness ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("robustness")
