"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import ExperimentConfig, MissingnessOrigin
    from ..data.dataset import MultimodalDataset


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML experiment file (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 (repeatable)",
    )
    p.add_argument("--method", help="method name (default: the config's)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the config's)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--log",
        nargs="+",
        choices=["tensorboard", "mlflow"],
        help="also send per-epoch scalars to TensorBoard (<out>/tensorboard/) and/or "
        "MLflow (MLFLOW_TRACKING_URI, else ./mlruns); history.csv is always written",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="train on files at PATH (a folder with dataset.yaml, or a paper layout); the data "
        "keeps its own gaps: the config's simulated missingness (data.missing) applies only "
        "when --set data.missing.kind=... / data.missing.p=... asks for it here, or when the "
        "config file sets data.path together with data.missing",
    )
    p.add_argument("--format", help="layout of --data (default: auto-detected), e.g. folder")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow opening pickle / non-tensor .pt data files (they can run code)",
    )


def config_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the convenience flags into ``key=value`` overrides, after any ``--set``."""
    out = list(getattr(args, "set", None) or [])
    if getattr(args, "method", None):
        out.append(f"method={args.method}")
    if getattr(args, "seeds", None):
        out.append(f"train.seeds=[{','.join(str(s) for s in args.seeds)}]")
    if getattr(args, "epochs", None) is not None:
        out.append(f"train.epochs={args.epochs}")
    if getattr(args, "device", None):
        out.append(f"train.device={args.device}")
    if getattr(args, "protocol", None):
        out.append(f"protocol.kind={args.protocol}")
    if getattr(args, "folds", None) is not None:
        out.append(f"protocol.folds={args.folds}")
    if getattr(args, "repeats", None) is not None:
        out.append(f"protocol.repeats={args.repeats}")
    if getattr(args, "no_progress", False):
        out.append("train.progress=false")
    if getattr(args, "log", None):
        out.append(f"train.log=[{','.join(args.log)}]")
    # paths and names are JSON-quoted so YAML keeps them strings (a folder named "1" or "yes")
    if getattr(args, "data", None):
        out.append(f"data.path={json.dumps(args.data)}")
    if getattr(args, "format", None):
        out.append(f"data.format={json.dumps(args.format)}")
    if getattr(args, "trust_pickle", False):
        out.append("data.trust_pickle=true")
    return out


def missingness_report(
    cfg: ExperimentConfig, origin: MissingnessOrigin | None, dataset: MultimodalDataset
) -> str:
    """What a run prints first: the missingness in effect and the rates of its first partition's
    masks (the masks the run draws: the same function, seed and split)."""
    from ..data.missingness import missingness_in_effect
    from ..data.partitions import partition_split, protocol_partitions

    first = protocol_partitions(cfg)[0]
    masked, parts = partition_split(cfg, dataset, first)
    return missingness_in_effect(cfg.data, origin, dataset, masked, parts, first.seed)
