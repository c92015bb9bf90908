"""The scikit-learn estimator (moe_retriever.sklearn) on a small frame with missing blocks."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from moe_retriever.config import ConfigError, ExperimentConfig, MissingnessConfig, from_dict, to_dict
from moe_retriever.data.dataset import DataValidationError, ModalitySpec, MultimodalDataset
from moe_retriever.data.missingness import apply_missingness
from moe_retriever.data.preprocessing import fit_standardizer, standardize
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.sklearn import KEYWORDS, MoERetrieverClassifier, from_modality_list
from moe_retriever.training.fitting import fit_model

# tiny models: a fit takes well under a second on one thread
TINY = dict(
    epochs=3,
    warmup_epochs=1,
    hidden=8,
    encoder_hidden=8,
    heads=2,
    experts_per_modality=2,
    shared_experts=1,
    top_k=2,
    expert_hidden=8,
    batch_size=32,
    lr=0.01,
    dropout=0.0,
    device="cpu",
)
NAMES = np.array(["alpha", "beta", "gamma"])


@pytest.fixture(scope="module")
def frame():
    """150 rows, modalities image (4 columns) / genetic (3) / clinical (3) with missing blocks
    (all NaN), string labels."""
    ds = make_synthetic(
        n_samples=150, n_modalities=3, widths=[4, 3, 3], n_classes=3, class_separation=2.0, seed=1
    )
    ds = apply_missingness(ds, MissingnessConfig(kind="drop", p=0.35), seed=1)
    blocks = []
    for m, spec in enumerate(ds.modalities):
        x = ds.features[spec.name].double().numpy().copy()
        x[~ds.observed[:, m].numpy()] = np.nan
        blocks.append(pd.DataFrame(x, columns=list(spec.columns)))
    X = pd.concat(blocks, axis=1)
    X.index = [f"s{i}" for i in range(len(X))]
    y = NAMES[ds.labels.numpy()]
    assert (~ds.observed).any(dim=0).all() and ds.observed.any(dim=1).all()
    return X, y


MODALITIES = {"image": "image_", "genetic": "genetic_", "clinical": "clinical_"}


def _blocks_as_dataset(X: pd.DataFrame, y: np.ndarray) -> MultimodalDataset:
    """The reference conversion: every modality's block, missing where all of it is NaN."""
    specs, features, observed = [], {}, []
    for name in ("image", "genetic", "clinical"):
        cols = [c for c in X.columns if c.startswith(name + "_")]
        block = X[cols].to_numpy()
        miss = np.isnan(block).all(axis=1)
        specs.append(ModalitySpec(name, (len(cols),), "tabular", tuple(cols)))
        features[name] = torch.tensor(np.nan_to_num(block), dtype=torch.float32)
        observed.append(torch.tensor(~miss))
    labels = torch.tensor(np.searchsorted(NAMES, y))
    return MultimodalDataset(specs, features, torch.stack(observed, 1), labels, list(X.index), list(NAMES))


def test_fit_predict_with_missing_blocks_and_string_labels(frame):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY)
    assert clf.fit(X.iloc[:110], y[:110]) is clf
    assert clf.classes_.tolist() == NAMES.tolist()
    assert clf.n_features_in_ == 10 and clf.feature_names_in_.tolist() == list(X.columns)
    assert clf.modalities_ == {"image": [0, 1, 2, 3], "genetic": [4, 5, 6], "clinical": [7, 8, 9]}
    probs = clf.predict_proba(X.iloc[110:])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    pred = clf.predict(X.iloc[110:])
    assert set(pred) <= set(NAMES)
    np.testing.assert_array_equal(pred, NAMES[probs.argmax(axis=1)])
    # score is accuracy; it beats always answering the most frequent training class
    accuracy = np.mean(pred == y[110:])
    assert clf.score(X.iloc[110:], y[110:]) == pytest.approx(accuracy)
    labels, counts = np.unique(y[:110], return_counts=True)
    assert accuracy > np.mean(y[110:] == labels[counts.argmax()]) + 0.1


def test_fit_trains_like_the_library_pipeline(frame):
    """Same split, standardisation and training as fit_model on a hand-built dataset."""
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=3, validation_fraction=0.25, **TINY).fit(
        X, y
    )
    ds = _blocks_as_dataset(X, y)
    # the validation split: 25% of every class, disjoint from the bank (the training rows)
    bank_ids = set(clf.bank_.ids)
    val_pos = [i for i, s in enumerate(ds.ids) if s not in bank_ids]
    train_pos = [i for i, s in enumerate(ds.ids) if s in bank_ids]
    for c in range(3):
        n_c = int((ds.labels == c).sum())
        assert int((ds.labels[val_pos] == c).sum()) == round(0.25 * n_c)
    train = ds.subset(train_pos)
    stats = fit_standardizer(train)
    cfg = clf.resolved_config(3)
    trainer = fit_model(
        cfg, standardize(train, stats), standardize(ds.subset(val_pos), stats), 3, 3, torch.device("cpu")
    ).trainer
    expected = trainer.predict_proba(standardize(ds, stats))
    np.testing.assert_allclose(clf.predict_proba(X), expected, atol=1e-6)


def test_the_forms_of_modalities_agree(frame):
    X, y = frame
    ref = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y)
    expected = ref.predict_proba(X)
    by_columns = {k: [c for c in X.columns if c.startswith(v)] for k, v in MODALITIES.items()}
    by_position = {k: [X.columns.get_loc(c) for c in v] for k, v in by_columns.items()}
    Xs = [X[cols] for cols in by_columns.values()]
    frame_from_list, mods = from_modality_list(Xs, list(by_columns))
    assert mods == {k: [f"{k}__{c}" for c in v] for k, v in by_columns.items()}
    assert list(frame_from_list.index) == list(X.index)
    arrays, mods_from_arrays = from_modality_list([b.to_numpy() for b in Xs], list(by_columns))
    for X_, mods_ in [
        (X, by_columns),
        (X.to_numpy(), by_position),
        (frame_from_list, mods),
        (arrays, mods_from_arrays),
    ]:
        clf = MoERetrieverClassifier(modalities=mods_, random_state=0, **TINY).fit(X_, y)
        np.testing.assert_allclose(clf.predict_proba(X_), expected, atol=1e-6)


def test_bad_inputs_name_the_row_modality_or_column(frame):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, **TINY)
    partial = X.copy()
    row = partial.index[np.flatnonzero(partial["genetic_0"].notna())[2]]
    partial.loc[row, "genetic_1"] = np.nan
    with pytest.raises(DataValidationError, match=f"row '{row}', modality 'genetic': 1 of 3"):
        clf.fit(partial, y)
    with pytest.raises(DataValidationError, match=f"row '{row}', modality 'genetic'"):
        clf.fit(X, y).predict(partial)
    nothing = X.copy()
    nothing.iloc[5] = np.nan
    with pytest.raises(DataValidationError, match="observe no modality.*'s5'"):
        clf.fit(nothing, y)
    with pytest.raises(ConfigError, match=r"column\(s\) \['clinical_0'"):
        MoERetrieverClassifier(
            modalities={"image": "image_", "genetic": "genetic_", "clinical": ["clinical_1", "clinical_2"]}
        ).fit(X, y)
    with pytest.raises(ConfigError, match="'genetic_0' is in both 'image' and 'genetic'"):
        MoERetrieverClassifier(
            modalities={"image": ["image_0", "genetic_0"], "genetic": "genetic_", "clinical": "clinical_"}
        ).fit(X, y)
    with pytest.raises(ConfigError, match="modalities.lab: X has no column 'lab_0'"):
        MoERetrieverClassifier(modalities={**MODALITIES, "lab": ["lab_0"]}).fit(X, y)
    with pytest.raises(ConfigError, match="modalities.lab: no column starts with 'lab_'"):
        MoERetrieverClassifier(modalities={**MODALITIES, "lab": "lab_"}).fit(X, y)
    with pytest.raises(DataValidationError, match="from_modality_list"):
        clf.fit([X[["image_0"]], X[["genetic_0"]]], y)
    with pytest.raises(ConfigError, match="method: unknown method 'nope'"):
        MoERetrieverClassifier("nope", MODALITIES).fit(X, y)
    with pytest.raises(ConfigError, match="validation_fraction"):
        MoERetrieverClassifier(modalities=MODALITIES, validation_fraction=1.0).fit(X, y)
    with pytest.raises(ConfigError, match="model.retriever.moe.top_k"):
        MoERetrieverClassifier(modalities=MODALITIES, **{**TINY, "top_k": 9}).fit(X, y)


def test_config_precedence_file_then_dict_then_keywords(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"hidden": 16, "dropout": 0.3, "encoder": {"layers": 3}},
                "train": {"epochs": 7, "lr": 0.05, "warmup_epochs": 2},
                "data": {"missing": {"kind": "drop", "p": 0.3}},
            }
        )
    )
    clf = MoERetrieverClassifier(
        "zero",
        config_path=str(path),
        config={"model": {"hidden": 12}, "train": {"epochs": 4}},
        hidden=8,
        top_k=1,
        random_state=5,
    )
    cfg = clf.resolved_config(5)
    assert cfg.method == "zero" and cfg.train.seeds == [5] and cfg.train.progress is False
    assert cfg.model.hidden == 8  # keyword over config over file
    assert cfg.train.epochs == 4  # config over file
    assert (cfg.train.lr, cfg.model.dropout, cfg.model.encoder.layers) == (0.05, 0.3, 3)  # file
    assert cfg.train.warmup_epochs == 2
    assert cfg.model.retriever.moe.top_k == 1
    assert cfg.model.encoder.hidden == ExperimentConfig().model.encoder.hidden  # default kept


def test_knn_retrieval_and_indicators_through_keywords(frame):
    X, y = frame
    clf = MoERetrieverClassifier(
        modalities=MODALITIES, random_state=0, sampling="knn", missing_indicators=True, **TINY
    )
    clf.fit(X.iloc[:110], y[:110])
    assert clf.config_.model.retriever.sampling == "knn" and clf.config_.model.missing_indicators
    assert clf.get_params()["sampling"] == "knn"
    # knn evaluation is deterministic: two predictions of the same rows agree exactly
    np.testing.assert_array_equal(clf.predict_proba(X.iloc[110:]), clf.predict_proba(X.iloc[110:]))


def test_the_keyword_table_matches_the_constructor_and_the_config():
    own = {"method", "modalities", "config", "config_path", "random_state", "validation_fraction", "verbose"}
    params = set(inspect.signature(MoERetrieverClassifier).parameters)
    assert params - own == set(KEYWORDS)
    # every dotted key exists: setting each to its default value builds the same config
    defaults = to_dict(ExperimentConfig())
    for keyword, keys in KEYWORDS.items():
        for key in keys:
            node = defaults
            for part in key.split("."):
                node = node[part]
            if node is not None:
                cfg = MoERetrieverClassifier(**{keyword: node}).resolved_config(0)
                assert to_dict(cfg)["model"] == defaults["model"], keyword
    with pytest.raises(ConfigError, match="train.epochs: must be >= 1"):
        MoERetrieverClassifier(epochs=0).resolved_config()
    assert from_dict(ExperimentConfig, {"train": {"epochs": 2}}).train.epochs == 2


def test_the_documented_keyword_table_is_the_one_in_the_code():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "sklearn.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = tuple(k.strip().strip("`") for k in cells[1].split(","))
    assert rows == KEYWORDS


def test_rows_observing_every_modality_ignore_their_neighbours(frame):
    """Prediction order matters only through the retrieval draws of missing modalities."""
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y)
    perm = np.random.default_rng(0).permutation(len(X))
    shuffled = clf.predict_proba(X.iloc[perm])[np.argsort(perm)]
    complete = X.notna().all(axis=1).to_numpy()
    np.testing.assert_allclose(shuffled[complete], clf.predict_proba(X)[complete], atol=1e-6)
    one = clf.predict_proba(X[complete].iloc[[3]])
    np.testing.assert_allclose(one, clf.predict_proba(X[complete])[[3]], atol=1e-6)


def test_random_state_fixes_the_fit(frame):
    X, y = frame
    a = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y)
    b = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y)
    c = MoERetrieverClassifier(modalities=MODALITIES, random_state=1, **TINY).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))
    assert a.bank_.ids != c.bank_.ids  # another validation split


def test_integer_labels_come_back_as_integers(frame):
    X, y = frame
    y_int = np.searchsorted(NAMES, y) * 10 + 3
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y_int)
    assert clf.classes_.tolist() == [3, 13, 23] and clf.predict(X).dtype.kind == "i"


def test_clone_pipeline_cross_validation_and_grid_search(frame):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY)
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    # a scaler ignores NaN and keeps the frame (and its column names) for the next step
    pipe = make_pipeline(StandardScaler().set_output(transform="pandas"), clf)
    scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    # each fold equals fitting the pipeline by hand on that fold
    train, test = next(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    manual = clone(pipe).fit(X.iloc[train], y[train]).score(X.iloc[test], y[test])
    assert scores[0] == pytest.approx(manual)
    search = GridSearchCV(clf, {"hidden": [8, 12]}, cv=2).fit(X, y)
    assert search.best_params_["hidden"] in (8, 12)
    assert search.best_estimator_.config_.model.hidden == search.best_params_["hidden"]
    assert search.predict(X).shape == (len(X),)


def test_pickle_and_safetensors_round_trips(frame, tmp_path):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY).fit(X, y)
    expected = clf.predict_proba(X)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), expected)
    path = tmp_path / "clf.safetensors"
    clf.save(path)
    with open(path, "rb") as fh:
        assert b"pickle" not in fh.read(200)  # a safetensors header, no pickle stream
    loaded = MoERetrieverClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.get_params() == clf.get_params()
    assert loaded.feature_names_in_.tolist() == list(X.columns)
    assert loaded.score(X, y) == clf.score(X, y)


def test_direct_methods_fit_and_only_pickle(frame, tmp_path):
    X, y = frame
    majority = MoERetrieverClassifier("majority", MODALITIES, random_state=0).fit(X, y)
    probs = majority.predict_proba(X.iloc[:4])
    bank_labels = majority.bank_.labels.numpy()
    # the class frequencies of the training rows (the validation rows excluded), for every row
    np.testing.assert_allclose(
        probs, np.tile(np.bincount(bank_labels, minlength=3) / len(bank_labels), (4, 1))
    )
    gbt = MoERetrieverClassifier(
        "hist_gbt",
        MODALITIES,
        random_state=0,
        config={"model": {"method_options": {"hist_gbt": {"max_iter": 20}}}},
    )
    gbt.fit(X.iloc[:110], y[:110])
    assert gbt.score(X.iloc[110:], y[110:]) > 0.5
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(gbt)).predict_proba(X), gbt.predict_proba(X))
    with pytest.raises(NotImplementedError, match="pickle the estimator"):
        gbt.save(tmp_path / "gbt.safetensors")


@parametrize_with_checks(
    [MoERetrieverClassifier(random_state=0, **TINY)],
    # Nothing is excluded. The checks pass arrays of several widths, so they run with the default
    # single modality (``modalities=None``); with it every NaN is an error (the allow_nan tag is
    # False), and rows are predicted independently of their order and batch. With several
    # modalities a row's missing modalities are retrieved from supporting samples drawn for the
    # whole call, so its prediction can change with the rows predicted alongside it; the
    # order- and subset-invariance checks would not hold there.
    expected_failed_checks=lambda est: {},
)
def test_scikit_learn_compatibility(estimator, check):
    check(estimator)


def test_a_non_number_or_inf_in_x_names_the_row_and_the_column(frame):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, **TINY)
    text = X.astype(object)
    text.loc["s7", "clinical_1"] = "high"
    with pytest.raises(
        DataValidationError, match=r"X: row 's7', column 'clinical_1': 'high' is not a finite number"
    ):
        clf.fit(text, y)
    infinite = X.copy()
    infinite.loc["s9", "image_2"] = -np.inf
    with pytest.raises(
        DataValidationError, match=r"X: row 's9', column 'image_2': -inf is not a finite number"
    ):
        clf.fit(infinite, y)
    fitted = clf.fit(X, y)
    with pytest.raises(DataValidationError, match=r"X: row 's9', column 'image_2': -inf"):
        fitted.predict(infinite)
    # an array: rows and columns by position
    array = X.to_numpy().copy()
    array[3, 5] = np.inf
    positions = {"image": [0, 1, 2, 3], "genetic": [4, 5, 6], "clinical": [7, 8, 9]}
    with pytest.raises(DataValidationError, match=r"X: row '3', column '5': inf is not a finite number"):
        MoERetrieverClassifier(modalities=positions, **TINY).fit(array, y)
    # numbers written as text are numbers, as in a CSV file
    numeric_text = X.astype(object)
    numeric_text.loc["s7", "clinical_1"] = str(X.loc["s7", "clinical_1"])
    seeded = MoERetrieverClassifier(modalities=MODALITIES, random_state=0, **TINY)
    assert (seeded.fit(numeric_text, y).predict_proba(X) == seeded.fit(X, y).predict_proba(X)).all()


def test_a_missing_label_names_the_row(frame):
    X, y = frame
    clf = MoERetrieverClassifier(modalities=MODALITIES, **TINY)
    for missing in (None, np.nan):
        labels = y.astype(object)
        labels[4] = missing
        with pytest.raises(DataValidationError, match=r"y: row 's4': the label is missing \(1 such row"):
            clf.fit(X, labels)


def test_the_default_warm_up_follows_a_short_epochs_and_an_inconsistent_one_names_the_keyword(frame):
    X, y = frame
    short = {k: v for k, v in TINY.items() if k not in ("epochs", "warmup_epochs")}
    default = from_dict(ExperimentConfig, {}).train.warmup_epochs
    assert default > 4  # the case a user met: the config's warm-up is longer than the run
    clf = MoERetrieverClassifier(modalities=MODALITIES, epochs=4, **short).fit(X, y)
    assert clf.config_.train.warmup_epochs == 3  # min(default, epochs - 1): one retrieval epoch
    assert [h["retrieval"] for h in clf.history_] == [False, False, False, True]
    # long runs keep the config's default
    assert MoERetrieverClassifier(epochs=default + 10).resolved_config().train.warmup_epochs == default
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: must be in \[0, epochs\].*warmup_epochs=6"):
        MoERetrieverClassifier(modalities=MODALITIES, epochs=4, warmup_epochs=6, **short).fit(X, y)
    # a warm-up set in config= is the user's too: not changed, and the keyword is named
    with pytest.raises(ConfigError, match=r"warmup_epochs="):
        MoERetrieverClassifier(epochs=4, config={"train": {"warmup_epochs": 6}}).resolved_config()
