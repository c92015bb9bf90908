"""Computational cost of the methods in a comparison (the paper's Fig. 4).

For every method shown:

* **training time per epoch**: the wall seconds of each training epoch, read from the runs'
  records (``seed_<s>/metrics.json`` of a ``train`` run, ``runs/<key>/seed_<s>.json`` of a
  ``compare`` run); mean and spread over all epochs of all seeds;
* **inference time per test epoch**: one evaluation pass over the seed's test split, timed
  three times here, on the analysis device;
* **FLOPs per test sample**: ``torch.utils.flop_counter`` over that pass, divided by the number
  of samples. Sparse-MoE layers are counted with the per-expert ``split`` dispatch, so only the
  experts a token was routed to are counted (the padded ``bmm`` dispatch would add its padding);
* **parameters**: every trainable and frozen parameter of the model.

A ``train`` run directory measures its trained checkpoint; a ``compare`` run keeps no
checkpoints, so its methods are measured on a freshly initialised model of the same config
(parameters and FLOPs do not depend on the weights; routing, and so timing, barely does).
Methods fitted without the trainer (e.g. boosted trees) have no FLOP or parameter count.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.flop_counter import FlopCounterMode

from ..api.run_dir import best_seed, trained_seeds
from ..api.trained_run import TrainedRun, load_run
from ..config import ExperimentConfig, from_dict, load_config, to_dict
from ..contract import MethodModel, is_direct
from ..data.dataset import MultimodalDataset
from ..data.partitions import prepare_seed
from ..data.sources import load_dataset
from ..errors import InputNotFoundError
from ..methods import build_model
from ..models.smoe import SparseMoE
from ..training.fitting import seed_everything
from ..training.run_files import LoadedModel
from .plotting import figure, save

TIMING_REPEATS = 3


@dataclass
class CostSource:
    """One method to measure: its config, its recorded epoch times, maybe a trained checkpoint."""

    label: str
    cfg: ExperimentConfig
    seed: int
    epoch_seconds: list[float]
    run_dir: Path | None = None  # a `train` run directory with checkpoints


@dataclass
class MethodCost:
    label: str
    method: str
    epoch_seconds: list[float]
    inference_seconds: list[float] = field(default_factory=list)
    flops_per_sample: float | None = None
    parameters: int | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        def stats(v: list[float]) -> dict[str, float] | None:
            return {"mean": float(np.mean(v)), "std": float(np.std(v)), "n": len(v)} if v else None

        return {
            "label": self.label,
            "method": self.method,
            "train_epoch_seconds": stats(self.epoch_seconds),
            "inference_seconds": stats(self.inference_seconds),
            "flops_per_sample": self.flops_per_sample,
            "parameters": self.parameters,
            "note": self.note,
        }


# --------------------------------------------------------------------------- where costs come from


def train_run_source(run_dir: Path, seed: int | None = None) -> CostSource:
    """A ``moe-retriever train`` run directory."""
    cfg = load_config(run_dir / "config.yaml")
    epochs: list[float] = []
    for path in sorted(run_dir.glob("seed_*/metrics.json")) + sorted(run_dir.glob("fold_s*/metrics.json")):
        epochs += [float(s) for s in json.loads(path.read_text()).get("epoch_seconds", [])]
    chosen = best_seed(run_dir) if seed is None else seed
    return CostSource(cfg.method, cfg, chosen, epochs, run_dir)


def comparison_sources(compare_dir: Path, like: ExperimentConfig | None = None) -> list[CostSource]:
    """The methods of a ``moe-retriever compare`` output directory. Only tables on the same data
    and missingness as ``like`` are used when there are any; otherwise the first table."""
    results = json.loads((compare_dir / "results.json").read_text())
    tables = [t for s in results.get("studies", []) for t in s.get("tables", [])]
    chosen: list[list[CostSource]] = []
    for table in tables:
        sources = []
        for row in table.get("rows", []):
            names = row.get("partitions") or [f"seed_{s}" for s in row.get("seeds", [])]
            records = [compare_dir / "runs" / row["config_key"] / f"{n}.json" for n in names]
            records = [json.loads(p.read_text()) for p in records if p.is_file()]
            if not records:
                continue
            cfg = from_dict(ExperimentConfig, records[0]["config"]).validate()
            epochs = [float(s) for r in records for s in r.get("epoch_seconds", [])]
            sources.append(CostSource(row["entry"], cfg, int(records[0]["seed"]), epochs))
        if sources:
            chosen.append(sources)
    if not chosen:
        raise InputNotFoundError(f"{compare_dir}: no finished runs found in results.json")
    if like is not None:
        same = [s for s in chosen if _same_data(s[0].cfg, like)]
        if same:
            return [src for sources in same for src in sources]
    return chosen[0]


def _same_data(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    return to_dict(a.data) == to_dict(b.data)


def cost_sources(
    paths: list[Path], like: ExperimentConfig | None = None, seed: int | None = None
) -> list[CostSource]:
    """Sources from ``train`` run directories and ``compare`` output directories."""
    out: list[CostSource] = []
    for path in paths:
        results = path / "results.json"
        if (path / "config.yaml").is_file() and (any(path.glob("seed_*")) or any(path.glob("fold_s*"))):
            out.append(train_run_source(path, seed))
        elif results.is_file() and "studies" in json.loads(results.read_text()):
            out.extend(comparison_sources(path, like))
        else:
            raise InputNotFoundError(
                f"{path}: neither a `train` run directory (config.yaml, seed_*) "
                f"nor a `compare` output directory (results.json with studies)"
            )
    labels = [s.label for s in out]
    for s in out:  # the same method from two places: tell them apart by directory
        if labels.count(s.label) > 1 and s.run_dir is not None:
            s.label = f"{s.label} ({s.run_dir.name})"
    return out


# --------------------------------------------------------------------------- measuring


@contextlib.contextmanager
def exact_dispatch(model: MethodModel) -> Iterator[None]:
    """Switch every sparse-MoE layer to the ``split`` dispatch (no padded expert slots)."""
    saved: list[tuple[SparseMoE, str]] = []
    for module in model.modules():
        if isinstance(module, SparseMoE):
            saved.append((module, module.dispatch))
            module.dispatch = "split"
    try:
        yield
    finally:
        for module, value in saved:
            module.dispatch = value


def _fresh_run(src: CostSource, dataset: MultimodalDataset, device: str) -> TrainedRun | None:
    data = prepare_seed(src.cfg, dataset, src.seed)
    seed_everything(src.seed)
    model = build_model(src.cfg, data.train.modalities, dataset.n_classes)
    if is_direct(model):
        return None
    return TrainedRun(LoadedModel(src.cfg, src.seed, model, data.train, data.stats, {}), None, device)


def measure(src: CostSource, datasets: dict[str, MultimodalDataset], device: str) -> MethodCost:
    cost = MethodCost(src.label, src.cfg.method, src.epoch_seconds)
    key = json.dumps(to_dict(src.cfg.data), sort_keys=True)
    if key not in datasets:
        datasets[key] = load_dataset(src.cfg.data)
    trained = src.run_dir is not None and src.seed in trained_seeds(src.run_dir)
    run = (
        load_run(src.run_dir, src.seed, device)
        if trained and src.run_dir is not None
        else _fresh_run(src, datasets[key], device)
    )
    if run is None:
        cost.note = "fitted without the trainer: no FLOP or parameter count"
        return cost
    test = run.seed_data(datasets[key]).test
    batch = run.to_batch(test, standardized=True)
    cost.parameters = int(sum(p.numel() for p in run.model.parameters()))
    # gradients stay enabled while counting so attention runs its plain (countable) kernels
    with exact_dispatch(run.model), FlopCounterMode(display=False) as counter:
        for _ in run.trainer.eval_outputs(batch):
            pass
    cost.flops_per_sample = counter.get_total_flops() / len(test)
    run.trainer.predict_proba_batch(batch)  # warm-up: first-call allocations are not the method's
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        run.trainer.predict_proba_batch(batch)
        cost.inference_seconds.append(time.perf_counter() - t0)
    cost.note = "trained checkpoint" if trained else "fresh model of the same config"
    return cost


def measure_all(sources: list[CostSource], device: str = "cpu") -> list[MethodCost]:
    datasets: dict[str, MultimodalDataset] = {}
    return [measure(src, datasets, device) for src in sources]


# --------------------------------------------------------------------------- figure


def _scale(values: list[float]) -> tuple[float, str]:
    top = max(values) if values else 0.0
    for factor, unit in ((1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs")):
        if top >= factor:
            return factor, unit
    return 1.0, "FLOPs"


def plot_efficiency(costs: list[MethodCost], path: Path) -> Path:
    labels = [c.label for c in costs]
    x = np.arange(len(costs))
    fig, axes = figure(max(10.0, 1.1 * len(costs) * 4), 3.8, ncols=4)
    colors = [f"C{i % 10}" for i in range(len(costs))]

    def bars(ax, values, errors, title, ylabel, log=False):
        shown = [v if v is not None else 0.0 for v in values]
        ax.bar(x, shown, yerr=errors, color=colors, capsize=3)
        for i, (xi, v) in enumerate(zip(x, values, strict=True)):
            if v is None:  # at the foot of the axis, which a log scale never reaches
                ax.text(xi, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
                continue
            top = v + (errors[i] if errors is not None else 0.0)  # above the error bar
            ax.annotate(
                f"{v:,.0f}" if v >= 1000 else f"{v:.3g}",
                (xi, top),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.margins(y=0.15)
        tilt = len(costs) > 2
        ax.set_xticks(
            x,
            labels=labels,
            rotation=40 if tilt else 0,
            ha="right" if tilt else "center",
            rotation_mode="anchor",
            fontsize=8,
        )
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log and any(v for v in values if v):
            ax.set_yscale("log")

    def mean_std(v: list[float]) -> tuple[float | None, float]:
        return (float(np.mean(v)), float(np.std(v))) if v else (None, 0.0)

    train = [mean_std(c.epoch_seconds) for c in costs]
    bars(axes[0], [m for m, _ in train], [s for _, s in train], "training time per epoch", "seconds")
    infer = [mean_std(c.inference_seconds) for c in costs]
    bars(axes[1], [m for m, _ in infer], [s for _, s in infer], "inference time per test epoch", "seconds")
    factor, unit = _scale([c.flops_per_sample or 0.0 for c in costs])
    bars(
        axes[2],
        [c.flops_per_sample / factor if c.flops_per_sample is not None else None for c in costs],
        None,
        "FLOPs per test sample",
        unit,
    )
    bars(axes[3], [c.parameters for c in costs], None, "parameters (log scale)", "parameters", log=True)
    return save(fig, path)
