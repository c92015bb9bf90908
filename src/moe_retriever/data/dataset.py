"""The container for incomplete multimodal data.

A :class:`MultimodalDataset` holds one feature tensor per modality (rows of unobserved
modalities are stored as zeros and never read), a boolean ``observed`` matrix (samples x
modalities), the labels of its task (classes, a regression target, or survival times and events;
see :mod:`.labels`) and sample ids. It is validated once at construction, so everything
downstream can trust it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import DataValidationError as DataValidationError  # re-exported
from ..training.metrics import Task
from .combinations import combination_name, observed_to_codes
from .labels import as_task_labels, check_task, strata, validate_labels


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical column of a tabular modality.

    As loaded (``encoded`` false) the column's cells hold the position of their level in
    ``levels``, every distinct level of the data (sorted). Fitted on a training split
    (``encoded`` true; :func:`~.preprocessing.fit_categories`) the column is replaced by the one-hot
    columns ``<name>=<level>`` of the kept ``levels``, ``<name>=<other>`` for the training levels
    pooled for being rare (``pooled``) and ``<name>=<unknown>`` for levels training never saw.
    """

    name: str
    levels: tuple[str, ...]
    max_levels: int = 50  # one-hot columns of its own for at most this many training levels
    pooled: tuple[str, ...] = ()
    encoded: bool = False


@dataclass(frozen=True)
class ModalitySpec:
    """A modality: its name, its kind (selects a default encoder) and per-sample feature shape."""

    name: str
    shape: tuple[int, ...]
    kind: str = "tabular"  # tabular | sequence | image | volume | text
    # column names of tabular features, used to check new data against training data
    columns: tuple[str, ...] | None = None
    # the categorical columns among ``columns`` (tabular only)
    categorical: tuple[CategoricalColumn, ...] = ()

    @property
    def width(self) -> int:
        return int(self.shape[-1])


@dataclass
class Batch:
    """A minibatch: per-modality features (zeros where unobserved), the observed mask, labels
    (as the dataset stores them: (B,) int64 classes, (B,) float64 regression targets or (B, 2)
    float64 survival (time, event))."""

    features: dict[str, Tensor]
    observed: Tensor  # (B, M) bool
    labels: Tensor  # (B,) long, (B,) float64 or (B, 2) float64: see MultimodalDataset
    index: Tensor  # (B,) positions in the source dataset
    lengths: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {k: v.to(device, non_blocking=True) for k, v in self.features.items()},
            self.observed.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.index.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.lengths.items()},
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, index: Tensor) -> Batch:
        """The rows ``index`` of this batch (positions, or a boolean mask)."""
        return Batch(
            {k: v[index] for k, v in self.features.items()},
            self.observed[index],
            self.labels[index],
            self.index[index],
            {k: v[index] for k, v in self.lengths.items()},
        )


class MultimodalDataset:
    """Per-modality features, which samples observe which modality, labels and metadata.

    The task (``task``, keyword-only; default ``classification``) fixes what ``labels`` holds:

    * ``classification``: (N,) int64 class indices into ``class_names``.
    * ``regression``: (N,) float64, the target in its original units (``target``);
      ``class_names`` is empty. A loaded data set (``require_every_modality``) must not have a
      constant target.
    * ``survival``: (N, 2) float64, column 0 the follow-up time (``time``, >= 0) and column 1
      the event indicator (``event``; 1 observed, 0 censored); build it with
      :func:`.labels.survival_labels`. ``class_names`` is empty. A loaded data set needs at
      least one event.

    Every label is checked at construction; a bad one raises a DataValidationError naming the
    sample id. ``n_outputs`` is the width of a model's head (the class count, or 1: the
    predicted value / the log-risk). ``strata`` are the integer groups that stratified splits
    balance (classes; target quantile bins; event x early/late follow-up). Derived data sets
    (``subset``, ``with_observed``, ``map_features``) keep the task; code that builds a new
    data set from another passes ``task=other.task``.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        features: dict[str, Tensor],
        observed: Tensor,
        labels: Tensor,
        ids: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "dataset",
        lengths: dict[str, Tensor] | None = None,
        natural_missingness: bool | None = None,
        *,
        require_every_modality: bool = True,
        task: Task = "classification",
    ) -> None:
        self.modalities = list(modalities)
        self.name = name
        check_task(task, name)
        self.task: Task = task
        observed = torch.as_tensor(observed)
        labels = torch.as_tensor(labels)
        n = int(labels.shape[0]) if labels.ndim >= 1 else -1
        self.ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(max(n, 0))]
        # loaded data must observe every modality somewhere; a split or a masked copy need not
        # (retrieval falls back when the bank lacks a modality)
        self._require_every_modality = require_every_modality
        self._validate(features, observed, labels, lengths or {}, class_names)
        self.observed = observed.bool().clone()
        self.labels = as_task_labels(task, labels)
        self.lengths = {k: torch.as_tensor(v).long() for k, v in (lengths or {}).items()}
        if task != "classification":
            self.class_names: list[str] = []
        elif class_names is not None:
            self.class_names = [str(c) for c in class_names]
        else:
            self.class_names = [str(c) for c in range(int(self.labels.max()) + 1)]
        # unobserved rows are zeroed so that nothing a model should not see can leak through
        self.features = {}
        for m, spec in enumerate(self.modalities):
            x = torch.as_tensor(features[spec.name]).float().clone()
            x[~self.observed[:, m]] = 0.0
            self.features[spec.name] = x
        if natural_missingness is None:
            natural_missingness = bool((~self.observed).any())
        self.natural_missingness = natural_missingness
        # a split that ships with the data: {"train", "val", "test"} -> sample positions; when
        # set, training uses it instead of a random split. Derived datasets do not carry it.
        self.splits: dict[str, Tensor] | None = None
        # samples without a label that only join the retrieval bank (data.unlabelled: bank; see
        # data/unlabelled.py); derived datasets do not carry them
        self.bank_only: MultimodalDataset | None = None

    # ------------------------------------------------------------------ validation
    def _validate(self, features, observed, labels, lengths, class_names) -> None:
        names = [s.name for s in self.modalities]
        if len(names) == 0:
            raise DataValidationError(f"{self.name}: no modalities given")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise DataValidationError(f"{self.name}: duplicate modality names {dup}")
        if self.task == "classification" and labels.ndim != 1:
            raise DataValidationError(f"{self.name}: labels must be 1-D, got shape {tuple(labels.shape)}")
        if labels.ndim == 0:
            raise DataValidationError(f"{self.name}: labels must have one entry per sample")
        n = labels.shape[0]
        if n == 0:
            raise DataValidationError(f"{self.name}: the dataset has no samples")
        if len(self.ids) != n:
            raise DataValidationError(f"{self.name}: {len(self.ids)} ids for {n} labels")
        if len(set(self.ids)) != n:
            seen, dups = set(), []
            for i in self.ids:
                if i in seen:
                    dups.append(i)
                seen.add(i)
            raise DataValidationError(f"{self.name}: duplicate sample ids {dups[:10]}")
        if tuple(observed.shape) != (n, len(names)):
            raise DataValidationError(
                f"{self.name}: observed mask has shape {tuple(observed.shape)}, "
                f"expected ({n}, {len(names)}) for modalities {names}"
            )
        if self.task != "classification":
            validate_labels(self.task, labels, self.ids, self.name, whole=self._require_every_modality)
        elif labels.dtype.is_floating_point and not torch.equal(labels, labels.round()):
            raise DataValidationError(f"{self.name}: labels must be integers")
        n_classes = len(class_names) if class_names is not None else None
        bad = (labels < 0) | (labels >= n_classes) if n_classes is not None else labels < 0
        if self.task == "classification" and bad.any():
            row = int(bad.nonzero()[0, 0])
            limit = f"0..{n_classes - 1}" if n_classes is not None else ">= 0"
            raise DataValidationError(
                f"{self.name}: sample {self.ids[row]!r} has label {int(labels[row])} outside {limit}"
            )
        observed = observed.bool()
        none = ~observed.any(dim=1)
        if none.any():
            bad_ids = [self.ids[i] for i in none.nonzero().flatten().tolist()[:10]]
            raise DataValidationError(
                f"{self.name}: {int(none.sum())} sample(s) observe no modality (there is no context "
                f"to retrieve from), e.g. {bad_ids}"
            )
        for m, spec in enumerate(self.modalities):
            if spec.name not in features:
                raise DataValidationError(f"{self.name}: no features for modality {spec.name!r}")
            x = torch.as_tensor(features[spec.name])
            if x.shape[0] != n:
                raise DataValidationError(
                    f"{self.name}: modality {spec.name!r} has {x.shape[0]} rows, expected {n}"
                )
            if tuple(x.shape[1:]) != tuple(spec.shape):
                raise DataValidationError(
                    f"{self.name}: modality {spec.name!r} has per-sample shape {tuple(x.shape[1:])}, "
                    f"its spec says {tuple(spec.shape)}"
                )
            if self._require_every_modality and not observed[:, m].any():
                raise DataValidationError(f"{self.name}: modality {spec.name!r} is observed by no sample")
            if not (
                x.dtype.is_floating_point
                or x.dtype in (torch.int64, torch.int32, torch.bool, torch.uint8, torch.int16, torch.int8)
            ):
                raise DataValidationError(f"{self.name}: modality {spec.name!r} has dtype {x.dtype}")
            if x.dtype.is_floating_point:
                rows = x[observed[:, m]].flatten(1)
                finite = torch.isfinite(rows).all(dim=1)
                if not finite.all():
                    pos = observed[:, m].nonzero().flatten()[~finite]
                    bad_ids = [self.ids[i] for i in pos.tolist()[:10]]
                    raise DataValidationError(
                        f"{self.name}: modality {spec.name!r} has NaN/inf in observed rows of "
                        f"{int((~finite).sum())} sample(s), e.g. {bad_ids}"
                    )
        for key, value in lengths.items():
            if key not in names:
                raise DataValidationError(f"{self.name}: lengths given for unknown modality {key!r}")
            if torch.as_tensor(value).shape != (n,):
                raise DataValidationError(f"{self.name}: lengths of {key!r} must have shape ({n},)")

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    @property
    def n_classes(self) -> int:
        """The number of classes (0 for regression and survival)."""
        return len(self.class_names)

    @property
    def n_outputs(self) -> int:
        """Width of a model's head: the class count, or 1 (the value, or the log-risk)."""
        return self.n_classes if self.task == "classification" else 1

    @property
    def target(self) -> Tensor:
        """(N,) float64 regression target in its original units."""
        self._require_task("regression", "target")
        return self.labels

    @property
    def time(self) -> Tensor:
        """(N,) float64 survival follow-up times."""
        self._require_task("survival", "time")
        return self.labels[:, 0]

    @property
    def event(self) -> Tensor:
        """(N,) bool survival event indicators (True: the event was observed)."""
        self._require_task("survival", "event")
        return self.labels[:, 1] == 1

    @property
    def strata(self) -> Tensor:
        """(N,) int64 groups that stratified splits balance (:func:`.labels.strata`)."""
        return strata(self.task, self.labels)

    def _require_task(self, task: str, what: str) -> None:
        if self.task != task:
            raise AttributeError(f"{self.name}: {what} exists for {task} data; this data set is {self.task}")

    @property
    def codes(self) -> Tensor:
        """Observed-combination bitmask per sample (bit m set when modality m is observed)."""
        return observed_to_codes(self.observed)

    def combination_counts(self) -> dict[str, int]:
        """Number of samples per observed combination, largest first (the paper's Fig. 3a)."""
        codes, counts = torch.unique(self.codes, return_counts=True)
        pairs = [
            (combination_name(int(c), self.modality_names), int(k))
            for c, k in zip(codes, counts, strict=True)
        ]
        return dict(sorted(pairs, key=lambda p: (-p[1], p[0])))

    def describe(self) -> str:
        widths = ", ".join(f"{s.name}:{'x'.join(map(str, s.shape))}" for s in self.modalities)
        if self.task == "regression":
            y = self.labels
            what = f"regression target mean {float(y.mean()):.4g} (sd {float(y.std()):.4g})"
        elif self.task == "survival":
            what = f"survival, {int(self.event.sum())} events"
        else:
            what = f"classes={self.n_classes}"
        return (
            f"{self.name}: N={len(self)}, {what}, modalities [{widths}], "
            f"missingness={'natural' if self.natural_missingness else 'none'}"
        )

    def set_splits(self, splits: Mapping[str, Sequence[int] | Tensor]) -> None:
        """Attach the data's own train / val / test split (sample positions); every part must be
        non-empty, in range and disjoint from the others."""
        if sorted(splits) != ["test", "train", "val"]:
            raise DataValidationError(
                f"{self.name}: a split needs exactly the parts train, val and test, got {sorted(splits)}"
            )
        parts = {k: torch.as_tensor(v, dtype=torch.long).flatten() for k, v in splits.items()}
        for key, pos in parts.items():
            if pos.numel() == 0:
                raise DataValidationError(f"{self.name}: the {key} split is empty")
            bad = (pos < 0) | (pos >= len(self))
            if bad.any():
                raise DataValidationError(
                    f"{self.name}: the {key} split has position {int(pos[bad][0])} outside 0..{len(self) - 1}"
                )
        counts = torch.bincount(torch.cat(list(parts.values())), minlength=len(self))
        if (counts > 1).any():
            i = int((counts > 1).nonzero()[0, 0])
            raise DataValidationError(
                f"{self.name}: sample {self.ids[i]!r} appears more than once in the splits"
            )
        self.splits = parts

    # ------------------------------------------------------------------ derived datasets
    def subset(self, index: Tensor | Sequence[int]) -> MultimodalDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return MultimodalDataset(
            self.modalities,
            {k: v[index] for k, v in self.features.items()},
            self.observed[index],
            self.labels[index],
            [self.ids[i] for i in index.tolist()],
            self.class_names,
            self.name,
            {k: v[index] for k, v in self.lengths.items()},
            self.natural_missingness,
            require_every_modality=False,
            task=self.task,
        )

    def with_observed(self, observed: Tensor) -> MultimodalDataset:
        """The same data with a new observed mask, which may only hide modalities."""
        observed = observed.bool()
        if (observed & ~self.observed).any():
            raise DataValidationError(f"{self.name}: a new mask cannot reveal unobserved modalities")
        return MultimodalDataset(
            self.modalities,
            self.features,
            observed,
            self.labels,
            self.ids,
            self.class_names,
            self.name,
            self.lengths,
            self.natural_missingness,
            require_every_modality=False,
            task=self.task,
        )

    def map_features(self, fn) -> MultimodalDataset:
        """Apply ``fn(spec, tensor) -> tensor`` to every modality (e.g. standardisation)."""
        feats = {s.name: fn(s, self.features[s.name]) for s in self.modalities}
        return MultimodalDataset(
            self.modalities,
            feats,
            self.observed,
            self.labels,
            self.ids,
            self.class_names,
            self.name,
            self.lengths,
            self.natural_missingness,
            require_every_modality=False,
            task=self.task,
        )

    def batch(self, index: Tensor) -> Batch:
        return self.full_batch().select(torch.as_tensor(index, dtype=torch.long))

    def full_batch(self) -> Batch:
        return Batch(self.features, self.observed, self.labels, torch.arange(len(self)), dict(self.lengths))


def concatenate_datasets(first: MultimodalDataset, second: MultimodalDataset) -> MultimodalDataset:
    """The samples of ``first`` followed by those of ``second`` (same modalities, classes and
    task): the training part of a method that selects its settings by inner cross-validation, or
    a retrieval bank with its bank-only rows."""
    if first.modality_names != second.modality_names:
        raise DataValidationError(
            f"{first.name}: cannot join samples of modalities {second.modality_names} "
            f"to samples of {first.modality_names}"
        )
    return MultimodalDataset(
        first.modalities,
        {k: torch.cat([v, second.features[k]]) for k, v in first.features.items()},
        torch.cat([first.observed, second.observed]),
        torch.cat([first.labels, second.labels]),
        list(first.ids) + list(second.ids),
        first.class_names,
        first.name,
        {k: torch.cat([v, second.lengths[k]]) for k, v in first.lengths.items()},
        first.natural_missingness,
        require_every_modality=False,
        task=first.task,
    )
