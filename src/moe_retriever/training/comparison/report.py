"""A comparison's report: ``results.md`` (one table per study and dataset, paired differences,
per-combination results, ranks, the tuning effect and a summary) and its critical-difference
diagrams."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..markdown import fmt_interval, markdown_table, protocol_text
from ..metric_display import PAIRED_BY_TASK, primary_metric, value_text
from ..metrics import TASK_METRICS, higher_is_better
from . import report_endpoints as endpoints
from .stats import ALPHA, PAIRED_REFERENCES, distinct_rows, table_task


def study_slug(title: str) -> str:
    """A study title as a file-name part: lower case, runs of other characters as ``-``, at most
    60 characters (``study`` when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "study"


def write_rank_diagrams(results: dict[str, Any], out: Path) -> None:
    """``critical_difference_<study-slug>.png`` in ``out`` for every study with ranks; the file
    name is stored in the study's ``ranks.figure``."""
    from ...analysis.plotting import critical_difference_png

    ranked = [s for s in results["studies"] if s.get("ranks")]
    for study in ranked:
        ranks = study["ranks"]
        # named after the study, so comparisons that share an --out or a docs folder keep theirs
        name = f"critical_difference_{study_slug(study['title'])}.png"
        critical_difference_png(
            ranks["average_ranks"],
            ranks["cd"],
            out / name,
            f"{study['title'][:70]}: average rank of {ranks['metric']} "
            f"over {len(ranks['datasets'])} datasets",
            ranks["cliques"],
        )
        ranks["figure"] = name


METHOD_TABLE_HEADER = ("method", "accuracy", "macro-F1", "AUROC", "AUPRC", "CPU s", "= majority")


# the methods the summary's difference columns compare MoE-Retriever with (beside the best other)
SUMMARY_REFERENCES = ("zero", "official_retriever")


SUMMARY_TABLE_HEADER = (
    "table",
    "MoE-Retriever F1",
    "MoE-Retriever acc",
    "best other (F1)",
    "ΔF1 best other − MoE-Retriever",
    *(f"ΔF1 {ref} − MoE-Retriever" for ref in SUMMARY_REFERENCES),
    "F1 rank",
)


_CELL_NOTE = (
    "Every cell: test metric in %, mean [95 % interval] over the table's runs: the folds of "
    "repeated stratified cross-validation (interval: Nadeau-Bengio corrected resampled t, "
    "which accounts for the overlap of the folds' training data) or, for holdout, the seeds "
    "{seeds} (t interval over seeds); each table states its protocol. All methods "
    "of a table share every run's split and missingness mask (drawn once per seed or repeat), "
    "the encoders, the trainer and the model-selection rule (best "
    "validation epoch by the table's selection metric; no class weights). **Bold**: best mean "
    "in the column. *CPU s*: process CPU seconds of one run (all threads), mean over runs. "
    "*= majority*: runs (seeds or folds) on which the method's test accuracy and macro-F1 "
    "both equal those of predicting the training split's majority class."
)


_METHODS_NOTE = (
    "Methods: `moe_retriever` is the paper's method, `zero` the same model with zero-filled "
    "missing embeddings, `official_retriever` its 0.5·mean(intra) + 0.5·mean(inter) variant "
    "(the authors' released code); every other method is one module of "
    "`src/moe_retriever/baselines/` whose docstring says what it does and which defaults it "
    "uses. `hist_gbt` selects its settings by inner cross-validation on the training part; "
    "`majority` predicts the training class frequencies."
)


_SUMMARY_NOTE = (
    "Per table: MoE-Retriever's macro-F1 and accuracy (mean [95 % interval]), the best other "
    "row by mean macro-F1 (methods and ablation presets alike), and paired differences of "
    "macro-F1 in points on the same runs, with the sign used throughout this report: **the "
    "other method minus MoE-Retriever** (the paired tables' *Δ vs moe_retriever*; negative: "
    "MoE-Retriever scores higher), against that best other{references}: mean [95 % interval] "
    "and the verdict at {alpha} after Holm's adjustment within the table (better / worse: the "
    "other method is significantly better / worse than MoE-Retriever; n.s.: no conclusion). "
    "*F1 rank*: MoE-Retriever's rank by mean macro-F1 among every row of the table with a "
    "result (1 = best; methods and ablation presets alike; a row that is the same run as another "
    "counts once, and rows left out are listed below the table)."
)


_REFERENCE_TEXT = {
    "zero": "the same model with zero-filled missing embeddings (`zero`)",
    "official_retriever": "retrieval without routing (`official_retriever`)",
}


def missingness_text(mis: dict[str, Any]) -> str:
    """``drop, p = 0.3``; the kinds without a rate by name alone."""
    return mis["kind"] + (f", p = {mis['p']}" if mis["kind"] not in ("natural", "none", "patterns") else "")


def comparison_markdown(results: dict[str, Any], command: str) -> str:
    """The comparison as a markdown document: one table per (study, dataset), then a summary of
    MoE-Retriever against the best other method of each table."""
    m = results["machine"]
    tables = [t for study in results["studies"] for t in study["tables"]]
    tasks = list(dict.fromkeys(table_task(t) for t in tables))
    cell_note = _CELL_NOTE.format(seeds=results["seeds"])
    if tables and "classification" not in tasks:  # no cell of this report is in %
        cell_note = cell_note.replace("test metric in %,", "test metric (units below),")
    lines = [
        f"# Results: {results['name']}",
        "",
        "Generated, not edited by hand, by",
        "",
        "```",
        command,
        "```",
        "",
        f"on {results['date']}: {m['cpu']} ({m['logical_cpus']} logical CPUs, torch "
        f"{m['torch']}, {m['torch_threads']} thread(s), device {m['device']}), {m['platform']}, "
        f"Python {m['python']}.",
        "",
        cell_note,
        "",
        _METHODS_NOTE,
        "",
    ]
    if tasks != ["classification"] and tables:
        lines += [endpoints.ENDPOINT_NOTE, ""]
    # a reference column only when some table has that method (else it is n/a in every row)
    references = [
        ref for ref in SUMMARY_REFERENCES if any(r["entry"] == ref for t in tables for r in t["rows"])
    ]
    summary: list[tuple[str, tuple[str, list[str], str] | None]] = []
    for study in results["studies"]:
        lines += [f"## {study['title']}", ""]
        if study["note"]:
            lines += [study["note"], ""]
        for table in study["tables"]:
            lines += [
                f"### {table['label']}",
                "",
                _table_caption(table, results["seeds"]),
                "",
                *markdown_table(_method_header(table), _method_rows(table, len(table["references"]))),
                "",
            ]
            lines += paired_markdown(table) + combination_markdown(table) + tuned_values_markdown(table)
            summary.append((table_task(table), _summary_row(table, references)))
        lines += ranks_markdown(study)
    lines += tuning_effect_markdown(results.get("tuning_effect") or [])
    if results.get("errors"):
        lines += ["## Failed runs", "", *[f"- {e}" for e in results["errors"]], ""]
    named = [_REFERENCE_TEXT[ref] for ref in references]
    against = "".join(f", against {n}" for n in named[:-1]) + (f" and against {named[-1]}" if named else "")
    alpha = results.get("alpha", ALPHA)
    for task in tasks:
        summary_rows = [s for t, s in summary if s and t == task]
        if not summary_rows:
            continue
        if task == "classification":
            title = "## MoE-Retriever against the best other method"
            note = _SUMMARY_NOTE.format(alpha=alpha, references=against)
            full = SUMMARY_TABLE_HEADER
        else:
            title = f"## MoE-Retriever against the best other method: {task}"
            note = endpoints.summary_note(task, alpha, against)
            full = endpoints.summary_header(task, SUMMARY_REFERENCES)
        # a reference column only when some table has that method (else it is n/a in every row)
        dropped = {full[5 + i] for i, ref in enumerate(SUMMARY_REFERENCES) if ref not in references}
        header = [h for h in full if h not in dropped]
        left_out = [f"{name}: {text}" for name, _, text in summary_rows if text]
        lines += [title, "", note, "", *markdown_table(header, [cells for _, cells, _ in summary_rows]), ""]
        if left_out:
            lines += ["Left out of the rank and of *best other*: " + "; ".join(left_out) + ".", ""]
    return "\n".join(lines)


def _method_header(table: dict[str, Any]) -> tuple[str, ...]:
    task = table_task(table)
    return METHOD_TABLE_HEADER if task == "classification" else endpoints.method_header(task)


def _table_caption(table: dict[str, Any], seeds: list[int]) -> str:
    """The dataset, protocol, missingness, training settings and majority-class reference of one
    table."""
    combos = ", ".join(f"{k} {v}" for k, v in list(table["combinations"].items())[:8])
    if len(table["combinations"]) > 8:
        combos += f" and {len(table['combinations']) - 8} smaller ones"
    refs = table["references"]
    task = table_task(table)
    if task == "classification":
        ref_acc = np.mean([r["accuracy"] for r in refs.values()])
        ref_f1 = np.mean([r["macro_f1"] for r in refs.values()])
        reference = (
            f"Majority class on the test splits: accuracy {100 * ref_acc:.2f}, macro-F1 {100 * ref_f1:.2f}. "
        )
    else:
        reference = endpoints.reference_text(task, refs)
    mis_text = missingness_text(table["missingness"])
    if table.get("missingness_test"):
        mis_text += f" in training, {missingness_text(table['missingness_test'])} in validation and test"
    protocol = protocol_text(table.get("protocol"), table.get("protocol_seeds", seeds))
    return (
        f"{table['dataset']}. Protocol: {protocol}. Missingness used here: {mis_text}; "
        f"combinations (seed {seeds[0]}): {combos}. {table['epochs']} epochs, selection by "
        f"validation {table['select_metric']}, evaluation batch {table['eval_batch_size']}. "
        + reference
        + _fingerprints(refs)
        + "."
        + _tuning_text(table)
    )


def _tuning_text(table: dict[str, Any]) -> str:
    """The caption's sentence on nested tuning (empty for shared settings)."""
    tuning = table.get("tuning")
    if not tuning:
        return ""
    untuned = [r["entry"] for r in table["rows"] if (r.get("tuning") or {}).get("untuned")]
    return (
        f" **Tuned**: in every outer partition each method's settings were chosen by its own "
        f"Optuna study of {tuning['trials']} trials (seeded TPE, median pruning; same budget for "
        "every method), each trial trained on the partition's training split and scored by "
        f"validation {table['select_metric']}; the best trial's model is the one tested, so the "
        "test fold never informs the choice. *CPU s* is the whole search of a partition."
        + (
            f" Not tuned (no search space or fitted directly; one run): {', '.join(untuned)}."
            if untuned
            else ""
        )
    )


def tuned_values_markdown(table: dict[str, Any]) -> list[str]:
    """One line per tuned row: the most frequent chosen value of each hyperparameter (the median
    of a continuous one)."""
    lines = []
    for r in table["rows"]:
        chosen = (r.get("tuning") or {}).get("chosen")
        if chosen:
            values = "; ".join(
                f"`{k}` median {c['median']:.3g}"
                if "median" in c
                else f"`{k}` = {json.dumps(c['value'])} ({c['count']}/{c['of']})"
                for k, c in chosen.items()
            )
            lines.append(f"- {r['entry']}: {values}")
    if not lines:
        return []
    return [
        "Tuned values over the partitions: the most frequent choice (times chosen) or, for a "
        "continuous setting, the median:",
        "",
        *lines,
        "",
    ]


def _method_rows(table: dict[str, Any], n_runs: int) -> list[list[str]]:
    """The cells of a table's method rows; the best mean of each metric column in bold (the
    lowest where lower is better); a row with fewer than the table's ``n_runs`` runs says how
    many it has."""
    rows = table["rows"]
    task = table_task(table)
    names = TASK_METRICS[task]
    best = endpoints.best_means(rows, task)
    out = []
    for r in rows:
        name = r["entry"] if r["kind"] == "method" else f"{r['entry']} ({r['description']})"
        if r["same_run_as"]:
            name += f" [same run as {r['same_run_as']}]"
        name = name.replace("|", "\\|")  # a bare pipe would split the table cell
        if "test" not in r:
            out.append([name, "not run"])
            continue
        n = len(r.get("partitions", r["seeds"]))  # results stored before protocols: seeds
        partial = f" ({n} of {n_runs} runs)" if n < n_runs else ""
        ties = sum(r["ties_majority"])
        out.append(
            [
                f"{name}{partial}",
                *[_cell(r["test"][k], r["test"][k]["mean"] == best[k], k) for k in names],
                f"{r['cpu_seconds']['mean']:.1f}",
                f"{ties}/{n}" if ties else "",
            ]
        )
    return out


def _cell(metric: dict[str, Any] | None, best: bool, name: str = "accuracy") -> str:
    text = fmt_interval(metric, name) if metric is not None else "n/a"
    return f"**{text}**" if best and text != "n/a" else text


def _versus(other: dict[str, Any] | None, metric: str = "macro_f1") -> str:
    """``other`` minus MoE-Retriever on ``metric`` (macro-F1 in points): mean [95 % interval]
    and verdict, the cells of ``other``'s row in the table's paired comparison (Holm-adjusted)."""
    cell = (other or {}).get("paired", {}).get("moe_retriever", {}).get(metric)
    if cell is None:
        return "n/a"
    return f"{_difference(cell, metric)} {cell['verdict']}"


def _difference(cell: dict[str, Any], metric: str) -> str:
    """A paired difference's mean [95 % interval] (in points for a classification metric)."""
    lo, hi = cell["lo"], cell["hi"]
    interval = "" if math.isnan(lo) else f" [{value_text(lo, metric, True)}, {value_text(hi, metric, True)}]"
    return value_text(cell["mean_diff"], metric, True) + interval


def _summary_row(table: dict[str, Any], references: list[str]) -> tuple[str, list[str], str] | None:
    """A table's label, its cells in the summary table and the rows it leaves out of the rank
    (with why); None without a MoE-Retriever result or another row with one."""
    primary, second = PAIRED_BY_TASK[table_task(table)]
    ranked, left_out = distinct_rows(table, primary, first="moe_retriever")
    ours = next((r for r in ranked if r["entry"] == "moe_retriever"), None)
    if ours is None:
        return None
    others = [r for r in ranked if r is not ours]
    if not others:
        return None
    o = ours["test"]
    # scores: higher is better (errors negated)
    sign = 1.0 if higher_is_better(primary) else -1.0
    best = max(others, key=lambda r: sign * r["test"][primary]["mean"])
    rank = 1 + sum(sign * r["test"][primary]["mean"] > sign * o[primary]["mean"] for r in others)
    by_name = {r["entry"]: r for r in others}
    cells = [
        table["label"],
        fmt_interval(o[primary], primary),
        fmt_interval(o[second], second),
        f"{best['entry']} ({fmt_interval(best['test'][primary], primary)})",
        _versus(best, primary),
        *(_versus(by_name.get(ref), primary) for ref in references),
        f"{rank} of {len(ranked)}",
    ]
    return table["label"], cells, ", ".join(f"{e} ({why})" for e, why in left_out.items())


def _fingerprints(refs: dict[Any, dict[str, Any]]) -> str:
    # holdout references are keyed by seed (a string once read back from results.json)
    if not any(str(k).startswith("fold_") for k in refs):
        return "Test fingerprints: " + ", ".join(
            f"seed {s}: `{r['test_fingerprint']}`" for s, r in refs.items()
        )
    digest = hashlib.sha1(" ".join(r["test_fingerprint"] for r in refs.values()).encode())
    return f"Fingerprint of the {len(refs)} test folds: `{digest.hexdigest()[:12]}`"


def _pct(x: float, signed: bool = False) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:{'+' if signed else ''}.2f}"


def _p(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def paired_markdown(table: dict[str, Any], metric: str | None = None) -> list[str]:
    """Per method: its ``metric`` (default: the table's primary metric) minus that of each
    paired reference (in points for a classification metric), with the 95 % interval, the
    Holm-adjusted t p-value, the Wilcoxon p-value and the verdict."""
    metric = metric or primary_metric(table_task(table))
    refs = [ref for ref in PAIRED_REFERENCES if any(ref in r.get("paired", {}) for r in table["rows"])]
    if not refs:
        return []
    header = ["method"]
    for ref in refs:
        header += [f"Δ vs {ref} [95 %]", "p (Holm)", "p Wilcoxon", "verdict"]
    intro = (
        f"Paired differences of macro-F1 on the same {_units(table)} (method minus "
        "reference, points, the sign used throughout this report: positive when the row's "
        "method scores higher): mean [95 % interval], p-value of the "
        f"{_test_name(table)} Holm-adjusted over this table's methods, the Wilcoxon "
        f"signed-rank p-value (unadjusted), and the verdict at {ALPHA} on the adjusted "
        "p-value (better / worse / n.s.)."
        if metric == "macro_f1"
        else endpoints.paired_intro(table, metric, _units(table), _test_name(table), ALPHA)
    )
    lines = [intro, ""]
    rows = []
    for r in table["rows"]:
        cells = [r["entry"].replace("|", "\\|")]
        paired = r.get("paired", {})
        if not any(ref in paired for ref in refs):
            continue
        for ref in refs:
            c = paired.get(ref, {}).get(metric)
            if c is None:
                cells += ["", "", "", ""]
                continue
            cells += [
                _difference(c, metric),
                _p(c["p_holm"]),
                _p(c["p_wilcoxon"]),
                c["verdict"],
            ]
        rows.append(cells)
    return lines + markdown_table(header, rows) + [""]


TUNING_EFFECT_HEADER = [
    "dataset",
    "method",
    "shared",
    "tuned",
    "Δ tuned − shared [95 %]",
    "p (Holm)",
    "p Wilcoxon",
    "verdict",
]


def tuning_effect_markdown(cells: list[dict[str, Any]]) -> list[str]:
    """The section on tuned minus shared settings (see :func:`tuning_effect`)."""
    if not cells:
        return []
    rows = [
        [
            c["dataset"],
            c["entry"].replace("|", "\\|"),
            _cell(c["shared"], False, c["metric"]),
            _cell(c["tuned"], False, c["metric"]),
            _difference(c, c["metric"]),
            _p(c["p_holm"]),
            _p(c["p_wilcoxon"]),
            c["verdict"],
        ]
        for c in cells
    ]
    return [
        "## Tuned minus shared settings",
        "",
        f"Each method's test {cells[0]['metric']} with its tuned settings minus the same method "
        "with the shared settings, paired on the same partitions (points): mean "
        "[95 % interval], the p-value Holm-adjusted over the rows of this section, the Wilcoxon "
        f"signed-rank p-value (unadjusted) and the verdict at {ALPHA}.",
        "",
        *markdown_table(TUNING_EFFECT_HEADER, rows),
        "",
    ]


def _units(table: dict[str, Any]) -> str:
    p = table.get("protocol") or {}
    return f"{p['folds'] * p['repeats']} folds" if p.get("kind") == "cv" else "seeds"


def _test_name(table: dict[str, Any]) -> str:
    return (
        "corrected resampled t-test"
        if (table.get("protocol") or {}).get("kind") == "cv"
        else "paired t-test over seeds"
    )


COMBINATION_TABLE_HEADER = ("method", "complete acc / F1", "incomplete acc / F1", "worst combination: F1 (n)")


def combination_markdown(table: dict[str, Any]) -> list[str]:
    """A compact per-combination table: complete vs incomplete samples and the worst
    combination, from the test predictions pooled over the runs."""
    if table_task(table) != "classification":
        return endpoints.combination_lines(table, table_task(table))
    rows = [r for r in table["rows"] if r.get("by_combination")]
    if not rows:
        return []
    lines = [
        "Per input combination (test predictions pooled over the runs; F1 = macro-F1 over "
        "the classes present): accuracy / F1 in % on complete and incomplete samples, and "
        "the combination with the lowest F1 (n = pooled predictions).",
        "",
    ]
    cells = []
    for r in rows:
        c = r["by_combination"]

        def pair(x: dict[str, Any] | None) -> str:
            return "n/a" if x is None else f"{_pct(x['accuracy'])} / {_pct(x['macro_f1'])} (n {x['n']})"

        worst = c["combinations"][c["worst"]]
        cells.append(
            [
                r["entry"],
                pair(c["complete"]),
                pair(c["incomplete"]),
                f"{c['worst']}: {_pct(worst['macro_f1'])} ({worst['n']})",
            ]
        )
    return lines + markdown_table(COMBINATION_TABLE_HEADER, cells) + [""]


def ranks_markdown(study: dict[str, Any]) -> list[str]:
    """The section on a study's ranks across its datasets (see :func:`.stats.study_ranks`):
    average ranks, the Friedman test, the critical difference and the diagram."""
    ranks = study.get("ranks")
    if not ranks:
        return []
    f = ranks["friedman"]
    friedman_text = (
        f"Friedman test: χ² = {f['statistic']:.2f}, p = {_p(f['p_value'])}"
        if f
        else "Friedman test: not run (it needs three or more methods)"
    )
    order = sorted(ranks["average_ranks"], key=ranks["average_ranks"].get)
    lines = [
        f"#### Ranks across the {len(ranks['datasets'])} datasets of this study",
        "",
        f"Average rank of mean {ranks['metric']} per dataset (1 = best"
        + ("" if higher_is_better(ranks["metric"]) else ": the lowest")
        + f"). {friedman_text}. "
        f"Nemenyi critical difference at {ranks['alpha']}: {ranks['cd']:.2f}; methods joined "
        "by a bar in the diagram differ by less than that and cannot be told apart."
        + _left_out_text(ranks.get("left_out") or {}),
        "",
        *markdown_table(
            ["method", *order], [["average rank", *(f"{ranks['average_ranks'][e]:.2f}" for e in order)]]
        ),
        "",
    ]
    if ranks.get("figure"):
        lines += [f"![critical-difference diagram]({ranks['figure']})", ""]
    return lines


def _left_out_text(left_out: dict[str, str]) -> str:
    """The sentence naming the entries a ranking leaves out, and why (empty when none is)."""
    if not left_out:
        return ""
    return " Left out: " + "; ".join(f"{e} ({why})" for e, why in left_out.items()) + "."
