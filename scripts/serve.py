"""`python scripts/serve.py --model-path MODEL [--host 127.0.0.1] [--port 8000] [--workers N]` (= `defax serve ...`)."""

from _wrapper import run

if __name__ == "__main__":
    run("serve")
