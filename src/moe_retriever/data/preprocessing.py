"""Preprocessing fitted on the training split: the one-hot encoding of categorical columns and
per-feature standardisation of tabular modalities.

Levels and statistics come from the observed training rows only and are applied unchanged to the
validation, test and new data (they are stored in every checkpoint: the levels in the modality
specs, the statistics as tensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .dataset import CategoricalColumn, DataValidationError, ModalitySpec, MultimodalDataset


def fit_standardizer(train: MultimodalDataset) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-feature mean/std of tabular modalities over the observed training rows."""
    stats = {}
    for m, spec in enumerate(train.modalities):
        if spec.kind != "tabular":
            continue
        rows = train.features[spec.name][train.observed[:, m]]
        mean = rows.mean(0)
        std = rows.std(0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(mean)
        stats[spec.name] = (mean, torch.where(std > 1e-8, std, torch.ones_like(std)))
    return stats


def standardize(ds: MultimodalDataset, stats: dict[str, tuple[Tensor, Tensor]]) -> MultimodalDataset:
    """``ds`` with every modality in ``stats`` standardised by its (mean, std) from
    :func:`fit_standardizer`; the other modalities unchanged."""

    def fn(spec: ModalitySpec, x: Tensor) -> Tensor:
        if spec.name not in stats:
            return x
        mean, std = stats[spec.name]
        return (x - mean) / std

    return ds.map_features(fn)


# --------------------------------------------------------------------------- categorical columns

OTHER_LEVEL = "<other>"
UNKNOWN_LEVEL = "<unknown>"
# a level seen fewer times than this in the training split is pooled into <other>
MIN_LEVEL_COUNT = 2


def one_hot_columns(column: CategoricalColumn) -> list[str]:
    """The one-hot column names of a fitted categorical column, in order."""
    return [f"{column.name}={level}" for level in column.levels] + [
        f"{column.name}={OTHER_LEVEL}",
        f"{column.name}={UNKNOWN_LEVEL}",
    ]


def fit_categories(train: MultimodalDataset) -> dict[str, ModalitySpec]:
    """The one-hot encoding of every categorical column, fitted on the observed training rows:
    the ``max_levels`` most frequent levels seen at least :data:`MIN_LEVEL_COUNT` times get a
    column each (ties broken by the level's text), the other training levels are pooled into
    ``<other>``, and ``<unknown>`` takes what training never saw. Returns the encoded spec of
    each modality that has categorical columns (see :func:`encode_categories`)."""
    fitted = {}
    for m, spec in enumerate(train.modalities):
        if not spec.categorical or all(c.encoded for c in spec.categorical):
            continue
        assert spec.columns is not None  # categorical columns are named columns
        rows = train.features[spec.name][train.observed[:, m]]
        by_name = {c.name: c for c in spec.categorical}
        columns: list[str] = []
        encoded = []
        for j, name in enumerate(spec.columns):
            raw = by_name.get(name)
            if raw is None:
                columns.append(name)
                continue
            counts = torch.bincount(rows[:, j].long(), minlength=len(raw.levels)).tolist()
            seen = sorted(
                (k for k, c in enumerate(counts) if c > 0), key=lambda k: (-counts[k], raw.levels[k])
            )
            kept = sorted(raw.levels[k] for k in seen[: raw.max_levels] if counts[k] >= MIN_LEVEL_COUNT)
            pooled = sorted(set(raw.levels[k] for k in seen) - set(kept))
            column = CategoricalColumn(name, tuple(kept), raw.max_levels, tuple(pooled), encoded=True)
            encoded.append(column)
            columns += one_hot_columns(column)
        clash = sorted({c for c in columns if columns.count(c) > 1})
        if clash:
            raise DataValidationError(
                f"{train.name}: modality {spec.name!r}: the one-hot columns of its categorical "
                f"columns repeat column names {clash[:5]}; rename those columns"
            )
        fitted[spec.name] = ModalitySpec(
            spec.name, (len(columns),), spec.kind, tuple(columns), tuple(encoded)
        )
    return fitted


def encode_categories(
    ds: MultimodalDataset, fitted: Mapping[str, ModalitySpec] | Sequence[ModalitySpec]
) -> tuple[MultimodalDataset, dict[str, int]]:
    """``ds`` with the categorical columns of its modalities one-hot encoded as the fitted specs
    (:func:`fit_categories`, or a trained model's modalities) say, and the number of observed
    cells per ``"<modality>.<column>"`` whose level training never saw (``<unknown>``; columns
    without such cells are left out). Levels are matched by their text, so data loaded from
    other files is encoded exactly as the training data was. Modalities without categorical
    columns, or already encoded, are unchanged."""
    by_name = {s.name: s for s in (fitted.values() if isinstance(fitted, Mapping) else fitted)}
    specs, features, unknown = [], dict(ds.features), {}
    for m, spec in enumerate(ds.modalities):
        target = by_name.get(spec.name)
        raw = {c.name: c for c in spec.categorical if not c.encoded}
        if target is None or spec.kind != "tabular" or spec.columns is None:
            specs.append(spec)
            continue
        target_cats = {c.name: c for c in target.categorical}
        for name in spec.columns:
            if name in raw and name not in target_cats:
                raise DataValidationError(
                    f"{ds.name}: modality {spec.name!r}, column {name!r}: its cells are categories "
                    f"here but numbers in the training data"
                )
            if name in target_cats and name not in raw:
                raise DataValidationError(
                    f"{ds.name}: modality {spec.name!r}, column {name!r}: numbers here but a "
                    f"categorical column in the training data; declare it categorical"
                )
        if not raw:
            specs.append(spec)
            continue
        x = ds.features[spec.name]
        observed = ds.observed[:, m]
        blocks = []
        for j, name in enumerate(spec.columns):
            if name not in raw:
                blocks.append(x[:, j : j + 1])
                continue
            column = target_cats[name]
            slot = {level: k for k, level in enumerate(column.levels)}
            other, missing = len(column.levels), len(column.levels) + 1
            pooled = set(column.pooled)
            lookup = torch.tensor(
                [slot.get(level, other if level in pooled else missing) for level in raw[name].levels]
                or [missing],
                dtype=torch.long,
            )
            codes = lookup[x[:, j].long()]
            one_hot = torch.nn.functional.one_hot(codes, missing + 1).to(x.dtype)
            blocks.append(torch.where(observed.unsqueeze(1), one_hot, torch.zeros(())))
            count = int(((codes == missing) & observed).sum())
            if count:
                unknown[f"{spec.name}.{name}"] = count
        features[spec.name] = torch.cat(blocks, dim=1)
        names = [c for n in spec.columns for c in (one_hot_columns(target_cats[n]) if n in raw else [n])]
        specs.append(ModalitySpec(spec.name, (len(names),), spec.kind, tuple(names), target.categorical))
    out = MultimodalDataset(
        specs,
        features,
        ds.observed,
        ds.labels,
        ds.ids,
        ds.class_names,
        ds.name,
        ds.lengths,
        ds.natural_missingness,
        require_every_modality=False,
        task=ds.task,
    )
    return out, unknown
