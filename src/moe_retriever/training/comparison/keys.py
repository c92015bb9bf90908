"""The keys a comparison stores its runs under: ``<out>/runs/<key>/<partition>.json``.

The key is a digest of the resolved config (not the code), so identical configs run once and a
comparison run again reuses what it stored.
"""

from __future__ import annotations

import hashlib
import json

from ...config import ExperimentConfig, inactive_fields
from ...data.partitions import Partition
from ...methods import OPTIONAL_SECTIONS, sections_read
from ...task_config import run_key_config
from ...tuning import SpaceSpec
from .study_config import TuningConfig


def run_key(cfg: ExperimentConfig) -> str:
    """A digest of everything that changes a run's result (not its name, seeds or progress bar):
    the optional sections the method reads (:func:`~moe_retriever.methods.sections_read`),
    without their fields that are inactive there (:func:`~moe_retriever.config.inactive_fields`)."""
    d = run_key_config(cfg)  # the task-specific fields of a classification run left out
    d.pop("name")
    for key in ("seeds", "progress", "device"):
        d["train"].pop(key)
    # runs stored before these data options existed keep their keys while they are at defaults
    for key, default in (("unlabelled", "error"), ("label_fraction", 1.0)):
        if d["data"].get(key) == default:
            d["data"].pop(key)
    reads = sections_read(cfg.method)
    for section in OPTIONAL_SECTIONS:
        *parents, leaf = section.split(".")
        holder, value = d, cfg
        for name in parents:
            holder, value = holder[name], getattr(value, name)
        if section not in reads:
            holder.pop(leaf)
        else:
            for key in inactive_fields(getattr(value, leaf)):
                holder[leaf].pop(key)
    if cfg.protocol.kind == "holdout":
        d.pop("protocol")  # keys of holdout runs stored before protocols existed stay valid
    else:
        d["protocol"].pop("repeats")  # a fold's record names its repeat seed
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def tuned_run_key(cfg: ExperimentConfig, tuning: TuningConfig, space: SpaceSpec) -> str:
    """The key of a tuned cell: the untuned run's key plus everything the search depends on."""
    d = {"run": run_key(cfg), "trials": tuning.trials, "sampler_seed": tuning.sampler_seed, "space": space}
    return "tuned-" + hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def unit_key(part: Partition) -> int | str:
    """How a comparison keys one run: the seed for holdout (as before protocols), else the name."""
    return part.seed if part.fold is None else part.name
