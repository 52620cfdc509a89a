"""Where DeFaX-Keras keeps generated data (demo set, scan results).

`DEFAX_CACHE` wins, then `$XDG_CACHE_HOME/defax_keras`, then
`~/.cache/defax_keras`: the same rules as pip and Keras, so a shared machine or a
read-only home directory can point the cache elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache directory (or a folder inside it), created on demand."""
    root = os.environ.get("DEFAX_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "defax_keras")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
