"""`python scripts/data.py check PATH` == `defax data check PATH` (also `demo`)."""

from _wrapper import run

if __name__ == "__main__":
    run("data")
