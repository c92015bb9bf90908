"""Hyperparameter search with Optuna: one study per (experiment config, method).

Every trial trains the method with the trial's values as config overrides and scores it by the
mean validation metric (``train.select_metric``, macro-F1 by default; minimised where lower is
better: RMSE, MAE, the integrated Brier score) over the config's seeds (or
the folds of a cross-validation protocol). The test split never takes part. Weak trials are
pruned on the validation metric epoch by epoch (Optuna's median pruner, which waits for the
warm-up epochs); the sampler is a seeded TPE.

The study lives in an Optuna storage (SQLite in the output directory by default), so a search
that stops can be continued by running the same command again, and ``--jobs N`` worker processes,
or several commands and machines given the same ``--storage``, work on one study together
(``--trials`` is the study's total of finished trials, counted over all of them, and reached
exactly: see :mod:`moe_retriever.tuning_workers`). A continued search keeps the finished trials,
marks a trial left running by a process that died as failed (see
:func:`~moe_retriever.tuning_study.fail_trials_of_dead_workers`) and samples every trial with its
own seed (:func:`~moe_retriever.tuning_study.trial_sampler_seed`), so it proposes new points
rather than the seeded sequence of the first run again.

A search space maps dotted config keys to distributions::

    train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    model.hidden: {type: categorical, choices: [32, 64, 128]}
    model.retriever.moe.top_k: {type: int, low: 1, high: 4}

:data:`COMMON_SPACE` applies to every method trained by gradient descent; :data:`METHOD_SPACES`
adds each method's own knobs. A YAML file passed as ``space`` adds or replaces entries, and an
entry set to ``null`` removes one.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from tqdm.auto import tqdm

from .baselines.common import DirectMethodBase
from .config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    from_dict,
    load_config,
    read_yaml_file,
    save_config,
    to_dict,
)
from .data.partitions import Partition, prepare_partition
from .data.sources import load_dataset
from .errors import UsageError
from .methods import METHODS
from .task_config import select_metric_for
from .training.fitting import fit_model, partition_record
from .training.metric_display import value_text
from .training.metrics import is_better
from .training.trainer import TrainingDivergedError
from .tuning_study import optuna_direction, optuna_module

if TYPE_CHECKING:
    from .data.dataset import MultimodalDataset

SpaceSpec = dict[str, dict[str, Any]]

# width, learning rate, regularisation: what every deep method depends on
COMMON_SPACE: SpaceSpec = {
    "train.lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
    "train.weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "model.hidden": {"type": "categorical", "choices": [32, 64, 128]},
}

_MOE = "model.retriever.moe"
_OPT = "model.method_options"
METHOD_SPACES: dict[str, SpaceSpec] = {
    "moe_retriever": {
        f"{_MOE}.experts_per_modality": {"type": "categorical", "choices": [4, 8, 16]},
        f"{_MOE}.top_k": {"type": "int", "low": 1, "high": 4},
        "model.retriever.n_intra": {"type": "categorical", "choices": [None, 2, 4, 8]},
        "model.retriever.reconstruction_weight": {"type": "categorical", "choices": [0.0, 0.5, 1.0]},
    },
    "official_retriever": {
        "model.retriever.n_intra": {"type": "categorical", "choices": [None, 2, 4, 8]},
    },
    "modality_dropout": {f"{_OPT}.modality_dropout.p": {"type": "float", "low": 0.1, "high": 0.5}},
    "flex_moe": {
        f"{_OPT}.flex_moe.experts": {"type": "categorical", "choices": [16, 32]},
        f"{_OPT}.flex_moe.top_k": {"type": "int", "low": 1, "high": 4},
    },
    "fusemoe": {
        f"{_OPT}.fusemoe.experts": {"type": "int", "low": 2, "high": 8},
        f"{_OPT}.fusemoe.top_k": {"type": "int", "low": 1, "high": 2},
    },
    "shaspec": {
        f"{_OPT}.shaspec.train_drop_p": {"type": "float", "low": 0.0, "high": 0.5},
        f"{_OPT}.shaspec.align_weight": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
    },
    "mmformer": {
        f"{_OPT}.mmformer.train_drop_p": {"type": "float", "low": 0.0, "high": 0.5},
        f"{_OPT}.mmformer.tokens": {"type": "categorical", "choices": [2, 4, 8]},
    },
    "m3care": {f"{_OPT}.m3care.threshold": {"type": "float", "low": 0.1, "high": 0.7}},
    "muse": {
        f"{_OPT}.muse.contrastive_weight": {"type": "float", "low": 0.1, "high": 1.0, "log": True},
        f"{_OPT}.muse.edge_drop_p": {"type": "float", "low": 0.1, "high": 0.5},
    },
    # fitted directly (no epochs, no width): only its own settings, in place of its inner grid search
    "hist_gbt": {
        f"{_OPT}.hist_gbt.search": {"type": "categorical", "choices": [False]},
        f"{_OPT}.hist_gbt.learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        f"{_OPT}.hist_gbt.max_leaf_nodes": {"type": "categorical", "choices": [7, 15, 31, 63]},
        f"{_OPT}.hist_gbt.min_samples_leaf": {"type": "categorical", "choices": [5, 10, 20, 40]},
    },
}

_KINDS = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}


def search_space(
    method: str,
    cfg: ExperimentConfig,
    overrides: SpaceSpec | None = None,
    allow_empty: bool = False,
    source: str | Path | None = None,
) -> SpaceSpec:
    """The space searched for ``method``: the common entries when the method trains by gradient
    descent, then the method's own, then ``overrides`` (``None`` values remove an entry). An
    empty space is an error unless ``allow_empty``. Every entry is checked against ``cfg``: its
    key must be a config key and each of its values one the key accepts; numbers written as
    strings (PyYAML reads ``1e-4`` as one) become numbers. ``source``: the file ``overrides``
    came from, named in the errors about its entries."""
    if method not in METHODS:
        raise ConfigError(f"method: unknown method {method!r}; available: {sorted(METHODS)}")
    direct = fitted_directly(method)
    space: SpaceSpec = {} if direct else copy.deepcopy(COMMON_SPACE)
    space.update(copy.deepcopy(METHOD_SPACES.get(method, {})))
    for key, spec in (overrides or {}).items():
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = spec
    for key in space:
        where = f"search space entry {key!r}"
        if source is not None and key in (overrides or {}):
            where += f" in {source}"
        space[key] = _checked_spec(where, space[key])
        _check_key_in_config(where, key, space[key], cfg)
    if not space and not allow_empty:
        raise ConfigError(
            f"tune: nothing to search for method {method!r}; give a search space (--space FILE)"
        )
    return space


def fitted_directly(method: str) -> bool:
    """Whether ``method`` is fitted without the Trainer (no epochs, no learning rate)."""
    pending, seen = list(DirectMethodBase.__subclasses__()), set()
    while pending:
        cls = pending.pop()
        seen.add(getattr(cls, "method", None))
        pending.extend(cls.__subclasses__())
    return method in seen


def _number(where: str, field: str, value: Any, kind: str) -> float | int:
    """``value`` of a float / int entry's ``field`` as a number; numeric strings are converted
    (YAML 1.1 reads ``1e-4``, without a dot, as a string)."""
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where}: {field} {value!r} is not a number") from None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ConfigError(f"{where}: {field} {value!r} is not a finite number")
    if kind == "int":
        if number != int(number):
            raise ConfigError(f"{where}: {field} {value!r} is not an integer (type: int)")
        return int(number)
    return float(number)


def _checked_spec(where: str, spec: Any) -> dict[str, Any]:
    """``spec`` checked, with its bounds and step as numbers of its type."""
    if not isinstance(spec, dict) or spec.get("type") not in _KINDS:
        raise ConfigError(f"{where}: expected a mapping with type float, int or categorical, got {spec!r}")
    missing = [f for f in _KINDS[spec["type"]] if f not in spec]
    if missing:
        raise ConfigError(f"{where}: missing {missing}")
    allowed = {"type", "log", "step", *_KINDS[spec["type"]]}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    if spec["type"] == "categorical":
        if not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {spec['choices']!r}")
        return spec
    spec = dict(spec)
    for field in ("low", "high", "step"):
        if spec.get(field) is not None:
            spec[field] = _number(where, field, spec[field], spec["type"])
    if not spec["low"] < spec["high"]:
        raise ConfigError(f"{where}: low must be < high, got {spec['low']} and {spec['high']}")
    return spec


def _check_key_in_config(where: str, key: str, spec: dict[str, Any], cfg: ExperimentConfig) -> None:
    """Every value the entry can take set into ``cfg``: an unknown key or a value of the wrong
    type is found here, before a study exists, not inside a trial. Only the key's own checks
    apply (no cross-key validation): other entries may change the keys it depends on."""
    values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
    for value in values:
        try:
            from_dict(ExperimentConfig, apply_overrides(to_dict(cfg), as_overrides({key: value})))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def load_space(path: str | Path) -> SpaceSpec:
    path = Path(path)
    data = read_yaml_file(path, "search space file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must map config keys to distributions")
    return data


def suggest(trial: Any, space: SpaceSpec) -> dict[str, Any]:
    """One value per entry of ``space`` from an Optuna trial."""
    values = {}
    for key, spec in space.items():
        if spec["type"] == "float":
            values[key] = trial.suggest_float(
                key,
                float(spec["low"]),
                float(spec["high"]),
                log=bool(spec.get("log", False)),
                step=spec.get("step"),
            )
        elif spec["type"] == "int":
            values[key] = trial.suggest_int(
                key,
                int(spec["low"]),
                int(spec["high"]),
                log=bool(spec.get("log", False)),
                step=spec.get("step", 1),
            )
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def as_overrides(values: dict[str, Any]) -> list[str]:
    """``key=value`` config overrides whose values YAML reads back unchanged."""
    return [f"{key}={yaml_scalar(value)}" for key, value in values.items()]


def yaml_scalar(value: Any) -> str:
    """``value`` as one line of YAML that reads back equal. PyYAML writes floats so that they read
    back as floats (``1.0e-05``, where JSON's ``1e-05`` reads as a string)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def default_pruner(cfg: ExperimentConfig) -> Any:
    """Optuna's median pruner, waiting for three finished trials and the warm-up epochs."""
    optuna = optuna_module()

    # validation scores of the zero-filled warm-up epochs say little about the method
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.train.warmup_epochs + 1)


def report_or_prune(trial: Any, value: float, step: int) -> None:
    """Report a trial's validation score at ``step``; end the trial when the pruner says so."""
    optuna = optuna_module()

    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned()


def with_values(cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
    """``cfg`` with a trial's values (dotted config keys) set."""
    return from_dict(ExperimentConfig, apply_overrides(to_dict(cfg), as_overrides(values))).validate()


@dataclass
class TuneResult:
    best_value: float
    best_params: dict[str, Any]
    best_config: Path
    trials_table: Path
    n_trials: int


def tune(
    config: str | Path | None,
    method: str,
    trials: int,
    out: str | Path,
    storage: str | None = None,
    timeout: float | None = None,
    seed: int = 0,
    overrides: list[str] | None = None,
    space_overrides: SpaceSpec | None = None,
    study_name: str | None = None,
    pruner: Any = None,
    log: Callable[[str], None] = tqdm.write,
    space_file: str | Path | None = None,
    progress: bool = True,
    jobs: int = 1,
    threads: int | None = None,
) -> TuneResult:
    """Search ``method``'s settings on ``config``; write ``best.yaml`` and ``trials.csv`` to ``out``.

    ``trials`` is the study's total of finished (complete or pruned) trials: running the same
    search again, or in parallel against the same storage, adds trials until exactly that many
    have finished (a worker stops early after ``trials`` failed trials of its own). ``jobs``
    worker processes (spawned; ``1``: this process) search together, each with ``threads`` torch
    threads (default with several jobs: this process's CPUs shared out). ``storage``: a database
    URL or ``journal:PATH`` (default SQLite in ``out``). ``pruner`` replaces the default median
    pruner (any ``optuna.pruners`` object). ``log`` gets a line per ended trial; ``progress``
    shows a bar over the study's trials. ``space_file``: where ``space_overrides`` came from,
    for error messages. Every argument is checked before anything is written.
    """
    from .tuning_storage import parse_storage, process_cpu_count
    from .tuning_workers import (
        SearchPlan,
        finished_trials,
        open_study,
        run_worker,
        run_workers,
        write_trials_table,
    )

    if trials < 1:
        raise UsageError(f"tune: --trials must be at least 1 (finished trials the study holds), got {trials}")
    if jobs < 1:
        raise UsageError(f"tune: --jobs must be at least 1 (worker processes), got {jobs}")
    if threads is not None and threads < 1:
        raise UsageError(f"tune: --threads must be at least 1 (torch threads per worker), got {threads}")
    optuna = optuna_module()

    base = [*(overrides or []), f"method={method}", "train.progress=false"]
    cfg = load_config(config, base)
    space = search_space(method, cfg, space_overrides, source=space_file)
    dataset = load_dataset(cfg.data)  # a data error is found here, not in every worker
    out = Path(out)
    spec = parse_storage(storage, out)
    if jobs > 1 and threads is None:
        threads = max(1, process_cpu_count() // jobs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    name = study_name or f"{cfg.name}-{method}"
    metric = select_metric_for(cfg.train.select_metric, dataset.task)
    plan = SearchPlan(
        config=None if config is None else str(config),
        overrides=base,
        space=space,
        storage=spec,
        study_name=name,
        trials=trials,
        deadline=None if timeout is None else time.time() + timeout,
        sampler_seed=seed,
        threads=threads,
        pruner=pruner if pruner is not None else default_pruner(cfg),
        metric=metric,
    )
    study = open_study(plan)
    trials_path = out / "trials.csv"
    bar = tqdm(
        total=trials,
        initial=min(finished_trials(study), trials),
        desc=name,
        unit="trial",
        disable=not progress,
    )

    def show(study: Any) -> None:
        bar.update(min(finished_trials(study), trials) - bar.n)
        write_trials_table(study, trials_path)

    problems: list[str] = []
    try:
        if finished_trials(study) >= trials:
            pass  # a finished study: no worker to start
        elif jobs == 1:
            run_worker(plan, log, after_trial=show, dataset=dataset)
        else:
            log(f"tune: {jobs} worker processes, {threads} torch thread(s) each, on {spec.text}")
            problems = run_workers(plan, jobs, log, on_poll=show)
    finally:
        bar.close()
    write_trials_table(study, trials_path)
    for problem in problems:
        log(f"tune: {problem}")
    n_finished = finished_trials(study)
    if problems and n_finished < trials:
        raise RuntimeError(
            f"tune: {len(problems)} worker(s) ended early ({problems[0]}); the study holds "
            f"{n_finished} of {trials} finished trials: run the command again to continue it"
        )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"tune: no trial of study {name!r} completed (see {trials_path})")
    best = study.best_trial
    assert best.value is not None  # the best trial is a completed one
    best_cfg = load_config(config, [*(overrides or []), f"method={method}"] + as_overrides(best.params))
    best_path = out / "best.yaml"
    save_config(best_cfg, best_path)
    log(
        f"{name}: {len(complete)} complete, "
        f"{sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)} pruned; best "
        f"validation {metric} {value_text(best.value, metric)} (trial {best.number})"
    )
    return TuneResult(float(best.value), dict(best.params), best_path, trials_path, len(study.trials))


# --------------------------------------------------------------------------- nested in a comparison


def partition_sampler_seed(sampler_seed: int, part: Partition) -> int:
    """The TPE seed of the search in one outer partition: distinct per partition, reproducible."""
    return 1_000_003 * sampler_seed + part.rng_seed


def tune_partition(
    cfg: ExperimentConfig,
    dataset: MultimodalDataset,
    part: Partition,
    space: SpaceSpec,
    trials: int,
    device: Any,
    sampler_seed: int = 0,
) -> dict[str, Any]:
    """Search ``space`` inside one outer partition of a comparison and test the best trial's model.

    Every trial trains on the partition's training split and is scored by the validation metric
    (``train.select_metric``) on its validation split; the test split is used once, by the best
    trial's model (kept from its trial, not retrained). ``trials`` trials in all (pruned ones
    count); the study lives in memory, the partition being the unit a comparison stores and
    reuses. Returns the record of :func:`~moe_retriever.training.fitting.partition_record`
    with the search's ``tuned_params``, ``n_trials`` and ``tuning`` (best validation score and
    every trial) added, and ``config``: the best trial's config.
    """
    optuna = optuna_module()

    data = prepare_partition(cfg, dataset, part)
    metric = select_metric_for(cfg.train.select_metric, dataset.task)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=optuna_direction(metric),
        sampler=optuna.samplers.TPESampler(seed=partition_sampler_seed(sampler_seed, part)),
        pruner=default_pruner(cfg),
    )
    # the best trial so far: its score, config and fitted model (what the test split sees)
    best: dict[str, Any] = {}

    def objective(trial: Any) -> float:
        values = suggest(trial, space)
        trial_cfg = with_values(cfg, values)

        def report(epoch: int, entry: dict[str, Any]) -> None:
            report_or_prune(trial, entry[f"val_{metric}"], epoch)

        fitted = fit_model(
            trial_cfg,
            data.train,
            data.val,
            data.train.n_classes,
            part.rng_seed,
            device,
            on_epoch=report,
            bank_only=data.bank_only,
        )
        score = float(fitted.fit.best_val[metric])
        if not best or is_better(score, best["score"], metric):
            best.update(score=score, cfg=trial_cfg, fitted=fitted, params=values, number=trial.number)
        return score

    study.optimize(objective, n_trials=trials, catch=(TrainingDivergedError,))
    if not best:
        raise RuntimeError(f"tuning: none of the {trials} trials completed")
    record = partition_record(data, part, best["fitted"])
    states = [t.state.name.lower() for t in study.trials]
    record["config"] = to_dict(best["cfg"])
    record["tuned_params"] = best["params"]
    record["n_trials"] = len(study.trials)
    record["tuning"] = {
        "objective": f"validation {metric}",
        "best_trial": best["number"],
        "best_val": best["score"],
        "sampler_seed": partition_sampler_seed(sampler_seed, part),
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "failed": states.count("fail"),
        "trials": [
            {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params}
            for t in study.trials
        ],
    }
    return record
