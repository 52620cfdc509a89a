"""Train a model: `python scripts/train.py --model defax --data PATH` (= `defax train ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("train")
