"""A comparison config (``configs/compare/*.yaml``): its schema, loading and checks, and the
experiment config and search space of each (dataset, method or preset) cell of a study."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...ablations import ABLATIONS
from ...config import (
    ConfigError,
    ExperimentConfig,
    ProtocolConfig,
    apply_overrides,
    from_dict,
    load_config,
    read_yaml_file,
    to_dict,
)
from ...errors import InputNotFoundError
from ...methods import METHODS, method_names
from ...tuning import SpaceSpec, fitted_directly, load_space, search_space

# datasets smaller than this get repeated cross-validation by default (holdout otherwise)
CV_MAX_SAMPLES = 5000


DEFAULT_CV = ProtocolConfig(kind="cv", folds=5, repeats=3)


@dataclass
class CompareDataset:
    """One dataset of a study: an experiment YAML (``config``; none: the built-in defaults)
    and/or the data's files (``data``, a folder or file: ``data.path``, so the data keeps its own
    gaps), plus overrides (e.g. the missing rate). Relative paths are read next to the compare
    file, else from the working directory. ``label`` names the dataset's table; without one it
    is derived from the file names and overrides (:func:`derived_label`)."""

    config: str | None = None
    data: str | None = None
    label: str | None = None
    overrides: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The entry's files, for messages."""
        named = [self.config] if self.config is not None else []
        return ", ".join(named + ([f"data {self.data}"] if self.data is not None else []))


def derived_label(ds: CompareDataset) -> str:
    """``synthetic``, ``synthetic on my_folder``, ``synthetic (data.missing.p=0.5)``: the
    config's file name, the data's folder or file name and the overrides."""
    names = [Path(ds.config).stem] if ds.config is not None else []
    names += [Path(ds.data).name or ds.data] if ds.data is not None else []
    label = " on ".join(names)
    return f"{label} ({', '.join(ds.overrides)})" if ds.overrides else label


@dataclass
class TuningConfig:
    """Nested hyperparameter search: in every outer partition, each method (or preset) gets its
    own Optuna study of ``trials`` trials on that partition's train / validation splits; the
    best trial's model is tested. ``trials: 0`` switches tuning off (e.g. for one study when the
    comparison's ``tuning`` is set). ``space``: a YAML file mapping method or preset names to
    search-space overrides in the format of ``moe-retriever tune --space`` (relative paths are
    read next to the compare file, else from the working directory). ``sampler_seed`` is
    combined with each partition's seed."""

    trials: int = 0
    space: str | None = None
    sampler_seed: int = 0


@dataclass
class CompareStudy:
    """One study: a table per dataset, a row per method or ablation preset."""

    title: str
    datasets: list[CompareDataset] = field(default_factory=list)
    # registered method names (methods.METHODS) or ablation preset names (ablations.ABLATIONS)
    methods: list[str] = field(default_factory=list)
    note: str = ""
    # overrides the comparison's ``tuning`` for this study (``{trials: 0}``: shared settings)
    tuning: TuningConfig | None = None


@dataclass
class CompareConfig:
    """A comparison config: its studies and what every run of them shares (seeds, overrides,
    protocol, tuning)."""

    name: str = "comparison"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # overrides applied to every run (after the dataset's config file, before its own overrides)
    overrides: list[str] = field(default_factory=list)
    studies: list[CompareStudy] = field(default_factory=list)
    # evaluation protocol of every dataset; None: 5-fold cv repeated on the first three seeds
    # for datasets under CV_MAX_SAMPLES samples, holdout otherwise. ``protocol...`` overrides
    # (of ``overrides``, then of the dataset) are applied on top of it (:func:`merged_protocol`).
    protocol: ProtocolConfig | None = None
    # nested tuning of every study that does not set its own (None: shared settings)
    tuning: TuningConfig | None = None


def load_compare_config(path: str | Path) -> CompareConfig:
    """Read and check a comparison config: at least one study and seed, every study with datasets
    and methods, every dataset with a config or data and a label unique in its study, every
    method a registered method or ablation preset, valid tuning settings. Relative paths are
    resolved (:func:`resolve_path`) and missing labels derived (:func:`derived_label`)."""
    path = Path(path)
    data = read_yaml_file(path, "comparison config") or {}
    try:
        cfg = from_dict(CompareConfig, data)
    except ConfigError as exc:
        # from_dict calls the mapping it was given "config": here that reads like a dataset's key
        message = re.sub(r"^config: ", "top level: ", str(exc))
        raise ConfigError(f"{path}: {message}") from exc
    if not cfg.studies:
        raise ConfigError(f"{path}: studies: at least one study is needed")
    if not cfg.seeds:
        raise ConfigError(f"{path}: seeds: at least one seed is needed")
    _check_tuning(cfg.tuning, path, f"{path}: tuning")
    for i, study in enumerate(cfg.studies):
        where = f"{path}: studies[{i}] ({study.title!r})"
        if not study.datasets or not study.methods:
            raise ConfigError(f"{where}: needs datasets and methods")
        _check_tuning(study.tuning, path, f"{where}: tuning")
        for name in study.methods:
            if name not in method_names() and name not in ABLATIONS:
                raise ConfigError(
                    f"{where}: methods: {name!r} is neither a method "
                    f"{method_names()} nor an ablation preset {sorted(ABLATIONS)}"
                )
        _check_datasets(study.datasets, path, where)
    return cfg


def resolve_path(compare_file: Path, value: str, where: str) -> str:
    """A path written in a compare file: next to that file when it exists there, else from the
    working directory (where ``configs/compare/*.yaml`` name ``configs/...`` from the
    repository root)."""
    beside = compare_file.parent / value
    if not Path(value).is_absolute() and beside.exists():
        return str(beside)
    if Path(value).exists():
        return value
    looked = "" if Path(value).is_absolute() else f" next to {compare_file} or in the working directory"
    raise InputNotFoundError(f"{where}: {value} not found{looked}")


def _check_datasets(datasets: list[CompareDataset], compare_file: Path, where: str) -> None:
    labelled: dict[str, int] = {}
    for j, ds in enumerate(datasets):
        key = f"{where}: datasets[{j}]"
        if ds.config is None and ds.data is None:
            raise ConfigError(f"{key}: needs config (an experiment YAML) or data (a data folder or file)")
        ds.label = ds.label or derived_label(ds)
        if ds.config is not None:
            ds.config = resolve_path(compare_file, ds.config, f"{key}.config")
        if ds.data is not None:
            ds.data = resolve_path(compare_file, ds.data, f"{key}.data")
        if ds.label in labelled:
            raise ConfigError(
                f"{where}: datasets[{labelled[ds.label]}] and [{j}] are both labelled {ds.label!r}; "
                "give each its own `label` (a table is named by it)"
            )
        labelled[ds.label] = j


def _check_tuning(tuning: TuningConfig | None, compare_file: Path, where: str) -> None:
    if tuning is None:
        return
    if tuning.space is not None:
        tuning.space = resolve_path(compare_file, tuning.space, f"{where}.space")
    if tuning.trials < 0:
        raise ConfigError(f"{where}.trials: must be >= 0 (0: no tuning), got {tuning.trials}")
    if tuning.space is not None:
        spaces = load_space(tuning.space)
        bad = sorted(k for k in spaces if k not in METHODS and k not in ABLATIONS)
        if bad:
            raise ConfigError(
                f"{where}.space: {tuning.space}: {bad} name neither a method nor an ablation preset "
                "(the file maps method or preset names to search-space overrides)"
            )


def merged_protocol(base: ProtocolConfig, overrides: list[str]) -> ProtocolConfig:
    """``base`` (the comparison's protocol of a dataset) with the ``protocol`` overrides among
    ``overrides`` applied in order: ``protocol.folds=3`` on 5-fold cv x 2 gives 3-fold cv x 2."""
    touching = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] == "protocol"]
    merged = apply_overrides({"protocol": to_dict(base)}, touching)["protocol"]
    return from_dict(ProtocolConfig, merged, "protocol")


def study_tuning(cmp: CompareConfig, study: CompareStudy) -> TuningConfig | None:
    """The tuning of a study's cells: its own, else the comparison's; None when off."""
    tuning = study.tuning if study.tuning is not None else cmp.tuning
    return tuning if tuning is not None and tuning.trials > 0 else None


def entry_space(
    tuning: TuningConfig, entry: str, cfg: ExperimentConfig
) -> tuple[SpaceSpec | None, str | None]:
    """The search space of one (method or preset) cell, or None and why the cell is not tuned.

    A preset's own overrides stay fixed: the keys it sets are left out of the space."""
    if fitted_directly(cfg.method):
        return None, "fitted directly, one run"
    spaces = load_space(tuning.space) if tuning.space is not None else {}
    overrides = dict(spaces.get(cfg.method) or {})
    if entry != cfg.method:
        overrides.update(spaces.get(entry) or {})
    fixed = {o.split("=", 1)[0].strip() for o in ABLATIONS[entry].overrides} if entry in ABLATIONS else set()
    overrides.update({key: None for key in fixed})
    space = search_space(cfg.method, cfg, overrides, allow_empty=True)
    return (space, None) if space else (None, "empty search space, one run")


def entry_config(cmp: CompareConfig, ds: CompareDataset, entry: str) -> ExperimentConfig:
    """The experiment config of one (dataset, method or preset) cell of a study."""
    overrides = [
        *cmp.overrides,
        # JSON-quoted so YAML keeps it a string (a folder named "1" or "yes")
        *([f"data.path={json.dumps(ds.data)}"] if ds.data is not None else []),
        *ds.overrides,
        f"train.seeds=[{','.join(map(str, cmp.seeds))}]",
        "train.progress=false",
    ]
    if entry in ABLATIONS:
        overrides = ABLATIONS[entry].apply(overrides)
    else:
        overrides.append(f"method={entry}")
    try:
        return load_config(ds.config, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{ds.source} with {entry!r}: {exc}") from exc
