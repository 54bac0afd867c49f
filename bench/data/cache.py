"""Where the real benchmark datasets live: outside the repo, one folder per dataset.

Shared by the makers (run in .venv-embed, no squash there) and the loader (project venv), so
it imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

DATASETS = ("manpages", "docstrings", "mnist")
# Written in this order; meta.json last, so its presence means the folder is complete.
FILES = ("base.npy", "queries.npy", "attributes.parquet", "query_attributes.parquet", "query_texts.json")
META = "meta.json"


def cache_root() -> Path:
    """``$SQUASH_DATASETS_DIR`` or ``~/.cache/squash-datasets`` (kept out of git and of the repo)."""
    env = os.environ.get("SQUASH_DATASETS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "squash-datasets"


def dataset_dir(name: str) -> Path:
    return cache_root() / name


def is_complete(name: str) -> bool:
    """True when every file of ``name`` is there (a half-written build never has meta.json)."""
    root = dataset_dir(name)
    return all((root / f).exists() for f in (*FILES, META))
