"""A catalogue of malformed inputs: each must stop with an error naming what is wrong (file, row,
column, sample id, modality or config key) and must leave no results behind.

Inputs go through the public entry points: the ``moe-retriever`` command (exit code 2, the message
on stderr) or the Python API (a specific exception). Training divergence is covered too: the run
stops naming the epoch and keeps the last good checkpoint.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from _tiny_run import TINY, train_tiny_run, write_folder
from moe_retriever.api import load_new_data, load_run
from moe_retriever.cli import main
from moe_retriever.config import load_config, save_config
from moe_retriever.data.dataset import DataValidationError, ModalitySpec, MultimodalDataset
from moe_retriever.data.sources import load_dataset
from moe_retriever.methods import build_model
from moe_retriever.training.checkpoint import CheckpointError, load_tensors, save_tensors
from moe_retriever.training.run_files import CHECKPOINT, TRAINING_STATE, load_seed_checkpoint
from moe_retriever.training.trainer import Trainer, load_training_state, save_training_state

# TINY without the data source: the folder cases pass their own --data
TINY_WITHOUT_DATA = [s for s in TINY if not s.startswith(("data.name=", "data.options="))]
TINY_DATA = [s for s in TINY if s.startswith(("data.name=", "data.options="))]


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def assert_no_results(out: Path) -> None:
    """Nothing a reader could mistake for results: no run summary, no per-seed metrics or model."""
    assert not (out / "results.json").exists()
    assert not (out / "results.md").exists()
    assert not list(out.glob("seed_*/metrics.json"))
    assert not list(out.glob(f"seed_*/{CHECKPOINT}"))


def cli_error(capsys, argv: list[str], *fragments: str) -> str:
    """Run the command; it must exit with 2 and print a message holding every fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("moe-retriever: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_data() -> MultimodalDataset:
    """48 samples of the tiny synthetic data with the tiny run's missingness pattern."""
    cfg = load_config(None, TINY)
    return load_dataset(cfg.data).subset(list(range(48)))


@pytest.fixture(scope="module")
def good_folder(tiny_data, tmp_path_factory) -> Path:
    return write_folder(tiny_data, tmp_path_factory.mktemp("good") / "good")


@pytest.fixture
def folder(good_folder, tmp_path) -> Path:
    """A private copy of the valid folder dataset, for one test to break."""
    return Path(shutil.copytree(good_folder, tmp_path / "data"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("bad_inputs") / "run")


def train_folder_error(capsys, data: Path, out: Path, *fragments: str) -> str:
    err = cli_error(
        capsys, ["train", "--data", str(data), "--out", str(out), *sets(TINY_WITHOUT_DATA)], *fragments
    )
    assert_no_results(out)
    return err


def train_config_error(
    capsys, out: Path, overrides: list[str], *fragments: str, extra: tuple[str, ...] = ()
) -> str:
    err = cli_error(capsys, ["train", "--out", str(out), *sets(TINY + overrides), *extra], *fragments)
    assert_no_results(out)
    return err


def csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def edit_line(path: Path, line: int, edit) -> str:
    """Replace line ``line`` (1-based) of a CSV with ``edit(fields)``; returns the row's id."""
    lines = csv_lines(path)
    fields = lines[line - 1].split(",")
    sample = fields[0]
    lines[line - 1] = ",".join(edit(fields))
    path.write_text("\n".join(lines) + "\n")
    return sample


# --------------------------------------------------------------------------- folder data (train)


def test_dataset_yaml_with_unknown_keys(capsys, folder, tmp_path):
    spec = yaml.safe_load((folder / "dataset.yaml").read_text())
    spec["colour"] = "blue"
    spec["modalities"][1]["unit"] = "mg"
    (folder / "dataset.yaml").write_text(yaml.safe_dump(spec))
    train_folder_error(capsys, folder, tmp_path / "out", "dataset.yaml", "unknown key(s) ['colour']")
    del spec["colour"]
    (folder / "dataset.yaml").write_text(yaml.safe_dump(spec))
    train_folder_error(capsys, folder, tmp_path / "out", "modalities[1]", "unknown key(s) ['unit']")


# Each breaks a private copy of a valid folder dataset and returns the fragments the error must hold.


def nan_among_filled_cells(folder: Path) -> tuple[str, ...]:
    sample = edit_line(folder / "genetic.csv", 3, lambda f: [f[0], "nan", *f[2:]])
    column = csv_lines(folder / "genetic.csv")[0].split(",")[1]
    return (
        "genetic.csv",
        "line 3",
        repr(sample),
        repr(column),
        "the cell is empty while others in the row are not",
    )


def infinite_feature(folder: Path) -> tuple[str, ...]:
    sample = edit_line(folder / "clinical.csv", 4, lambda f: [*f[:-1], "-inf"])
    column = csv_lines(folder / "clinical.csv")[0].split(",")[-1]
    return ("clinical.csv", "line 4", repr(sample), repr(column), "'-inf' is not a finite number")


def non_numeric_cell(folder: Path) -> tuple[str, ...]:
    edit_line(folder / "image.csv", 5, lambda f: [f[0], "12abc", *f[2:]])
    column = csv_lines(folder / "image.csv")[0].split(",")[1]
    return ("image.csv", "line 5", repr(column), "'12abc' is not a finite number")


def ragged_row(folder: Path) -> tuple[str, ...]:
    edit_line(folder / "genetic.csv", 6, lambda f: f[:-1])
    width = len(csv_lines(folder / "genetic.csv")[0].split(","))
    return ("genetic.csv", "line 6", f"has {width - 1} fields but the header (line 1) has {width}")


def modality_file_without_rows(folder: Path) -> tuple[str, ...]:
    (folder / "clinical.csv").write_text(csv_lines(folder / "clinical.csv")[0] + "\n")
    return ("clinical.csv", "the file has a header but no data rows")


def empty_modality_file(folder: Path) -> tuple[str, ...]:
    (folder / "clinical.csv").write_text("")
    return ("clinical.csv", "the file is empty")


def modality_whose_rows_are_all_empty(folder: Path) -> tuple[str, ...]:
    frame = pd.read_csv(folder / "image.csv", dtype=str)
    frame.loc[:, frame.columns[1:]] = ""
    frame.to_csv(folder / "image.csv", index=False)
    return ("image.csv", "modality 'image' would be observed by no sample")


def sample_with_no_modality(folder: Path) -> tuple[str, ...]:
    # a labelled id that appears in no modality file
    label = csv_lines(folder / "labels.csv")[1].split(",")[1]
    with (folder / "labels.csv").open("a") as fh:
        fh.write(f"ghost,{label}\n")
    line = len(csv_lines(folder / "labels.csv"))
    return ("labels.csv", f"line {line}", "'ghost'", "has a label but no data in any modality")


def duplicate_id(folder: Path) -> tuple[str, ...]:
    lines = csv_lines(folder / "genetic.csv")
    sample = lines[2].split(",")[0]
    (folder / "genetic.csv").write_text("\n".join(lines + [lines[2]]) + "\n")
    return ("genetic.csv", f"line {len(lines) + 1}", f"duplicate id {sample!r}", "first at line 3")


def ids_without_labels(folder: Path) -> tuple[str, ...]:
    lines = csv_lines(folder / "labels.csv")
    dropped = lines[1].split(",")[0]  # the first labelled sample loses its label
    (folder / "labels.csv").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    return (f"id {dropped!r} has no label", "labels.csv", "labels are missing for these ids")


def dataset_yaml_naming_a_missing_file(folder: Path) -> tuple[str, ...]:
    (folder / "genetic.csv").unlink()
    return ("modalities[1].file", f"file {folder / 'genetic.csv'} does not exist")


@pytest.mark.parametrize(
    "break_folder",
    [
        nan_among_filled_cells,
        infinite_feature,
        non_numeric_cell,
        ragged_row,
        modality_file_without_rows,
        empty_modality_file,
        modality_whose_rows_are_all_empty,
        sample_with_no_modality,
        duplicate_id,
        ids_without_labels,
        dataset_yaml_naming_a_missing_file,
    ],
    ids=lambda f: f.__name__,
)
def test_malformed_folder_stops_training_naming_what_is_wrong(capsys, folder, tmp_path, break_folder):
    train_folder_error(capsys, folder, tmp_path / "out", *break_folder(folder))


def test_pickle_layout_is_refused_without_trust_pickle(capsys, tmp_path):
    """mosi_data.pkl is never opened without --trust-pickle: the pickle below would create a
    file when unpickled."""
    marker = tmp_path / "unpickled"

    class CreatesFile:
        def __reduce__(self):
            return open, (str(marker), "w")

    data = tmp_path / "mosi"
    data.mkdir()
    (data / "mosi_data.pkl").write_bytes(pickle.dumps(CreatesFile()))
    out = tmp_path / "out"
    cli_error(
        capsys,
        ["train", "--data", str(data), "--out", str(out), *sets(TINY_WITHOUT_DATA)],
        "mosi_data.pkl: this is a Python pickle",
        "--trust-pickle",
    )
    assert not marker.exists()
    assert_no_results(out)


# --------------------------------------------------------------------------- data (Python API)


def _dataset(features: dict, observed, labels, class_names=("a", "b")) -> MultimodalDataset:
    specs = [ModalitySpec(name, tuple(x.shape[1:]), "tabular") for name, x in features.items()]
    return MultimodalDataset(
        specs,
        features,
        torch.as_tensor(observed),
        torch.as_tensor(labels),
        ["s0", "s1", "s2"],
        list(class_names),
        "custom",
    )


def test_api_dataset_with_inf_in_an_observed_row_names_modality_and_sample():
    x = torch.zeros(3, 2)
    x[2, 1] = float("inf")
    with pytest.raises(DataValidationError, match=r"modality 'lab' has NaN/inf.*\['s2'\]"):
        _dataset({"lab": x, "img": torch.zeros(3, 1)}, [[1, 1], [1, 0], [1, 0]], [0, 1, 0])
    # the same value where the modality is unobserved is no error: it is never read
    ds = _dataset({"lab": x, "img": torch.zeros(3, 1)}, [[1, 1], [1, 0], [0, 1]], [0, 1, 0])
    assert torch.isfinite(ds.features["lab"]).all()


def test_api_dataset_with_labels_outside_the_classes_names_the_sample():
    with pytest.raises(DataValidationError, match=r"sample 's1' has label 2 outside 0\.\.1"):
        _dataset({"lab": torch.zeros(3, 2)}, [[1], [1], [1]], [0, 2, 1])
    with pytest.raises(DataValidationError, match=r"sample 's0' has label -1 outside 0\.\.1"):
        _dataset({"lab": torch.zeros(3, 2)}, [[1], [1], [1]], [-1, 0, 1])


def test_api_dataset_with_a_sample_observing_nothing_names_it():
    with pytest.raises(DataValidationError, match=r"1 sample\(s\) observe no modality.*\['s1'\]"):
        _dataset({"lab": torch.zeros(3, 2), "img": torch.zeros(3, 1)}, [[1, 0], [0, 0], [0, 1]], [0, 1, 0])


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("data.missing.p=-0.1", ("data.missing.p", "must be in [0, 1), got -0.1")),
        (
            "model.retriever.moe.top_k=5",
            ("model.retriever.moe.top_k", "experts_per_modality + shared_experts = 4], got 5"),
        ),
        ("train.epochz=3", ("train: unknown key(s) ['epochz']", "'epochs'")),
        ("train.warmup_epochs=4", ("train.warmup_epochs", "must be in [0, epochs]")),
        ("train.epochs=three", ("train.epochs", "expected an integer, got 'three'")),
        ("train.seeds=[0, 1", ("override 'train.seeds=[0, 1'", "not valid YAML")),
    ],
)
def test_bad_config_values_name_the_key(capsys, tmp_path, override, fragments):
    train_config_error(capsys, tmp_path / "out", [override], *fragments)
    # refused before anything is written
    assert not (tmp_path / "out").exists()


def test_unknown_method_dataset_encoder_and_format(capsys, tmp_path, good_folder):
    train_config_error(
        capsys,
        tmp_path / "m",
        [],
        "method: unknown method 'nope'",
        "'moe_retriever'",
        extra=("--method", "nope"),
    )
    train_config_error(
        capsys, tmp_path / "d", ["data.name=nope"], "data.name: unknown dataset 'nope'", "'synthetic'"
    )
    train_config_error(
        capsys,
        tmp_path / "e",
        ["model.encoder={kind: nope}"],
        "modality 'image': unknown encoder kind 'nope'",
    )
    out = tmp_path / "f"
    cli_error(
        capsys,
        [
            "train",
            "--data",
            str(good_folder),
            "--format",
            "nope",
            "--out",
            str(out),
            *sets(TINY_WITHOUT_DATA),
        ],
        "data.format: unknown format 'nope'",
        "'folder'",
    )
    assert_no_results(out)
    cli_error(
        capsys,
        ["train", "--data", str(tmp_path / "absent"), "--out", str(out), *sets(TINY_WITHOUT_DATA)],
        f"data.path: {tmp_path / 'absent'} does not exist",
    )


def test_config_files_that_are_not_a_yaml_mapping(capsys, tmp_path):
    listed = tmp_path / "list.yaml"
    listed.write_text("- train\n- epochs\n")
    cli_error(
        capsys,
        ["train", "--config", str(listed), "--out", str(tmp_path / "a")],
        f"{listed}: the top level must be a mapping",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: [1, 2\n")
    cli_error(
        capsys, ["train", "--config", str(broken), "--out", str(tmp_path / "b")], f"{broken}: not valid YAML"
    )
    cli_error(
        capsys,
        ["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "c")],
        f"config file not found: {tmp_path / 'none.yaml'}",
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --------------------------------------------------------------------------- resume


def test_resume_on_a_directory_without_a_run(capsys, tmp_path):
    cli_error(capsys, ["train", "--resume", str(tmp_path)], f"--resume {tmp_path}: no config.yaml")
    assert_no_results(tmp_path)


def test_resume_from_a_truncated_training_state_names_the_file(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "seed_0").mkdir(parents=True)
    save_config(load_config(None, TINY + ["train.seeds=[0]"]), run / "config.yaml")
    state = run / "seed_0" / TRAINING_STATE
    save_training_state(state, {"epoch": 1, "model": {"w": torch.randn(64, 64)}})
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    cli_error(
        capsys,
        ["train", "--resume", str(run)],
        f"{state}: unreadable training state",
        "delete it to restart this seed",
    )
    assert_no_results(run)


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_from_a_different_config_lists_the_tensors(run_dir, tmp_path, capsys, good_folder):
    tensors, meta = load_tensors(run_dir / "seed_0" / CHECKPOINT)
    meta["config"]["model"]["hidden"] = 32  # the tiny run has 16
    other = tmp_path / "other"
    (other / "seed_0").mkdir(parents=True)
    path = other / "seed_0" / CHECKPOINT
    save_tensors(path, tensors, meta)
    # the tensors whose shapes differ, found independently from a model of the other shape
    loaded = load_seed_checkpoint(run_dir / "seed_0" / CHECKPOINT)
    cfg32 = load_config(None, TINY + ["model.hidden=32"])
    own = build_model(cfg32, loaded.modalities, len(loaded.class_names)).state_dict()
    differ = sorted(k for k, v in loaded.model.state_dict().items() if own[k].shape != v.shape)
    assert differ
    with pytest.raises(CheckpointError) as info:
        load_seed_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "checkpoint does not match the model config" in message
    assert (
        f"{differ[0]}: checkpoint {tuple(tensors['model.' + differ[0]].shape)} vs model "
        f"{tuple(own[differ[0]].shape)}" in message
    )
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(other), "--data", str(good_folder), "--out", str(out), "--device", "cpu"],
        str(path),
        "shape mismatch",
    )
    assert not out.exists()


def test_truncated_checkpoint_names_the_file(run_dir, tmp_path, capsys, good_folder):
    broken = Path(shutil.copytree(run_dir, tmp_path / "run"))
    path = broken / "seed_0" / CHECKPOINT
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_seed_checkpoint(path)
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(broken), "--data", str(good_folder), "--out", str(out), "--device", "cpu"],
        f"{path}: not a readable safetensors checkpoint",
    )
    assert not out.exists()


def test_predict_on_a_directory_without_a_run(tmp_path, capsys, good_folder):
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(tmp_path), "--data", str(good_folder), "--out", str(out)],
        f"{tmp_path}: no seed_*/{CHECKPOINT} found",
    )
    assert not out.exists()


# --------------------------------------------------------------------------- prediction


def test_predict_with_wrong_columns_and_widths_lists_every_difference(run_dir, folder, tmp_path, capsys):
    frame = pd.read_csv(folder / "genetic.csv", dtype=str)
    frame = frame.drop(columns=[frame.columns[-1]])  # one column fewer
    frame.to_csv(folder / "genetic.csv", index=False)
    frame = pd.read_csv(folder / "clinical.csv", dtype=str)
    frame["clinical_extra"] = "1"  # one column more
    frame.to_csv(folder / "clinical.csv", index=False)
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(run_dir), "--data", str(folder), "--out", str(out), "--device", "cpu"],
        "does not match the training data",
        "modality 'genetic': missing columns ['genetic_4']",
        "modality 'clinical': unexpected columns ['clinical_extra']",
    )
    assert not out.exists()


def test_predict_with_an_unknown_modality(run_dir, folder, tmp_path, capsys):
    spec = yaml.safe_load((folder / "dataset.yaml").read_text())
    spec["modalities"][0]["name"] = "mri"
    (folder / "dataset.yaml").write_text(yaml.safe_dump(spec))
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(run_dir), "--data", str(folder), "--out", str(out), "--device", "cpu"],
        "modalities not in the training data: ['mri']",
    )
    assert not out.exists()


def test_predict_with_a_non_finite_feature(run_dir, folder, tmp_path, capsys):
    sample = edit_line(folder / "genetic.csv", 2, lambda f: [f[0], "inf", *f[2:]])
    out = tmp_path / "p.csv"
    cli_error(
        capsys,
        ["predict", "--run", str(run_dir), "--data", str(folder), "--out", str(out), "--device", "cpu"],
        "genetic.csv: line 2",
        repr(sample),
        "'inf'",
    )
    assert not out.exists()


def test_predict_ignores_labels_training_never_saw(run_dir, tiny_data, folder, tmp_path):
    """Prediction never reads labels, so a class name unknown to training is not an error: the
    probabilities equal those of the same samples without any label file, and the label becomes
    -1 ("unknown") in the batch rather than being mistaken for a training class."""
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    labels.loc[0, "label"] = "class_9"
    labels.to_csv(folder / "labels.csv", index=False)
    unlabelled = write_folder(tiny_data, tmp_path / "unlabelled", labels=False)
    run = load_run(run_dir, 0, "cpu")
    with_unknown = load_new_data(folder)
    assert "class_9" in with_unknown.class_names
    np.testing.assert_array_equal(
        run.predict_proba(with_unknown), run.predict_proba(load_new_data(unlabelled))
    )
    batch_labels = run.to_batch(with_unknown).labels
    assert batch_labels[0] == -1
    known = [run.class_names.index(c) for c in labels["label"][1:]]
    assert batch_labels[1:].tolist() == known


# --------------------------------------------------------------------------- divergence


def test_divergence_stops_naming_the_epoch_and_keeps_the_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    """From the third epoch on the loss is made infinite (as a too large learning rate or a
    broken feature would); training must stop after that epoch with a message naming it, and
    the checkpoint of epoch 2 must stay loadable."""
    epoch_now = {"epoch": 0}
    train_epoch, loss = Trainer.train_epoch, Trainer.loss

    def tracked_epoch(self, data, epoch, bar=None):
        epoch_now["epoch"] = epoch
        return train_epoch(self, data, epoch, bar)

    def poisoned_loss(self, *args, **kwargs):
        total, *parts = loss(self, *args, **kwargs)
        return (total * float("inf") if epoch_now["epoch"] >= 2 else total), *parts

    monkeypatch.setattr(Trainer, "train_epoch", tracked_epoch)
    monkeypatch.setattr(Trainer, "loss", poisoned_loss)
    out = tmp_path / "run"
    cli_error(
        capsys,
        ["train", "--out", str(out), *sets(TINY + ["train.seeds=[0]"]), "--epochs", "5"],
        "epoch 3, step 1: the loss became",
        "training stopped",
    )
    assert not (out / "results.json").exists() and not (out / "seed_0" / "metrics.json").exists()
    kept = load_seed_checkpoint(out / "seed_0" / CHECKPOINT)
    assert kept.meta["best_epoch"] == 2  # epoch 1 is warm-up; epoch 2 is the only good one
    assert all(torch.isfinite(v).all() for v in kept.model.state_dict().values() if v.is_floating_point())
    # the resumable state is that of the last finished epoch, not the diverged one
    assert load_training_state(out / "seed_0" / TRAINING_STATE)["epoch"] == 2


# --------------------------------------------------------------------------- tune


def tune_argv(out: Path, trials: int = 1, space: Path | None = None) -> list[str]:
    argv = ["tune", "--config", "configs/synthetic.yaml", "--method", "zero", "--trials", str(trials)]
    argv += ["--out", str(out), "--no-progress"]
    argv += sets(["data.options.n_samples=120", "train.epochs=2", "train.warmup_epochs=1"])
    return argv + (["--space", str(space)] if space is not None else [])


def test_tune_without_the_tune_extra_names_the_extra(capsys, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails as if not installed
    cli_error(capsys, tune_argv(tmp_path / "t"), 'pip install -e ".[tune]"', "moe-retriever[tune]")
    assert not (tmp_path / "t").exists()


def test_tune_with_no_trials_is_refused_before_anything_is_written(capsys, tmp_path):
    cli_error(capsys, tune_argv(tmp_path / "t", trials=0), "--trials must be at least 1", "got 0")
    assert not (tmp_path / "t").exists()  # no study.db, no space.yaml


@pytest.mark.parametrize(
    "entry, fragments",
    [
        (
            {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}},
            ("'train.learning_rate'", "unknown key(s) ['learning_rate']"),
        ),
        (
            {"train.lr": {"type": "float", "low": "small", "high": 1e-2}},
            ("'train.lr'", "low 'small' is not a number"),
        ),
        (
            {"train.batch_size": {"type": "categorical", "choices": [16, "big"]}},
            ("'train.batch_size'", "train.batch_size"),
        ),
    ],
)
def test_tune_space_entries_are_checked_against_the_config_naming_key_and_file(
    capsys, tmp_path, entry, fragments
):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(entry))
    cli_error(capsys, tune_argv(tmp_path / "t", space=space), *fragments, str(space))
    assert not (tmp_path / "t").exists()


def test_tune_space_bounds_written_like_1e_4_are_numbers(tmp_path):
    from moe_retriever.tuning import load_space, search_space

    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {type: float, low: 1e-4, high: 3e-3, log: true}\n")
    assert yaml.safe_load(space.read_text())["train.lr"]["low"] == "1e-4"  # what PyYAML reads
    cfg = load_config("configs/synthetic.yaml", ["method=zero"])
    searched = search_space("zero", cfg, load_space(space), source=space)
    assert searched["train.lr"]["low"] == 1e-4 and searched["train.lr"]["high"] == 3e-3


# --------------------------------------------------------------------------- compare

SYNTHETIC = str(Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml")


@pytest.mark.parametrize(
    "top, datasets, fragments",
    [
        ({}, [{"config": SYNTHETIC, "folder": "x"}], ("datasets[0]", "unknown key(s) ['folder']")),
        ({"seed": [0]}, [{"config": SYNTHETIC}], ("top level: unknown key(s) ['seed']",)),
        ({}, [{"label": "x"}], ("datasets[0]: needs config", "or data")),
        ({}, [{"config": "nowhere.yaml"}], ("datasets[0].config: nowhere.yaml not found next to",)),
        ({}, [{"data": "no_folder"}], ("datasets[0].data: no_folder not found next to",)),
        (
            {},
            [{"config": SYNTHETIC, "label": "a"}, {"data": ".", "label": "a"}],
            ("datasets[0] and [1] are both labelled 'a'",),
        ),
        (
            {},
            [{"config": SYNTHETIC, "overrides": ["train.epoch=3"]}],
            ("dataset 'synthetic (train.epoch=3)'", "train: unknown key(s) ['epoch']"),
        ),
        (
            {"protocol": {"kind": "cv", "folds": 3, "repeats": 2}},
            [{"config": SYNTHETIC, "overrides": ["protocol.repeats=4"]}],
            ("comparison protocol", "4 repeats need 4 seeds"),
        ),
        (
            {"protocol": {"kind": "cv", "fold": 3}},
            [{"config": SYNTHETIC}],
            ("protocol: unknown key(s) ['fold']",),
        ),
    ],
    ids=[
        "unknown-dataset-key",
        "unknown-top-level-key",
        "dataset-without-config-or-data",
        "config-not-found",
        "data-not-found",
        "duplicate-labels",
        "unknown-override-key",
        "protocol-override-needs-more-seeds",
        "unknown-protocol-key",
    ],
)
def test_bad_compare_configs_name_the_compare_file_and_the_key(capsys, tmp_path, top, datasets, fragments):
    config = tmp_path / "study.yaml"
    spec = {
        "seeds": [0, 1],
        **top,
        "studies": [{"title": "t", "methods": ["majority"], "datasets": datasets}],
    }
    config.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    err = cli_error(capsys, ["compare", "--config", str(config), "--out", str(out)], str(config), *fragments)
    assert err.count("\n") == 1  # one line
    assert not out.exists()


# --------------------------------------------------------------------------- the scikit-learn estimator


def _estimator_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 4)), columns=["a_0", "a_1", "b_0", "b_1"])
    X.index = [f"p{i}" for i in range(30)]
    return X, np.array(["x", "y"] * 15, dtype=object)


def estimator_string_cell(X, y):
    X = X.astype(object)
    X.loc["p3", "b_1"] = "n/a?"
    return X, y, DataValidationError, ("X: row 'p3', column 'b_1': 'n/a?' is not a finite number",)


def estimator_infinite_cell(X, y):
    X.loc["p5", "a_0"] = np.inf
    return X, y, DataValidationError, ("X: row 'p5', column 'a_0': inf is not a finite number",)


def estimator_missing_label(X, y):
    y = y.copy()
    y[7] = None
    return X, y, DataValidationError, ("y: row 'p7': the label is missing",)


def estimator_warmup_longer_than_epochs(X, y):
    from moe_retriever.config import ConfigError

    return X, y, ConfigError, ("train.warmup_epochs", "warmup_epochs=6", "keyword warmup_epochs=")


@pytest.mark.parametrize(
    "break_input",
    [
        estimator_string_cell,
        estimator_infinite_cell,
        estimator_missing_label,
        estimator_warmup_longer_than_epochs,
    ],
)
def test_estimator_bad_input_names_the_row_column_or_keyword(break_input):
    from moe_retriever.sklearn import MoERetrieverClassifier

    X, y, error, fragments = break_input(*_estimator_frame())
    warmup = 6 if break_input is estimator_warmup_longer_than_epochs else None
    clf = MoERetrieverClassifier(modalities={"a": "a_", "b": "b_"}, epochs=4, warmup_epochs=warmup)
    with pytest.raises(error) as raised:
        clf.fit(X, y)
    assert "\n" not in str(raised.value)
    for fragment in fragments:
        assert fragment in str(raised.value)
    assert not hasattr(clf, "classes_")  # nothing fitted


def test_estimator_short_epochs_without_a_warm_up_trains_with_a_shorter_one():
    from moe_retriever.sklearn import MoERetrieverClassifier

    assert MoERetrieverClassifier(epochs=4).resolved_config().train.warmup_epochs == 3
    assert MoERetrieverClassifier(epochs=1).resolved_config().train.warmup_epochs == 0
