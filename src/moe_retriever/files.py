"""Files of the library: writing atomically (a reader, or a process killed mid-write, sees the old
file or the complete new one, never half a file; config, training and analysis code write through
here) and the user's cache directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Create or replace ``path`` atomically: ``write`` fills a temporary file next to it, which is
    flushed to disk and renamed onto ``path``. Readers, and a process killed mid-write, see the old
    file or the complete new one, never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Create or replace the text file ``path`` atomically (UTF-8; see :func:`atomic_write`)."""
    atomic_write(path, lambda tmp: tmp.write_bytes(text.encode()))


def default_cache_dir() -> Path:
    """Where downloaded data and computed embeddings are kept: ``$MOE_RETRIEVER_CACHE``, else
    ``$XDG_CACHE_HOME/moe-retriever``, else ``~/.cache/moe-retriever``."""
    if os.environ.get("MOE_RETRIEVER_CACHE"):
        return Path(os.environ["MOE_RETRIEVER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "moe-retriever"
