"""Configs reject bad keys and values; the data container rejects malformed input by name."""

import pytest
import torch

from moe_retriever.config import ConfigError, ExperimentConfig, MissingPattern, from_dict, load_config
from moe_retriever.data.dataset import DataValidationError, ModalitySpec, MultimodalDataset
from moe_retriever.data.missingness import drop_mask, pattern_mask
from moe_retriever.data.splits import stratified_split


def test_yaml_config_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 4, warmup_epochs: 1}\nmodel: {retriever: {moe: {top_k: 2}}}\n")
    cfg = load_config(path, ["train.lr=0.01", "model.retriever.mode=mean"])
    assert cfg.train.epochs == 4 and cfg.train.lr == 0.01
    assert cfg.model.retriever.moe.top_k == 2 and cfg.model.retriever.mode == "mean"


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"train": {"epoch": 3}}, "train: unknown key(s) ['epoch']"),
        ({"train": {"epochs": "many"}}, "train.epochs: expected an integer"),
        ({"model": {"retriever": {"moe": {"top_k": 13}}}}, "model.retriever.moe.top_k"),
        ({"data": {"missing": {"kind": "drop", "p": -0.1}}}, "data.missing.p"),
        ({"model": {"retriever": {"mode": "magic"}}}, "model.retriever.mode"),
        ({"train": {"device": "tpu"}}, "train.device"),
    ],
)
def test_bad_config_is_named(data, needle):
    with pytest.raises(
        ConfigError,
        match=needle.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)"),
    ):
        from_dict(ExperimentConfig, data).validate()


@pytest.mark.parametrize(
    "data,key,choices",
    [
        ({"model": {"retriever": {"mode": "magic"}}}, "model.retriever.mode", ["moe", "mean", "zero"]),
        ({"model": {"fusion": {"kind": "rnn"}}}, "model.fusion.kind", ["transformer", "smoe"]),
        (
            {"model": {"retriever": {"moe": {"router_softmax": 1}}}},
            "model.retriever.moe.router_softmax",
            ["before_topk", "after_topk"],
        ),
        (
            {"train": {"select_metric": "f1"}},
            "train.select_metric",
            ["macro_f1", "accuracy", "auroc", "auprc"],
        ),
        (
            {"data": {"missing": {"kind": "mcar"}}},
            "data.missing.kind",
            ["natural", "none", "drop", "mar", "mnar", "label", "monotone", "patterns"],
        ),
    ],
)
def test_a_bad_choice_names_the_key_and_the_choices(data, key, choices):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, data)
    assert str(err.value).startswith(f"{key}: must be one of {choices}, got ")


@pytest.mark.parametrize(
    "patterns,message",
    [
        (
            [{"modalities": ["a"]}, {"modalities": ["b"], "prob": -0.5}],
            "data.missing.patterns[1].prob: must be >= 0, got -0.5",
        ),
        (
            [{"modalities": ["a"]}, {"prob": 0.5}],
            "data.missing.patterns[1]: missing required key(s) ['modalities']",
        ),
        ([{"modalities": ["a"], "p": 0.5}], "data.missing.patterns[0]: unknown key(s) ['p']"),
        ([{"modalities": "a"}], "data.missing.patterns[0].modalities: expected a list"),
    ],
)
def test_a_bad_missingness_pattern_names_its_index(patterns, message):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, {"data": {"missing": {"kind": "patterns", "patterns": patterns}}})
    assert str(err.value).startswith(message)


def test_patterns_parse_into_dataclasses_with_a_default_probability():
    cfg = from_dict(
        ExperimentConfig,
        {
            "data": {
                "missing": {
                    "kind": "patterns",
                    "patterns": [{"modalities": ["a", "b"]}, {"modalities": ["c"], "prob": 3}],
                }
            }
        },
    )
    assert cfg.data.missing.patterns == [MissingPattern(["a", "b"], 1.0), MissingPattern(["c"], 3.0)]


def make(features=None, observed=None, labels=None, ids=None, class_names=None):
    specs = [ModalitySpec("clinical", (2,)), ModalitySpec("genetic", (3,))]
    features = features or {"clinical": torch.randn(4, 2), "genetic": torch.randn(4, 3)}
    observed = (
        observed if observed is not None else torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    )
    labels = labels if labels is not None else torch.tensor([0, 1, 0, 1])
    return MultimodalDataset(specs, features, observed, labels, ids or ["a", "b", "c", "d"], class_names)


def test_valid_dataset_zeroes_unobserved_rows_and_counts_combinations():
    ds = make()
    assert ds.features["genetic"][1].abs().sum() == 0
    assert ds.combination_counts() == {"CG": 2, "C": 1, "G": 1}
    assert ds.codes.tolist() == [3, 1, 2, 3]


def test_nan_in_an_observed_row_names_sample_and_modality():
    f = {"clinical": torch.randn(4, 2), "genetic": torch.randn(4, 3)}
    f["genetic"][2, 1] = float("nan")
    with pytest.raises(DataValidationError, match=r"'genetic'.*NaN/inf.*\['c'\]"):
        make(features=f)


def test_nan_in_an_unobserved_row_is_ignored():
    f = {"clinical": torch.randn(4, 2), "genetic": torch.randn(4, 3)}
    f["genetic"][1, 0] = float("inf")  # sample b does not observe genetic
    assert torch.isfinite(make(features=f).features["genetic"]).all()


def test_sample_without_modality_is_rejected_by_id():
    obs = torch.tensor([[1, 1], [0, 0], [0, 1], [1, 1]], dtype=torch.bool)
    with pytest.raises(DataValidationError, match=r"observe no modality.*\['b'\]"):
        make(observed=obs)


def test_label_outside_range_is_named():
    with pytest.raises(DataValidationError, match=r"sample 'd' has label 2 outside 0..1"):
        make(labels=torch.tensor([0, 1, 0, 2]), class_names=["x", "y"])


def test_modality_nobody_observes_is_named():
    obs = torch.tensor([[1, 0], [1, 0], [1, 0], [1, 0]], dtype=torch.bool)
    with pytest.raises(DataValidationError, match="'genetic' is observed by no sample"):
        make(observed=obs)


def test_width_mismatch_is_named():
    with pytest.raises(DataValidationError, match=r"'genetic' has per-sample shape \(4,\)"):
        make(features={"clinical": torch.randn(4, 2), "genetic": torch.randn(4, 4)})


def test_duplicate_ids_are_named():
    with pytest.raises(DataValidationError, match=r"duplicate sample ids \['a'\]"):
        make(ids=["a", "b", "a", "d"])


def test_drop_mask_keeps_one_modality_and_only_hides():
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(2000, 4, generator=g) < 0.8
    obs[~obs.any(1), 0] = True
    new = drop_mask(obs, 0.5, torch.Generator().manual_seed(1))
    assert new.any(1).all()
    assert not (new & ~obs).any()
    rate = 1 - new[obs].float().mean()
    assert 0.40 < rate < 0.50  # slightly under p: samples keep one modality
    again = drop_mask(obs, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(new, again)


def test_pattern_mask_uses_only_allowed_combinations():
    obs = torch.ones(500, 3, dtype=torch.bool)
    pats = [MissingPattern(["a", "b"], 0.5), MissingPattern(["c"], 0.5)]
    new = pattern_mask(obs, pats, ["a", "b", "c"], torch.Generator().manual_seed(0))
    rows = {tuple(r) for r in new.int().tolist()}
    assert rows == {(1, 1, 0), (0, 0, 1)}
    with pytest.raises(
        DataValidationError, match=r"data.missing.patterns\[0\].modalities: unknown modalities"
    ):
        pattern_mask(obs, [MissingPattern(["z"])], ["a", "b", "c"], torch.Generator())


def test_stratified_split_is_disjoint_complete_and_stratified():
    labels = torch.tensor([0] * 70 + [1] * 30)
    tr, va, te = stratified_split(labels, [0.7, 0.15, 0.15], seed=3)
    allidx = torch.cat([tr, va, te])
    assert sorted(allidx.tolist()) == list(range(100))
    assert abs(labels[tr].float().mean() - 0.3) < 0.03
    tr2, _, _ = stratified_split(labels, [0.7, 0.15, 0.15], seed=3)
    assert torch.equal(tr, tr2)


def test_a_split_may_lack_a_modality_but_loaded_data_may_not():
    ds = make()
    part = ds.subset([1])  # sample b observes clinical only
    assert not part.observed[:, 1].any()
    assert part.with_observed(part.observed).observed.shape == (1, 2)
