"""Checkpoints as safetensors: tensors in the file, JSON metadata in its header.

Nothing is unpickled when loading, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..contract import MethodModel
from ..errors import CheckpointError as CheckpointError  # re-exported
from ..files import atomic_write


def save_tensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any] | None = None
) -> None:
    """Write tensors + JSON metadata atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"meta": json.dumps(metadata or {})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("meta", "{}"))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    return tensors, meta


def load_state_into(model: MethodModel, state: dict[str, Tensor], source: str) -> None:
    """Load a state dict, reporting missing, unexpected and mis-shaped tensors by name.

    A model whose parameters moved to other modules renames the keys of checkpoints written
    before in its ``upgrade_state_dict(state)``.
    """
    state = model.upgrade_state_dict(state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{source}: checkpoint does not match the model config: " + ", ".join(parts))
    model.load_state_dict(state)
