"""Use a trained run from Python: predict for new samples and see what the retriever retrieved.

    >>> run = load_run("runs/ad_data")              # the best seed by validation score
    >>> probs = run.predict_proba(new_data)         # (N, C), columns in run.class_names order
    >>> labels = run.predict(new_data)              # class names
    >>> r = run.retrieve(new_data)                  # retrieved embeddings + experts per missing pair
    >>> r.experts(0)                                # [("I_3", 0.31), ("Shared_2", 0.22), ...]
    >>> ens = load_run("runs/ad_data", ensemble=True)  # every seed (or fold) of the run
    >>> ens.predict_proba(new_data)                 # the mean of their probabilities

New data may observe any subset of the training modalities per sample (one is enough) and may
lack a training modality altogether; its features are standardised with the training statistics
and retrieval draws from the run's own bank (the training split stored in the checkpoint), so
predicting needs only the run directory. New modality names, feature shapes or feature columns
that differ from training raise :class:`SchemaMismatchError` listing every difference.

Prediction is deterministic: the supporting samples are drawn from a generator restarted from the
seed for every call, exactly as ``evaluate`` does, so the same input file always gives the same
probabilities (and the seed's test split gives the metrics ``evaluate`` reports).

The modules: :mod:`.trained_run` (loading a run, prediction), :mod:`.retrieval` (what was
retrieved and routed), :mod:`.run_dir` (a run directory's models and the best of them),
:mod:`.schema` (new data against the training modalities) and :mod:`.new_data` (loading data to
predict for).
"""

from ..training.run_files import run_checkpoints  # where a run's checkpoints are, by name
from .new_data import UNLABELLED, load_new_data
from .retrieval import KIND_NAMES, Retrieval, TokenRouting, retrieve
from .run_dir import best_fold, best_seed, fold_checkpoints, seed_checkpoints, trained_seeds
from .schema import SchemaMismatchError, check_schema, schema_differences
from .trained_run import RunEnsemble, TrainedRun, load_run, predicted_names, probability_table

__all__ = [
    "KIND_NAMES",
    "Retrieval",
    "RunEnsemble",
    "SchemaMismatchError",
    "TokenRouting",
    "TrainedRun",
    "UNLABELLED",
    "best_fold",
    "best_seed",
    "check_schema",
    "fold_checkpoints",
    "load_new_data",
    "load_run",
    "predicted_names",
    "probability_table",
    "retrieve",
    "run_checkpoints",
    "schema_differences",
    "seed_checkpoints",
    "trained_seeds",
]
