"""Comparisons: methods (and ablation presets) x datasets x seeds on identical splits and masks.

A comparison config (``configs/compare/*.yaml``) lists studies; a study names experiment configs
(one per dataset, with optional overrides) and the methods or ablation presets to run on each.
The run seed fixes the split and the simulated missingness (``prepare_seed``), so every method
of a dataset sees the same training, validation and test samples with the same masks; the test
split's fingerprint is recorded to show it.

Every (resolved config, seed) run is stored under ``<out>/runs/<key>/seed_<s>.json`` and reused
when the comparison is run again, so an interrupted comparison resumes and identical configs
(e.g. the preset ``experts_8`` when E_T is already 8) run once. The key is the resolved config,
not the code: after a change to the code, start from a new output directory.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ablations import ABLATIONS
from ..config import ConfigError, ExperimentConfig, from_dict, load_config, to_dict
from ..data.dataset import MultimodalDataset
from ..data.sources import load_dataset
from ..methods import METHODS
from .checkpoint import atomic_write_text
from .experiment import fmt, markdown_table, masked_split, prepare_seed, train_seed
from .metrics import METRICS, aggregate, classification_metrics
from .trainer import resolve_device

# a method ties the majority-class predictor when both numbers agree to this precision
TIE_TOLERANCE = 1e-9


# --------------------------------------------------------------------------- config

@dataclass
class CompareDataset:
    """One dataset of a study: an experiment YAML plus overrides (e.g. the missing rate)."""

    config: str
    label: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class CompareStudy:
    title: str
    datasets: list[CompareDataset] = field(default_factory=list)
    # registered method names (methods.METHODS) or ablation preset names (ablations.ABLATIONS)
    methods: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class CompareConfig:
    name: str = "comparison"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # overrides applied to every run (after the dataset's config file, before its own overrides)
    overrides: list[str] = field(default_factory=list)
    studies: list[CompareStudy] = field(default_factory=list)


def load_compare_config(path: str | Path) -> CompareConfig:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"comparison config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    cfg = from_dict(CompareConfig, data)
    if not cfg.studies:
        raise ConfigError(f"{path}: studies: at least one study is needed")
    if not cfg.seeds:
        raise ConfigError(f"{path}: seeds: at least one seed is needed")
    for i, study in enumerate(cfg.studies):
        where = f"{path}: studies[{i}] ({study.title!r})"
        if not study.datasets or not study.methods:
            raise ConfigError(f"{where}: needs datasets and methods")
        for name in study.methods:
            if name not in METHODS and name not in ABLATIONS:
                raise ConfigError(f"{where}: methods: {name!r} is neither a method "
                                  f"{sorted(METHODS)} nor an ablation preset {sorted(ABLATIONS)}")
    return cfg


def entry_config(cmp: CompareConfig, ds: CompareDataset, entry: str) -> ExperimentConfig:
    """The experiment config of one (dataset, method or preset) cell of a study."""
    overrides = [*cmp.overrides, *ds.overrides, f"train.seeds=[{','.join(map(str, cmp.seeds))}]",
                 "train.progress=false"]
    if entry in ABLATIONS:
        overrides = ABLATIONS[entry].apply(overrides)
    else:
        overrides.append(f"method={entry}")
    try:
        return load_config(ds.config, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{ds.config} with {entry!r}: {exc}") from exc


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
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- references

def majority_reference(cfg: ExperimentConfig, dataset: MultimodalDataset, seed: int) -> dict[str, Any]:
    """What predicting the training split's majority class scores on this seed's test split, and a
    fingerprint of that test split (its sample ids and observed masks)."""
    data = prepare_seed(cfg, dataset, seed)
    counts = np.bincount(data.train.labels.numpy(), minlength=dataset.n_classes)
    probs = np.zeros((len(data.test), dataset.n_classes))
    probs[:, int(np.argmax(counts))] = 1.0
    m = classification_metrics(probs, data.test.labels.numpy(), dataset.n_classes)
    digest = hashlib.sha1("\n".join(data.test.ids).encode())
    digest.update(data.test.observed.numpy().tobytes())
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "test_fingerprint": digest.hexdigest()[:12], "n_test": len(data.test)}


def ties_majority(test: dict[str, float], ref: dict[str, Any]) -> bool:
    return (abs(test["accuracy"] - ref["accuracy"]) < TIE_TOLERANCE
            and abs(test["macro_f1"] - ref["macro_f1"]) < TIE_TOLERANCE)


def machine_description(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device)}


# --------------------------------------------------------------------------- running

class Comparison:
    """Runs (or reuses) every cell of a comparison config and aggregates the results."""

    def __init__(self, cmp: CompareConfig, out_dir: str | Path, device: str = "auto",
                 cached_only: bool = False, log=print) -> None:
        self.cmp = cmp
        self.out = Path(out_dir)
        self.device = resolve_device(device)
        self.cached_only = cached_only
        self.log = log
        self._datasets: dict[str, MultimodalDataset] = {}
        self._references: dict[tuple[str, int], dict[str, Any]] = {}
        self.errors: list[str] = []

    def dataset(self, cfg: ExperimentConfig) -> MultimodalDataset:
        d = cfg.data
        key = json.dumps([d.name, d.path, d.format, d.options, d.trust_pickle], sort_keys=True)
        if key not in self._datasets:
            self._datasets[key] = load_dataset(d)
        return self._datasets[key]

    def reference(self, cfg: ExperimentConfig, seed: int) -> dict[str, Any]:
        key = (json.dumps(to_dict(cfg.data), sort_keys=True), seed)
        if key not in self._references:
            self._references[key] = majority_reference(cfg, self.dataset(cfg), seed)
        return self._references[key]

    def run_seed(self, cfg: ExperimentConfig, seed: int, label: str) -> dict[str, Any] | None:
        key = run_key(cfg)
        path = self.out / "runs" / key / f"seed_{seed}.json"
        if path.is_file():
            return json.loads(path.read_text())
        if self.cached_only:
            return None
        dataset = self.dataset(cfg)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            result = train_seed(cfg, dataset, seed, None, self.device)
        except (RuntimeError, ValueError) as exc:
            # one failed run (e.g. a diverged loss) must not stop the rest of the comparison
            self.errors.append(f"{label} seed {seed}: {type(exc).__name__}: {exc}")
            self.log(f"{label} seed {seed}: FAILED ({type(exc).__name__}: {exc})")
            return None
        result["cpu_seconds"] = time.process_time() - cpu0
        result["wall_seconds"] = time.perf_counter() - wall0
        result["config"] = to_dict(cfg)
        result.pop("history", None)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(result, indent=2))
        t = result["test"]
        self.log(f"{label} seed {seed}: acc {100 * t['accuracy']:.2f}, "
                 f"F1 {100 * t['macro_f1']:.2f} ({result['cpu_seconds']:.1f} CPU s)")
        return result

    def run(self) -> dict[str, Any]:
        studies = []
        first_entry: dict[str, str] = {}
        for study in self.cmp.studies:
            tables = []
            for ds in study.datasets:
                label = ds.label or Path(ds.config).stem
                rows, table_info = [], None
                for entry in study.methods:
                    cfg = entry_config(self.cmp, ds, entry)
                    if table_info is None:
                        table_info = self.table_info(cfg, label)
                    key = run_key(cfg)
                    same_as = first_entry.setdefault(key, f"{label}/{entry}")
                    runs = {s: self.run_seed(cfg, s, f"{label} | {entry}") for s in self.cmp.seeds}
                    done = {s: r for s, r in runs.items() if r is not None}
                    rows.append(self.row(entry, cfg, key, done, table_info["references"],
                                         same_as if same_as != f"{label}/{entry}" else None))
                tables.append({**table_info, "rows": rows})
            studies.append({"title": study.title, "note": study.note, "tables": tables})
        return {"name": self.cmp.name, "seeds": self.cmp.seeds, "machine": machine_description(self.device),
                "date": datetime.date.today().isoformat(), "studies": studies, "errors": self.errors,
                "std": "population (ddof=0) over seeds", "tie_tolerance": TIE_TOLERANCE}

    def table_info(self, cfg: ExperimentConfig, label: str) -> dict[str, Any]:
        dataset = self.dataset(cfg)
        refs = {s: self.reference(cfg, s) for s in self.cmp.seeds}
        masked, _ = masked_split(cfg, dataset, self.cmp.seeds[0])
        shift = cfg.data.missing_test
        return {"label": label, "dataset": dataset.describe(), "missingness": to_dict(cfg.data.missing),
                "missingness_test": to_dict(shift) if shift is not None else None,
                "combinations": masked.combination_counts(), "references": refs,
                "epochs": cfg.train.epochs, "eval_batch_size": cfg.train.eval_batch_size,
                "select_metric": cfg.train.select_metric}

    @staticmethod
    def row(entry: str, cfg: ExperimentConfig, key: str, runs: dict[int, dict[str, Any]],
            refs: dict[int, dict[str, Any]], same_as: str | None) -> dict[str, Any]:
        seeds = sorted(runs)
        row: dict[str, Any] = {
            "entry": entry, "method": cfg.method, "config_key": key, "seeds": seeds,
            "kind": "ablation" if entry in ABLATIONS else "method",
            "description": ABLATIONS[entry].description if entry in ABLATIONS else entry,
            "same_run_as": same_as}
        if not seeds:
            return row
        row["test"] = aggregate([runs[s]["test"] for s in seeds])
        row["val"] = aggregate([runs[s]["val"] for s in seeds])
        cpu = [runs[s]["cpu_seconds"] for s in seeds]
        row["cpu_seconds"] = {"mean": float(np.mean(cpu)), "std": float(np.std(cpu)), "per_seed": cpu}
        row["best_epochs"] = [runs[s]["best_epoch"] for s in seeds]
        row["ties_majority"] = [ties_majority(runs[s]["test"], refs[s]) for s in seeds]
        return row


# --------------------------------------------------------------------------- report

METHOD_TABLE_HEADER = ("method", "accuracy", "macro-F1", "AUROC", "AUPRC", "CPU s", "= majority")
SUMMARY_TABLE_HEADER = ("table", "MoE-Retriever F1", "best other (F1)", "ΔF1", "MoE-Retriever acc",
                        "ΔAcc vs that method", "F1 rank", "ΔF1 vs zero", "ΔF1 vs official_retriever")

_CELL_NOTE = (
    "Every cell: test-split metric in %, mean ± std over seeds {seeds} (std: {std}). All methods "
    "of a table share the seed's stratified split and its missingness mask, the encoders, the "
    "trainer and the model-selection rule (best validation epoch by the table's selection metric; "
    "no class weights). **Bold**: best mean in the column. *CPU s*: process CPU seconds of one run "
    "(all threads), mean over seeds. *= majority*: seeds on which the method's test accuracy and "
    "macro-F1 both equal those of predicting the training split's majority class.")
_METHODS_NOTE = (
    "Methods: `moe_retriever` is the paper's method, `zero` the same model with zero-filled "
    "missing embeddings, `official_retriever` its 0.5·mean(intra) + 0.5·mean(inter) variant "
    "(the authors' released code); every other method is one module of "
    "`src/moe_retriever/baselines/` whose docstring says what it does and which defaults it "
    "uses. `hist_gbt` picks its number of boosting iterations on the validation split; "
    "`majority` predicts the training class frequencies.")
_SUMMARY_NOTE = (
    "Per table: MoE-Retriever's macro-F1 and accuracy, the best other method by mean macro-F1, "
    "and differences in points (MoE-Retriever minus the other). The last two columns pair the "
    "seeds (same split and mask) against the same model with zero-filled missing embeddings "
    "(`zero`) and against retrieval without routing (`official_retriever`): mean ΔF1 [per-seed "
    "ΔF1].")


def missingness_text(mis: dict[str, Any]) -> str:
    """``drop, p = 0.3``; the kinds without a rate by name alone."""
    return mis["kind"] + (f", p = {mis['p']}" if mis["kind"] not in ("natural", "none", "patterns") else "")


def comparison_markdown(results: dict[str, Any], command: str) -> str:
    """The comparison as a markdown document: one table per (study, dataset), then a summary of
    MoE-Retriever against the best other method of each table."""
    m = results["machine"]
    lines = [
        f"# Results: {results['name']}", "",
        "Generated, not edited by hand, by", "", "```", command, "```", "",
        f"on {results['date']}: {m['cpu']} ({m['logical_cpus']} logical CPUs, torch "
        f"{m['torch']}, {m['torch_threads']} thread(s), device {m['device']}), {m['platform']}, "
        f"Python {m['python']}.", "",
        _CELL_NOTE.format(seeds=results["seeds"], std=results["std"]), "",
        _METHODS_NOTE, "",
    ]
    summary = []
    for study in results["studies"]:
        lines += [f"## {study['title']}", ""]
        if study["note"]:
            lines += [study["note"], ""]
        for table in study["tables"]:
            lines += [f"### {table['label']}", "", _table_caption(table, results["seeds"]), "",
                      *markdown_table(METHOD_TABLE_HEADER, _method_rows(table["rows"], results["seeds"])),
                      ""]
            summary.append(_summary_row(table))
    if results.get("errors"):
        lines += ["## Failed runs", "", *[f"- {e}" for e in results["errors"]], ""]
    summary_rows = [s for s in summary if s]
    if summary_rows:
        lines += ["## MoE-Retriever against the best other method", "", _SUMMARY_NOTE, "",
                  *markdown_table(SUMMARY_TABLE_HEADER, summary_rows), ""]
    return "\n".join(lines)


def _table_caption(table: dict[str, Any], seeds: list[int]) -> str:
    """The dataset, missingness, training settings and majority-class reference of one table."""
    combos = ", ".join(f"{k} {v}" for k, v in list(table["combinations"].items())[:8])
    if len(table["combinations"]) > 8:
        combos += f" and {len(table['combinations']) - 8} smaller ones"
    refs = table["references"]
    ref_acc = np.mean([r["accuracy"] for r in refs.values()])
    ref_f1 = np.mean([r["macro_f1"] for r in refs.values()])
    mis_text = missingness_text(table["missingness"])
    if table.get("missingness_test"):
        mis_text += f" in training, {missingness_text(table['missingness_test'])} in validation and test"
    return (f"{table['dataset']}. Missingness used here: {mis_text}; combinations (seed "
            f"{seeds[0]}): {combos}. {table['epochs']} epochs, selection by "
            f"validation {table['select_metric']}, evaluation batch {table['eval_batch_size']}. "
            f"Majority class on the test splits: accuracy {100 * ref_acc:.2f}, macro-F1 "
            f"{100 * ref_f1:.2f}. Test fingerprints: "
            + ", ".join(f"seed {s}: `{r['test_fingerprint']}`" for s, r in refs.items()) + ".")


def _method_rows(rows: list[dict[str, Any]], seeds: list[int]) -> list[list[str]]:
    """The cells of a table's method rows; the best mean of each metric column in bold."""
    ran = [r for r in rows if "test" in r]
    best = {k: max((r["test"][k]["mean"] for r in ran if not math.isnan(r["test"][k]["mean"])),
                   default=math.nan)
            for k in METRICS}
    out = []
    for r in rows:
        name = r["entry"] if r["kind"] == "method" else f"{r['entry']} ({r['description']})"
        if r["same_run_as"]:
            name += f" [same run as {r['same_run_as']}]"
        name = name.replace("|", "\\|")  # a bare pipe would split the table cell
        if "test" not in r:
            out.append([name, "not run"])
            continue
        n = len(r["seeds"])
        partial = f" (seeds {r['seeds']})" if n < len(seeds) else ""
        ties = sum(r["ties_majority"])
        out.append([f"{name}{partial}",
                    *[_cell(r["test"][k], r["test"][k]["mean"] == best[k]) for k in METRICS],
                    f"{r['cpu_seconds']['mean']:.1f}", f"{ties}/{n}" if ties else ""])
    return out


def _cell(metric: dict[str, Any] | None, best: bool) -> str:
    text = fmt(metric) if metric is not None else "n/a"
    return f"**{text}**" if best and text != "n/a" else text


def _paired_delta(ours: dict[str, Any], other: dict[str, Any] | None) -> str:
    """Mean and per-seed differences of macro-F1 over the seeds both rows have, in points."""
    if other is None or "test" not in other:
        return "n/a"
    a = dict(zip(ours["seeds"], ours["test"]["macro_f1"]["per_seed"], strict=True))
    b = dict(zip(other["seeds"], other["test"]["macro_f1"]["per_seed"], strict=True))
    deltas = [100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))]
    if not deltas:
        return "n/a"
    return f"{np.mean(deltas):+.2f} [" + ", ".join(f"{d:+.1f}" for d in deltas) + "]"


def _summary_row(table: dict[str, Any]) -> list[str] | None:
    """A table's cells in the summary table; None without a MoE-Retriever row or another method."""
    rows = [r for r in table["rows"] if "test" in r and not math.isnan(r["test"]["macro_f1"]["mean"])]
    ours = [r for r in rows if r["entry"] == "moe_retriever"]
    if not ours:
        return None
    # other methods only (ablation tables compare variants, not methods); each run counted once
    others = [r for r in rows if r["kind"] == "method" and r["entry"] != "moe_retriever"
              and r["config_key"] != ours[0]["config_key"]]
    if not others:
        return None
    o = ours[0]["test"]
    best = max(others, key=lambda r: r["test"]["macro_f1"]["mean"])
    b = best["test"]
    rank = 1 + sum(r["test"]["macro_f1"]["mean"] > o["macro_f1"]["mean"] for r in others)
    by_name = {r["entry"]: r for r in others}
    return [table["label"], fmt(o["macro_f1"]), f"{best['entry']} ({fmt(b['macro_f1'])})",
            f"{100 * (o['macro_f1']['mean'] - b['macro_f1']['mean']):+.2f}", fmt(o["accuracy"]),
            f"{100 * (o['accuracy']['mean'] - b['accuracy']['mean']):+.2f}",
            f"{rank} of {len(others) + 1}", _paired_delta(ours[0], by_name.get("zero")),
            _paired_delta(ours[0], by_name.get("official_retriever"))]


def run_comparison(config_path: str | Path, out_dir: str | Path, device: str = "auto",
                   cached_only: bool = False, markdown: str | Path | None = None,
                   command: str | None = None, log=print) -> dict[str, Any]:
    """Run a comparison config; write ``results.json`` and ``results.md`` (and ``markdown``)."""
    cmp = load_compare_config(config_path)
    results = Comparison(cmp, out_dir, device, cached_only, log).run()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command or f"moe-retriever compare --config {config_path} --out {out_dir}"
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str))
    text = comparison_markdown(results, command)
    atomic_write_text(out / "results.md", text)
    if markdown is not None:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(markdown, text)
    return results
