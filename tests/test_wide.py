"""Wide modalities: the low-rank MLP input layer and the bank-embedding cache."""

from __future__ import annotations

import pytest
import torch

from moe_retriever.config import (
    ConfigError,
    EncoderConfig,
    ModelConfig,
    MoEConfig,
    RetrieverConfig,
)
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.dataset import ModalitySpec
from moe_retriever.data.missingness import drop_mask
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.models import build_encoder
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.models.encoders import LOWRANK_FROM_WIDTH

# --------------------------------------------------------------------------- low-rank encoder


def mlp(width: int, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = EncoderConfig(kind="mlp", hidden=24, layers=2, dropout=0.0, options=options)
    return build_encoder(ModalitySpec("snps", (width,), "tabular"), cfg, 16)


def test_lowrank_first_layer_shapes_parameters_and_reference():
    enc = mlp(500, first_layer="lowrank", rank=8)
    proj, first = enc.net[0], enc.net[1]
    assert proj.weight.shape == (8, 500) and proj.bias is None and first.weight.shape == (24, 8)
    dense = mlp(500, first_layer="dense")

    def n(m):
        return sum(p.numel() for p in m.parameters())

    assert n(dense) - n(enc) == 500 * 24 + 24 - (500 * 8 + 8 * 24 + 24)
    x = torch.randn(5, 500)
    out = enc(x)
    assert out.shape == (5, 16) and enc(x[:0]).shape == (0, 16)
    # reference: the dense MLP whose first weight is the product of the two factors
    with torch.no_grad():
        dense.net[0].weight.copy_(first.weight @ proj.weight)
        dense.net[0].bias.copy_(first.bias)
        for a, b in zip(dense.net[1:], enc.net[2:], strict=True):
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
                pa.copy_(pb)
    torch.testing.assert_close(out, dense(x), rtol=1e-4, atol=1e-5)


def test_lowrank_gradients_reach_both_factors_and_only_touched_columns():
    enc = mlp(300, first_layer="lowrank", rank=4).double()
    x = torch.zeros(3, 300, dtype=torch.double)
    x[:, :10] = torch.randn(3, 10, dtype=torch.double)
    enc(x).pow(2).sum().backward()
    g = enc.net[0].weight.grad
    assert g.abs()[:, :10].sum() > 0 and torch.all(g[:, 10:] == 0)
    assert enc.net[1].weight.grad.abs().sum() > 0
    # central finite differences on one weight of the projection
    w, eps = enc.net[0].weight, 1e-6
    with torch.no_grad():
        w[1, 3] += eps
        up = enc(x).pow(2).sum()
        w[1, 3] -= 2 * eps
        down = enc(x).pow(2).sum()
        w[1, 3] += eps
    assert float((up - down) / (2 * eps)) == pytest.approx(float(g[1, 3]), rel=1e-4, abs=1e-8)


def test_auto_first_layer_is_lowrank_only_for_wide_input():
    assert isinstance(mlp(LOWRANK_FROM_WIDTH - 1).net[1], torch.nn.GELU)  # dense: Linear, GELU
    wide = mlp(LOWRANK_FROM_WIDTH)
    assert wide.net[0].weight.shape == (32, LOWRANK_FROM_WIDTH) and wide.net[0].bias is None


@pytest.mark.parametrize(
    "options,key", [({"first_layer": "patch"}, "first_layer"), ({"rank": 0}, "rank"), ({"ranks": 3}, "ranks")]
)
def test_bad_mlp_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=f"model.encoders.snps.options.*{key}"):
        mlp(50, **options)


# --------------------------------------------------------------------------- bank cache


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_samples=150, n_modalities=4, seed=1)
    return ds.with_observed(drop_mask(ds.observed, 0.4, torch.Generator().manual_seed(2)))


def model_for(data, bank_cache: str, dropout: float = 0.0) -> MultimodalClassifier:
    torch.manual_seed(0)
    moe = MoEConfig(experts_per_modality=3, shared_experts=2, top_k=2, expert_hidden=16)
    cfg = ModelConfig(
        hidden=16,
        dropout=dropout,
        encoder=EncoderConfig(hidden=16, dropout=dropout),
        retriever=RetrieverConfig(heads=2, moe=moe, bank_cache=bank_cache),
    )
    return MultimodalClassifier(data.modalities, data.n_classes, cfg)


def intra_of(model, data, bank, seed=0):
    """The intra context of every missing pair of ``data`` (a fixed draw)."""
    obs = data.observed
    pair_b, pair_t = (~obs).nonzero(as_tuple=True)
    from moe_retriever.data.combinations import observed_to_codes

    codes = observed_to_codes(obs)[pair_b]
    n = obs.sum(1)[pair_b]
    return model.retriever.context.sample(
        model.encoders, bank, codes, pair_t, n, torch.Generator().manual_seed(seed)
    )


def test_config_rejects_bad_schedules():
    from moe_retriever.config import load_config

    for bad in ("steps:0", "steps", "sometimes", "steps:x"):
        with pytest.raises(ConfigError, match="model.retriever.bank_cache"):
            load_config(None, [f"model.retriever.bank_cache={bad}"])
    assert load_config(None, ["model.retriever.bank_cache=steps:5"]).model.retriever.bank_cache == "steps:5"


@pytest.mark.parametrize("training", [False, True])
def test_cached_intra_context_equals_encoding_right_after_a_refresh(data, training):
    bank = RetrievalBank(data)
    cached, plain = model_for(data, "epoch"), model_for(data, "none")
    plain.load_state_dict(cached.state_dict())
    cached.train(training), plain.train(training)
    cached.before_train_step(bank, 0)  # the refresh at the start of an epoch
    a, va, ra = intra_of(cached, data, bank)
    b, vb, rb = intra_of(plain, data, bank)
    assert torch.equal(va, vb) and va.any()
    # the same bank rows (token provenance): the drawn positions, -1 where invalid
    assert torch.equal(ra, rb) and torch.all((ra >= 0) == va)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and the whole forward pass retrieves the same embeddings
    cached.eval(), plain.eval()

    def g():
        return torch.Generator().manual_seed(3)

    torch.testing.assert_close(
        cached(data.full_batch(), RetrievalInputs(bank, g())).embeddings,
        plain(data.full_batch(), RetrievalInputs(bank, g())).embeddings,
        rtol=1e-5,
        atol=1e-6,
    )


def test_table_refreshes_on_schedule_and_is_bounded(data):
    bank = RetrievalBank(data)
    model = model_for(data, "steps:3")
    model.train()
    opt = torch.optim.SGD(model.encoders.parameters(), lr=0.01)
    direction = torch.randn(len(data), 4, model.cfg.hidden)
    refreshed = []
    for step in range(7):
        before = model.retriever.context.bank_table
        model.before_train_step(bank, step)
        refreshed.append(model.retriever.context.bank_table is not before)
        # the table holds the embeddings of the weights at the last refresh
        enc = model.retriever.context.bank_table.table.view(-1)[: -model.cfg.hidden].view(4, len(bank), -1)
        m = 0
        rows = data.observed[:, m].nonzero().squeeze(1)
        model.eval()
        with torch.no_grad():
            now = model.encoders.encode(m, bank.features[data.modality_names[m]][rows])
        model.train()
        assert torch.allclose(enc[m, rows], now, atol=1e-6) == (refreshed[-1] or step % 3 == 0)
        assert torch.all(enc[m][~data.observed[:, m]] == 0)
        loss = (model.encode(data.full_batch()) * direction).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert refreshed == [True, False, False, True, False, False, True]
    # memory: N x d floats per modality plus one zero row
    assert model.retriever.context.bank_table.table.shape == (4 * len(bank) + 1, model.cfg.hidden)


def test_epoch_schedule_refreshes_at_step_zero_only(data):
    bank = RetrievalBank(data)
    model = model_for(data, "epoch")
    opt = torch.optim.SGD(model.encoders.parameters(), lr=0.1)
    tables = []
    for step in (0, 1, 2, 0):
        model.before_train_step(bank, step)
        tables.append(model.retriever.context.bank_table)
        opt.zero_grad()
        model.encode(data.full_batch()).sum().backward()
        opt.step()
    assert tables[0] is tables[1] is tables[2] and tables[3] is not tables[0]


def test_no_encoder_gradient_through_cached_entries(data):
    bank = RetrievalBank(data)
    for cache, expect in (("epoch", False), ("none", True)):
        model = model_for(data, cache)
        model.train()
        model.before_train_step(bank, 0)
        intra, valid, _ = intra_of(model, data, bank)
        assert intra.requires_grad == expect
        out = model.retriever(
            intra,
            valid,
            torch.zeros(intra.shape[0], 4, 16),
            torch.zeros(intra.shape[0], 4, dtype=torch.bool),
            (~data.observed).nonzero()[:, 1],
        )
        out.embeddings.pow(2).sum().backward()
        enc_grads = [p.grad for p in model.encoders.parameters() if p.grad is not None]
        assert bool(enc_grads) == expect
        assert model.retriever.attn.in_proj_weight.grad.abs().sum() > 0


def test_evaluation_rebuilds_a_stale_table(data):
    bank = RetrievalBank(data)
    model = model_for(data, "epoch")
    model.train()
    model.before_train_step(bank, 0)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.05)
    stale = model.retriever.context.bank_table
    model.eval()
    plain = model_for(data, "none")
    plain.load_state_dict(model.state_dict())
    plain.eval()
    a, _, _ = intra_of(model, data, bank)
    b, _, _ = intra_of(plain, data, bank)
    assert model.retriever.context.bank_table is not stale
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the same weights and bank: the table is reused
    table = model.retriever.context.bank_table
    intra_of(model, data, bank)
    assert model.retriever.context.bank_table is table


# --------------------------------------------------------------------------- checkpoint layout


def _equal_datasets(a, b) -> None:
    assert a.ids == b.ids and a.class_names == b.class_names
    assert torch.equal(a.observed, b.observed) and torch.equal(a.labels, b.labels)
    for name in a.modality_names:
        assert torch.equal(a.features[name], b.features[name]), name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from _tiny_run import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("layout") / "run", seeds=(0, 1))


def test_run_stores_the_bank_once_and_checkpoints_select_it(tiny_run):
    from moe_retriever.config import load_config
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.training.checkpoint import load_tensors
    from moe_retriever.training.run_files import BANK_FILE, load_seed_checkpoint

    assert (tiny_run / BANK_FILE).is_file()
    cfg = load_config(tiny_run / "config.yaml")
    dataset = load_dataset(cfg.data)
    for seed in (0, 1):
        path = tiny_run / f"seed_{seed}" / "model.safetensors"
        tensors, meta = load_tensors(path)
        assert meta["bank_file"] == f"../{BANK_FILE}" and len(meta["bank_sha256"]) == 64
        assert not any(k.startswith("bank.features") for k in tensors)
        # the reconstructed bank is the seed's standardised training split, bit for bit
        _equal_datasets(load_seed_checkpoint(path).bank, prepare_seed(cfg, dataset, seed).train)


def test_cross_validation_folds_share_one_bank_file(tmp_path):
    """Under ``protocol: cv`` the run's bank file is written once and every fold's checkpoint
    selects its own training positions from it."""
    import json

    from _tiny_run import TINY
    from moe_retriever.config import load_config
    from moe_retriever.data.partitions import partition_from_meta, prepare_partition
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.training.checkpoint import load_tensors
    from moe_retriever.training.experiment import evaluate_run, run_experiment
    from moe_retriever.training.run_files import BANK_FILE, load_seed_checkpoint, partition_checkpoints

    cfg = load_config(
        None, TINY + ["train.seeds=[0]", "train.epochs=2", "protocol={kind: cv, folds: 3, repeats: 1}"]
    )
    run = tmp_path / "run"
    results = run_experiment(cfg, run, log=lambda _: None)
    assert sorted(p.name for p in run.glob("*.safetensors")) == [BANK_FILE]
    found = partition_checkpoints(run)
    assert sorted(found) == [(0, 0), (0, 1), (0, 2)]
    dataset = load_dataset(cfg.data)
    indices = []
    for path in found.values():
        tensors, meta = load_tensors(path)
        assert meta["bank_file"] == f"../{BANK_FILE}" and not any(
            k.startswith("bank.features") for k in tensors
        )
        indices.append(set(tensors["bank.index"].tolist()))
        loaded = load_seed_checkpoint(path)
        _equal_datasets(loaded.bank, prepare_partition(cfg, dataset, partition_from_meta(loaded.meta)).train)
    assert len({frozenset(i) for i in indices}) == 3  # each fold its own training positions
    # re-evaluating the saved folds reproduces the run's test metrics
    again = evaluate_run(run, "cpu", log=lambda _: None)
    recorded = json.loads((run / "results.json").read_text())["test"]
    assert recorded == results["test"]
    for key, value in again["test"].items():
        assert value["mean"] == pytest.approx(recorded[key]["mean"], abs=1e-9), key


def test_modified_bank_file_is_named_in_the_error(tiny_run, tmp_path):
    import shutil

    from moe_retriever.training.checkpoint import CheckpointError
    from moe_retriever.training.run_files import BANK_FILE, load_seed_checkpoint

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    data = bytearray((copy / BANK_FILE).read_bytes())
    data[-1] ^= 1  # one bit of the last feature value
    (copy / BANK_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{BANK_FILE}.*replaced or modified"):
        load_seed_checkpoint(copy / "seed_0" / "model.safetensors")
    (copy / BANK_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{BANK_FILE} is missing"):
        load_seed_checkpoint(copy / "seed_0" / "model.safetensors")


def test_old_layout_checkpoints_still_load_and_predict_the_same(tiny_run, tmp_path):
    """A run directory of earlier versions: the bank inside each seed's model.safetensors."""
    import shutil

    import numpy as np

    from moe_retriever import load_run
    from moe_retriever.training.checkpoint import load_tensors, save_tensors
    from moe_retriever.training.experiment import evaluate_run
    from moe_retriever.training.run_files import BANK_FILE, load_seed_checkpoint

    old = tmp_path / "old"
    shutil.copytree(tiny_run, old)
    (old / BANK_FILE).unlink()
    for seed in (0, 1):
        path = old / f"seed_{seed}" / "model.safetensors"
        loaded = load_seed_checkpoint(tiny_run / f"seed_{seed}" / "model.safetensors")
        tensors, meta = load_tensors(tiny_run / f"seed_{seed}" / "model.safetensors")
        # written field by field as earlier versions did (not through today's writer)
        tensors = {k: v for k, v in tensors.items() if not k.startswith("bank.")}
        bank = loaded.bank
        tensors.update({f"bank.features.{k}": v for k, v in bank.features.items()})
        tensors["bank.observed"], tensors["bank.labels"] = bank.observed.to(torch.uint8), bank.labels
        meta = {k: v for k, v in meta.items() if k not in ("bank_file", "bank_sha256")}
        meta["bank_ids"] = bank.ids
        save_tensors(path, tensors, meta)
        _equal_datasets(load_seed_checkpoint(path).bank, bank)
    new_eval = evaluate_run(tiny_run, "cpu", log=lambda _: None)["test"]
    old_eval = evaluate_run(old, "cpu", log=lambda _: None)["test"]
    assert new_eval == old_eval
    a, b = load_run(tiny_run, seed=0, device="cpu"), load_run(old, seed=0, device="cpu")
    test = a.seed_data().test
    np.testing.assert_array_equal(a.trainer.predict_proba(test), b.trainer.predict_proba(test))


def test_checkpoint_of_a_wide_set_costs_the_model_not_the_bank(tmp_path):
    from moe_retriever.config import load_config
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.data.synthetic import make_synthetic as synth
    from moe_retriever.methods import build_model
    from moe_retriever.training.run_files import (
        BANK_FILE,
        load_seed_checkpoint,
        run_bank_digest,
        save_seed_checkpoint,
    )

    dataset = synth(n_samples=1000, n_modalities=2, widths=[5000, 40], n_classes=3, seed=0)
    cfg = load_config(
        None,
        [
            "model.hidden=32",
            "model.encoder.hidden=64",
            "model.retriever.heads=2",
            "model.fusion.heads=2",
            "model.retriever.moe.expert_hidden=32",
        ],
    )
    data = prepare_seed(cfg, dataset, 0)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    state = model.state_dict()
    bank_bytes = sum(x.numel() * x.element_size() for x in data.train.features.values())
    run = tmp_path / "run"
    (run / "seed_0").mkdir(parents=True)
    digest = run_bank_digest(run / BANK_FILE, dataset)
    ckpt = run / "seed_0" / "model.safetensors"
    save_seed_checkpoint(
        ckpt,
        cfg,
        0,
        state,
        data.train,
        data.stats,
        {},
        bank_file=run / BANK_FILE,
        bank_index=data.train_index,
        bank_digest=digest,
    )
    assert ckpt.stat().st_size < 0.1 * bank_bytes, (ckpt.stat().st_size, bank_bytes)
    embedded = tmp_path / "embedded.safetensors"
    save_seed_checkpoint(embedded, cfg, 0, state, data.train, data.stats)
    assert embedded.stat().st_size > bank_bytes
    # the bank file is written once: a second seed's checkpoint reuses it unchanged
    stamp = (run / BANK_FILE).stat().st_mtime_ns
    assert run_bank_digest(run / BANK_FILE, dataset) == digest
    assert (run / BANK_FILE).stat().st_mtime_ns == stamp
    _equal_datasets(load_seed_checkpoint(ckpt).bank, load_seed_checkpoint(embedded).bank)


def test_predict_with_a_cached_model_equals_evaluate(tmp_path):
    import numpy as np

    from _tiny_run import TINY
    from moe_retriever import load_run
    from moe_retriever.config import load_config
    from moe_retriever.data.missingness import apply_missingness
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.data.splits import stratified_split
    from moe_retriever.training.experiment import evaluate_run, run_experiment
    from moe_retriever.training.metrics import classification_metrics

    cfg = load_config(
        None,
        TINY
        + [
            "model.retriever.bank_cache=steps:2",
            "model.dropout=0.1",
            "model.encoder.dropout=0.1",
            "train.seeds=[0]",
        ],
    )
    run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    run = load_run(tmp_path / "run", device="cpu")
    assert run.model.retriever.context.cache_period == 2
    # the user's raw test split, predicted through the public API (standardised by the run)
    ds = apply_missingness(load_dataset(cfg.data), cfg.data.missing, 0)
    test = ds.subset(stratified_split(ds.labels, cfg.data.split, 0)[2])
    probs = run.predict_proba(test)
    ours = classification_metrics(probs, test.labels.numpy(), 2)
    reference = evaluate_run(tmp_path / "run", "cpu", log=lambda _: None)["test"]
    for key, value in ours.items():
        assert value == pytest.approx(reference[key]["per_seed"][0], abs=1e-9), key
    # and the table-based retrieval gives what encoding the drawn samples gives
    plain = load_run(tmp_path / "run", device="cpu")
    plain.model.retriever.context.cache_period = None
    np.testing.assert_allclose(plain.predict_proba(test), probs, rtol=1e-5, atol=1e-6)
