"""`python scripts/calibrate.py --model-path MODEL --data PATH` (= `defax calibrate ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("calibrate")
