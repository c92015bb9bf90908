"""A compare config means what it says: a dataset's overrides merge into the comparison's protocol,
dataset entries may name a data folder, relative paths are read next to the compare file, labels
are unique, and a broken stored record is trained again."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from moe_retriever.training.comparison import Comparison, entry_config, load_compare_config

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
