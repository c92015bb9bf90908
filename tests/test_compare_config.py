"""A compare config means what it says: a dataset's overrides merge into the comparison's protocol,
dataset entries may name a data folder, relative paths are read next to the compare file, labels
are unique, and a broken stored record is trained again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from _tiny_run import TINY, write_folder
from moe_retriever.config import ConfigError, apply_overrides, load_config
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.comparison import Comparison, entry_config, load_compare_config, run_comparison

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = str(ROOT / "configs" / "synthetic.yaml")


def write_compare(path: Path, datasets: list[dict], **top) -> Path:
    spec = {
        "name": "c",
        "seeds": [0, 1],
        **top,
        "studies": [{"title": "t", "methods": ["majority"], "datasets": datasets}],
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def resolved_protocol(config: Path, dataset: int = 0) -> tuple[str, int, int]:
    cmp = load_compare_config(config)
    ds = cmp.studies[0].datasets[dataset]
    cfg = Comparison(cmp, config.parent / "out", "cpu").with_protocol(entry_config(cmp, ds, "majority"), ds)
    return cfg.protocol.kind, cfg.protocol.folds, cfg.protocol.repeats


def test_a_dataset_protocol_override_merges_into_the_comparison_protocol(tmp_path):
    config = write_compare(
        tmp_path / "c.yaml",
        [
            {"config": SYNTHETIC, "label": "three folds", "overrides": ["protocol.folds=3"]},
            {"config": SYNTHETIC, "label": "study's", "overrides": []},
        ],
        protocol={"kind": "cv", "folds": 5, "repeats": 2},
    )
    # configs/synthetic.yaml itself is holdout: the study's cv must survive the override
    assert resolved_protocol(config, 0) == ("cv", 3, 2)
    assert resolved_protocol(config, 1) == ("cv", 5, 2)


def test_a_protocol_override_of_every_run_merges_too_and_the_dataset_wins(tmp_path):
    config = write_compare(
        tmp_path / "c.yaml",
        [{"config": SYNTHETIC, "label": "a", "overrides": ["protocol.repeats=1"]}],
        protocol={"kind": "cv", "folds": 5, "repeats": 2},
        overrides=["protocol.folds=4", "protocol.repeats=2"],
    )
    assert resolved_protocol(config) == ("cv", 4, 1)


def test_a_protocol_override_merges_into_the_default_protocol_of_a_small_dataset(tmp_path):
    config = write_compare(
        tmp_path / "c.yaml",
        [{"config": SYNTHETIC, "label": "a", "overrides": ["protocol.folds=3"]}],
    )
    # 900 samples < CV_MAX_SAMPLES: the default is 5-fold cv repeated on both seeds
    assert resolved_protocol(config) == ("cv", 3, 2)


def tiny_experiment(path: Path) -> Path:
    """An experiment config of the tiny synthetic data (simulated drop p = 0.4)."""
    path.write_text(yaml.safe_dump(apply_overrides({}, [o for o in TINY if o.startswith("data.")])))
    return path


def test_relative_paths_are_read_next_to_the_compare_file_then_from_the_working_directory(
    tmp_path, monkeypatch
):
    nested = tmp_path / "studies"
    nested.mkdir()
    tiny_experiment(nested / "exp.yaml")
    config = write_compare(
        nested / "c.yaml",
        [
            {"config": "exp.yaml", "label": "next to the compare file"},
            {"config": "configs/synthetic.yaml", "label": "from the working directory"},
        ],
    )
    monkeypatch.chdir(ROOT)
    first, second = load_compare_config(config).studies[0].datasets
    assert Path(first.config).resolve() == (nested / "exp.yaml").resolve()
    assert Path(second.config).resolve() == (ROOT / "configs" / "synthetic.yaml").resolve()
    # the shipped configs name their experiment configs from the repository root
    shipped = load_compare_config("configs/compare/synthetic.yaml")
    assert shipped.studies[0].datasets[0].config == "configs/synthetic.yaml"


def test_a_dataset_entry_can_name_a_data_folder_which_keeps_its_own_gaps(tmp_path, monkeypatch):
    tiny = load_dataset(load_config(tiny_experiment(tmp_path / "exp.yaml")).data).subset(list(range(60)))
    write_folder(tiny, tmp_path / "clinic")
    # settings for any data, with a simulated drop p = 0.4
    (tmp_path / "settings.yaml").write_text(
        "data: {missing: {kind: drop, p: 0.4}}\ntrain: {epochs: 3, warmup_epochs: 1}\n"
    )
    config = write_compare(
        tmp_path / "c.yaml", [{"data": "clinic"}, {"config": "settings.yaml", "data": "clinic"}]
    )
    monkeypatch.chdir(ROOT)
    cmp = load_compare_config(config)
    for ds in cmp.studies[0].datasets:
        cfg = entry_config(cmp, ds, "majority")
        assert Path(cfg.data.path).resolve() == (tmp_path / "clinic").resolve()
        # a config's simulated missingness does not apply to the data's own files
        assert cfg.data.missing.kind == "natural" and cfg.data.missing_test is None
        loaded = Comparison(cmp, tmp_path / "out", "cpu").dataset(cfg)
        assert loaded.ids == tiny.ids and loaded.observed.equal(tiny.observed)
    assert [ds.label for ds in cmp.studies[0].datasets] == ["clinic", "settings on clinic"]


def test_entries_sharing_a_config_get_distinct_labels_and_equal_labels_are_refused(tmp_path):
    config = write_compare(
        tmp_path / "c.yaml",
        [
            {"config": SYNTHETIC},
            {"config": SYNTHETIC, "overrides": ["data.missing.p=0.5"]},
            {"config": SYNTHETIC, "overrides": ["data.missing.p=0.7"], "label": "high rate"},
        ],
    )
    labels = [ds.label for ds in load_compare_config(config).studies[0].datasets]
    assert labels == ["synthetic", "synthetic (data.missing.p=0.5)", "high rate"]
    clash = write_compare(
        tmp_path / "clash.yaml",
        [
            {"config": SYNTHETIC, "label": "same"},
            {"config": SYNTHETIC, "label": "same", "overrides": ["a.b=1"]},
        ],
    )
    with pytest.raises(ConfigError, match=r"clash\.yaml: studies\[0\].*datasets\[0\] and \[1\].*'same'"):
        load_compare_config(clash)


def test_a_truncated_record_is_trained_again_and_the_rerun_says_so(tmp_path):
    exp = tiny_experiment(tmp_path / "exp.yaml")
    config = write_compare(
        tmp_path / "c.yaml", [{"config": str(exp), "label": "tiny"}], protocol={"kind": "holdout"}
    )
    out = tmp_path / "out"
    run_comparison(config, out, "cpu", log=lambda _: None)
    record = next((out / "runs").glob("*/seed_1.json"))
    before = json.loads(record.read_text())
    record.write_text(record.read_text()[:200])
    lines: list[str] = []
    results = run_comparison(config, out, "cpu", log=lines.append)
    assert any(str(record) in line and "trained again" in line for line in lines), lines
    after = json.loads(record.read_text())
    timing = ("cpu_seconds", "wall_seconds")
    assert {k: v for k, v in after.items() if k not in timing} == {
        k: v for k, v in before.items() if k not in timing
    }
    assert results["studies"][0]["tables"][0]["rows"][0]["seeds"] == [0, 1]
