"""Training logs: a per-epoch ``history.csv`` and a curve figure for every trained model, and the
same scalars sent to TensorBoard or MLflow when ``train.log`` names them.

One history row per epoch: ``epoch``, ``retrieval`` (whether the epoch retrieved or was a
zero-filled warm-up epoch), ``loss`` (the weighted total), every loss term by name (``loss.*``;
the router load-balancing terms equal 1 when routing is uniform within every expert pool),
the validation metrics (``val_*``), ``seconds`` and the learning rate ``lr``. The CSV is rewritten
after every epoch, so an interrupted run keeps the epochs it finished.

TensorBoard (``pip install tensorboard``) writes event files under ``<run>/tensorboard/<unit>/``.
MLflow (``pip install mlflow-skinny`` or ``mlflow``) logs to ``MLFLOW_TRACKING_URI`` when it is
set and to a local ``mlruns/mlflow.db`` otherwise: one MLflow run per experiment, with the flattened
config as parameters and the final test metrics, and one nested run per seed or fold with its
per-epoch scalars.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ConfigError, ExperimentConfig, to_dict
from ..files import atomic_write_text

HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"


def history_frame(history: list[dict[str, Any]]) -> pd.DataFrame:
    """The history as a table: epoch first, then losses, validation metrics, seconds and lr."""
    frame = pd.DataFrame(history)
    if frame.empty:
        return frame
    first = [c for c in ("epoch", "retrieval", "loss") if c in frame]
    losses = sorted(c for c in frame if c.startswith("loss") and c != "loss")
    val = [c for c in frame if c.startswith("val_")]
    rest = [c for c in frame if c not in {*first, *losses, *val}]
    return frame[first + losses + val + rest]


def write_history(directory: Path, history: list[dict[str, Any]]) -> Path:
    path = directory / HISTORY_CSV
    atomic_write_text(path, history_frame(history).to_csv(index=False))
    return path


def plot_history(history: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Write :func:`history_figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = history_figure(history, title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def history_figure(history: list[dict[str, Any]], title: str) -> Any:
    """Loss terms (left) and validation metrics (right) by epoch: every term over the epochs where
    it was computed, the warm-up epochs shaded and the first retrieval epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = history_frame(history)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = frame["epoch"]
    losses = {c: frame[c].astype(float) for c in frame if c.startswith("loss")}
    for column, values in losses.items():
        # NaN where a term was not computed (retrieval terms in warm-up): a gap, not a dropped line
        left.plot(epochs, values, marker=".", label=column)
    defined = pd.concat(list(losses.values())) if losses else pd.Series(dtype=float)
    defined = defined[defined.notna()]
    if len(defined) and (defined > 0).all():
        left.set_yscale("log")
        left.set_title("training losses (log scale)")
    else:
        # a term equal to 0 has no place on a log axis; symlog keeps the rest logarithmic
        positive = defined[defined > 0]
        left.set_yscale("symlog", linthresh=float(positive.min()) if len(positive) else 1e-3)
        left.set_title("training losses (symmetric log scale)")
    for column in [c for c in frame if c.startswith("val_")]:
        right.plot(epochs, frame[column].astype(float), marker=".", label=column[len("val_") :])
    right.set_title("validation metrics")
    right.set_ylim(0, 1.02)
    if "retrieval" in frame and not frame["retrieval"].all():
        last_warmup = float(epochs[~frame["retrieval"].astype(bool)].max())
        for ax in (left, right):
            ax.axvspan(
                epochs.min() - 0.5, last_warmup + 0.5, color="0.9", zorder=0, label="warm-up (zero-filled)"
            )
    if "retrieval" in frame and frame["retrieval"].any() and not frame["retrieval"].all():
        # the total loss jumps here: the retrieval and load-balancing terms join it
        first_retrieval = int(epochs[frame["retrieval"].astype(bool)].min())
        for ax in (left, right):
            ax.axvline(
                first_retrieval,
                color="0.3",
                linestyle="--",
                linewidth=1,
                label=f"first retrieval epoch ({first_retrieval})",
            )
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _scalars(entry: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in entry.items()
        if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(float(v))
    }


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class ExperimentLogger:
    """Sends the scalars of every epoch, and the final metrics and config, to the loggers in
    ``cfg.train.log``. ``history.csv`` is written separately, for every run."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path | None, enabled: bool = True) -> None:
        # under torchrun only rank 0 logs (enabled=False elsewhere)
        self.kinds = list(cfg.train.log) if enabled else []
        self.run_dir = run_dir
        self._writers: dict[str, Any] = {}
        self._client: Any = None
        self._runs: dict[str, str] = {}  # unit -> MLflow run id
        if "tensorboard" in self.kinds:
            if run_dir is None:
                raise ConfigError("train.log: tensorboard needs a run directory (--out)")
            _require("torch.utils.tensorboard", "tensorboard", "tensorboard")
        if "mlflow" in self.kinds:
            mlflow = _require("mlflow", "mlflow", "mlflow-skinny")
            import os

            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                # a local store in ./mlruns (MLflow keeps runs in a database: its plain-file store
                # is retired), viewed with `mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db`
                local = (Path.cwd() / "mlruns").resolve()
                local.mkdir(parents=True, exist_ok=True)
                uri = f"sqlite:///{local / 'mlflow.db'}"
            self._client = mlflow.tracking.MlflowClient(uri)
            found = self._client.get_experiment_by_name(cfg.name)
            self._experiment = (
                found.experiment_id if found is not None else self._client.create_experiment(cfg.name)
            )
            self._parent = self._client.create_run(
                self._experiment, run_name=f"{cfg.name}-{cfg.method}"
            ).info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:500]) for k, v in _flatten(to_dict(cfg)).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self._client.log_batch(self._parent, params=params[i : i + 100])

    def epoch(self, unit: str, entry: dict[str, Any]) -> None:
        step = int(entry["epoch"])
        scalars = _scalars(entry)
        if "tensorboard" in self.kinds:
            writer = self._writers.get(unit)
            if writer is None:
                from torch.utils.tensorboard import SummaryWriter

                assert self.run_dir is not None
                writer = self._writers[unit] = SummaryWriter(str(self.run_dir / "tensorboard" / unit))
            for key, value in scalars.items():
                writer.add_scalar(key, value, step)
            writer.flush()
        if self._client is not None:
            run_id = self._runs.get(unit)
            if run_id is None:
                run_id = self._runs[unit] = self._client.create_run(
                    self._experiment, run_name=unit, tags={"mlflow.parentRunId": self._parent}
                ).info.run_id
            self._log_metrics(run_id, scalars, step)

    def _log_metrics(self, run_id: str, scalars: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def final(self, results: dict[str, Any]) -> None:
        """Log the aggregated test metrics on the experiment's run and close every sink."""
        if self._client is not None:
            metrics = {
                f"test.{name}": float(value["mean"])
                for name, value in results.get("test", {}).items()
                if isinstance(value, dict)
                and isinstance(value.get("mean"), (int, float))
                and math.isfinite(value["mean"])
            }
            self._log_metrics(self._parent, metrics)
        self.close("FINISHED")

    def close(self, status: str = "KILLED") -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._client is not None:
            for run_id in [*self._runs.values(), self._parent]:
                self._client.set_terminated(run_id, status=status)
            self._client = None


def _require(module: str, name: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"train.log: {name} is not installed; pip install {package}") from exc
