"""Shared helpers of the benchmark scripts: the machine, timing, memory, tables, the synthetic task.

Timings are medians over repeats that interleave the compared variants (A B A B ...), so a change
in machine load hits every variant alike. Both wall-clock and process CPU time are recorded: on a
shared machine the CPU time of a single-threaded run is the steadier of the two.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"
# the released code's cost of one missing (sample, modality) pair, measured by its users (DESIGN.md)
RELEASED_US_PER_PAIR = (5000.0, 6000.0)
# --smoke: the synthetic task and model shrunk until a benchmark runs in seconds; it checks that the
# benchmark still runs against the library, its figures mean nothing
SMOKE_OVERRIDES = [
    "data.options={n_samples: 120, n_modalities: 3, n_classes: 2}",
    "model.hidden=16",
    "model.encoder.hidden=16",
    "model.retriever.heads=2",
    "model.fusion.heads=2",
    "model.retriever.moe.experts_per_modality=2",
    "model.retriever.moe.shared_experts=1",
    "model.retriever.moe.top_k=2",
    "model.retriever.moe.expert_hidden=16",
    "train.warmup_epochs=1",
]
SMOKE = False


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{cpu_model()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), {gpu}; load average {load}"
    )


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the model's ops are small, and on a "
        "shared 2-core machine more threads mostly wait for each other)",
    )
    p.add_argument("--out", type=Path, help="also write the markdown section to this file")
    p.add_argument("--quick", action="store_true", help="fewer repeats and sizes")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one repeat: checks in seconds that the benchmark runs (figures meaningless)",
    )
    return p


def start(args: argparse.Namespace) -> None:
    """Apply the common options: threads, and --smoke (which implies --quick)."""
    global SMOKE
    torch.set_num_threads(args.threads)
    SMOKE = bool(getattr(args, "smoke", False))
    if SMOKE:
        args.quick = True


def finish(args: argparse.Namespace, title: str, body: str) -> str:
    """Print the section (with the machine) and write it to ``--out``."""
    smoke = "**Smoke run (--smoke): tiny sizes, the figures mean nothing.**\n\n" if SMOKE else ""
    text = f"### {title}\n\nMachine: {machine_line()}.\n\n{smoke}{body.rstrip()}\n"
    print(text)
    if args.out is not None:
        from moe_retriever.files import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
    return text


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    wall: list[float]
    cpu: list[float]

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, device: torch.device | str = "cpu"
) -> dict[str, Timing]:
    """Run every function ``warmup`` times, then ``repeats`` rounds of all of them in turn
    (one round under --smoke)."""
    if SMOKE:
        repeats, warmup = 1, min(warmup, 1)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out = {name: Timing([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            out[name].wall.append(time.perf_counter() - w0)
            out[name].cpu.append(time.process_time() - c0)
    return out


# --------------------------------------------------------------------------- memory (Linux)


def _status_kb(key: str) -> float:
    match = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
    return float(match.group(1)) if match else float("nan")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- tables


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(x: object) -> str:
        return x if isinstance(x, str) else f"{x:.3g}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the synthetic task


@dataclass
class Setup:
    cfg: object
    data: object  # SeedData
    bank: object  # RetrievalBank
    model: torch.nn.Module
    trainer: object  # Trainer


def synthetic_setup(
    method: str = "moe_retriever",
    p: float = 0.3,
    overrides: list[str] | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Setup:
    """The synthetic task of ``configs/synthetic.yaml`` with missing rate ``p``, ready to train."""
    from moe_retriever.config import load_config
    from moe_retriever.data.bank import RetrievalBank
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.methods import build_model
    from moe_retriever.training.fitting import seed_everything
    from moe_retriever.training.trainer import Trainer

    cfg = load_config(
        SYNTHETIC,
        [f"data.missing.p={p}", f"method={method}", "train.progress=false", f"train.device={device}"]
        + (SMOKE_OVERRIDES if SMOKE else [])
        + list(overrides or []),
    )
    dataset = load_dataset(cfg.data)
    data = prepare_seed(cfg, dataset, seed)
    seed_everything(seed)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    bank = RetrievalBank(data.train, device)
    trainer = Trainer(model, cfg.train, bank, torch.device(device), seed)
    return Setup(cfg, data, bank, model, trainer)
