"""The task of an experiment: what the config states, what the data declares, and what follows.

:func:`resolve_task` fixes ``data.task`` and ``train.select_metric`` of a config for the loaded
data set (``auto`` becomes what the data declares / the task's default metric, and says so);
:func:`run_key_config` is the config mapping a comparison's run key digests, from which the
task-specific fields of a classification run are left out so that the keys of runs stored before
regression and survival existed stay valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .config import ExperimentConfig, to_dict
from .errors import ConfigError
from .training.metrics import DEFAULT_SELECT_METRIC, TASK_METRICS, Task

# the train fields that only one task reads, with their defaults
TASK_TRAIN_FIELDS: dict[str, tuple[str, ...]] = {
    "regression": ("regression_loss", "huber_delta"),
    "survival": ("cox_ties",),
}


def check_select_metric(metric: str, task: str) -> None:
    """A ConfigError naming ``train.select_metric`` when ``metric`` is not one of the task's."""
    if metric != "auto" and metric not in TASK_METRICS[task]:
        raise ConfigError(
            f"train.select_metric: {metric!r} is not a {task} metric; choose one of "
            f"{list(TASK_METRICS[task])} (or auto: {DEFAULT_SELECT_METRIC[task]})"
        )


def resolve_task(
    cfg: ExperimentConfig, task: Task, log: Callable[[str], Any] | None = print
) -> ExperimentConfig:
    """``cfg`` for data of ``task``: ``data.task`` and ``train.select_metric`` set to concrete
    values. ``data.task = auto`` takes ``task``; any other value that differs from it is a
    ConfigError naming the key; ``select_metric = auto`` becomes the task's default. Each
    resolution of ``auto`` is logged."""
    stated = cfg.data.task
    if stated != "auto" and stated != task:
        raise ConfigError(
            f"data.task: the config says {stated}, but the data set {cfg.data.name!r} declares {task} "
            f"(set data.task to {task} or auto)"
        )
    metric: str = cfg.train.select_metric
    check_select_metric(metric, task)
    if cfg.train.class_weights and task != "classification":
        raise ConfigError(
            f"train.class_weights: weights classes, which {task} data has none of; set it to false"
        )
    if stated == "auto" and log is not None:
        log(f"data.task: {task} (declared by the data set)")
    if metric == "auto":
        metric = DEFAULT_SELECT_METRIC[task]
        if log is not None:
            log(f"train.select_metric: {metric} (the default for {task})")
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, task=task),
        train=dataclasses.replace(cfg.train, select_metric=metric),  # type: ignore[arg-type]  # a checked metric name
    )


def run_key_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """``to_dict(cfg)`` as a run key sees it: without ``data.task`` when it is ``auto`` or
    ``classification`` (it changes nothing the data does not already fix), with
    ``train.select_metric = auto`` written as the classification default ``macro_f1`` unless the
    config states another task, and without the train fields of a task the config does not state
    unless they differ from their defaults (a data set whose task is left ``auto`` then keys them
    only when they are set)."""
    d = to_dict(cfg)
    task = cfg.data.task
    if task in ("auto", "classification"):
        d["data"].pop("task")
    if cfg.train.select_metric == "auto" and task in ("auto", "classification"):
        d["train"]["select_metric"] = DEFAULT_SELECT_METRIC["classification"]
    defaults = type(cfg.train)()
    for owner, fields in TASK_TRAIN_FIELDS.items():
        for name in fields:
            if task != owner and getattr(cfg.train, name) == getattr(defaults, name):
                d["train"].pop(name)
    return d


def select_metric_for(metric: str, task: str) -> str:
    """``train.select_metric`` for data of ``task``: ``auto`` is the task's default; a metric of
    another task is a ConfigError naming the key."""
    check_select_metric(metric, task)
    return DEFAULT_SELECT_METRIC[task] if metric == "auto" else metric
