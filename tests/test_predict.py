"""Prediction for new samples: the `predict` command and the Python API (moe_retriever.api)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from _tiny_run import train_tiny_run, write_folder
from moe_retriever import SchemaMismatchError, load_new_data, load_run
from moe_retriever.api import best_seed
from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.combinations import observed_to_codes
from moe_retriever.data.missingness import apply_missingness
from moe_retriever.data.sources import load_dataset
from moe_retriever.data.splits import stratified_split
from moe_retriever.training.experiment import evaluate_run
from moe_retriever.training.metrics import classification_metrics


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def raw_test(run_dir):
    """The seed-0 test split as a user would hold it: raw features, the seed's missingness."""
    cfg = load_config(run_dir / "config.yaml")
    ds = apply_missingness(load_dataset(cfg.data), cfg.data.missing, 0)
    _, _, test = stratified_split(ds.labels, cfg.data.split, 0)
    return ds.subset(test)


@pytest.fixture(scope="module")
def test_folder(raw_test, tmp_path_factory):
    return write_folder(raw_test, tmp_path_factory.mktemp("data") / "new_samples")


def _predict(run_dir, data, out, *extra) -> pd.DataFrame:
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--data",
                str(data),
                "--out",
                str(out),
                "--device",
                "cpu",
                *extra,
            ]
        )
        == 0
    )
    return pd.read_csv(out, dtype={"id": str, "predicted": str})


def test_predict_on_test_split_gives_the_evaluate_metrics(run_dir, raw_test, test_folder, tmp_path):
    table = _predict(run_dir, test_folder, tmp_path / "p.csv")
    assert list(table.columns) == ["id", "predicted", "prob_class_0", "prob_class_1"]
    assert table["id"].tolist() == raw_test.ids
    probs = table[["prob_class_0", "prob_class_1"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (table["predicted"] == np.where(probs[:, 1] > probs[:, 0], "class_1", "class_0")).all()
    ours = classification_metrics(probs, raw_test.labels.numpy(), 2)
    reference = evaluate_run(run_dir, "cpu", log=lambda _: None)["test"]
    for key, value in ours.items():
        assert value == pytest.approx(reference[key]["per_seed"][0], abs=1e-9), key


def test_prediction_is_deterministic_and_ignores_column_order(run_dir, raw_test, test_folder, tmp_path):
    first = _predict(run_dir, test_folder, tmp_path / "a.csv")
    again = _predict(run_dir, test_folder, tmp_path / "b.csv")
    pd.testing.assert_frame_equal(first, again)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(test_folder, shuffled)
    frame = pd.read_csv(shuffled / "genetic.csv", dtype={"id": str})
    frame[["id"] + list(frame.columns[:0:-1])].to_csv(shuffled / "genetic.csv", index=False)
    pd.testing.assert_frame_equal(first, _predict(run_dir, shuffled, tmp_path / "c.csv"))


def test_single_modality_samples_without_labels_get_predictions(run_dir, raw_test, tmp_path):
    """One new sample with only one modality, no label file, other modalities absent entirely."""
    first = int(raw_test.observed[:, 1].nonzero()[0, 0])
    folder = write_folder(raw_test, tmp_path / "one", labels=False, modalities=["genetic"], samples=[first])
    dataset = load_new_data(folder)
    assert dataset.modality_names == ["genetic"] and len(dataset) == 1
    table = _predict(run_dir, folder, tmp_path / "one.csv")
    assert table["id"].tolist() == [raw_test.ids[first]]
    assert table[["prob_class_0", "prob_class_1"]].to_numpy().sum() == pytest.approx(1.0)
    # within a labelled file, a sample observing one modality is predicted like any other
    run = load_run(run_dir, device="cpu")
    single = (raw_test.observed.sum(1) == 1).nonzero().flatten()
    assert len(single) > 0
    probs = run.predict_proba(raw_test)
    assert np.isfinite(probs[single.numpy()]).all()


def test_mismatched_columns_are_listed(run_dir, test_folder, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(test_folder, bad)
    frame = pd.read_csv(bad / "clinical.csv", dtype={"id": str})
    frame = frame.rename(columns={"clinical_1": "clinical_x"}).drop(columns=["clinical_3"])
    frame.to_csv(bad / "clinical.csv", index=False)
    frame = pd.read_csv(bad / "image.csv", dtype={"id": str})
    frame.to_csv(bad / "scan.csv", index=False)
    spec = (
        (bad / "dataset.yaml")
        .read_text()
        .replace("{name: image, file: image.csv}", "{name: scan, file: scan.csv}")
    )
    (bad / "dataset.yaml").write_text(spec)
    with pytest.raises(SchemaMismatchError) as err:
        load_run(run_dir, device="cpu").predict_proba(load_new_data(bad))
    text = str(err.value)
    assert "modalities not in the training data: ['scan']" in text
    assert "modality 'clinical': missing columns ['clinical_1', 'clinical_3']" in text
    assert "modality 'clinical': unexpected columns ['clinical_x']" in text
    assert (
        main(
            [
                "predict",
                "--run",
                str(run_dir),
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "x.csv"),
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "unexpected columns ['clinical_x']" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_retrieve_returns_embeddings_and_experts_of_every_missing_pair(run_dir, raw_test):
    run = load_run(run_dir, device="cpu")
    r = run.retrieve(raw_test)
    missing = (~raw_test.observed).nonzero()
    assert len(r) == len(missing)
    got = sorted(zip(r.sample_ids, r.target_names, strict=True))
    names = raw_test.modality_names
    assert got == sorted((raw_test.ids[i], names[m]) for i, m in missing.tolist())
    assert r.embeddings.shape == (len(missing), 16) and np.isfinite(r.embeddings).all()
    assert r.expert_names == ["I_1", "I_2", "G_1", "G_2", "C_1", "C_2", "Shared_1", "Shared_2"]
    for p in range(len(r)):
        pool = {
            f"{names[r.targets[p]][0].upper()}_1",
            f"{names[r.targets[p]][0].upper()}_2",
            "Shared_1",
            "Shared_2",
        }
        used = r.experts(p)
        assert used and {e for e, _ in used} <= pool  # the router only offers the target's pool
        assert all(w > 0 for _, w in used)
    # every token traces back to its source: inter tokens to the sample, intra tokens to a bank
    # sample that observes the target and every modality the sample has (Eq. 2)
    bank = run.loaded.bank
    bank_pos = {s: i for i, s in enumerate(bank.ids)}
    codes = observed_to_codes(raw_test.observed)
    tok = r.tokens
    for t in range(len(tok.pair)):
        p = tok.pair[t]
        row = r.rows[p]
        if tok.kind[t] == "inter":
            assert tok.source_id[t] == r.sample_ids[p] and tok.source_code[t] == codes[row]
            assert raw_test.observed[row, tok.modality[t]]
        else:
            j = bank_pos[tok.source_id[t]]
            assert bank.observed[j, r.targets[p]] and tok.modality[t] == r.targets[p]
            need = raw_test.observed[row]
            assert bool((bank.observed[j] | ~need).all())
            assert tok.source_code[t] == int(observed_to_codes(bank.observed[j : j + 1])[0])


def test_retrieved_embeddings_are_what_prediction_fuses(run_dir, raw_test):
    run = load_run(run_dir, device="cpu")
    r = run.retrieve(raw_test)
    batch = run.to_batch(raw_test)
    model = run.model.eval()
    with torch.no_grad():
        emb = model.encode(batch)
        emb[torch.as_tensor(r.rows), torch.as_tensor(r.targets)] = torch.as_tensor(r.embeddings)
        fused, _ = model.fusion(emb)
        probs = torch.softmax(model.head(fused), dim=-1).numpy()
    np.testing.assert_allclose(probs, run.predict_proba(raw_test), atol=1e-6)


def test_best_seed_uses_validation_scores_only(run_dir, tmp_path):
    two = tmp_path / "two"
    shutil.copytree(run_dir, two)
    shutil.copytree(two / "seed_0", two / "seed_7")
    for seed, val, test in ((0, 0.9, 0.1), (7, 0.8, 1.0)):
        path = two / f"seed_{seed}" / "metrics.json"
        record = json.loads(path.read_text())
        record["val"]["macro_f1"], record["test"]["macro_f1"] = val, test
        path.write_text(json.dumps(record))
    assert best_seed(two) == 0  # seed 7 tests better, but the test split never chooses
    path = two / "seed_7" / "metrics.json"
    path.write_text(path.read_text().replace('"macro_f1": 0.8', '"macro_f1": 0.9'))
    assert best_seed(two) == 0  # a tie goes to the lowest seed
    with pytest.raises(FileNotFoundError, match="no checkpoint for seed 3"):
        load_run(two, seed=3)
