"""Use a trained run from Python: predict for new samples and see what the retriever retrieved.

    >>> run = load_run("runs/ad_data")              # the best seed by validation score
    >>> probs = run.predict_proba(new_data)         # (N, C), columns in run.class_names order
    >>> labels = run.predict(new_data)              # class names
    >>> r = run.retrieve(new_data)                  # retrieved embeddings + experts per missing pair
    >>> r.experts(0)                                # [("I_3", 0.31), ("Shared_2", 0.22), ...]
    >>> ens = load_run("runs/ad_data", ensemble=True)  # every seed (or fold) of the run
    >>> ens.predict_proba(new_data)                 # the mean of their probabilities

New data may observe any subset of the training modalities per sample (one is enough) and may
lack a training modality altogether; its features are standardised with the training statistics
and retrieval draws from the run's own bank (the training split stored in the checkpoint), so
predicting needs only the run directory. New modality names, feature shapes or feature columns
that differ from training raise :class:`SchemaMismatchError` listing every difference.

Prediction is deterministic: the supporting samples are drawn from a generator restarted from the
seed for every call, exactly as ``evaluate`` does, so the same input file always gives the same
probabilities (and the seed's test split gives the metrics ``evaluate`` reports).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .contract import MethodModel
from .data.bank import RetrievalBank
from .data.combinations import modality_letters, observed_to_codes
from .data.dataset import Batch, DataValidationError, ModalitySpec, MultimodalDataset
from .data.sources import load_dataset
from .errors import InputNotFoundError, UsageError
from .models.retriever import MoERetriever, TokenKind
from .training.experiment import (
    CHECKPOINT,
    LoadedModel,
    Partition,
    SeedData,
    load_seed_checkpoint,
    partition_checkpoints,
    partition_from_meta,
    prepare_partition,
    run_checkpoints,
)
from .training.trainer import Trainer, resolve_device

# TokenRouting.kind of each TokenKind: the fallback stands in for an intra-modal token
KIND_NAMES = {TokenKind.INTRA: "intra", TokenKind.INTRA_FALLBACK: "intra", TokenKind.INTER: "inter"}


class SchemaMismatchError(DataValidationError):
    """New data does not match the modalities or feature columns the run was trained on."""


# --------------------------------------------------------------------------- run directories


def fold_checkpoints(run_dir: str | Path) -> dict[tuple[int, int], Path]:
    """``{(seed, fold): path}`` of every ``fold_s<seed>_k<fold>/model.safetensors`` of a
    cross-validation run directory (empty for a holdout run)."""
    return {(s, k): path for (s, k), path in partition_checkpoints(run_dir).items() if k is not None}


def trained_seeds(run_dir: str | Path) -> set[int]:
    """The seeds with a saved model in a run directory (holdout seeds or cv repeat seeds)."""
    return {s for s, _ in partition_checkpoints(run_dir)}


def best_fold(run_dir: str | Path, seed: int | None = None) -> tuple[int, int]:
    """The (seed, fold) of a cross-validation run whose model scored best on its own validation
    split (the run's ``select_metric``); only the folds of repeat seed ``seed`` when given. Ties
    and folds without metrics go to the lowest (seed, fold); test folds never take part."""
    run = Path(run_dir)
    folds = sorted(fold_checkpoints(run))
    if seed is not None:
        folds = [f for f in folds if f[0] == int(seed)]
    if not folds:
        raise InputNotFoundError(
            f"{run}: no fold_s{'*' if seed is None else seed}_k*/{CHECKPOINT} "
            "found; is this a cross-validation run directory?"
        )
    scores = _validation_scores(run, {f: f"fold_s{f[0]}_k{f[1]}" for f in folds})
    if not scores:
        return folds[0]
    return max(scores, key=lambda f: (scores[f], -f[0], -f[1]))


def _validation_scores(run: Path, dirs: dict[Any, str]) -> dict[Any, float]:
    metric = "macro_f1"
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        metric = ((yaml.safe_load(config.read_text()) or {}).get("train") or {}).get("select_metric", metric)
    scores = {}
    for key, name in dirs.items():
        path = run / name / "metrics.json"
        if path.is_file():
            value = json.loads(path.read_text()).get("val", {}).get(metric)
            if value is not None and not np.isnan(value):
                scores[key] = float(value)
    return scores


def seed_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{seed: path}`` of every ``seed_<s>/model.safetensors`` in a run directory."""
    run = Path(run_dir)
    found = {s: path for (s, k), path in partition_checkpoints(run).items() if k is None}
    if not found:
        raise InputNotFoundError(
            f"{run}: no seed_*/{CHECKPOINT} found; is this a run directory written by `moe-retriever train`?"
        )
    return found


def best_seed(run_dir: str | Path) -> int:
    """The seed whose model scored best on its validation split (the run's ``select_metric``,
    read from ``seed_<s>/metrics.json``); ties and seeds without metrics go to the lowest seed.
    The test split never takes part in the choice. For a cross-validation run: the seed of
    :func:`best_fold`."""
    run = Path(run_dir)
    if fold_checkpoints(run):
        return best_fold(run)[0]
    seeds = sorted(seed_checkpoints(run))
    scores = _validation_scores(run, {s: f"seed_{s}" for s in seeds})
    if not scores:
        return seeds[0]
    return max(scores, key=lambda s: (scores[s], -s))


# --------------------------------------------------------------------------- schema checks


def schema_differences(new: list[ModalitySpec], trained: list[ModalitySpec]) -> list[str]:
    """Every way ``new`` differs from the training modalities, as readable lines.

    A training modality absent from the new data is not a difference (it is simply missing for
    every new sample); columns in another order are not a difference either (they are reordered).
    """
    by_name = {s.name: s for s in trained}
    out = []
    unknown = [s.name for s in new if s.name not in by_name]
    if unknown:
        out.append(
            f"modalities not in the training data: {unknown} "
            f"(training modalities: {[s.name for s in trained]})"
        )
    for spec in new:
        ref = by_name.get(spec.name)
        if ref is None:
            continue
        if spec.kind != ref.kind:
            out.append(f"modality {spec.name!r}: kind {spec.kind!r}, training had {ref.kind!r}")
        if spec.columns is not None and ref.columns is not None:
            missing = [c for c in ref.columns if c not in set(spec.columns)]
            extra = [c for c in spec.columns if c not in set(ref.columns)]
            if missing:
                out.append(f"modality {spec.name!r}: missing columns {_few(missing)}")
            if extra:
                out.append(f"modality {spec.name!r}: unexpected columns {_few(extra)}")
            if missing or extra:
                continue
        if spec.columns is None or ref.columns is None:  # nothing but the shape to compare
            if tuple(spec.shape) != tuple(ref.shape):
                out.append(
                    f"modality {spec.name!r}: per-sample shape {tuple(spec.shape)}, "
                    f"training had {tuple(ref.shape)}"
                )
    return out


def _few(items: list[str], limit: int = 10) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return str(items[:limit]) + more


def check_schema(new: list[ModalitySpec], trained: list[ModalitySpec], source: str) -> None:
    diffs = schema_differences(new, trained)
    if diffs:
        raise SchemaMismatchError(f"{source} does not match the training data:\n  - " + "\n  - ".join(diffs))


# --------------------------------------------------------------------------- retrieval results


@dataclass
class TokenRouting:
    """Router decisions per context token of the retriever (one row per token).

    ``source_code`` is the observed-combination code of the sample a token comes from: the bank
    sample drawn from the supporting group for an intra-modal token, the sample itself for an
    inter-modal token, and -1 for the learned fallback token used when no bank sample observes
    the target. ``source_id`` names that sample ("" for the fallback).
    """

    pair: np.ndarray  # (T,) index into Retrieval's pairs
    kind: np.ndarray  # (T,) "intra" | "inter"
    modality: np.ndarray  # (T,) modality index of the token's embedding
    source_code: np.ndarray  # (T,)
    source_id: list[str]
    experts: np.ndarray  # (T, R*k) selected expert indices
    weights: np.ndarray  # (T, R*k) their router weights


@dataclass
class Retrieval:
    """Retrieved embeddings of the missing (sample, modality) pairs and the experts they used."""

    sample_ids: list[str]  # (P,)
    rows: np.ndarray  # (P,) row of the sample in the input
    targets: np.ndarray  # (P,) missing modality index
    modality_names: list[str]
    embeddings: np.ndarray  # (P, d) the retrieved embedding that fusion received
    expert_names: list[str]  # (E,)
    # (P, E) router weight per expert averaged over the pair's context tokens (0 when unused)
    expert_weights: np.ndarray
    tokens: TokenRouting | None

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def target_names(self) -> list[str]:
        return [self.modality_names[t] for t in self.targets]

    def experts(self, pair: int, min_weight: float = 0.0) -> list[tuple[str, float]]:
        """Experts used for one pair with their mean router weight, largest first."""
        w = self.expert_weights[pair]
        order = np.argsort(-w, kind="stable")
        return [(self.expert_names[e], float(w[e])) for e in order if w[e] > min_weight]

    def for_sample(self, sample_id: str) -> dict[str, np.ndarray]:
        """``{missing modality name: retrieved embedding}`` of one sample."""
        return {
            self.modality_names[self.targets[p]]: self.embeddings[p]
            for p, i in enumerate(self.sample_ids)
            if i == sample_id
        }


# --------------------------------------------------------------------------- the trained run


class TrainedRun:
    """One seed's trained model with its bank and preprocessing (see :func:`load_run`)."""

    def __init__(self, loaded: LoadedModel, run_dir: Path | None = None, device: str = "auto") -> None:
        self.loaded = loaded
        self.run_dir = run_dir
        self.device = resolve_device(device)
        self.bank = RetrievalBank(loaded.bank, self.device)
        cfg = loaded.cfg
        self.trainer = Trainer(
            loaded.model,
            cfg.train,
            self.bank,
            self.device,
            self.partition.rng_seed,
            cfg.model.retriever.eval_draws,
        )
        self._seed_data: SeedData | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def seed(self) -> int:
        return self.loaded.seed

    @property
    def partition(self) -> Partition:
        """The split the model was trained on: its holdout seed, or its cross-validation fold."""
        return partition_from_meta({**self.loaded.meta, "seed": self.loaded.seed})

    @property
    def cfg(self):
        return self.loaded.cfg

    @property
    def model(self) -> MethodModel:
        return self.loaded.model

    @property
    def method(self) -> str:
        return self.loaded.cfg.method

    @property
    def modalities(self) -> list[ModalitySpec]:
        return self.loaded.modalities

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    @property
    def class_names(self) -> list[str]:
        return self.loaded.class_names

    @property
    def retrieves(self) -> bool:
        """True when the model routes context tokens through the MoE retriever."""
        return self.model.uses_retrieval and self.cfg.model.retriever.mode == "moe"

    def expert_names(self) -> list[str]:
        """Retriever experts as ``<modality letter>_<i>`` and ``Shared_<i>`` (e.g. ``I_3``)."""
        retriever = self.model.retriever
        assert isinstance(retriever, MoERetriever), "only for models that retrieve (see retrieves)"
        return retriever.moe.expert_names(modality_letters(self.modality_names))

    # ------------------------------------------------------------------ data
    def seed_data(self, dataset: MultimodalDataset | None = None) -> SeedData:
        """The seed's own standardised train / val / test splits, rebuilt from the run config
        (from ``dataset`` when given: the run's dataset already loaded)."""
        if self._seed_data is None or dataset is not None:
            source = dataset if dataset is not None else load_dataset(self.cfg.data)
            self._seed_data = prepare_partition(self.cfg, source, self.partition)
        return self._seed_data

    def to_batch(self, dataset: MultimodalDataset, standardized: bool = False) -> Batch:
        """New data as a batch in the training layout.

        Modalities and columns are checked against training and put in training order; a
        training modality the data lacks is unobserved for every sample; tabular features are
        standardised with the training statistics unless ``standardized``. Labels are mapped to
        the training classes by name (-1 for a name training never saw; prediction ignores them).
        """
        check_schema(dataset.modalities, self.modalities, f"data {dataset.name!r}")
        n = len(dataset)
        new_pos = {s.name: m for m, s in enumerate(dataset.modalities)}
        features, lengths = {}, {}
        observed = torch.zeros(n, len(self.modalities), dtype=torch.bool)
        for m, spec in enumerate(self.modalities):
            if spec.name not in new_pos:
                features[spec.name] = torch.zeros(n, *spec.shape)
                continue
            new_spec = dataset.modalities[new_pos[spec.name]]
            x = dataset.features[spec.name].float()
            if (
                new_spec.columns is not None
                and spec.columns is not None
                and tuple(new_spec.columns) != tuple(spec.columns)
            ):
                order = [list(new_spec.columns).index(c) for c in spec.columns]
                x = x[..., order]
            obs = dataset.observed[:, new_pos[spec.name]]
            if not standardized and spec.name in self.loaded.stats:
                # the training transform (training.experiment.standardize), on the aligned columns
                mean, std = self.loaded.stats[spec.name]
                x = (x - mean) / std
            features[spec.name] = torch.where(obs.view(-1, *[1] * (x.ndim - 1)), x, torch.zeros(()))
            observed[:, m] = obs
            if spec.name in dataset.lengths:
                lengths[spec.name] = dataset.lengths[spec.name]
        known = {c: i for i, c in enumerate(self.class_names)}
        mapping = torch.tensor([known.get(c, -1) for c in dataset.class_names], dtype=torch.long)
        return Batch(features, observed, mapping[dataset.labels], torch.arange(n), lengths)

    # ------------------------------------------------------------------ prediction
    def predict_proba(self, dataset: MultimodalDataset, standardized: bool = False) -> np.ndarray:
        """(N, C) class probabilities, columns in :attr:`class_names` order. ``standardized``:
        the features are already standardised with this run's statistics (e.g. :meth:`seed_data`)."""
        return self.trainer.predict_proba_batch(self.to_batch(dataset, standardized))

    def predict(self, dataset: MultimodalDataset, standardized: bool = False) -> np.ndarray:
        """(N,) predicted class names."""
        return predicted_names(self.class_names, self.predict_proba(dataset, standardized))

    def prediction_table(self, dataset: MultimodalDataset, standardized: bool = False) -> pd.DataFrame:
        """One row per sample: ``id``, ``predicted`` (class name) and ``prob_<class>`` columns."""
        return probability_table(dataset.ids, self.class_names, self.predict_proba(dataset, standardized))

    @torch.no_grad()
    def retrieve(self, dataset: MultimodalDataset, standardized: bool = False) -> Retrieval:
        """Retrieved embeddings of every missing (sample, modality) pair, with the experts used.

        These are the embeddings :meth:`predict_proba` feeds to fusion (the same draws). With
        ``eval_draws`` > 1 the embedding is the average over the draws and the routing shown is
        that of the last draw.
        """
        if not self.model.uses_retrieval:
            raise UsageError(f"method {self.method!r} does not retrieve missing embeddings")
        batch = self.to_batch(dataset, standardized)
        codes = observed_to_codes(batch.observed)
        bank_codes = observed_to_codes(self.bank.observed).cpu()
        pair_rows, targets, embeddings, traced = [], [], [], []
        n_pairs = 0
        for rows, out in self.trainer.eval_outputs(batch):
            if out.pair_samples is None or out.pair_samples.numel() == 0:
                continue
            rows_p = rows.cpu()[out.pair_samples.cpu()]  # dataset row of each pair
            pair_t = out.pair_targets.cpu()
            pair_rows.append(rows_p)
            targets.append(pair_t)
            embeddings.append(out.embeddings[out.pair_samples, out.pair_targets].float().cpu())
            r = out.retrieval
            if r is not None and r.token_pairs is not None:
                pair = r.token_pairs.cpu()
                traced.append(
                    {
                        "pair": pair + n_pairs,
                        "sample_row": rows_p[pair],
                        "kind": r.token_kinds.cpu(),
                        "modality": r.token_modalities.cpu(),
                        "bank_row": r.token_bank_rows.cpu(),
                        "experts": r.expert_indices.cpu(),
                        "weights": r.expert_weights.float().cpu(),
                    }
                )
            n_pairs += int(rows_p.numel())
        d = int(self.cfg.model.hidden)
        rows_all = torch.cat(pair_rows) if pair_rows else torch.zeros(0, dtype=torch.long)
        names = self.expert_names() if self.retrieves else []
        weights, tokens = np.zeros((n_pairs, len(names))), None
        if traced:
            tok = {k: torch.cat([t[k] for t in traced]) for k in traced[0]}
            weights = _mean_expert_weights(tok["pair"], tok["experts"], tok["weights"], n_pairs, len(names))
            kind, bank_row, sample_row = tok["kind"], tok["bank_row"], tok["sample_row"]
            code = torch.where(
                kind == TokenKind.INTRA,
                bank_codes[bank_row.clamp(min=0)],
                torch.where(kind == TokenKind.INTER, codes[sample_row], -1),
            )
            source_id = [
                self.bank.ids[b] if k == TokenKind.INTRA else dataset.ids[s] if k == TokenKind.INTER else ""
                for k, b, s in zip(kind.tolist(), bank_row.tolist(), sample_row.tolist(), strict=True)
            ]
            tokens = TokenRouting(
                tok["pair"].numpy(),
                np.array([KIND_NAMES[k] for k in kind.tolist()], dtype=str),
                tok["modality"].numpy(),
                code.numpy(),
                source_id,
                tok["experts"].numpy(),
                tok["weights"].numpy(),
            )
        return Retrieval(
            [dataset.ids[i] for i in rows_all.tolist()],
            rows_all.numpy(),
            (torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)).numpy(),
            self.modality_names,
            (torch.cat(embeddings) if embeddings else torch.zeros(0, d)).numpy(),
            names,
            weights,
            tokens,
        )


def _mean_expert_weights(
    pair: Tensor, experts: Tensor, weights: Tensor, n_pairs: int, n_experts: int
) -> np.ndarray:
    """(P, E): each expert's router weight summed over a pair's tokens / the pair's token count."""
    per_token = torch.zeros(pair.shape[0], n_experts).scatter_add(1, experts, weights)
    total = torch.zeros(n_pairs, n_experts).index_add(0, pair, per_token)
    counts = torch.bincount(pair, minlength=n_pairs).clamp(min=1)
    return (total / counts.unsqueeze(1)).numpy()


def predicted_names(class_names: list[str], probs: np.ndarray) -> np.ndarray:
    """(N,) the class name of each row's largest probability."""
    return np.asarray(class_names, dtype=object)[probs.argmax(axis=1)]


def probability_table(ids: list[str], class_names: list[str], probs: np.ndarray) -> pd.DataFrame:
    """One row per sample: ``id``, ``predicted`` (class name) and ``prob_<class>`` columns."""
    table = pd.DataFrame({"id": ids, "predicted": predicted_names(class_names, probs)})
    for c, name in enumerate(class_names):
        table[f"prob_{name}"] = probs[:, c]
    return table


class RunEnsemble:
    """Every model of a run (all seeds, or folds), predicting the mean of their class
    probabilities (see :func:`load_run` with ``ensemble=True``).

    Each member standardises the data with its own training statistics and retrieves from its
    own bank, exactly as it does alone; ``members`` maps each checkpoint's directory in the run
    (``seed_0``, ...) to its :class:`TrainedRun`.
    """

    def __init__(self, members: dict[str, TrainedRun], run_dir: Path | None = None) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = members
        self.run_dir = run_dir
        first_name, first = next(iter(members.items()))
        for name, member in members.items():
            if member.class_names != first.class_names:
                raise SchemaMismatchError(
                    f"{name}: classes {member.class_names} differ from {first_name}'s "
                    f"{first.class_names}; these models do not form one ensemble"
                )
            diffs = schema_differences(member.modalities, first.modalities)
            if diffs or len(member.modalities) != len(first.modalities):
                raise SchemaMismatchError(
                    f"{name}: modalities differ from {first_name}'s: "
                    + "; ".join(diffs or ["another modality count"])
                )

    @property
    def class_names(self) -> list[str]:
        return next(iter(self.members.values())).class_names

    @property
    def modalities(self) -> list[ModalitySpec]:
        return next(iter(self.members.values())).modalities

    @property
    def method(self) -> str:
        return next(iter(self.members.values())).method

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray:
        """(N, C) mean of the members' class probabilities, columns in :attr:`class_names` order."""
        return np.mean([m.predict_proba(dataset) for m in self.members.values()], axis=0)

    def predict(self, dataset: MultimodalDataset) -> np.ndarray:
        """(N,) class names of the largest mean probability."""
        return predicted_names(self.class_names, self.predict_proba(dataset))

    def prediction_table(self, dataset: MultimodalDataset) -> pd.DataFrame:
        """One row per sample: ``id``, ``predicted`` (class name) and ``prob_<class>`` columns."""
        return probability_table(dataset.ids, self.class_names, self.predict_proba(dataset))


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: Literal[False] = False
) -> TrainedRun: ...


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", *, ensemble: Literal[True]
) -> RunEnsemble: ...


@overload
def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: bool = False
) -> TrainedRun | RunEnsemble: ...


def load_run(
    run_dir: str | Path, seed: int | None = None, device: str = "auto", ensemble: bool = False
) -> TrainedRun | RunEnsemble:
    """Load one seed of a run directory written by ``moe-retriever train``, or with
    ``ensemble`` every model of it (:func:`run_checkpoints`) as a :class:`RunEnsemble`.

    ``seed`` defaults to :func:`best_seed` (best validation score). The checkpoint carries the
    config, the modality specs, the standardisation statistics and the retrieval bank.
    A cross-validation run loads the fold model with the best validation score
    (:func:`best_fold`; among the folds of repeat seed ``seed`` when given).
    """
    run = Path(run_dir)
    if ensemble:
        if seed is not None:
            raise ValueError("load_run: give a seed or ensemble=True, not both")
        return RunEnsemble(
            {
                name: TrainedRun(load_seed_checkpoint(path), run, device)
                for name, path in run_checkpoints(run).items()
            },
            run,
        )
    if fold_checkpoints(run):
        s, k = best_fold(run, seed)
        return TrainedRun(load_seed_checkpoint(fold_checkpoints(run)[(s, k)]), run, device)
    checkpoints = seed_checkpoints(run)
    chosen = best_seed(run) if seed is None else int(seed)
    if chosen not in checkpoints:
        raise InputNotFoundError(f"{run}: no checkpoint for seed {chosen}; seeds: {sorted(checkpoints)}")
    return TrainedRun(load_seed_checkpoint(checkpoints[chosen]), run, device)


# --------------------------------------------------------------------------- new data

UNLABELLED = "unlabelled"


def load_new_data(
    path: str | Path, format: str | None = None, trust_pickle: bool = False
) -> MultimodalDataset:
    """Load data to predict for, in any supported on-disk format (auto-detected by default).

    Labels are optional in the folder format here: when ``dataset.yaml`` has no ``label`` entry,
    every id found in any modality file is a sample (class placeholder ``unlabelled``, which
    prediction ignores). The other formats define their own labels.
    """
    from .config import DataConfig

    root = Path(path)
    spec_file = root / "dataset.yaml"
    if format in (None, "folder") and spec_file.is_file():
        import yaml

        spec = yaml.safe_load(spec_file.read_text())
        if isinstance(spec, dict) and "label" not in spec:
            import tempfile

            with tempfile.TemporaryDirectory(prefix="moe-retriever-predict-") as tmp:
                view = _labelled_view(root, spec, Path(tmp))
                return load_dataset(DataConfig(path=str(view), format="folder"))
    return load_dataset(DataConfig(path=str(root), format=format, trust_pickle=trust_pickle))


def _labelled_view(root: Path, spec: dict[str, Any], tmp: Path) -> Path:
    """A copy of an unlabelled folder spec (files referenced in place) with a placeholder label
    file listing every id of the modality files, in first-seen order."""
    import yaml

    from .data.sources.folder import read_table, table_ids

    id_column = str(spec.get("id_column", "id"))
    modalities = spec.get("modalities")
    if not isinstance(modalities, list) or not modalities:
        raise DataValidationError(f"{root / 'dataset.yaml'}: modalities must be a non-empty list")
    ids: dict[str, None] = {}
    entries = []
    for i, mod in enumerate(modalities):
        if not isinstance(mod, dict) or not isinstance(mod.get("file"), str):
            raise DataValidationError(f"{root / 'dataset.yaml'}: modalities[{i}] needs a file")
        entry = dict(mod, file=str((root / mod["file"]).resolve()))
        file = root / mod["file"]
        if file.suffix.lower() == ".npy":
            id_file = root / mod.get("ids", file.name + ".ids.txt")
            entry["ids"] = str(id_file.resolve())
            found = [line.strip() for line in id_file.read_text(encoding="utf-8").splitlines()]
        else:
            found = table_ids(read_table(file), id_column)
        ids.update((sample, None) for sample in found if sample)
        entries.append(entry)
    labels = pd.DataFrame({id_column: list(ids), "label": UNLABELLED})
    labels.to_csv(tmp / "labels.csv", index=False)
    view = {k: v for k, v in spec.items() if k != "splits"}
    view.update(
        name=spec.get("name") or root.resolve().name,
        modalities=entries,
        label={"file": str(tmp / "labels.csv"), "column": "label"},
    )
    (tmp / "dataset.yaml").write_text(yaml.safe_dump(view, sort_keys=False))
    return tmp
