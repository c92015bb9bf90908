"""(g) Wide modalities: an ADNI-shaped set in the paper's ADNI layout, against the released code.

A seeded generator writes the set into a temporary directory in the layout ``--format adni``
reads (docs/paper-layouts.md): N = 2000 subjects, genomic 20,000 SNP columns (dosages 0/1/2 in an
.h5ad), clinical 300 and biospecimen 20 columns (CSV), modality combinations GCB 1053, GC 369,
CB 285, C 293, three classes, and a 70/15/15 ``PTID_splits.json``. Nothing is kept afterwards.

The model is the configuration the released code's time was recorded with: hidden 128, 4 heads,
8 + 4 experts per pool, top-4, batch 16, one thread. Timed: a warm-up epoch (no retrieval), a
retrieval epoch, the validation pass; the peak resident set and its growth over the retrieval
epochs. One further retrieval epoch runs under ``torch.profiler`` (forward scopes set by module
hooks; each backward node is charged to the scope of the forward operation that created it) to
split the time into encoders, retrieval (attention + experts), fusion (with the head), the
optimiser (clipping, zeroing, AdamW) and the rest (drawing, gathering, losses), and one under
``FlopCounterMode`` for its FLOPs.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Setup,
    base_parser,
    finish,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    start,
    sync,
    table,
)

# the released code's retrieval epoch on this set (issue 12, median of 3 alternating rounds, wall)
RELEASED_RETRIEVAL_EPOCH_S = 9.7
RELEASED_WARMUP_EPOCH_S = 3.42
TARGET_RETRIEVAL_EPOCH_S = 0.5
N_GENOMIC, N_CLINICAL, N_BIOSPECIMEN = 20_000, 300, 20
COMBINATIONS = {"GCB": 1053, "GC": 369, "CB": 285, "C": 293}
MODEL = [
    "model.hidden=128",
    "model.retriever.heads=4",
    "model.retriever.moe.experts_per_modality=8",
    "model.retriever.moe.shared_experts=4",
    "model.retriever.moe.top_k=4",
    "train.batch_size=16",
    "train.progress=false",
]
# --device: where the benchmark trains (cpu unless given)
DEVICE = "cpu"


# --------------------------------------------------------------------------- the data set


def write_adni_like(root: Path, seed: int = 0, n_genomic: int = N_GENOMIC, scale: float = 1.0) -> Path:
    """Write an ADNI-shaped data set in the Flex-MoE ADNI layout under ``root``; returns root.
    ``scale`` multiplies the number of subjects of each combination."""
    import h5py
    import pandas as pd

    rng = np.random.default_rng(seed)
    combos = [c for c, n in COMBINATIONS.items() for _ in range(max(2, round(n * scale)))]
    rng.shuffle(combos)
    n = len(combos)
    ids = [f"{100 + i // 1000:03d}_S_{i % 1000:04d}" for i in range(n)]
    labels = rng.choice(3, size=n, p=[0.35, 0.45, 0.20])
    onehot = np.eye(3)[labels]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"PTID": ids, "DIAGNOSIS": labels + 1}).to_csv(root / "label.csv", index=False)
    order = rng.permutation(n)
    cut = [int(0.7 * n), int(0.85 * n)]
    parts = np.split(order, cut)
    splits = {
        k: [ids[i] for i in sorted(p)]
        for k, p in zip(("training", "validation", "testing"), parts, strict=True)
    }
    (root / "PTID_splits.json").write_text(json.dumps(splits))

    def has(letter: str) -> np.ndarray:
        return np.array([letter in c for c in combos])

    # genomic: SNP dosages ~ Binomial(2, f); 1 % of the SNPs shift their allele frequency by class
    g_rows = np.flatnonzero(has("G"))
    freq = rng.uniform(0.05, 0.5, size=n_genomic)
    shift = np.zeros((3, n_genomic))
    informative = rng.choice(n_genomic, size=n_genomic // 100, replace=False)
    shift[:, informative] = rng.normal(0, 0.12, size=(3, informative.size))
    p = np.clip(freq + onehot[g_rows] @ shift, 0.01, 0.99)
    dosage = (rng.random((2,) + p.shape) < p).sum(axis=0).astype(np.uint8)
    (root / "genomic").mkdir(exist_ok=True)
    text = h5py.string_dtype()
    with h5py.File(root / "genomic" / "genomic_merged.h5ad", "w") as f:
        f.create_dataset("X", data=dosage)
        for key, names in (("obs", [ids[i] for i in g_rows]), ("var", [f"rs{j}" for j in range(n_genomic)])):
            grp = f.create_group(key)
            grp.attrs["_index"], grp.attrs["encoding-type"] = "_index", "dataframe"
            grp.create_dataset("_index", data=np.array(names, dtype=object), dtype=text)

    def gaussian_csv(path: Path, rows: np.ndarray, width: int, informative: int) -> None:
        x = rng.normal(size=(rows.size, width))
        x[:, :informative] += onehot[rows] @ rng.normal(0, 0.6, size=(3, informative))
        frame = pd.DataFrame(x.astype(np.float32), columns=[f"{path.stem[:3]}{j}" for j in range(width)])
        frame.insert(0, "PTID", [ids[i] for i in rows])
        path.parent.mkdir(exist_ok=True)
        frame.to_csv(path, index=False, float_format="%.4f")

    gaussian_csv(root / "clinical" / "clinical_merged_mean.csv", np.flatnonzero(has("C")), N_CLINICAL, 30)
    gaussian_csv(
        root / "biospecimen" / "biospecimen_merged_mean.csv", np.flatnonzero(has("B")), N_BIOSPECIMEN, 5
    )
    return root


def wide_setup(root: Path, overrides: list[str] | None = None, seed: int = 0) -> tuple[Setup, object]:
    """The benchmark's model on the set under ``root``, ready to train (one warm-up epoch), and
    the loaded data set."""
    from moe_retriever.config import load_config
    from moe_retriever.data.bank import RetrievalBank
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.methods import build_model
    from moe_retriever.training.fitting import seed_everything
    from moe_retriever.training.trainer import Trainer

    cfg = load_config(
        None,
        [f"data.path={root}", "data.format=adni", "train.warmup_epochs=1", f"train.device={DEVICE}"]
        + MODEL
        + list(overrides or []),
    )
    dataset = load_dataset(cfg.data)
    data = prepare_seed(cfg, dataset, seed)
    seed_everything(seed)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    bank = RetrievalBank(data.train, DEVICE)
    trainer = Trainer(model, cfg.train, bank, torch.device(DEVICE), seed)
    return Setup(cfg, data, bank, model, trainer), dataset


def train_batch(setup: Setup):
    """The training split as one batch on the benchmark's device."""
    return setup.data.train.full_batch().to(DEVICE)


# --------------------------------------------------------------------------- profile

SCOPES = ("encoders", "retrieval", "fusion", "optimiser", "other")


def scope_hooks(model: torch.nn.Module) -> list:
    """Forward hooks that open a ``record_function`` scope per part of the model."""
    from torch.autograd.profiler import record_function

    parts = [("encoders", enc) for enc in model.encoders.values()]
    parts += [("fusion", model.fusion), ("fusion", model.head)]
    if getattr(model, "retriever", None) is not None:
        parts.append(("retrieval", model.retriever))
    handles = []
    for name, module in parts:
        stack: list = []

        def pre(mod, args, name=name, stack=stack):
            rf = record_function(f"scope::{name}")
            rf.__enter__()
            stack.append(rf)

        def post(mod, args, out, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return handles


def scope_of(event) -> str | None:
    while event is not None:
        if event.name.startswith("scope::"):
            return event.name[len("scope::") :]
        event = event.cpu_parent
    return None


def profile_epoch(setup: Setup, epoch: int) -> dict[str, float]:
    """CPU seconds of one training epoch per scope (backward charged to its forward's scope)."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    trainer = setup.trainer
    opt_step = trainer.optimizer.step
    clip = torch.nn.utils.clip_grad_norm_

    def step(*a, **k):
        with record_function("scope::optimiser"):
            return opt_step(*a, **k)

    def clip_scoped(*a, **k):
        with record_function("scope::optimiser"):
            return clip(*a, **k)

    handles = scope_hooks(setup.model)
    trainer.optimizer.step = step
    torch.nn.utils.clip_grad_norm_ = clip_scoped
    data = train_batch(setup)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train_epoch(data, epoch)
    finally:
        for h in handles:
            h.remove()
        del trainer.optimizer.step
        torch.nn.utils.clip_grad_norm_ = clip
    events = prof.events()
    forward_scope: dict[int, str] = {}
    for e in events:
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
            s = scope_of(e)
            if s is not None:
                forward_scope.setdefault(e.sequence_nr, s)
    totals = dict.fromkeys(SCOPES, 0.0)
    for e in events:
        if e.cpu_parent is not None:
            continue  # counted in its top-level parent
        if e.name.startswith("scope::"):
            scope = e.name[len("scope::") :]
        elif e.name.startswith("autograd::engine::evaluate_function"):
            scope = forward_scope.get(e.sequence_nr, "other")
        else:
            scope = "other"
        totals[scope] += e.cpu_time_total / 1e6
    return totals


def epoch_flops(setup: Setup, epoch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    data = train_batch(setup)
    with FlopCounterMode(display=False) as counter:
        setup.trainer.train_epoch(data, epoch)
    return float(counter.get_total_flops())


def matmul_rate(shape: tuple[int, ...], repeats: int = 20) -> float:
    """Achieved GFLOP/s (process CPU time) of ``(b, m, k) @ (b, k, n)`` on this machine now."""
    b, m, k, n = shape
    x, w = torch.randn(b, m, k), torch.randn(b, k, n)
    torch.bmm(x, w)
    c0 = time.process_time()
    for _ in range(repeats):
        torch.bmm(x, w)
    return 2 * b * m * k * n * repeats / (time.process_time() - c0) / 1e9


# --------------------------------------------------------------------------- measurement


def timed(fn) -> tuple[float, float]:
    sync(DEVICE)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync(DEVICE)
    return time.perf_counter() - w0, time.process_time() - c0


def checkpoint_writes(setup: Setup, dataset) -> dict[str, tuple[float, float]]:
    """(MB, wall s) of one seed checkpoint write: bank embedded, and referring to the run's bank
    file (written once beforehand, not timed here: it is written once per run)."""
    from moe_retriever.training import run_files as ex

    state = {k: v.detach().clone() for k, v in setup.model.state_dict().items()}
    data = setup.data
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_wide_ckpt_") as tmp:
        run = Path(tmp)
        (run / "seed_0").mkdir()
        path = run / "seed_0" / "model.safetensors"
        t0 = time.perf_counter()
        ex.save_seed_checkpoint(path, setup.cfg, 0, state, data.train, data.stats)
        out["bank embedded"] = (path.stat().st_size / 2**20, time.perf_counter() - t0)
        t0 = time.perf_counter()
        digest = ex.run_bank_digest(run / ex.BANK_FILE, dataset)
        out["run bank file (once per run)"] = (
            (run / ex.BANK_FILE).stat().st_size / 2**20,
            time.perf_counter() - t0,
        )
        t0 = time.perf_counter()
        ex.save_seed_checkpoint(
            path,
            setup.cfg,
            0,
            state,
            data.train,
            data.stats,
            {},
            bank_file=run / ex.BANK_FILE,
            bank_index=data.train_index,
            bank_digest=digest,
        )
        out["bank file reference"] = (path.stat().st_size / 2**20, time.perf_counter() - t0)
    return out


def ops_per_step(setup: Setup, epoch: int) -> int:
    """aten operations one retrieval training step dispatches (forward, backward, optimiser)."""
    from bench_epoch import OpCounter

    batch = train_batch(setup).select(torch.arange(setup.cfg.train.batch_size))
    setup.trainer.model.train()
    with OpCounter() as counter:
        setup.trainer.train_step(batch, setup.trainer.retrieving(epoch))
    return counter.count


def measure(root: Path, overrides: list[str], retrieval_epochs: int, profile: bool = True) -> dict:
    setup, dataset = wide_setup(root, overrides)
    trainer, data = setup.trainer, train_batch(setup)
    gc.collect()
    reset_peak_rss()
    out: dict = {"rss_start": rss_mb(), "retrieval": [], "rss": []}
    out["warmup"] = timed(lambda: trainer.train_epoch(data, 0))
    first = setup.cfg.train.warmup_epochs
    for e in range(retrieval_epochs):
        out["retrieval"].append(timed(lambda e=e: trainer.train_epoch(data, first + e)))
        out["validation"] = timed(lambda: trainer.evaluate(setup.data.val))
        gc.collect()
        out["rss"].append(rss_mb())
    out["peak"] = peak_rss_mb()
    out["ops_per_step"] = ops_per_step(setup, first)
    out["checkpoint"] = checkpoint_writes(setup, dataset)
    if profile:
        out["scopes"] = profile_epoch(setup, first + retrieval_epochs)
        out["flops"] = epoch_flops(setup, first + retrieval_epochs + 1)
        # the same arithmetic at its best here: one large matmul, and the experts' batched
        # matmul at a step's typical load (28 experts x 16 tokens, d 128, expert hidden 256)
        out["gflops_large"] = matmul_rate((1, 1024, 1024, 1024), 5)
        out["gflops_experts"] = matmul_rate((28, 16, 128, 256), 200)
    out["n_train"], out["steps"] = len(setup.data.train), -(-len(setup.data.train) // 16)
    out["parameters"] = sum(p.numel() for p in setup.model.parameters())
    out["bank_mb"] = sum(x.numel() * x.element_size() for x in setup.bank.features.values()) / 2**20
    return out


# the variants timed side by side: this tree's defaults, and its dense first layer (the released
# code's encoder shape: the dense 20,000-column Linear)
VARIANTS = {"defaults": [], "dense first layer": ["model.encoder.options={first_layer: dense}"]}


def side_by_side(root: Path, overrides: list[str], rounds: int, references: list[Path]) -> dict:
    """Retrieval-epoch CPU and wall seconds of every variant, epochs interleaved (A B A B ...),
    with each reference source tree's figures for every variant from a child process between
    the rounds."""
    setups = {name: wide_setup(root, overrides + extra)[0] for name, extra in VARIANTS.items()}
    children = {f"{ref} ({name})": (ref, extra) for ref in references for name, extra in VARIANTS.items()}
    out: dict = {name: {"cpu": [], "wall": []} for name in [*setups, *children]}
    for s in setups.values():
        s.trainer.train_epoch(train_batch(s), 0)  # the warm-up epoch
    for r in range(rounds):
        for name, s in setups.items():
            wall, cpu = timed(lambda s=s, r=r: s.trainer.train_epoch(train_batch(s), 1 + r))
            out[name]["cpu"].append(cpu)
            out[name]["wall"].append(wall)
        for name, (ref, extra) in children.items():
            child = reference_epochs(ref, root, overrides + extra)
            out[name]["cpu"] += child["cpu"]
            out[name]["wall"] += child["wall"]
            out[name]["ops_per_step"] = child["ops_per_step"]
    for name, s in setups.items():
        out[name]["ops_per_step"] = ops_per_step(s, 1)
    return out


def reference_epochs(src: Path, root: Path, overrides: list[str]) -> dict:
    """One warm-up and one retrieval epoch of the tree ``src`` (its ``src/`` on the path)."""
    import subprocess

    code = (
        "import json, sys, time, torch; torch.set_num_threads(1); "
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
        "from bench_wide import ops_per_step, train_batch, wide_setup; from pathlib import Path; "
        f"s = wide_setup(Path({str(root)!r}), {overrides!r})[0]; d = train_batch(s); "
        "s.trainer.train_epoch(d, 0); w, c = time.perf_counter(), time.process_time(); "
        "s.trainer.train_epoch(d, 1); "
        "c, w = time.process_time() - c, time.perf_counter() - w; "
        "print(json.dumps({'cpu': [c], 'wall': [w], 'ops_per_step': ops_per_step(s, 1)}))"
    )
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def side_by_side_text(sbs: dict, rounds: int) -> str:
    rows = []
    ours = float(np.median(sbs["defaults"]["cpu"]))
    for name, m in sbs.items():
        cpu, wall = float(np.median(m["cpu"])), float(np.median(m["wall"]))
        rows.append(
            [
                name,
                cpu,
                wall,
                f"{cpu / ours:.2f}",
                f"{RELEASED_RETRIEVAL_EPOCH_S / cpu:.1f}x",
                m.get("ops_per_step", "-"),
            ]
        )
    return (
        f"Side by side in this run: {rounds} round(s) of one retrieval epoch per variant, "
        "interleaved; each reference tree (`--reference-src`) runs every variant in a child process "
        "after each round. Median CPU and wall seconds of the process, one thread.\n\n"
        + table(
            [
                "variant",
                "retrieval epoch CPU s",
                "wall s",
                "/ defaults (CPU)",
                f"speed-up vs the released code's {RELEASED_RETRIEVAL_EPOCH_S} s",
                "aten ops per step",
            ],
            rows,
        )
        + "\n\n"
    )


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--retrieval-epochs", type=int, default=3, help="retrieval epochs timed (the median is reported)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override on top of the benchmark's model (repeatable)",
    )
    parser.add_argument("--device", default="cpu", help="train on this device (cpu, cuda)")
    parser.add_argument("--keep", type=Path, help="write the data set here and keep it")
    parser.add_argument("--json", type=Path, help="also write the raw measurements as JSON")
    parser.add_argument("--no-profile", action="store_true", help="timings only (no profile, no FLOPs)")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds of the side-by-side variants (0: none)"
    )
    parser.add_argument(
        "--reference-src",
        type=Path,
        action="append",
        default=[],
        metavar="TREE",
        help="also time this source tree (e.g. `git worktree add /tmp/before <commit>`) side by side",
    )
    args = parser.parse_args()
    start(args)
    global DEVICE
    DEVICE = args.device
    epochs = 1 if args.quick else args.retrieval_epochs
    rounds = 1 if args.smoke else args.rounds
    scale, n_genomic = (0.1, 4096) if args.smoke else (1.0, N_GENOMIC)
    with tempfile.TemporaryDirectory(prefix="bench_wide_") as tmp:
        root = args.keep or Path(tmp) / "adni"
        t0 = time.perf_counter()
        if not (root / "label.csv").is_file():
            write_adni_like(root, n_genomic=n_genomic, scale=scale)
        written = (
            f"written by `write_adni_like` in {time.perf_counter() - t0:.1f} s"
            if args.keep is None
            else f"written by `write_adni_like` to {root}"
        )
        sbs = side_by_side(root, args.set, rounds, args.reference_src) if rounds > 0 else None
        m = measure(root, args.set, epochs, profile=not args.no_profile)
    m["side_by_side"] = sbs
    if args.json is not None:
        args.json.write_text(json.dumps(m, indent=2))
    if args.no_profile:
        print(side_by_side_text(sbs, rounds) if sbs is not None else "", end="")
        print(json.dumps({k: v for k, v in m.items() if k != "side_by_side"}))
        return
    wall = float(np.median([w for w, _ in m["retrieval"]]))
    cpu = float(np.median([c for _, c in m["retrieval"]]))
    growth = max(m["rss"][1:], default=m["rss"][0]) - m["rss"][0]
    total = sum(m["scopes"].values())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = [
        [
            "warm-up epoch",
            m["warmup"][1],
            m["warmup"][0],
            RELEASED_WARMUP_EPOCH_S,
            f"{m['warmup'][0] / RELEASED_WARMUP_EPOCH_S:.3f}",
        ],
        [
            "retrieval epoch",
            cpu,
            wall,
            RELEASED_RETRIEVAL_EPOCH_S,
            f"**{wall / RELEASED_RETRIEVAL_EPOCH_S:.3f}** (CPU: {cpu / RELEASED_RETRIEVAL_EPOCH_S:.3f})",
        ],
        ["validation pass", m["validation"][1], m["validation"][0], "-", "-"],
    ]
    n_subjects = sum(max(2, round(n * scale)) for n in COMBINATIONS.values())
    body = (
        (side_by_side_text(sbs, rounds) if sbs is not None else "")
        + f"ADNI-shaped set {written} (N = {n_subjects}, genomic "
        f"{n_genomic}, clinical {N_CLINICAL}, biospecimen {N_BIOSPECIMEN} columns; "
        + ", ".join(f"{k} {max(2, round(v * scale))}" for k, v in COMBINATIONS.items())
        + f"); {m['n_train']} training samples, {m['steps']} steps of 16 per epoch; "
        f"{m['parameters'] / 1e6:.2f}M parameters; the bank's features {m['bank_mb']:.0f} MB. "
        f"Overrides: {' '.join(args.set) or 'none (defaults)'}. Load average while it ran: {load}; "
        f"the machine is shared, so CPU seconds of the process are the primary figure; the "
        f"released code's figures are wall seconds on an idle machine. Median of {epochs} "
        f"retrieval epoch(s).\n\n"
        + table(["pass", "CPU s", "wall s", "released code s", "ours / released (wall)"], rows)
        + f"\n\nOne retrieval training step dispatches {m['ops_per_step']} aten operations "
        "(forward, backward, clipping and optimiser; `TorchDispatchMode` count)."
        + f"\n\nSpeed-up over the released code's {RELEASED_RETRIEVAL_EPOCH_S} s retrieval epoch: "
        f"{RELEASED_RETRIEVAL_EPOCH_S / wall:.1f}x wall, {RELEASED_RETRIEVAL_EPOCH_S / cpu:.1f}x "
        f"CPU (target ≤ {TARGET_RETRIEVAL_EPOCH_S} s, 20x).\n\n"
        f"Memory: peak RSS {m['peak']:.0f} MB (from {m['rss_start']:.0f} MB before training); "
        f"largest RSS after retrieval epochs 2-{epochs} minus RSS after the first: {growth:+.1f} MB"
        + (" (one retrieval epoch: no growth figure)" if epochs < 2 else "")
        + ".\n\n"
        "Checkpoint of one seed (written at every validation improvement): "
        + "; ".join(f"{k}: {mb:.1f} MB in {sec:.2f} s" for k, (mb, sec) in m["checkpoint"].items())
        + f" (the training split's features: {m['bank_mb']:.0f} MB).\n\n"
        f"One profiled retrieval epoch ({total:.2f} CPU s under the profiler), "
        f"{m['flops'] / 1e9:.2f} GFLOPs per epoch (FlopCounterMode), i.e. "
        f"{m['flops'] / 1e9 / cpu:.1f} GFLOP/s at the timed CPU seconds:\n\n"
        + table(
            ["part", "CPU s", "share"], [[k, v, f"{100 * v / total:.0f} %"] for k, v in m["scopes"].items()]
        )
        + f"\n\nArithmetic floor: one 1024³ matmul runs at {m['gflops_large']:.1f} GFLOP/s here "
        f"and the experts' batched matmul (28 x 16 x 128 x 256) at {m['gflops_experts']:.1f} "
        f"GFLOP/s (CPU time, now); the epoch's {m['flops'] / 1e9:.1f} GFLOPs therefore need at "
        f"least {m['flops'] / 1e9 / m['gflops_large']:.2f} CPU s at the large-matmul rate, "
        f"{m['flops'] / 1e9 / m['gflops_experts']:.2f} s at the experts' rate, before any "
        f"memory-bound work (the optimiser reads and writes every weight and both AdamW moments "
        f"every step: {m['parameters'] / 1e6:.2f}M parameters x 28 bytes x {m['steps']} steps = "
        f"{m['parameters'] * 28 * m['steps'] / 1e9:.1f} GB per epoch).\n"
    )
    finish(args, "(g) Wide modalities: ADNI-shaped set vs the released code", body)


if __name__ == "__main__":
    main()
