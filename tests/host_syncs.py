"""Counting host synchronisations: every call of a ``torch.Tensor`` method that hands a tensor's
value to Python (``item``, ``tolist``, ``bool``, ``int``, ``float``, ``__index__``, ``numpy``,
``cpu``), charged to the innermost frame of the package's own source that made it."""

from __future__ import annotations

import collections
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

import moe_retriever

PACKAGE = Path(moe_retriever.__file__).resolve().parent
SYNCING_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")


def _caller_in_package() -> str:
    """``path/relative/to/package.py:line`` of the innermost package frame on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(PACKAGE):
            return f"{path.relative_to(PACKAGE).as_posix()}:{frame.f_lineno}"
        frame = frame.f_back
    return "<outside the package>"


@contextlib.contextmanager
def count_host_syncs() -> Iterator[collections.Counter]:
    """Within the block, a Counter of ``(caller, method)`` for every syncing call."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING_METHODS}

    def counting(name, original):
        def method(self, *args, **kwargs):
            counts[(_caller_in_package(), name)] += 1
            return original(self, *args, **kwargs)

        return method

    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
