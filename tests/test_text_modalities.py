"""Text modalities: the folder format's ``kind: text``, the hashed n-gram ids, the ``hashed_bag``
encoder, retrieval of a missing text, and the text baselines' training-only vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils import murmurhash3_32

from conftest import TINY_MODEL
from moe_retriever.config import ModelConfig, MoEConfig, RetrieverConfig, load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.sources.folder import load_folder
from moe_retriever.data.text_tokens import HASH_SPACE, HashedTokenizer, word_ids
from moe_retriever.errors import DataValidationError
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.models.text_encoders import HashedBagEncoder
from moe_retriever.training.experiment import run_experiment
from moe_retriever.training.losses import weighted_sum

POSITIVE = ["great", "love", "perfect", "soft", "comfy"]
NEGATIVE = ["awful", "return", "small", "itchy", "cheap"]


def write_reviews(root, n=120, title_texts=None, max_tokens=32):
    """A folder dataset: a title (text), a review (text) and a product (categories + age)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    y = np.arange(n) % 2
    ids = [f"r{i:03d}" for i in range(n)]
    words = [POSITIVE, NEGATIVE]
    reviews = [" ".join(rng.choice(words[c], 6)) for c in y]
    titles = title_texts if title_texts is not None else [" ".join(rng.choice(words[c], 2)) for c in y]
    pd.DataFrame({"id": ids, "label": y}).to_csv(root / "labels.csv", index=False)
    pd.DataFrame({"id": ids, "title": titles[:n]}).to_csv(root / "title.csv", index=False)
    pd.DataFrame({"id": ids, "review": reviews}).to_csv(root / "review.csv", index=False)
    pd.DataFrame(
        {"id": ids, "colour": rng.choice(["red", "blue", "green"], n), "age": rng.normal(40, 9, n).round(1)}
    ).to_csv(root / "product.csv", index=False)
    (root / "dataset.yaml").write_text(
        "label: {file: labels.csv}\nmodalities:\n"
        f"  - {{name: title, file: title.csv, kind: text, column: title, max_tokens: {max_tokens}}}\n"
        "  - {name: review, file: review.csv, kind: text, column: review, max_tokens: 64}\n"
        "  - {name: product, file: product.csv}\n"
    )
    return root


def test_empty_whitespace_na_and_a_missing_id_mean_the_text_is_missing(tmp_path):
    root = write_reviews(tmp_path / "d", n=8)
    frame = pd.read_csv(root / "title.csv")
    frame["title"] = frame["title"].astype(object)
    frame.loc[0, "title"] = ""
    frame.loc[1, "title"] = "   \t "
    frame.loc[2, "title"] = "NA"
    frame.loc[3, "title"] = "12 345"  # numbers only: a text like any other
    frame = frame.drop(index=4)  # no row: missing too
    frame.to_csv(root / "title.csv", index=False)
    ds = load_folder(root)
    title = ds.observed[:, 0].tolist()
    assert title == [False, False, False, True, False, True, True, True]
    assert ds.modalities[0].kind == "text" and ds.modalities[0].shape == (32,)
    # "12 345": the words "12" and "345" and the bigram; the first id is the word "12"
    assert int(ds.lengths["title"][3]) == len(word_ids("12")) + 1 + len(word_ids("345"))
    assert int(ds.features["title"][3, 0]) == murmurhash3_32("w 12", seed=0, positive=True) % HASH_SPACE


def test_a_100k_character_text_is_truncated_and_trains(tmp_path):
    long_text = " ".join(["wonderful"] * 10_001)[:100_000]
    titles = [long_text] + ["short title"] * 119
    root = write_reviews(tmp_path / "d", title_texts=titles, max_tokens=48)
    ds = load_folder(root)
    assert len(long_text) == 100_000
    assert int(ds.lengths["title"][0]) == 48 and ds.features["title"].shape[1] == 48
    cfg = load_config(
        None,
        [
            f"data.path={root}",
            *TINY_MODEL,
            "train.epochs=2",
            "train.warmup_epochs=1",
            "train.seeds=[0]",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    result = run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    assert np.isfinite(result["test"]["accuracy"]["mean"])


def test_the_tokenizer_keeps_at_most_max_tokens_and_marks_truncation():
    tokens = HashedTokenizer(10)(["one two three four five", "a b", None, " "])
    # "one": the word and its 5 character n-grams; "two" would add a bigram and 6 more ids
    assert len(word_ids("one")) == 6
    assert tokens.lengths.tolist() == [10, len(word_ids("a")) + 1 + len(word_ids("b")), 0, 0]
    assert tokens.present.tolist() == [True, True, False, False]
    assert tokens.truncated == 1


def test_hashed_bag_is_the_mean_of_the_valid_ids_embeddings():
    torch.manual_seed(0)
    enc = HashedBagEncoder(buckets=50, dim=4, hidden=8, out_dim=6, layers=1, dropout=0.0).eval()
    x = torch.tensor([[3.0, 7.0, 0.0], [60.0, 0.0, 0.0]])
    with torch.no_grad():
        w = enc.bag.weight
        expected = enc.head(enc.norm(torch.stack([(w[3] + w[7]) / 2, w[60 % 50]])))
        assert torch.allclose(enc(x, torch.tensor([2, 1])), expected, atol=1e-6)
        # what follows the length is padding and changes nothing
        assert torch.allclose(
            enc(torch.tensor([[3.0, 7.0, 99.0]]), torch.tensor([2])), expected[:1], atol=1e-6
        )


def test_a_missing_title_is_retrieved_and_the_router_and_experts_get_gradients_through_text(tmp_path):
    ds = load_folder(write_reviews(tmp_path / "d"))
    observed = ds.observed.clone()
    observed[::3, 0] = False  # a third of the titles missing
    ds = ds.with_observed(observed)
    torch.manual_seed(0)
    moe = MoEConfig(experts_per_modality=2, shared_experts=1, top_k=2, expert_hidden=16)
    model = MultimodalClassifier(
        ds.modalities,
        ds.n_classes,
        ModelConfig(hidden=16, dropout=0.0, retriever=RetrieverConfig(heads=2, moe=moe)),
    )
    assert type(model.encoders["title"]).__name__ == "HashedBagEncoder"
    model.train()
    out = model(ds.full_batch(), RetrievalInputs(RetrievalBank(ds), torch.Generator().manual_seed(0)))
    title_pairs = out.pair_targets == 0
    assert int(title_pairs.sum()) == int((~ds.observed[:, 0]).sum()) > 0
    filled = out.embeddings[out.pair_samples[title_pairs], 0]
    assert filled.abs().sum(dim=1).min() > 0  # a retrieved embedding, not the zero fill
    loss = torch.nn.functional.cross_entropy(out.logits, ds.labels) + weighted_sum(
        out.losses, model.loss_weights
    )
    loss.backward()
    r = model.retriever
    assert r.moe.routers[0].gate.weight.grad.abs().sum() > 0
    assert r.moe.experts.w1.grad.abs().sum() > 0
    assert model.encoders["title"].bag.weight.grad.abs().sum() > 0


def test_a_text_column_named_in_dataset_yaml_must_exist(tmp_path):
    root = write_reviews(tmp_path / "d", n=6)
    spec = (root / "dataset.yaml").read_text().replace("column: title,", "column: headline,")
    (root / "dataset.yaml").write_text(spec)
    with pytest.raises(
        DataValidationError, match=r"modalities\[0\]\.column: .*title\.csv has no text column 'headline'"
    ):
        load_folder(root)


def test_text_only_in_the_test_split_leaves_the_tfidf_vocabulary_alone(tmp_path):
    from moe_retriever.baselines.text_features import TfidfText, text_counts

    ds = load_folder(write_reviews(tmp_path / "d", n=40))
    train = ds.subset(range(30))
    fitted = TfidfText(train, [0, 1])
    # the reference: ids in at least two training texts (title and review counted together)
    counts = text_counts(train, [0, 1])
    expected = np.flatnonzero(np.bincount(counts.indices, minlength=HASH_SPACE) >= 2)
    assert np.array_equal(fitted.vocabulary, expected)
    # a test review of a word training never saw: no column, the same vocabulary
    unseen = murmurhash3_32("w zyzzyva", seed=0, positive=True) % HASH_SPACE
    assert unseen not in set(fitted.vocabulary.tolist())
    frame = pd.read_csv(tmp_path / "d" / "review.csv")
    frame.loc[35, "review"] = "zyzzyva zyzzyva zyzzyva"
    frame.to_csv(tmp_path / "d" / "review.csv", index=False)
    again = TfidfText(load_folder(tmp_path / "d").subset(range(30)), [0, 1])
    assert np.array_equal(again.vocabulary, fitted.vocabulary)


@pytest.mark.parametrize("method", ["tfidf_lr", "hist_gbt"])
def test_the_text_baselines_learn_from_the_text(tmp_path, method):
    root = write_reviews(tmp_path / "d", n=160)
    cfg = load_config(
        None,
        [
            f"data.path={root}",
            f"method={method}",
            "train.seeds=[0]",
            "train.progress=false",
            "train.device=cpu",
        ],
    )
    result = run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    # the words decide the class: far above the 50 % of guessing
    assert result["test"]["accuracy"]["mean"] > 0.9
