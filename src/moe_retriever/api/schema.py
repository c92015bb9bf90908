"""Checking new data against the modalities and feature columns a run was trained on."""

from __future__ import annotations

from ..data.dataset import DataValidationError, ModalitySpec


class SchemaMismatchError(DataValidationError):
    """New data does not match the modalities or feature columns the run was trained on."""


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
    """Raise :class:`SchemaMismatchError` listing every :func:`schema_differences` of ``new``
    (the modalities of ``source``) from the training modalities."""
    diffs = schema_differences(new, trained)
    if diffs:
        raise SchemaMismatchError(f"{source} does not match the training data:\n  - " + "\n  - ".join(diffs))
