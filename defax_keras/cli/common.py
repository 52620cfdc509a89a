"""What several commands share: the saved-model arguments, number formatting, writing a JSON report."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_HELP = "a .keras file, a run directory or a preset directory"


def model_argument(parser, help_text: str = MODEL_HELP) -> None:
    parser.add_argument("--model-path", "-m", required=True, help=help_text)


def saved_model_arguments(parser, data_help: str, output_help: str, many: bool = False) -> None:
    """The arguments every command on a saved model shares: model, data, output, batch size."""
    model_argument(parser)
    parser.add_argument("--data", "-d", required=True, action="append" if many else "store", help=data_help)
    parser.add_argument("--output", "-o", help=output_help)
    parser.add_argument("--batch-size", type=int, default=32)


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
