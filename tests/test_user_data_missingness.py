"""A user's own data (``--data`` / ``data.path``) keeps its own gaps: the base config's simulated
missingness applies to it only when the command line asks for it, or when the config file names
both the data and its missingness; every run says which missingness is in effect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from moe_retriever.cli import build_parser, main
from moe_retriever.commands.common import config_overrides
from moe_retriever.config import load_config
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import load_dataset
from moe_retriever.data.sources.folder import load_folder

AD_DATA = Path(__file__).resolve().parents[1] / "configs" / "ad_data.yaml"
N = 80
# rows of each modality's file: a misses 16 of 80 samples (0.2), b misses 24 (0.3), none both
KEPT = {"a": range(0, 64), "b": range(24, 80)}


def write_folder(root: Path) -> Path:
    """A folder-format dataset of two tabular modalities with known gaps (no splits file)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    ids = [f"s{i:03d}" for i in range(N)]
    y = np.arange(N) % 2
    (root / "labels.csv").write_text(
        "id,label\n" + "".join(f"{s},{c}\n" for s, c in zip(ids, y, strict=True))
    )
    for name, rows in KEPT.items():
        x = rng.normal(size=(N, 3)) + y[:, None]
        (root / f"{name}.csv").write_text(
            f"id,{name}0,{name}1,{name}2\n"
            + "".join(f"{ids[i]},{','.join(f'{v:.4f}' for v in x[i])}\n" for i in rows)
        )
    spec = {
        "label": {"file": "labels.csv", "column": "label"},
        "modalities": [{"name": "a", "file": "a.csv"}, {"name": "b", "file": "b.csv"}],
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root


def cli_config(*argv: str):
    """The config `moe-retriever train ARGV` trains with (the train command's own path)."""
    args = build_parser().parse_args(["train", *argv])
    return load_config(args.config, config_overrides(args))


def training_missing_rates(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-modality missing rates of seed 0's training split: as trained, and in the folder."""
    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    own = load_folder(cfg.data.path).observed[data.train_index]
    return (~data.train.observed).double().mean(0), (~own).double().mean(0)


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_folder(tmp_path / "mine")


def test_data_flag_keeps_the_folders_own_gaps(folder):
    cfg = cli_config("--config", str(AD_DATA), "--data", str(folder))
    assert cfg.data.missing.kind == "natural"
    trained, own = training_missing_rates(cfg)
    assert torch.equal(trained, own)
    # the folder's own rates, overall: a 0.2, b 0.3
    assert (~load_dataset(cfg.data).observed).double().mean(0).tolist() == pytest.approx([0.2, 0.3])


def test_set_data_path_keeps_the_folders_own_gaps(folder):
    cfg = cli_config("--config", str(AD_DATA), "--set", f"data.path={folder}")
    assert cfg.data.missing.kind == "natural"
    trained, own = training_missing_rates(cfg)
    assert torch.equal(trained, own)


@pytest.mark.parametrize(
    "asked, p",
    [
        (["--set", "data.missing.kind=drop"], 0.3),  # the config file's p
        (["--set", "data.missing.p=0.5"], 0.5),  # the config file's kind
        (["--set", "data.missing={kind: drop, p: 0.4}"], 0.4),
    ],
)
def test_simulated_gaps_asked_for_on_the_command_line_apply(folder, asked, p):
    cfg = cli_config("--config", str(AD_DATA), "--data", str(folder), *asked)
    assert (cfg.data.missing.kind, cfg.data.missing.p) == ("drop", p)
    trained, own = training_missing_rates(cfg)
    assert (trained > own).all()


def test_a_config_file_naming_data_and_missingness_keeps_both(folder, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(folder), "missing": {"kind": "drop", "p": 0.3}}}))
    cfg = cli_config("--config", str(config))
    assert (cfg.data.missing.kind, cfg.data.missing.p) == ("drop", 0.3)
    # ... also when --data points the same settings at another folder
    other = write_folder(tmp_path / "other")
    cfg = cli_config("--config", str(config), "--data", str(other))
    assert (cfg.data.path, cfg.data.missing.kind) == (str(other), "drop")


def test_a_built_in_dataset_keeps_the_configs_simulated_gaps():
    cfg = cli_config("--config", str(AD_DATA))
    assert (cfg.data.missing.kind, cfg.data.missing.p) == ("drop", 0.3)


def test_a_shift_of_the_base_config_does_not_apply_to_data_either(folder, tmp_path):
    config = tmp_path / "shift.yaml"
    shifted = {"name": "synthetic", "missing": {"kind": "drop"}, "missing_test": {"kind": "drop", "p": 0.5}}
    config.write_text(yaml.safe_dump({"data": shifted}))
    cfg = cli_config("--config", str(config), "--data", str(folder))
    assert cfg.data.missing.kind == "natural" and cfg.data.missing_test is None


def test_train_prints_the_missingness_in_effect(folder, tmp_path, capsys):
    common = ["--config", str(AD_DATA), "--data", str(folder), "--seeds", "0", "--epochs", "1"]
    common += ["--no-progress", "--set", "train.warmup_epochs=0", "--device", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "natural")]) == 0
    printed = capsys.readouterr().out
    assert "missingness: natural (the data's own gaps; no simulated drop)" in printed
    assert "drop p=0.3" in printed and "not applied" in printed  # what the config file had
    assert "a 0.200, b 0.300" in printed
    combos = json.loads((tmp_path / "natural" / "combinations.json").read_text())
    own = load_folder(folder)
    assert combos["combinations"] == own.combination_counts()

    assert main(["train", *common, "--set", "data.missing.kind=drop", "--out", str(tmp_path / "drop")]) == 0
    printed = capsys.readouterr().out
    assert "missingness: simulated drop p=0.3 on top of the data's gaps (from " in printed
    assert "ad_data.yaml, --set data.missing.kind=drop)" in printed


def test_evaluate_and_tune_print_the_missingness_in_effect(folder, tmp_path, capsys):
    common = ["--config", str(AD_DATA), "--data", str(folder), "--seeds", "0", "--epochs", "1"]
    common += ["--no-progress", "--set", "train.warmup_epochs=0", "--device", "cpu"]
    run = tmp_path / "run"
    assert main(["train", *common, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    # the run's saved config names its data and its (natural) missingness together
    assert printed.startswith("missingness: natural (the data's own gaps; no simulated drop)\n")
    assert "a 0.200, b 0.300" in printed
    tune = ["tune", *common, "--trials", "1", "--out", str(tmp_path / "tune"), "--set", "data.missing.p=0.5"]
    assert main(tune) == 0
    printed = capsys.readouterr().out
    assert "missingness: simulated drop p=0.5 on top of the data's gaps" in printed
    assert "(from " in printed and "ad_data.yaml, --set data.missing.p=0.5)" in printed


# --------------------------------------------------------------------------- datasets --show-missing


def rates_row(printed: str) -> list[float]:
    """The overall missing rates of `datasets --show-missing`'s table (the `| all |` row)."""
    row = next(line for line in printed.splitlines() if line.startswith("| all |"))
    return [float(v) for v in row.strip("| ").split(" | ")[1:]]


@pytest.mark.parametrize("how", ["positional", "set"])
def test_show_missing_reads_a_folder(folder, capsys, how):
    given = [str(folder)] if how == "positional" else ["--set", f"data.path={folder}"]
    assert main(["datasets", "--show-missing", *given]) == 0
    printed = capsys.readouterr().out
    assert rates_row(printed) == [0.2, 0.3]
    assert "| combination | train | val | test | total |" in printed


def test_show_missing_of_a_folder_with_a_config_keeps_its_gaps_unless_asked(folder, capsys):
    assert main(["datasets", "--show-missing", str(folder), "--config", str(AD_DATA)]) == 0
    printed = capsys.readouterr().out
    assert rates_row(printed) == [0.2, 0.3]
    assert "not applied" in printed
    argv = ["datasets", "--show-missing", str(folder), "--config", str(AD_DATA)]
    assert main([*argv, "--set", "data.missing.kind=drop"]) == 0
    assert all(r > own for r, own in zip(rates_row(capsys.readouterr().out), [0.2, 0.3], strict=True))


def test_show_missing_of_a_name_and_a_data_path_is_an_error(folder, capsys):
    assert main(["datasets", "--show-missing", "synthetic", "--set", f"data.path={folder}"]) == 2
    err = capsys.readouterr().err
    assert "synthetic" in err and "data.path" in err
    assert main(["datasets", "--show-missing", str(folder / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_show_missing_of_a_built_in_name_is_not_overridden_by_the_configs_path(folder, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(folder)}}))
    assert main(["datasets", "--show-missing", "synthetic", "--config", str(config)]) == 0
    assert "# synthetic:" in capsys.readouterr().out
