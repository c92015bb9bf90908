"""``analyze``: every analysis of a run as PNG figures, ``analysis.json`` and a self-contained
``report.html`` (figures embedded as base64, so the file can be mailed or archived alone)."""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..api import TrainedRun, load_run, run_seeds
from ..data.combinations import combination_name
from ..data.dataset import MultimodalDataset
from ..data.missingness import apply_missingness
from ..data.sources import load_dataset
from ..training.checkpoint import atomic_write_text
from ..training.experiment import standardize
from .combinations import combination_counts, plot_combination_counts
from .efficiency import TIMING_REPEATS, cost_sources, measure_all, plot_efficiency
from .embeddings import choose_combination, embedding_map, plot_embedding_map
from .expert_usage import expert_usage, plot_by_combination, plot_by_expert
from .gradient_conflict import gradient_conflict, plot_gradient_conflict

SPLITS = ("all", "train", "val", "test")


@dataclass
class Section:
    title: str
    caption: str
    images: list[Path] = field(default_factory=list)
    table: list[list[str]] | None = None  # first row is the header


@dataclass
class Report:
    html: Path
    images: list[Path]
    data: dict[str, Any]


def analysed_samples(run: TrainedRun, dataset: MultimodalDataset, split: str) -> MultimodalDataset:
    """The standardised samples the router and t-SNE analyses look at: one of the seed's splits,
    or all samples under the seed's missingness (``all``). Retrieval always draws from the
    training bank; a training sample's supporting group never contains itself (it lacks the
    target modality)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    data = run.seed_data(dataset)
    if split == "all":
        return standardize(apply_missingness(dataset, run.cfg.data.missing, run.seed), data.stats)
    return {"train": data.train, "val": data.val, "test": data.test}[split]


def analyze_run(run_dir: str | Path, seed: int | None = None, out: str | Path | None = None,
                split: str = "all", compare: list[str | Path] | None = None,
                tsne_combination: str | None = None, device: str = "cpu",
                log: Callable[[str], None] = print) -> Report:
    """Run every analysis on one seed of ``run_dir`` (default: the best by validation score).

    ``compare``: further ``train`` run directories or a ``compare`` output directory whose
    methods join the efficiency and gradient-conflict figures.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, seed, device)
    out_dir = Path(out) if out is not None else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(run.cfg.data)
    data = run.seed_data(dataset)
    samples = analysed_samples(run, dataset, split)
    names = run.modality_names
    sections: list[Section] = []
    record: dict[str, Any] = {"run": str(run_dir), "method": run.method, "seed": run.seed,
                              "dataset": dataset.name, "split": split}
    log(f"analysing {run_dir} (method {run.method}, seed {run.seed}, {split} samples: {len(samples)})")

    # (a) modality combinations
    counts = combination_counts({"train": data.train, "val": data.val, "test": data.test})
    path = plot_combination_counts(counts, out_dir / "combinations.png",
                                   f"{dataset.name}: samples per observed combination (seed {run.seed})")
    record["combinations"] = counts.to_json()
    sections.append(Section(
        "Modality combinations (Fig. 3a)",
        f"Samples per observed modality combination under seed {run.seed}'s missingness "
        f"({_missing_text(run)}), stacked by split." + _letters_text(names), [path]))

    # (b) expert usage
    if run.retrieves:
        usage = expert_usage(run.retrieve(samples, standardized=True))
        paths = [plot_by_combination(usage, out_dir / "expert_usage_by_combination.png"),
                 plot_by_expert(usage, out_dir / "expert_usage_by_expert.png")]
        record["expert_usage"] = usage.to_json()
        sections.append(Section(
            "Expert selection per input combination (Fig. 3b, 3c)",
            f"Router selections of the retriever's context tokens over {_samples_text(split)} "
            f"({int(usage.tokens.sum())} routed tokens, top-{run.cfg.model.retriever.moe.top_k} "
            f"per router). A token's input combination is the observed combination of the sample "
            f"it comes from: the sample itself for inter-modal tokens, the supporting bank sample "
            f"for intra-modal tokens. Top: share of each combination's selections per expert "
            f"(rows sum to 1); bottom: share of each expert's selections per combination "
            f"(columns sum to 1). Experts <letter>_i belong to the pool of the missing modality "
            f"being retrieved; Shared_i serve every target."
            + (f" {usage.fallback_tokens} fallback tokens (no bank sample with the target) are "
               f"not shown." if usage.fallback_tokens else ""),
            paths, _usage_table(usage)))
    else:
        sections.append(Section("Expert selection per input combination (Fig. 3b, 3c)",
                                f"Not available: method {run.method!r} does not route tokens "
                                f"through the MoE retriever."))

    # (c) efficiency
    sources = cost_sources([run_dir] + [Path(p) for p in compare or []], run.cfg, run.seed)
    costs = measure_all(sources, device)
    path = plot_efficiency(costs, out_dir / "efficiency.png")
    record["efficiency"] = [c.to_json() for c in costs]
    sections.append(Section(
        "Computational cost (Fig. 4)",
        "Training seconds per epoch (mean ± std over every epoch of every seed, from the run "
        "records), inference seconds per pass over the test split (mean ± std of "
        f"{TIMING_REPEATS} timings on {run.device}), FLOPs per test sample "
        "(torch.utils.flop_counter; sparse layers count only the experts a token was routed to) "
        "and parameter counts.", [path], _cost_table(costs)))

    # (d) gradient conflict
    conflicts, notes = [], []
    for source in [run_dir] + [Path(p) for p in compare or []]:
        if not (source / "config.yaml").is_file() or not (any(source.glob("seed_*"))
                                                            or any(source.glob("fold_s*"))):
            continue  # compare outputs keep no trained weights
        other = run if source == run_dir else load_run(
            source, run.seed if run.seed in run_seeds(source) else None, device)
        label = other.method if source == run_dir or other.method != run.method else source.name
        try:
            conflicts.append(gradient_conflict(other, other.seed_data(dataset).test, label))
        except ValueError as exc:
            notes.append(str(exc))
    if conflicts:
        path = plot_gradient_conflict(conflicts, out_dir / "gradient_conflict.png")
        record["gradient_conflict"] = [c.to_json() for c in conflicts]
        sections.append(Section(
            "Gradient conflict between modalities (Fig. 5)",
            "Mean over the test samples of cos(dL/de_m, dL/de_n), where e_m is modality m's "
            "embedding entering fusion (observed, or retrieved when missing) and L the sample's "
            "cross-entropy. Positive: the loss moves both modalities' representations the same "
            "way; negative: they conflict." + (" Skipped: " + "; ".join(notes) if notes else ""),
            [path]))

    # (e) t-SNE before / after retrieval
    if getattr(run.model, "retriever", None) is not None:
        code = _combination_code(tsne_combination, names) if tsne_combination else choose_combination(samples)
        if code is None:
            sections.append(Section("Sample embeddings before and after retrieval (Fig. 6)",
                                    "Not available: no incomplete combination has enough samples."))
        else:
            emb = embedding_map(run, samples, code)
            path = plot_embedding_map(emb, out_dir / "tsne.png")
            record["tsne"] = emb.to_json()
            sections.append(Section(
                "Sample embeddings before and after retrieval (Fig. 6)",
                f"t-SNE of the fused sample embeddings of the {len(emb.labels)} samples (of "
                f"{_samples_text(split)}) observing exactly {emb.combination}, coloured by label: "
                f"left with the missing "
                f"embeddings zero-filled, right with them retrieved. Silhouette of the labels in "
                f"the embedding space: {emb.silhouette_before:.3f} before, "
                f"{emb.silhouette_after:.3f} after (higher: tighter classes).", [path]))

    images = [p for s in sections for p in s.images]
    atomic_write_text(out_dir / "analysis.json", json.dumps(record, indent=2, default=_json_default))
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, render_html(run, sections, record))
    log(f"report: {html_path}")
    return Report(html_path, images, record)


def _samples_text(split: str) -> str:
    return "all samples" if split == "all" else f"the {split} split"


def _letters_text(names: list[str]) -> str:
    shown = [(combination_name(1 << m, names), n) for m, n in enumerate(names)]
    if all(code == name for code, name in shown):
        return ""
    return " Letters: " + ", ".join(f"{code} = {name}" for code, name in shown) + "."


def _missing_text(run: TrainedRun) -> str:
    mis = run.cfg.data.missing
    return f"drop, p = {mis.p}" if mis.kind == "drop" else mis.kind


def _combination_code(text: str, names: list[str]) -> int:
    for code in range(1, 1 << len(names)):
        if combination_name(code, names) == text:
            return code
    raise ValueError(f"unknown combination {text!r}; e.g. "
                     f"{[combination_name(c, names) for c in range(1, min(1 << len(names), 6))]}")


def _usage_table(usage) -> list[list[str]]:
    rows = [["combination", "tokens (intra)", "most selected experts", "share per expert group"]]
    for s in usage.summary():
        rows.append([s["combination"], f"{s['tokens']} ({s['intra_tokens']})",
                     ", ".join(f"{e} {100 * r:.1f}%" for e, r in s["top_experts"]),
                     ", ".join(f"{g} {100 * r:.0f}%" for g, r in s["group_share"].items() if r > 0)])
    return rows


def _cost_table(costs) -> list[list[str]]:
    def ms(v: list[float]) -> str:
        if not v:
            return "n/a"
        mean = sum(v) / len(v)
        std = math.sqrt(sum((x - mean) ** 2 for x in v) / len(v))
        return f"{mean:.3f} ± {std:.3f}"
    rows = [["method", "train s/epoch", "inference s/test epoch", "FLOPs/sample", "parameters", "note"]]
    for c in costs:
        rows.append([c.label, ms(c.epoch_seconds), ms(c.inference_seconds),
                     f"{c.flops_per_sample:.3g}" if c.flops_per_sample is not None else "n/a",
                     f"{c.parameters:,}" if c.parameters is not None else "n/a", c.note])
    return rows


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
p.caption { color: #444; font-size: 0.92em; line-height: 1.4; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
"""


def render_html(run: TrainedRun, sections: list[Section], record: dict[str, Any]) -> str:
    esc = html.escape
    metrics = _seed_metrics(run)
    head = (f"Method <b>{esc(run.method)}</b> on <b>{esc(str(record['dataset']))}</b>, seed "
            f"{run.seed} of the run {esc(str(record['run']))}; modalities "
            f"{esc(', '.join(run.modality_names))}; classes {esc(', '.join(run.class_names))}.")
    if metrics:
        head += " Test split of this seed: " + ", ".join(
            f"{k} {100 * v:.2f}%" for k, v in metrics.items()) + "."
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>MoE-Retriever analysis: {esc(run.method)}</title>",
             f"<style>{_STYLE}</style></head><body>",
             "<h1>MoE-Retriever analysis</h1>", f"<p>{head}</p>",
             f"<p class='caption'>Generated {datetime.date.today().isoformat()} by "
             f"<code>moe-retriever analyze</code>; the numbers behind every figure are in "
             f"analysis.json next to this file.</p>"]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        for image in section.images:
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            parts.append(f"<img src='data:image/png;base64,{data}' alt='{esc(image.stem)}'>")
        parts.append(f"<p class='caption'>{esc(section.caption)}</p>")
        if section.table:
            header, *rows = section.table
            parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _seed_metrics(run: TrainedRun) -> dict[str, float]:
    if run.run_dir is None:
        return {}
    path = run.run_dir / run.partition.name / "metrics.json"
    return json.loads(path.read_text()).get("test", {}) if path.is_file() else {}
