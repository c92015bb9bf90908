"""The keys a comparison stores its runs under: ``<out>/runs/<key>/<partition>.json``.

The key is a digest of the resolved config (not the code), so identical configs run once and a
comparison run again reuses what it stored.
"""

from __future__ import annotations

import hashlib
import json

from ...config import ExperimentConfig, to_dict
from ...data.partitions import Partition
from ...tuning import SpaceSpec
from .study_config import TuningConfig

# methods that read ``model.retriever``; every other method runs with retrieval switched off, so
# its run key leaves that section out and a new retriever option does not invalidate its runs
RETRIEVING_METHODS = frozenset({"moe_retriever", "official_retriever"})


def run_key(cfg: ExperimentConfig) -> str:
    """A digest of everything that changes a run's result (not its name, seeds or progress bar)."""
    d = to_dict(cfg)
    d.pop("name")
    for key in ("seeds", "progress", "device"):
        d["train"].pop(key)
    if cfg.method not in RETRIEVING_METHODS:
        d["model"].pop("retriever")
    elif cfg.model.retriever.sampling == "uniform":
        # the knn options change nothing under uniform sampling: without them, the keys of runs
        # stored before they existed stay valid
        for key in ("sampling", "knn_k", "knn_temperature", "knn_index"):
            d["model"]["retriever"].pop(key)
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
