"""Samples without labels in the retrieval bank (``data.unlabelled``, ``data.label_fraction``).

Each test writes its own folder dataset: 48 labelled ids and 16 ids with modality rows but no
label, three tabular modalities observed at random (every id keeps at least one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_MODEL
from moe_retriever import load_run
from moe_retriever.config import ConfigError, DataConfig, load_config
from moe_retriever.data.bank import training_bank
from moe_retriever.data.dataset import DataValidationError, MultimodalDataset
from moe_retriever.data.partitions import prepare_partition, protocol_partitions
from moe_retriever.data.sources import load_dataset
from moe_retriever.data.unlabelled import NO_LABEL
from moe_retriever.models.context import ContextSampler
from moe_retriever.sklearn import MoERetrieverClassifier
from moe_retriever.training import experiment
from moe_retriever.training.fitting import train_seed
from moe_retriever.training.trainer import Trainer

MODALITIES = ("clinical", "genetic", "imaging")
WIDTHS = (3, 4, 5)
N_LABELLED, N_UNLABELLED = 48, 16


def make_folder(root: Path, empty_label_cells: int = 0) -> Path:
    """The fixture folder; the last ``empty_label_cells`` unlabelled ids get a row in the label
    file with an empty label instead of no row."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    ids = [f"s{i:02d}" for i in range(N_LABELLED + N_UNLABELLED)]
    labels = [["a", "b", "c"][i % 3] for i in range(N_LABELLED)]
    lines = ["id,label"] + [f"{i},{y}" for i, y in zip(ids, labels, strict=False)]
    lines += [f"{i}," for i in ids[len(ids) - empty_label_cells :]] if empty_label_cells else []
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    observed = rng.random((len(ids), len(MODALITIES))) < 0.6
    observed[~observed.any(axis=1), 0] = True
    # the label carries signal in every modality, so a trained model beats chance
    shift = np.array([i % 3 for i in range(len(ids))], dtype=float)
    for m, (name, width) in enumerate(zip(MODALITIES, WIDTHS, strict=True)):
        rows = [f"id,{','.join(f'{name}{j}' for j in range(width))}"]
        for i, sample in enumerate(ids):
            if observed[i, m]:
                x = rng.normal(size=width) + shift[i]
                rows.append(sample + "," + ",".join(f"{v:.5f}" for v in x))
        (root / f"{name}.csv").write_text("\n".join(rows) + "\n")
    spec = {
        "name": "unlabelled_demo",
        "label": {"file": "labels.csv"},
        "modalities": [{"name": n, "file": f"{n}.csv"} for n in MODALITIES],
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def cfg_for(root: Path, *overrides: str):
    return load_config(
        None,
        [
            f"data.path={root}",
            "train.epochs=2",
            "train.warmup_epochs=1",
            "train.batch_size=16",
            "train.seeds=[0]",
            *TINY_MODEL,
            *overrides,
        ],
    )


# --------------------------------------------------------------------------- loading


def test_an_unlabelled_id_is_an_error_naming_it_and_the_labels_file(tmp_path):
    root = make_folder(tmp_path / "d")
    with pytest.raises(DataValidationError) as info:
        load_dataset(DataConfig(path=str(root)))
    message = str(info.value)
    assert "'s48'" in message and str(root / "labels.csv") in message and "data.unlabelled: bank" in message


def test_an_empty_label_cell_is_an_error_without_the_option(tmp_path):
    root = make_folder(tmp_path / "d", empty_label_cells=3)
    with pytest.raises(DataValidationError, match=r"id 's61'.*the label is missing \(3 such row"):
        load_dataset(DataConfig(path=str(root)))


def test_with_the_option_unlabelled_ids_are_bank_only_samples(tmp_path):
    root = make_folder(tmp_path / "d", empty_label_cells=3)
    ds = load_dataset(DataConfig(path=str(root), unlabelled="bank"))
    assert len(ds) == N_LABELLED and ds.class_names == ["a", "b", "c"]
    assert ds.bank_only is not None
    # the ids with an empty label cell come first (label file order), then the ids without a row
    # in the order the modality files first name them
    in_files = [
        line.split(",")[0] for n in MODALITIES for line in (root / f"{n}.csv").read_text().split()[1:]
    ]
    without_row = [f"s{i:02d}" for i in range(48, 61)]
    expected = [f"s{i:02d}" for i in range(61, 64)] + sorted(without_row, key=in_files.index)
    assert ds.bank_only.ids == expected
    # their features are the rows of the files, unchanged
    genetic = np.loadtxt(root / "genetic.csv", delimiter=",", skiprows=1, dtype=str)
    rows = {r[0]: r[1:].astype(float) for r in genetic}
    g = MODALITIES.index("genetic")
    for i, sample in enumerate(ds.bank_only.ids):
        assert bool(ds.bank_only.observed[i, g]) == (sample in rows)
        if sample in rows:
            np.testing.assert_allclose(ds.bank_only.features["genetic"][i].numpy(), rows[sample], atol=1e-5)
    dropped = load_dataset(DataConfig(path=str(root), unlabelled="drop"))
    assert dropped.bank_only is None and dropped.ids == ds.ids


def test_config_checks_of_the_two_options():
    with pytest.raises(ConfigError, match="data.label_fraction: must be in"):
        load_config(None, ["data.label_fraction=0", "data.unlabelled=bank"])
    with pytest.raises(ConfigError, match="data.label_fraction: must be in"):
        load_config(None, ["data.label_fraction=1.5"])
    with pytest.raises(ConfigError, match="data.unlabelled: data.label_fraction < 1 hides labels"):
        load_config(None, ["data.label_fraction=0.5"])
    with pytest.raises(ConfigError, match="data.unlabelled"):
        load_config(None, ["data.unlabelled=keep"])


# --------------------------------------------------------------------------- partitions


def _fingerprint(data):
    return {
        part: (list(ds.ids), ds.observed.clone(), {k: v.clone() for k, v in ds.features.items()})
        for part, ds in (("train", data.train), ("val", data.val), ("test", data.test))
    }


@pytest.mark.parametrize("missing", ["{kind: natural}", "{kind: drop, p: 0.3}"])
def test_bank_only_samples_change_no_partition_mask_or_feature_of_the_labelled(tmp_path, missing):
    root = make_folder(tmp_path / "d")
    over = ["protocol.kind=cv", "protocol.folds=3", "protocol.repeats=1", f"data.missing={missing}"]
    with_bank = cfg_for(root, "data.unlabelled=bank", *over)
    without = cfg_for(root, "data.unlabelled=drop", *over)
    ds_bank, ds_plain = load_dataset(with_bank.data), load_dataset(without.data)
    bank_ids = set(ds_bank.bank_only.ids)
    for part in protocol_partitions(with_bank):
        a, b = prepare_partition(with_bank, ds_bank, part), prepare_partition(without, ds_plain, part)
        fa, fb = _fingerprint(a), _fingerprint(b)
        for split in fa:
            assert fa[split][0] == fb[split][0]
            assert torch.equal(fa[split][1], fb[split][1])
            for name in MODALITIES:
                assert torch.equal(fa[split][2][name], fb[split][2][name])
            assert not bank_ids & set(fa[split][0])
        assert b.bank_only is None and set(a.bank_only.ids) == bank_ids
        # positions in the run's bank file: after the labelled samples
        assert a.bank_only_index.tolist() == list(range(N_LABELLED, N_LABELLED + N_UNLABELLED))


def test_label_fraction_hides_a_stratified_share_of_the_training_part_only(tmp_path):
    root = make_folder(tmp_path / "d")
    over = ["protocol.kind=cv", "protocol.folds=3", "protocol.repeats=1", "data.missing={kind: drop, p: 0.3}"]
    full = cfg_for(root, "data.unlabelled=drop", *over)
    bank = cfg_for(root, "data.unlabelled=bank", "data.label_fraction=0.5", *over)
    drop = cfg_for(root, "data.unlabelled=drop", "data.label_fraction=0.5", *over)
    ds = load_dataset(full.data)
    for part in protocol_partitions(full):
        f, b, d = (prepare_partition(c, ds, part) for c in (full, bank, drop))
        for split in ("val", "test"):
            assert getattr(f, split).ids == getattr(b, split).ids == getattr(d, split).ids
            assert torch.equal(getattr(f, split).observed, getattr(b, split).observed)
        assert b.train.ids == d.train.ids and d.bank_only is None
        kept, hidden = set(b.train.ids), set(b.bank_only.ids)
        assert not kept & hidden and kept | hidden == set(f.train.ids)
        # half of every class hidden
        label = dict(zip(f.train.ids, f.train.labels.tolist(), strict=True))
        for c in range(3):
            n_c = sum(1 for v in label.values() if v == c)
            assert sum(1 for s in hidden if label[s] == c) == round(0.5 * n_c)
        # the hidden samples keep the mask they have in the full training part
        pos = {s: i for i, s in enumerate(f.train.ids)}
        rows = torch.tensor([pos[s] for s in b.bank_only.ids])
        assert torch.equal(b.bank_only.observed, f.train.observed[rows])


# --------------------------------------------------------------------------- the bank


def brute_force_group(observed: np.ndarray, mc: np.ndarray, target: int) -> set[int]:
    """Eq. 2: G(T | mc) = {j in bank : mc ⊆ mc_j and T ∈ mc_j}."""
    return {j for j in range(observed.shape[0]) if observed[j, target] and np.all(observed[j] >= mc)}


def test_bank_only_rows_are_members_of_the_supporting_groups(tmp_path):
    root = make_folder(tmp_path / "d")
    cfg = cfg_for(root, "data.unlabelled=bank")
    data = prepare_partition(cfg, load_dataset(cfg.data), protocol_partitions(cfg)[0])
    bank = training_bank(data.train, data.bank_only)
    n_train = len(data.train)
    assert len(bank) == n_train + N_UNLABELLED and bank.n_labelled == n_train
    assert bank.ids[n_train:] == data.bank_only.ids
    assert (bank.labels[n_train:] == NO_LABEL).all() and torch.equal(bank.labels[:n_train], data.train.labels)
    observed = bank.observed.numpy()
    bank_only_members = 0
    for code in range(1, 1 << len(MODALITIES)):
        mc = np.array([(code >> m) & 1 for m in range(len(MODALITIES))], dtype=bool)
        for target in np.flatnonzero(~mc):
            expected = brute_force_group(observed, mc, int(target))
            got = set(bank.index.members(code, int(target)).tolist())
            assert got == expected
            bank_only_members += sum(1 for j in got if j >= n_train)
            if expected:
                codes = torch.full((400,), code)
                targets = torch.full((400,), int(target))
                idx, valid = bank.index.sample(codes, targets, 1, torch.Generator().manual_seed(0))
                drawn = set(idx[valid].tolist())
                assert drawn <= expected
                # with 400 draws every member of these small groups is drawn
                assert drawn == expected
    assert bank_only_members > 0


@pytest.mark.parametrize("sampling", ["uniform", "knn"])
def test_bank_only_rows_supply_context_and_enter_no_loss_validation_or_test(tmp_path, monkeypatch, sampling):
    root = make_folder(tmp_path / "d")
    cfg = cfg_for(root, "data.unlabelled=bank", f"model.retriever.sampling={sampling}")
    ds = load_dataset(cfg.data)
    bank_only_ids = set(ds.bank_only.ids)
    trained, evaluated, drawn = [], [], []
    banks = []
    real_step, real_eval, real_sample = Trainer.train_step, Trainer.eval_outputs, ContextSampler.sample

    def train_step(self, batch, retrieve, global_labels=None):
        banks.append(self.bank)
        trained.append((batch.index.clone(), batch.labels.clone()))
        return real_step(self, batch, retrieve, global_labels)

    def eval_outputs(self, data, retrieve=True):
        evaluated.append(len(data))
        return real_eval(self, data, retrieve)

    def sample(self, encoders, bank, *args, **kwargs):
        out = real_sample(self, encoders, bank, *args, **kwargs)
        drawn.append(out[2][out[1]].clone())
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)
    monkeypatch.setattr(Trainer, "eval_outputs", eval_outputs)
    monkeypatch.setattr(ContextSampler, "sample", sample)
    record = train_seed(cfg, ds, 0, None, torch.device("cpu"))
    data = prepare_partition(cfg, ds, protocol_partitions(cfg)[0])
    n_train = len(data.train)
    bank = banks[0]
    assert bank.n_labelled == n_train and len(bank) == n_train + N_UNLABELLED
    # every loss is computed on labelled training rows with their labels
    seen = torch.cat([index for index, _ in trained])
    assert int(seen.max()) < n_train
    for index, labels in trained:
        assert torch.equal(labels, data.train.labels[index])
    # validation and test: the labelled samples only
    assert not bank_only_ids & (
        set(data.val.ids) | set(data.test.ids) | set(record["test_predictions"]["ids"])
    )
    assert set(evaluated) <= {len(data.val), len(data.test)}
    assert record["n_bank_only"] == N_UNLABELLED
    # ... while the bank-only rows are drawn as intra-modal context
    rows = torch.cat(drawn)
    assert (rows >= n_train).any()


@pytest.mark.parametrize("method", ["moe_retriever", "zero", "mmformer", "tfidf_lr"])
def test_no_method_reads_the_hidden_labels(tmp_path, monkeypatch, method):
    # label_fraction hides every other training position here; a second fit sees other labels
    # at exactly those positions (same partitions, same masks): every result must be the same
    from moe_retriever.data import partitions, unlabelled

    monkeypatch.setattr(unlabelled, "hide_labels", lambda labels, train, f, seed: (train[::2], train[1::2]))
    real_split = partitions.partition_split
    flip = {"on": False}

    def split(cfg, dataset, part):
        ds, parts = real_split(cfg, dataset, part)
        if flip["on"]:
            hidden = parts["train"][1::2]
            labels = ds.labels.clone()
            labels[hidden] = (labels[hidden] + 1) % ds.n_classes
            ds = MultimodalDataset(
                ds.modalities, ds.features, ds.observed, labels, ds.ids, ds.class_names, ds.name
            )
        return ds, parts

    monkeypatch.setattr(partitions, "partition_split", split)
    root = make_folder(tmp_path / "d")
    cfg = cfg_for(root, "data.unlabelled=bank", "data.label_fraction=0.5", f"method={method}")
    ds = load_dataset(load_config(None, [f"data.path={root}", "data.unlabelled=drop"]).data)
    a = train_seed(cfg, ds, 0, None, torch.device("cpu"))
    flip["on"] = True
    b = train_seed(cfg, ds, 0, None, torch.device("cpu"))
    assert a["test"] == b["test"] and a["test_predictions"] == b["test_predictions"]
    assert a["n_bank_only"] == len(prepare_partition(cfg, ds, protocol_partitions(cfg)[0]).bank_only) > 0
    if method != "moe_retriever":
        # a method that does not retrieve trains on the labelled part as if the rest were dropped
        flip["on"] = False
        dropped = train_seed(
            cfg_for(root, "data.unlabelled=drop", "data.label_fraction=0.5", f"method={method}"),
            ds,
            0,
            None,
            torch.device("cpu"),
        )
        assert dropped["test_predictions"] == a["test_predictions"] and dropped["n_bank_only"] == 0


# --------------------------------------------------------------------------- runs and prediction


def test_the_run_keeps_the_bank_and_load_run_predicts_with_it(tmp_path, capsys):
    root = make_folder(tmp_path / "d")
    cfg = cfg_for(root, "data.unlabelled=bank")
    out = tmp_path / "run"
    experiment.run_experiment(cfg, out)
    assert f"{N_UNLABELLED} bank-only" in capsys.readouterr().out
    ds = load_dataset(cfg.data)
    data = prepare_partition(cfg, ds, protocol_partitions(cfg)[0])
    run = load_run(out)
    assert run.bank.n_labelled == len(data.train)
    assert run.bank.ids == data.train.ids + data.bank_only.ids
    assert (run.bank.labels[len(data.train) :] == NO_LABEL).all()
    # the stored bank gives the probabilities of a trainer on the bank it was trained with
    reference = Trainer(
        run.loaded.model,
        cfg.train,
        training_bank(data.train, data.bank_only),
        torch.device("cpu"),
        0,
        cfg.model.retriever.eval_draws,
    )
    np.testing.assert_allclose(
        run.predict_proba(data.test, standardized=True), reference.predict_proba(data.test), atol=1e-6
    )
    without = Trainer(
        run.loaded.model, cfg.train, training_bank(data.train, None), torch.device("cpu"), 0, 1
    ).predict_proba(data.test)
    assert not np.allclose(run.predict_proba(data.test, standardized=True), without)
    metrics = json.loads((out / "seed_0" / "metrics.json").read_text())
    assert run.predict(data.test, standardized=True).tolist() == [
        ds.class_names[p] for p in metrics["test_predictions"]["pred"]
    ]


# --------------------------------------------------------------------------- the estimator


def _estimator_data(n: int = 90, n_unlabelled: int = 30):
    rng = np.random.default_rng(3)
    y = np.array([i % 2 for i in range(n)], dtype=float)
    X = rng.normal(size=(n, 6)) + y[:, None]
    X[rng.random(n) < 0.3, :3] = np.nan
    y_missing = y.copy()
    y_missing[n - n_unlabelled :] = np.nan
    return X, y, y_missing


def _estimator(**kw):
    return MoERetrieverClassifier(
        modalities={"a": [0, 1, 2], "b": [3, 4, 5]},
        random_state=0,
        epochs=2,
        warmup_epochs=1,
        hidden=16,
        encoder_hidden=16,
        heads=2,
        experts_per_modality=2,
        shared_experts=1,
        top_k=2,
        expert_hidden=16,
        **kw,
    )


def test_the_estimator_refuses_missing_labels_unless_told(tmp_path):
    X, _, y = _estimator_data()
    with pytest.raises(DataValidationError, match=r"y: row '60': the label is missing \(30 such row"):
        _estimator().fit(X, y)
    est = _estimator(unlabelled="bank").fit(X, y)
    assert len(est.bank_) == est.bank_labelled_ + 30
    assert est.bank_.ids[est.bank_labelled_ :] == [str(i) for i in range(60, 90)]
    assert list(est.classes_) == [0.0, 1.0]
    # None labels in an object array work the same way
    y_none = np.array([v if v == v else None for v in y], dtype=object)
    est_none = _estimator(unlabelled="bank").fit(X, y_none)
    assert est_none.bank_.ids == est.bank_.ids
    np.testing.assert_allclose(est.predict_proba(X[:60]), est_none.predict_proba(X[:60]), atol=1e-6)
    # the validation split holds labelled rows only; the trainer's bank is bank_
    assert est._trainer.bank.n_bank_only == 30
    # save / load keeps the bank and its labelled rows
    est.save(tmp_path / "est.safetensors")
    back = MoERetrieverClassifier.load(tmp_path / "est.safetensors")
    assert back.bank_.ids == est.bank_.ids and back.bank_labelled_ == est.bank_labelled_
    np.testing.assert_allclose(back.predict_proba(X[:60]), est.predict_proba(X[:60]), atol=1e-6)
    dropped = _estimator(unlabelled="drop").fit(X, y)
    assert len(dropped.bank_) == dropped.bank_labelled_ == est.bank_labelled_


@pytest.mark.parametrize("task", ["regression", "survival"])
def test_hidden_labels_become_bank_only_samples_of_regression_and_survival_runs(tmp_path, task):
    over = [
        "train.seeds=[0]",
        "train.epochs=2",
        "train.warmup_epochs=1",
        "train.progress=false",
        "model.hidden=16",
        "model.encoder.hidden=16",
        "model.retriever.moe.expert_hidden=16",
        "data.missing.kind=drop",
        f"data.options={{n_samples: 200, task: {task}}}",
    ]
    records = {}
    for mode in ("bank", "drop"):
        cfg = load_config(None, [*over, f"data.unlabelled={mode}", "data.label_fraction=0.5"])
        experiment.run_experiment(cfg, tmp_path / mode, log=lambda *a: None)
        records[mode] = json.loads((tmp_path / mode / "seed_0" / "metrics.json").read_text())
    # the same labelled test samples either way; with bank the hidden half is retrieval context
    assert records["bank"]["n_bank_only"] > 0 and records["drop"]["n_bank_only"] == 0
    assert records["bank"]["test_predictions"]["ids"] == records["drop"]["test_predictions"]["ids"]
