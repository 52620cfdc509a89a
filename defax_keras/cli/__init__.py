"""The `defax` command line: one module per command group. `scripts/*.py` are thin wrappers around it.

Heavy libraries (TensorFlow, Keras) are imported inside the commands, so
`defax --help` answers at once. User errors (`DefaxError`) print one line and
exit with status 2; anything else is a bug and keeps its traceback. The
library returns results; these modules only format them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from defax_keras import __version__
from defax_keras.cli import data, evaluate, explain, export, faces, predict, train
from defax_keras.console import start_tensorflow_quietly
from defax_keras.errors import DefaxError

EXIT_USER_ERROR = 2
COMMAND_GROUPS = (data, faces, train, evaluate, explain, export, predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defax",
        description="DeFaX-Keras: detect GAN-generated face images and explain every verdict.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not args.verbose:
        start_tensorflow_quietly()
    try:
        return args.func(args) or 0
    except DefaxError as exc:
        print(f"defax: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("defax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
