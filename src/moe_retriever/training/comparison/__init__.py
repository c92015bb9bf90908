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

Protocol: a comparison config's ``protocol`` applies to every dataset (``protocol...`` overrides
of the comparison and of a dataset merge into it); without one, a dataset of
fewer than ``CV_MAX_SAMPLES`` samples gets 5-fold stratified cross-validation repeated on the
first three seeds (``fold_s<seed>_k<fold>.json`` records), a larger one a holdout split per seed.
Every method is paired with ``moe_retriever`` and ``zero`` on the same folds (corrected resampled
t and Wilcoxon, Holm-adjusted within a table), studies with two or more datasets get average
ranks, the Friedman test and a critical-difference diagram, and the pooled test predictions give
per-combination results.

Tuning: with ``tuning`` (of the comparison or of a study), every (dataset, method, partition)
cell runs its own Optuna study of ``tuning.trials`` trials on the partition's train / validation
splits (``tuning.tune_partition``) and its best trial's model is tested; tuned records are keyed
by ``tuned_run_key`` and hold the chosen values.

Scaling out: the cells are independent and seeded by their keys; ``Workers(jobs=N)`` (``compare
--jobs N``) runs them in N worker processes, ``Workers(cluster=ADDRESS)`` on a Dask scheduler,
with the results of a serial run. Every cell is claimed before it trains, so any number of
workers and ``compare`` processes can share one output directory.

The modules: :mod:`.study_config` (the config's schema, loading and checks), :mod:`.keys` (the
keys runs are stored under), :mod:`.runner` (planning the cells, assembling the tables),
:mod:`.cells` (one cell, as a worker runs it), :mod:`.store` (records and claims),
:mod:`.execution` (this process, worker processes or Dask; the progress bar), :mod:`.stats`
(paired differences, Holm, ranks, per-combination results, the tuning effect) and
:mod:`.report` (the Markdown report and rank diagrams).
"""

from .cells import CellOutcome, CellTask, run_cell
from .execution import WorkerLostError, Workers
from .keys import (
    run_key,
    tuned_run_key,
    unit_key,
)
from .report import (
    METHOD_TABLE_HEADER,
    SUMMARY_TABLE_HEADER,
    TUNING_EFFECT_HEADER,
    combination_markdown,
    comparison_markdown,
    missingness_text,
    paired_markdown,
    ranks_markdown,
    study_slug,
    tuned_values_markdown,
    tuning_effect_markdown,
    write_rank_diagrams,
)
from .runner import (
    TIE_TOLERANCE,
    Comparison,
    machine_description,
    majority_reference,
    run_comparison,
    ties_majority,
)
from .stats import (
    ALPHA,
    PAIRED_METRICS,
    PAIRED_REFERENCES,
    add_holm_verdicts,
    add_paired_comparisons,
    combination_results,
    distinct_rows,
    paired_difference,
    study_ranks,
    tuning_effect,
    tuning_summary,
)
from .study_config import (
    CV_MAX_SAMPLES,
    DEFAULT_CV,
    CompareConfig,
    CompareDataset,
    CompareStudy,
    TuningConfig,
    derived_label,
    entry_config,
    entry_space,
    load_compare_config,
    merged_protocol,
    resolve_path,
    study_tuning,
)

__all__ = [
    "ALPHA",
    "CellOutcome",
    "CellTask",
    "Workers",
    "WorkerLostError",
    "CV_MAX_SAMPLES",
    "CompareConfig",
    "CompareDataset",
    "CompareStudy",
    "Comparison",
    "DEFAULT_CV",
    "METHOD_TABLE_HEADER",
    "PAIRED_METRICS",
    "PAIRED_REFERENCES",
    "SUMMARY_TABLE_HEADER",
    "TIE_TOLERANCE",
    "TUNING_EFFECT_HEADER",
    "TuningConfig",
    "add_holm_verdicts",
    "add_paired_comparisons",
    "combination_markdown",
    "combination_results",
    "comparison_markdown",
    "derived_label",
    "distinct_rows",
    "entry_config",
    "entry_space",
    "load_compare_config",
    "machine_description",
    "majority_reference",
    "merged_protocol",
    "missingness_text",
    "paired_difference",
    "paired_markdown",
    "ranks_markdown",
    "resolve_path",
    "run_cell",
    "run_comparison",
    "run_key",
    "study_ranks",
    "study_slug",
    "study_tuning",
    "ties_majority",
    "tuned_run_key",
    "tuned_values_markdown",
    "tuning_effect",
    "tuning_effect_markdown",
    "tuning_summary",
    "unit_key",
    "write_rank_diagrams",
]
