"""Matplotlib without a display: every figure the project writes goes through these two helpers."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (headless servers, CI), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, metadata: dict | None = None) -> Path:
    """Lay out, write (120 dpi) and close `fig`; returns the path. `metadata`: PNG text chunks (e.g. `Description`)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata=metadata)
    pyplot().close(fig)
    return Path(path)
