"""The files of a run directory: checkpoints, the shared bank file and where they are.

A run directory holds ``config.yaml``, ``results.json``, ``results.md``, ``combinations.json``,
``bank.safetensors`` (the raw features of every sample, written once per run) and, per seed,
``seed_<s>/model.safetensors``: the best model's weights together with everything needed to use it
again (config, modality specs, class names, standardisation statistics, and the positions and
observed masks that select the seed's retrieval bank, i.e. its training split, from
``bank.safetensors``, whose hash it records; with bank-only samples, ``data.unlabelled: bank``,
the bank holds them after the training split, the metadata ``bank_labelled`` says where they
start, and ``bank.safetensors`` holds the data's bank-only samples after its labelled ones).
Under ``protocol: {kind: cv}`` the same contents are written per fold instead, in
``fold_s<seed>_k<fold>/`` (fold ``fold`` of the repeat whose seed is ``seed``), every fold's
checkpoint referring to the same ``bank.safetensors``. A checkpoint written without ``bank_file``
(e.g. by the scikit-learn estimator) carries the bank itself (also the layout of earlier versions,
which still loads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_bytes
from torch import Tensor

from ..config import ExperimentConfig, from_dict, to_dict
from ..contract import MethodModel, is_direct
from ..data.dataset import CategoricalColumn, ModalitySpec, MultimodalDataset
from ..data.preprocessing import encode_categories, standardize
from ..errors import CheckpointError, InputNotFoundError
from ..methods import build_model
from .checkpoint import load_state_into, load_tensors, save_tensors
from .metrics import Task

CHECKPOINT = "model.safetensors"


# the raw features of every sample of a run, shared by its seeds' checkpoints
BANK_FILE = "bank.safetensors"


SEED_METRICS = "metrics.json"


# model, optimizer, RNG streams and best-so-far after the last finished epoch (torch.save of
# tensors and plain values only, read back with weights_only=True)
TRAINING_STATE = "training_state.pt"


def _spec_json(spec: ModalitySpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": spec.name,
        "shape": list(spec.shape),
        "kind": spec.kind,
        "columns": list(spec.columns) if spec.columns is not None else None,
    }
    if spec.categorical:
        out["categorical"] = [dataclasses.asdict(c) for c in spec.categorical]
    return out


def _spec_from_json(d: dict[str, Any]) -> ModalitySpec:
    categorical = tuple(
        CategoricalColumn(
            c["name"], tuple(c["levels"]), int(c["max_levels"]), tuple(c["pooled"]), bool(c["encoded"])
        )
        for c in d.get("categorical", ())
    )
    return ModalitySpec(
        d["name"],
        tuple(d["shape"]),
        d["kind"],
        tuple(d["columns"]) if d.get("columns") is not None else None,
        categorical,
    )


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# digests of the bank files this process wrote, so later checkpoints need not re-read them
_BANK_DIGESTS: dict[Path, str] = {}


def write_run_bank(path: Path, dataset: MultimodalDataset) -> str:
    """Write the raw (unstandardised) features, masks and labels of every sample of ``dataset``
    to ``path`` once; returns the file's SHA-256, which every checkpoint using it records."""
    path = Path(path)
    tensors = {f"features.{k}": v for k, v in dataset.features.items()}
    tensors.update({f"lengths.{k}": v for k, v in dataset.lengths.items()})
    tensors["observed"] = dataset.observed.to(torch.uint8)
    tensors["labels"] = dataset.labels
    save_tensors(
        path,
        tensors,
        {
            "ids": dataset.ids,
            "dataset": dataset.name,
            "natural_missingness": dataset.natural_missingness,
            "modalities": [_spec_json(s) for s in dataset.modalities],
        },
    )
    digest = _sha256(path.read_bytes())
    _BANK_DIGESTS[path.resolve()] = digest
    return digest


def run_bank_digest(path: Path, dataset: MultimodalDataset) -> str:
    """The digest of the run's bank file, writing the file first when it does not exist."""
    path = Path(path)
    known = _BANK_DIGESTS.get(path.resolve())
    if known is not None and path.is_file():
        return known
    if not path.is_file():
        return write_run_bank(path, dataset)
    digest = _BANK_DIGESTS[path.resolve()] = _sha256(path.read_bytes())
    return digest


@dataclass(frozen=True)
class RunBank:
    """A run's shared bank file (:data:`BANK_FILE`) and the dataset whose samples it holds;
    written when a checkpoint first refers to it (methods without checkpoints never write it)."""

    path: Path
    dataset: MultimodalDataset

    def digest(self) -> str:
        return run_bank_digest(self.path, self.dataset)


def save_seed_checkpoint(
    path: Path,
    cfg: ExperimentConfig,
    seed: int,
    state: dict[str, Tensor],
    bank: MultimodalDataset,
    stats: dict[str, tuple[Tensor, Tensor]],
    extra: dict[str, Any] | None = None,
    *,
    bank_file: Path | None = None,
    bank_index: Tensor | None = None,
    bank_digest: str | None = None,
) -> None:
    """Write a model's weights with its retrieval ``bank`` (the standardised training split),
    the standardisation ``stats`` and the metadata :func:`load_seed_checkpoint` needs.

    With ``bank_file`` (the run's :data:`BANK_FILE`, whose digest is ``bank_digest``) the
    checkpoint holds the bank's positions in that file (``bank_index``, e.g.
    :attr:`SeedData.train_index`) and its observed masks instead of its features: its size is the
    model's. Without, it embeds the bank (a self-contained file)."""
    tensors = {f"model.{k}": v for k, v in state.items()}
    for name, (mean, std) in stats.items():
        tensors[f"stats.{name}.mean"], tensors[f"stats.{name}.std"] = mean, std
    meta = {
        "config": to_dict(cfg),
        "seed": seed,
        "dataset": bank.name,
        "modalities": [_spec_json(s) for s in bank.modalities],
        "class_names": bank.class_names,
        **(extra or {}),
    }
    if bank_file is not None:
        if bank_index is None or bank_digest is None:
            raise ValueError(
                "a checkpoint that refers to a bank file needs the bank's positions "
                "in it (bank_index) and the file's digest (bank_digest)"
            )
        if len(bank_index) != len(bank):
            raise ValueError(
                f"bank_index holds {len(bank_index)} positions for a bank of {len(bank)} samples"
            )
        tensors["bank.index"] = torch.as_tensor(bank_index, dtype=torch.long)
        tensors["bank.observed"] = bank.observed.to(torch.uint8)
        rel = os.path.relpath(Path(bank_file).resolve(), Path(path).resolve().parent)
        meta.update({"bank_file": rel, "bank_sha256": bank_digest})
    else:
        for name, x in bank.features.items():
            tensors[f"bank.features.{name}"] = x
        for name, x in bank.lengths.items():
            tensors[f"bank.lengths.{name}"] = x
        tensors["bank.observed"] = bank.observed.to(torch.uint8)
        tensors["bank.labels"] = bank.labels
        meta["bank_ids"] = bank.ids
    save_tensors(path, tensors, meta)


def _read_run_bank(checkpoint: Path, meta: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The bank file a checkpoint refers to, checked against the digest it was written with: the
    file at the recorded relative path or, for a checkpoint moved into a deeper layout (e.g.
    ``fold_0/seed_0/``), the nearest :data:`BANK_FILE` above it with that digest."""
    recorded = (checkpoint.parent / meta["bank_file"]).resolve()
    candidates = [recorded] + [d / BANK_FILE for d in checkpoint.resolve().parents]
    existing = list(dict.fromkeys(c for c in candidates if c.is_file()))
    if not existing:
        raise CheckpointError(
            f"{checkpoint}: its retrieval bank {recorded} is missing (the run "
            f"directory's {BANK_FILE} must stay next to the seed directories)"
        )
    for bank_path in existing:
        data = bank_path.read_bytes()
        if _sha256(data) == meta["bank_sha256"]:
            break
    else:
        bank_path = existing[0]
        raise CheckpointError(
            f"{bank_path}: its SHA-256 differs from {meta['bank_sha256'][:16]}... "
            f"recorded in {checkpoint}: the bank file was replaced or modified "
            f"since the checkpoint was written"
        )
    try:
        tensors = load_bytes(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        bank_meta = json.loads(header.get("__metadata__", {}).get("meta", "{}"))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise CheckpointError(f"{bank_path}: not a readable bank file ({exc})") from exc
    return tensors, bank_meta


def _bank_from_file(
    checkpoint: Path,
    meta: dict[str, Any],
    tensors: dict[str, Tensor],
    specs: list[ModalitySpec],
    stats: dict[str, tuple[Tensor, Tensor]],
    task: Task = "classification",
) -> MultimodalDataset:
    """The seed's bank: its rows of the run's bank file, its masks, standardised as in training."""
    raw, bank_meta = _read_run_bank(checkpoint, meta)
    idx = tensors["bank.index"].long()
    n = int(raw["labels"].shape[0])
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise CheckpointError(
            f"{checkpoint}: bank positions outside the {n} samples of {checkpoint.parent / meta['bank_file']}"
        )
    ids = bank_meta.get("ids", [str(i) for i in range(n)])
    # the file holds the loaded features: categorical columns as level positions, encoded below
    raw_specs = [_spec_from_json(d) for d in bank_meta["modalities"]] if "modalities" in bank_meta else specs
    train = MultimodalDataset(
        raw_specs,
        {s.name: raw[f"features.{s.name}"][idx] for s in raw_specs},
        tensors["bank.observed"].bool(),
        raw["labels"][idx],
        [ids[i] for i in idx.tolist()],
        meta["class_names"],
        meta.get("dataset", "bank"),
        {s.name: raw[f"lengths.{s.name}"][idx] for s in raw_specs if f"lengths.{s.name}" in raw},
        bank_meta.get("natural_missingness"),
        require_every_modality=False,
        task=task,
    )
    return standardize(encode_categories(train, specs)[0], stats)


@dataclass
class LoadedModel:
    """A trained model with its bank and preprocessing, ready to predict."""

    cfg: ExperimentConfig
    seed: int
    model: MethodModel
    bank: MultimodalDataset
    stats: dict[str, tuple[Tensor, Tensor]]
    meta: dict[str, Any]

    @property
    def modalities(self) -> list[ModalitySpec]:
        return self.bank.modalities

    @property
    def class_names(self) -> list[str]:
        return self.bank.class_names

    @property
    def n_labelled(self) -> int:
        """How many of the bank's first rows are labelled training samples; the rows after them
        are bank-only samples (``data.unlabelled: bank``), kept so that predictions retrieve
        from the bank the model was trained with."""
        return int(self.meta.get("bank_labelled", len(self.bank)))


def load_seed_checkpoint(path: str | Path) -> LoadedModel:
    """A checkpoint written by :func:`save_seed_checkpoint`: its config, model (weights checked
    against the config), bank (embedded, or read from the run's bank file and checked against
    its recorded SHA-256) and standardisation statistics."""
    path = Path(path)
    tensors, meta = load_tensors(path)
    shared = "bank_file" in meta
    for key in ("config", "seed", "modalities", "class_names") + (
        ("bank_sha256",) if shared else ("bank_ids",)
    ):
        if key not in meta:
            raise CheckpointError(
                f"{path}: checkpoint metadata lacks {key!r}; not a moe-retriever checkpoint"
            )
    cfg = from_dict(ExperimentConfig, meta["config"]).validate()
    specs = [_spec_from_json(d) for d in meta["modalities"]]
    stats = {
        s.name: (tensors[f"stats.{s.name}.mean"], tensors[f"stats.{s.name}.std"])
        for s in specs
        if f"stats.{s.name}.mean" in tensors
    }
    # the weights first: a checkpoint of another config fails before the bank file is read
    task: Task = (meta.get("task_head") or {}).get("task", "classification")
    model = build_model(cfg, specs, len(meta["class_names"]) if task == "classification" else 1, task)
    if is_direct(model):
        raise CheckpointError(
            f"{path}: method {cfg.method!r} is fitted without the Trainer and writes no checkpoint"
        )
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    load_state_into(model, state, str(path))
    if shared:
        bank = _bank_from_file(path, meta, tensors, specs, stats, task)
    else:
        bank = MultimodalDataset(
            specs,
            {s.name: tensors[f"bank.features.{s.name}"] for s in specs},
            tensors["bank.observed"].bool(),
            tensors["bank.labels"],
            meta["bank_ids"],
            meta["class_names"],
            meta.get("dataset", "bank"),
            {s.name: tensors[f"bank.lengths.{s.name}"] for s in specs if f"bank.lengths.{s.name}" in tensors},
            task=task,
        )
    return LoadedModel(cfg, int(meta["seed"]), model, bank, stats, meta)


def run_checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """Every model checkpoint in a run directory, keyed by its directory relative to the run
    (``seed_0``, ``fold_s0_k1``, ..., or deeper layouts), sorted."""
    run = Path(run_dir)
    found = _checkpoint_dirs(run)
    if not found:
        raise InputNotFoundError(
            f"{run}: no {CHECKPOINT} found; is this a run directory written by `moe-retriever train`?"
        )
    return found


def _checkpoint_dirs(run: Path) -> dict[str, Path]:
    return {path.parent.relative_to(run).as_posix(): path for path in sorted(run.rglob(CHECKPOINT))}


_UNIT_NAME = re.compile(r"seed_(-?\d+)|fold_s(-?\d+)_k(\d+)")


def partition_checkpoints(run_dir: str | Path) -> dict[tuple[int, int | None], Path]:
    """``{(seed, fold): path}`` of the protocol's checkpoints in a run directory (those of
    :func:`run_checkpoints` directly in ``seed_<s>/``, fold None, or ``fold_s<s>_k<k>/``);
    empty when there is none."""
    found: dict[tuple[int, int | None], Path] = {}
    for name, path in _checkpoint_dirs(Path(run_dir)).items():
        match = _UNIT_NAME.fullmatch(name)
        if match and match[1] is not None:
            found[(int(match[1]), None)] = path
        elif match:
            found[(int(match[2]), int(match[3]))] = path
    return found


def remove_run_bank(run_dir: Path) -> None:
    """Delete the bank file of ``run_dir`` (when there is one) and forget its digest, so that the
    next checkpoint writes the file afresh instead of referring to an earlier run's."""
    path = Path(run_dir) / BANK_FILE
    path.unlink(missing_ok=True)
    _BANK_DIGESTS.pop(path.resolve(), None)
