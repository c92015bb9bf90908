"""``analyze``: every analysis of a run as PNG figures, ``analysis.json`` and a self-contained
``report.html`` (figures embedded as base64, so the file can be mailed or archived alone)."""

from __future__ import annotations

import base64
import datetime
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.run_dir import trained_seeds
from ..api.trained_run import TrainedRun, load_run
from ..data.combinations import combination_name
from ..data.dataset import MultimodalDataset
from ..data.partitions import SeedData, partition_split
from ..data.preprocessing import encode_categories, standardize
from ..data.sources import load_dataset
from ..errors import UsageError
from ..files import atomic_write_text
from ..training.metric_display import label, task_of, value_text
from .combinations import combination_counts, plot_combination_counts
from .efficiency import TIMING_REPEATS, cost_sources, measure_all, plot_efficiency
from .embeddings import choose_combination, embedding_map, plot_embedding_map
from .endpoints import plot_regression, plot_survival, regression_analysis, survival_analysis, unit_records
from .expert_usage import expert_naming, expert_usage, plot_by_combination, plot_by_expert
from .gradient_conflict import gradient_conflict, plot_gradient_conflict
from .retrieval_value import plot_retrieval_value, value_of_retrieval

SPLITS = ("all", "train", "val", "test")


@dataclass
class Section:
    title: str
    caption: str
    images: list[Path] = field(default_factory=list)
    table: list[list[str]] | None = None  # first row is the header
    data: dict[str, Any] = field(default_factory=dict)  # its entries of analysis.json


@dataclass
class Report:
    html: Path
    images: list[Path]
    data: dict[str, Any]


@dataclass
class AnalysisInputs:
    """What every analysis of one run reads: the run at one seed, its data and where figures go."""

    run: TrainedRun
    run_dir: Path
    dataset: MultimodalDataset
    data: SeedData
    samples: MultimodalDataset  # the analysed samples (``analysed_samples``)
    split: str
    out_dir: Path
    device: str
    sources: list[Path]  # the run directory, then the ``compare`` directories


def analysed_samples(run: TrainedRun, dataset: MultimodalDataset, split: str) -> MultimodalDataset:
    """The standardised samples the router and t-SNE analyses look at: one of the seed's splits,
    or all samples under the seed's missingness (``all``). Retrieval always draws from the
    training bank; a training sample's supporting group never contains itself (it lacks the
    target modality)."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {list(SPLITS)}, got {split!r}")
    data = run.seed_data(dataset)
    if split == "all":
        masked = partition_split(run.cfg, dataset, run.partition)[0]
        # categorical columns as the training split encoded them, then its standardisation
        return standardize(encode_categories(masked, data.train.modalities)[0], data.stats)
    return {"train": data.train, "val": data.val, "test": data.test}[split]


def analyze_run(
    run_dir: str | Path,
    seed: int | None = None,
    out: str | Path | None = None,
    split: str = "all",
    compare: list[str | Path] | None = None,
    tsne_combination: str | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
) -> Report:
    """Run every analysis on one seed of ``run_dir`` (default: the best by validation score).

    ``compare``: further ``train`` run directories or a ``compare`` output directory whose
    methods join the efficiency and gradient-conflict figures.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir, seed, device)
    out_dir = Path(out) if out is not None else run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(run.cfg.data)
    inputs = AnalysisInputs(
        run,
        run_dir,
        dataset,
        run.seed_data(dataset),
        analysed_samples(run, dataset, split),
        split,
        out_dir,
        device,
        [run_dir] + [Path(p) for p in compare or []],
    )
    log(f"analysing {run_dir} (method {run.method}, seed {run.seed}, {split} samples: {len(inputs.samples)})")
    if dataset.task == "classification":
        sections = [
            combinations_section(inputs),
            expert_usage_section(inputs),
            efficiency_section(inputs),
            gradient_conflict_section(inputs),
            tsne_section(inputs, tsne_combination),
            retrieval_value_section(inputs),
        ]
    else:
        # the gradient-conflict, t-SNE and retrieval-value analyses score class predictions
        sections = [
            combinations_section(inputs),
            endpoint_section(inputs),
            expert_usage_section(inputs),
            efficiency_section(inputs),
        ]
    present = [s for s in sections if s is not None]
    record: dict[str, Any] = {
        "run": str(run_dir),
        "method": run.method,
        "seed": run.seed,
        "dataset": dataset.name,
        "split": split,
    }
    for section in present:
        record.update(section.data)
    atomic_write_text(out_dir / "analysis.json", json.dumps(record, indent=2, default=_json_default))
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, render_html(run, present, record))
    log(f"report: {html_path}")
    return Report(html_path, [p for s in present for p in s.images], record)


def combinations_section(a: AnalysisInputs) -> Section:
    """Fig. 3a: samples per observed modality combination, stacked by split."""
    run = a.run
    counts = combination_counts({"train": a.data.train, "val": a.data.val, "test": a.data.test})
    path = plot_combination_counts(
        counts,
        a.out_dir / "combinations.png",
        f"{a.dataset.name}: samples per observed combination (seed {run.seed})",
    )
    return Section(
        "Modality combinations (Fig. 3a)",
        f"Samples per observed modality combination under seed {run.seed}'s missingness "
        f"({_missing_text(run)}), stacked by split." + _letters_text(run.modality_names),
        [path],
        data={"combinations": counts.to_json()},
    )


def endpoint_section(a: AnalysisInputs) -> Section:
    """Regression: predicted vs observed and residuals by combination; survival: Kaplan-Meier
    curves of the predicted risk groups and Harrell's C by combination; from the test records of
    every seed or fold of the run."""
    preds = unit_records(a.run_dir)
    names = a.run.modality_names
    task = a.dataset.task
    title = "Predictions against observations" if task == "regression" else "Risk groups and concordance"
    if not preds:
        return Section(title, "Not available: the run's metrics.json files hold no per-sample test records.")
    units = f"{sum(len(p['code']) for p in preds)} test predictions of the run's {len(preds)} seeds or folds"
    figure_title = f"{a.dataset.name}: {a.run.method}"
    if task == "regression":
        reg = regression_analysis(preds, names)
        path = plot_regression(
            reg, a.out_dir / "predicted_vs_observed.png", f"{a.dataset.name}: {a.run.method}"
        )
        return Section(
            title,
            f"Left: predicted against observed target over the {units} (the line is a perfect "
            "prediction); right: residuals (predicted − observed) by input combination. The table "
            "gives RMSE, MAE and the mean residual per combination." + _letters_text(names),
            [path],
            _endpoint_table(reg.by_combination, "regression"),
            data={"regression": reg.to_json()},
        )
    surv = survival_analysis(preds, names)
    path = plot_survival(surv, a.out_dir / "risk_groups_km.png", figure_title)
    logrank = (
        f" Log-rank test across the groups: χ² = {surv.logrank['chi2']:.2f}, "
        f"p = {surv.logrank['p_value']:.2g}."
        if surv.logrank
        else ""
    )
    return Section(
        title,
        f"Kaplan-Meier curves of the {units}, grouped into risk tertiles within each seed or fold "
        "(the risks of different runs' models are not on one scale)." + logrank + " The table "
        "gives Harrell's C per input combination over the comparable pairs within each run."
        + _letters_text(names),
        [path],
        _endpoint_table(surv.by_combination, "survival"),
        data={"survival": surv.to_json()},
    )


def _endpoint_table(by_combination: dict[str, Any], task: str) -> list[list[str]]:
    groups = {
        **by_combination["combinations"],
        "complete": by_combination["complete"],
        "incomplete": by_combination["incomplete"],
    }
    if task == "regression":
        rows = [["samples", "n", "RMSE", "MAE", "mean residual"]]
        rows += [
            [k, str(v["n"]), f"{v['rmse']:.3f}", f"{v['mae']:.3f}", f"{v['bias']:+.3f}"]
            for k, v in groups.items()
            if v is not None
        ]
        return rows
    rows = [["samples", "n", "events", "Harrell's C"]]
    rows += [
        [k, str(v["n"]), str(v["events"]), "n/a" if math.isnan(v["c_harrell"]) else f"{v['c_harrell']:.3f}"]
        for k, v in groups.items()
        if v is not None
    ]
    return rows


def expert_usage_section(a: AnalysisInputs) -> Section:
    """Fig. 3b, 3c: the retriever's expert selections per input combination."""
    run = a.run
    title = "Expert selection per input combination (Fig. 3b, 3c)"
    if not run.retrieves:
        return Section(
            title, f"Not available: method {run.method!r} does not route tokens through the MoE retriever."
        )
    usage = expert_usage(run.retrieve(a.samples, standardized=True))
    paths = [
        plot_by_combination(usage, a.out_dir / "expert_usage_by_combination.png"),
        plot_by_expert(usage, a.out_dir / "expert_usage_by_expert.png"),
    ]
    return Section(
        title,
        f"Router selections of the retriever's context tokens over {_samples_text(a.split)} "
        f"({int(usage.tokens.sum())} routed tokens, top-{run.cfg.model.retriever.moe.top_k} "
        f"per router). A token's input combination is the observed combination of the sample "
        f"it comes from: the sample itself for inter-modal tokens, the supporting bank sample "
        f"for intra-modal tokens. Top: share of each combination's selections per expert "
        f"(rows sum to 1); bottom: share of each expert's selections per combination "
        f"(columns sum to 1). "
        + expert_naming(run.modality_names, usage.experts)
        + (
            f" {usage.fallback_tokens} fallback tokens (no bank sample with the target) are not shown."
            if usage.fallback_tokens
            else ""
        ),
        paths,
        _usage_table(usage),
        data={"expert_usage": usage.to_json()},
    )


def efficiency_section(a: AnalysisInputs) -> Section:
    """Fig. 4: training and inference time, FLOPs and parameters of the run and ``compare``."""
    costs = measure_all(cost_sources(a.sources, a.run.cfg, a.run.seed), a.device)
    path = plot_efficiency(costs, a.out_dir / "efficiency.png")
    return Section(
        "Computational cost (Fig. 4)",
        "Training seconds per epoch (mean ± std over every epoch of every seed, from the run "
        "records), inference seconds per pass over the test split (mean ± std of "
        f"{TIMING_REPEATS} timings on {a.run.device}), FLOPs per test sample "
        "(torch.utils.flop_counter; sparse layers count only the experts a token was routed to) "
        "and parameter counts.",
        [path],
        _cost_table(costs),
        data={"efficiency": [c.to_json() for c in costs]},
    )


def gradient_conflict_section(a: AnalysisInputs) -> Section | None:
    """Fig. 5: gradient conflict between modalities of every source with trained weights; None
    when no source has them."""
    run = a.run
    conflicts, notes = [], []
    for source in a.sources:
        if not (source / "config.yaml").is_file() or not (
            any(source.glob("seed_*")) or any(source.glob("fold_s*"))
        ):
            continue  # compare outputs keep no trained weights
        other = (
            run
            if source == a.run_dir
            else load_run(source, run.seed if run.seed in trained_seeds(source) else None, a.device)
        )
        label = other.method if source == a.run_dir or other.method != run.method else source.name
        try:
            conflicts.append(gradient_conflict(other, other.seed_data(a.dataset).test, label))
        except UsageError as exc:
            notes.append(str(exc))
    if not conflicts:
        return None
    path = plot_gradient_conflict(conflicts, a.out_dir / "gradient_conflict.png")
    return Section(
        "Gradient conflict between modalities (Fig. 5)",
        "Mean over the test samples of cos(dL/de_m, dL/de_n), where e_m is modality m's "
        "embedding entering fusion (observed, or retrieved when missing) and L the sample's "
        "cross-entropy. Positive: the loss moves both modalities' representations the same "
        "way; negative: they conflict." + (" Skipped: " + "; ".join(notes) if notes else ""),
        [path],
        data={"gradient_conflict": [c.to_json() for c in conflicts]},
    )


def tsne_section(a: AnalysisInputs, combination: str | None = None) -> Section | None:
    """Fig. 6: t-SNE of the samples of one incomplete combination (``combination``, default the
    most frequent) before and after retrieval; None for a model without a retriever."""
    run = a.run
    if not run.model.uses_retrieval:
        return None
    title = "Sample embeddings before and after retrieval (Fig. 6)"
    code = (
        _combination_code(combination, run.modality_names) if combination else choose_combination(a.samples)
    )
    if code is None:
        return Section(title, "Not available: no incomplete combination has enough samples.")
    emb = embedding_map(run, a.samples, code)
    path = plot_embedding_map(emb, a.out_dir / "tsne.png")
    return Section(
        title,
        f"t-SNE of the fused sample embeddings of the {len(emb.labels)} samples (of "
        f"{_samples_text(a.split)}) observing exactly {emb.combination}, coloured by label: "
        f"left with the missing "
        f"embeddings zero-filled, right with them retrieved. Silhouette of the labels in "
        f"the embedding space: {emb.silhouette_before:.3f} before, "
        f"{emb.silhouette_after:.3f} after (higher: tighter classes).",
        [path],
        data={"tsne": emb.to_json()},
    )


def retrieval_value_section(a: AnalysisInputs) -> Section:
    """The value of retrieval: test metrics with the retrieved embeddings replaced by zeros, the
    training mean, one random supporting-group member or (for samples masked on purpose) the
    true embedding."""
    run, title = a.run, "Value of retrieval"
    if not run.model.uses_retrieval:
        return Section(title, f"Not available: method {run.method!r} does not retrieve missing embeddings.")
    value = value_of_retrieval(run, a.data.test)
    path = plot_retrieval_value(value, a.out_dir / "retrieval_value.png")
    n_modalities = len(run.modality_names)
    masked = (
        f": the {value.samples['masked'] // n_modalities} complete test samples, each once "
        "per modality with that modality hidden, where `true` puts the hidden modality's "
        "own embedding back (the unmasked model)."
        if "masked" in value.samples
        else ": not available, the test split has no complete sample."
    )
    cosine = ", ".join(f"{k} {v:.3f}" for k, v in value.cosine_to_true.items()) or "n/a"
    return Section(
        title,
        "Test macro-F1 (95% bootstrap interval over samples) when the retrieved embedding of "
        "every missing (sample, modality) pair is replaced by zeros, by the training-mean "
        "embedding of that modality, or by the embedding of one random member of its "
        "supporting group; everything else is the trained model. Left: the test samples "
        f"with their own missingness. Right{masked} Mean cosine similarity to the true "
        f"embedding: {cosine}.",
        [path],
        _value_table(value),
        data={"retrieval_value": value.to_json()},
    )


def _samples_text(split: str) -> str:
    return "all samples" if split == "all" else f"the {split} split"


def _letters_text(names: list[str]) -> str:
    shown = [(combination_name(1 << m, names), n) for m, n in enumerate(names)]
    if all(code == name for code, name in shown):
        return ""
    return " Letters: " + ", ".join(f"{code} = {name}" for code, name in shown) + "."


def _missing_text(run: TrainedRun) -> str:
    def text(mis) -> str:
        return f"{mis.kind}, p = {mis.p}" if mis.kind not in ("natural", "none", "patterns") else mis.kind

    shift = run.cfg.data.missing_test
    return text(run.cfg.data.missing) + (f"; validation and test: {text(shift)}" if shift else "")


def _combination_code(text: str, names: list[str]) -> int:
    for code in range(1, 1 << len(names)):
        if combination_name(code, names) == text:
            return code
    raise UsageError(
        f"unknown combination {text!r}; e.g. "
        f"{[combination_name(c, names) for c in range(1, min(1 << len(names), 6))]}"
    )


def _usage_table(usage) -> list[list[str]]:
    rows = [["combination", "tokens (intra)", "most selected experts", "share per expert group"]]
    for s in usage.summary():
        rows.append(
            [
                s["combination"],
                f"{s['tokens']} ({s['intra_tokens']})",
                ", ".join(f"{e} {100 * r:.1f}%" for e, r in s["top_experts"]),
                ", ".join(f"{g} {100 * r:.0f}%" for g, r in s["group_share"].items() if r > 0),
            ]
        )
    return rows


def _value_table(value) -> list[list[str]]:
    rows = [["samples", "fill", "accuracy", "macro-F1", "AUROC", "AUPRC"]]
    for name, variants in value.metrics.items():
        for v, m in variants.items():
            ci = {
                k: f" [{100 * m[k + '_ci'][0]:.1f}, {100 * m[k + '_ci'][1]:.1f}]"
                for k in ("accuracy", "macro_f1")
            }
            rows.append(
                [
                    f"{name} (n = {value.samples[name]})",
                    v,
                    f"{100 * m['accuracy']:.2f}{ci['accuracy']}",
                    f"{100 * m['macro_f1']:.2f}{ci['macro_f1']}",
                    f"{100 * m['auroc']:.2f}",
                    f"{100 * m['auprc']:.2f}",
                ]
            )
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
        rows.append(
            [
                c.label,
                ms(c.epoch_seconds),
                ms(c.inference_seconds),
                f"{c.flops_per_sample:.3g}" if c.flops_per_sample is not None else "n/a",
                f"{c.parameters:,}" if c.parameters is not None else "n/a",
                c.note,
            ]
        )
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
    task = task_of(metrics)
    labels = f"classes {esc(', '.join(run.class_names))}" if run.class_names else f"task {task}"
    head = (
        f"Method <b>{esc(run.method)}</b> on <b>{esc(str(record['dataset']))}</b>, seed "
        f"{run.seed} of the run {esc(str(record['run']))}; modalities "
        f"{esc(', '.join(run.modality_names))}; {labels}."
    )
    if metrics:
        head += (
            " Test split of this seed: "
            + ", ".join(
                f"{k} {100 * v:.2f}%" if task == "classification" else f"{label(k)} {value_text(v, k)}"
                for k, v in metrics.items()
            )
            + "."
        )
    parts = [
        "<!DOCTYPE html>",
        "<html><head><meta charset='utf-8'>",
        f"<title>MoE-Retriever analysis: {esc(run.method)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>MoE-Retriever analysis</h1>",
        f"<p>{head}</p>",
        f"<p class='caption'>Generated {datetime.date.today().isoformat()} by "
        f"<code>moe-retriever analyze</code>; the numbers behind every figure are in "
        f"analysis.json next to this file.</p>",
    ]
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
