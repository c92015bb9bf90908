"""Value of retrieval: test metrics when the retrieved embeddings are replaced by simpler fills.

Two sample sets of a run's test split:

* ``test``: the test samples with their own missingness; a missing modality's embedding is the
  retrieved one (the model as trained), zeros, the training-mean embedding of that modality
  (the mean of the encoder's embeddings over the training samples that observe it), or the
  embedding of one random member of the supporting group G(T | mc) (Eq. 2).
* ``masked``: every complete test sample once per modality, with that modality hidden on
  purpose. The same four fills, plus ``true``: the hidden modality's own encoder embedding in
  its place, counted as observed, which is the unmasked model's output.

Each variant changes only what fills a missing (sample, modality) pair; encoders, fusion and
head are the trained ones. Metrics carry a 95% bootstrap interval over the samples of the set
(the masked copies of one sample are resampled together).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.combinations import observed_to_codes
from ..data.dataset import Batch, MultimodalDataset
from ..models.classifier import MultimodalClassifier
from ..training.metrics import classification_metrics
from .plotting import figure, save

FILLS = ("retrieved", "zeros", "train_mean", "random_member")
BOOTSTRAP = 1000
VARIANT_COLORS = {
    "retrieved": "#4C72B0",
    "zeros": "#C44E52",
    "train_mean": "#DD8452",
    "random_member": "#8172B3",
    "true": "#55A868",
}


@dataclass
class RetrievalValue:
    # set -> variant -> metric -> value; ``<metric>_ci``: [low, high] for accuracy and macro_f1
    metrics: dict[str, dict[str, dict[str, Any]]]
    samples: dict[str, int]
    # masked set: mean cosine similarity of each fill to the true embedding
    cosine_to_true: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "samples": self.samples,
            "cosine_to_true": self.cosine_to_true,
            "bootstrap_resamples": BOOTSTRAP,
        }


def _embed_all(model: MultimodalClassifier, batch: Batch, size: int) -> Tensor:
    """(N, M, d) encoder embeddings of a batch, in chunks of ``size``; zeros where unobserved."""
    device = batch.observed.device
    parts = [
        model.encode(batch.select(torch.arange(s, min(s + size, len(batch)), device=device)))
        for s in range(0, len(batch), size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, model.n_modalities, model.cfg.hidden, device=device)


@torch.no_grad()
def train_mean_embeddings(run) -> Tensor:
    """(M, d) mean encoder embedding of each modality over the training samples observing it."""
    run.model.eval()
    batch = run.loaded.bank.full_batch().to(run.device)
    emb = _embed_all(run.model, batch, run.cfg.train.eval_batch_size)
    obs = batch.observed.unsqueeze(-1).to(emb.dtype)
    return (emb * obs).sum(0) / obs.sum(0).clamp(min=1)


def _fill(
    run, emb: Tensor, observed: Tensor, variant: str, mean: Tensor | None, generator: torch.Generator
) -> Tensor:
    pair_b, pair_t = (~observed).nonzero(as_tuple=True)
    if variant == "zeros" or pair_b.numel() == 0:
        return emb
    if variant == "train_mean":
        assert mean is not None, "the train_mean fill needs the mean embeddings"
        return emb.index_put((pair_b, pair_t), mean[pair_t])
    # one member of G(T | mc), encoded by the T encoder (zeros when no bank sample has T)
    codes = observed_to_codes(observed)[pair_b]
    ones = torch.ones_like(pair_t)
    retriever = run.model.retriever
    assert retriever is not None
    member, valid, _ = retriever.context.sample(run.model.encoders, run.bank, codes, pair_t, ones, generator)
    return emb.index_put((pair_b, pair_t), member[:, 0] * valid[:, :1].to(emb.dtype))


@torch.no_grad()
def fill_probabilities(
    run, dataset: MultimodalDataset, variant: str, mean: Tensor | None = None, true_emb: Tensor | None = None
) -> np.ndarray:
    """(N, C) class probabilities of standardised ``dataset`` with the missing embeddings filled
    by ``variant`` (one of FILLS, or ``true`` with ``true_emb`` from :func:`true_embeddings`)."""
    model, size = run.model, run.cfg.train.eval_batch_size
    model.eval()
    batch = run.to_batch(dataset, standardized=True)
    if mean is None and variant == "train_mean":
        mean = train_mean_embeddings(run)
    if variant == "retrieved":
        return run.trainer.predict_proba_batch(batch)
    batch = batch.to(run.device)
    generator = torch.Generator(device=run.device).manual_seed(run.seed * 15_485_863 + 11)
    out = []
    for s in range(0, len(batch), size):
        idx = torch.arange(s, min(s + size, len(batch)), device=run.device)
        part = batch.select(idx)
        if variant == "true":
            assert true_emb is not None, 'the "true" variant needs true_emb'
            emb, observed = true_emb[idx], torch.ones_like(part.observed)
        else:
            emb, observed = model.encode(part), part.observed
            emb = _fill(run, emb, observed, variant, mean, generator)
        fused, _ = model.fuse(emb, observed)
        out.append(torch.softmax(model.head(fused).float(), -1).cpu())
    return torch.cat(out).numpy()


def _with_ci(
    probs: np.ndarray, labels: np.ndarray, n_classes: int, seed: int, group: int = 1
) -> dict[str, Any]:
    """The metrics, plus percentile 95% intervals of accuracy and macro-F1 over BOOTSTRAP
    resamples of the samples (macro-F1 as in classification_metrics: every class, 0 for a class
    with no true or predicted sample). ``group``: consecutive rows that come from one sample
    and are resampled together (the masked set has one row per hidden modality)."""
    result: dict[str, Any] = dict(classification_metrics(probs, labels, n_classes))
    pred = probs.argmax(1)
    n, c = len(labels), n_classes
    picked = np.random.default_rng(seed).integers(0, n // group, (BOOTSTRAP, n // group))
    draws = (picked[:, :, None] * group + np.arange(group)).reshape(BOOTSTRAP, -1)
    cell = (np.arange(BOOTSTRAP)[:, None] * c * c + labels[draws] * c + pred[draws]).ravel()
    confusion = np.bincount(cell, minlength=BOOTSTRAP * c * c).reshape(BOOTSTRAP, c, c)
    tp = np.diagonal(confusion, axis1=1, axis2=2)
    denominator = confusion.sum(2) + confusion.sum(1)  # 2 tp + fn + fp
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    for key, values in (("accuracy", tp.sum(1) / n), ("macro_f1", f1.mean(1))):
        result[f"{key}_ci"] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return result


def masked_complete(test: MultimodalDataset) -> MultimodalDataset | None:
    """Each complete test sample once per modality (sample-major), with that modality hidden;
    ids ``<id>#<modality>``. None when the test split has no complete sample."""
    complete = test.observed.all(1).nonzero().squeeze(1)
    if complete.numel() == 0:
        return None
    m = test.n_modalities
    rows = complete.repeat_interleave(m)
    hidden = torch.arange(m).repeat(complete.numel())
    observed = torch.ones(len(rows), m, dtype=torch.bool)
    observed[torch.arange(len(rows)), hidden] = False
    ids = [
        f"{test.ids[i]}#{test.modality_names[h]}" for i, h in zip(rows.tolist(), hidden.tolist(), strict=True)
    ]
    return MultimodalDataset(
        test.modalities,
        {k: v[rows] for k, v in test.features.items()},
        observed,
        test.labels[rows],
        ids,
        test.class_names,
        test.name,
        {k: v[rows] for k, v in test.lengths.items()},
        require_every_modality=False,
    )


@torch.no_grad()
def true_embeddings(run, test: MultimodalDataset) -> Tensor:
    """(rows of :func:`masked_complete`, M, d): the encoder embeddings of the complete samples."""
    complete = test.subset(test.observed.all(1).nonzero().squeeze(1))
    run.model.eval()
    batch = run.to_batch(complete, standardized=True).to(run.device)
    return _embed_all(run.model, batch, run.cfg.train.eval_batch_size).repeat_interleave(
        test.n_modalities, dim=0
    )


def value_of_retrieval(run, test: MultimodalDataset) -> RetrievalValue:
    """The diagnostic on ``test`` (standardised, e.g. ``run.seed_data().test``)."""
    if not run.model.uses_retrieval:
        raise ValueError(f"method {run.method!r} does not retrieve missing embeddings")
    mean = train_mean_embeddings(run)
    n_classes = len(run.class_names)
    metrics, samples, cosine = {}, {}, {}
    sets: dict[str, tuple[MultimodalDataset, Tensor | None]] = {"test": (test, None)}
    masked = masked_complete(test)
    truth = None
    if masked is not None:
        truth = true_embeddings(run, test)
        sets["masked"] = (masked, truth)
    for name, (ds, true_emb) in sets.items():
        labels = ds.labels.numpy()
        variants = FILLS + (("true",) if true_emb is not None else ())
        group = test.n_modalities if name == "masked" else 1
        metrics[name] = {
            v: _with_ci(fill_probabilities(run, ds, v, mean, true_emb), labels, n_classes, run.seed, group)
            for v in variants
        }
        samples[name] = len(ds)
    if masked is not None and truth is not None:
        cosine = _cosine_to_true(run, masked, truth, mean)
    return RetrievalValue(metrics, samples, cosine)


@torch.no_grad()
def _cosine_to_true(run, masked: MultimodalDataset, true_emb: Tensor, mean: Tensor) -> dict[str, float]:
    """Mean cosine similarity between each fill of a hidden modality and its true embedding."""
    batch = run.to_batch(masked, standardized=True).to(run.device)
    hidden_b, hidden_t = (~batch.observed).nonzero(as_tuple=True)
    truth = true_emb[hidden_b, hidden_t]
    generator = torch.Generator(device=run.device).manual_seed(run.seed * 15_485_863 + 11)
    fills = {"retrieved": torch.cat([out.embeddings for _, out in run.trainer.eval_outputs(batch)])}
    emb = run.model.encode(batch)
    for v in ("train_mean", "random_member"):
        fills[v] = _fill(run, emb, batch.observed, v, mean, generator)
    return {
        v: float(torch.nn.functional.cosine_similarity(f[hidden_b, hidden_t], truth, dim=-1).mean())
        for v, f in fills.items()
    }


def plot_retrieval_value(result: RetrievalValue, path: Path, metric: str = "macro_f1") -> Path:
    sets = list(result.metrics)
    fig, axes = figure(4.2 * len(sets), 3.6, ncols=len(sets))
    for ax, name in zip(axes, sets, strict=True):
        variants = list(result.metrics[name])
        values = [100 * result.metrics[name][v][metric] for v in variants]
        ci = np.array([[100 * c for c in result.metrics[name][v][f"{metric}_ci"]] for v in variants])
        x = np.arange(len(variants))
        ax.bar(x, values, color=[VARIANT_COLORS[v] for v in variants])
        # drawn from its own ends, since a percentile bootstrap interval need not contain the
        # point estimate (errors relative to the bar would then misplace it)
        ax.errorbar(x, ci.mean(1), yerr=(ci[:, 1] - ci[:, 0]) / 2, fmt="none", ecolor="black", capsize=3)
        ax.set_xticks(x, labels=[v.replace("_", "\n") for v in variants], fontsize=8)
        ax.set_ylabel(f"test {metric} (%)")
        title = (
            "test samples, own missingness"
            if name == "test"
            else "complete test samples, one modality hidden"
        )
        ax.set_title(f"{title} (n = {result.samples[name]})", fontsize=9)
        # from 0, so bar heights compare; the top clears every interval and bar, caps included
        # (an interval reaching 100 % is not cut at the frame)
        ax.set_ylim(0.0, max(float(ci.max()), max(values)) + 4)
    return save(fig, path)
