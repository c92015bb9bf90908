"""`predict --ensemble` and load_run(..., ensemble=True): the mean of every model's probabilities."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from _tiny_run import train_tiny_run, write_folder
from moe_retriever.api import RunEnsemble, load_new_data, load_run, run_checkpoints
from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.missingness import apply_missingness
from moe_retriever.data.preprocessing import standardize
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.run_files import BANK_FILE, load_seed_checkpoint
from moe_retriever.training.trainer import Trainer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("ensemble") / "run", seeds=(0, 1, 2))


@pytest.fixture(scope="module")
def new_data(run_dir):
    """60 samples with the run's kind of missingness, raw features, in the training columns."""
    cfg = load_config(run_dir / "config.yaml")
    ds = apply_missingness(load_dataset(cfg.data), cfg.data.missing, 7)
    return ds.subset(torch.arange(0, 240, 4))


def _seed_probabilities(checkpoint, data) -> np.ndarray:
    """One model's probabilities, computed directly from its checkpoint: its own statistics,
    its own bank, the evaluation Trainer."""
    loaded = load_seed_checkpoint(checkpoint)
    trainer = Trainer(
        loaded.model,
        loaded.cfg.train,
        RetrievalBank(loaded.bank, CPU),
        CPU,
        loaded.seed,
        loaded.cfg.model.retriever.eval_draws,
    )
    return trainer.predict_proba(standardize(data, loaded.stats))


def test_ensemble_is_the_mean_of_the_seed_probabilities(run_dir, new_data, tmp_path):
    per_seed = [_seed_probabilities(run_dir / f"seed_{s}" / "model.safetensors", new_data) for s in (0, 1, 2)]
    expected = np.mean(per_seed, axis=0)
    ensemble = load_run(run_dir, device="cpu", ensemble=True)
    assert isinstance(ensemble, RunEnsemble)
    assert list(ensemble.members) == ["seed_0", "seed_1", "seed_2"]
    probs = ensemble.predict_proba(new_data)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    for single in per_seed:  # the average is not any one seed's answer
        assert np.abs(probs - single).max() > 1e-3
    np.testing.assert_array_equal(
        ensemble.predict(new_data), np.asarray(ensemble.class_names, dtype=object)[expected.argmax(1)]
    )
    # the command line writes the same numbers
    folder = write_folder(new_data, tmp_path / "new")
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--data",
                str(folder),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--ensemble",
            ]
        )
        == 0
    )
    table = pd.read_csv(out, dtype={"id": str, "predicted": str})
    assert table["id"].tolist() == new_data.ids
    np.testing.assert_allclose(table[["prob_class_0", "prob_class_1"]].to_numpy(), expected, atol=1e-6)
    assert (table["predicted"] == np.where(expected[:, 1] > expected[:, 0], "class_1", "class_0")).all()
    # a single seed still predicts alone
    single = load_run(run_dir, seed=1, device="cpu").predict_proba(load_new_data(folder))
    np.testing.assert_allclose(single, per_seed[1], atol=1e-6)


def test_ensemble_takes_every_checkpoint_directory(run_dir, new_data, tmp_path):
    """Models in deeper directories (e.g. one per fold) are members too."""
    folds = tmp_path / "cv_run"
    folds.mkdir()
    # the run's bank file, which the checkpoints find above their new, deeper directories
    shutil.copy(run_dir / BANK_FILE, folds)
    for fold, seed in ((0, 0), (1, 2)):
        target = folds / f"fold_{fold}" / f"seed_{seed}"
        target.mkdir(parents=True)
        shutil.copy(run_dir / f"seed_{seed}" / "model.safetensors", target)
    assert list(run_checkpoints(folds)) == ["fold_0/seed_0", "fold_1/seed_2"]
    expected = np.mean(
        [_seed_probabilities(run_dir / f"seed_{s}" / "model.safetensors", new_data) for s in (0, 2)], axis=0
    )
    probs = load_run(folds, device="cpu", ensemble=True).predict_proba(new_data)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_seed_and_ensemble_exclude_each_other(run_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="not both"):
        load_run(run_dir, seed=0, ensemble=True)
    with pytest.raises(SystemExit):
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "x.csv"),
                "--seed",
                "0",
                "--ensemble",
            ]
        )
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_run(tmp_path, ensemble=True)
