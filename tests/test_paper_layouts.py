"""The paper's dataset layouts (ADNI, MIMIC-IV, CMU-MOSI, ENRICO) on small fixture files."""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL
from moe_retriever.config import DataConfig, load_config
from moe_retriever.data.dataset import DataValidationError
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import detect_format, load_dataset
from moe_retriever.data.sources.adni import load_adni
from moe_retriever.data.sources.enrico import load_enrico
from moe_retriever.data.sources.mimic import load_mimic
from moe_retriever.data.sources.nifti import read_nifti
from moe_retriever.training.experiment import run_experiment
from moe_retriever.training.run_files import load_seed_checkpoint

# =========================================================================== ADNI


def write_nifti_gz(path: Path, volume: np.ndarray) -> None:
    """NIfTI-1 written from the format's definition: 348-byte header, 4 extension bytes, voxels
    with x fastest."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, 2, 8)  # uint8, 8 bits
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<3f", header, 108, 352.0, 1.0, 0.0)  # vox_offset, scl_slope, scl_inter
    header[344:348] = b"n+1\0"
    path.write_bytes(gzip.compress(bytes(header) + bytes(4) + volume.astype(np.uint8).tobytes(order="F")))


def write_h5ad(path: Path, obs: list[str], x: np.ndarray, sparse: bool = False) -> None:
    """The AnnData >= 0.8 on-disk layout (what anndata.write_h5ad produces)."""
    text = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"], f.attrs["encoding-version"] = "anndata", "0.1.0"
        if sparse:
            rows, cols = np.nonzero(np.nan_to_num(x, nan=1.0))
            g = f.create_group("X")
            g.attrs["encoding-type"], g.attrs["shape"] = "csr_matrix", np.array(x.shape)
            g["data"] = x[rows, cols]
            g["indices"] = cols.astype(np.int32)
            g["indptr"] = np.searchsorted(rows, np.arange(x.shape[0] + 1)).astype(np.int32)
        else:
            f["X"] = x
        for key, names in (("obs", obs), ("var", [f"rs{i}" for i in range(x.shape[1])])):
            g = f.create_group(key)
            g.attrs["_index"], g.attrs["encoding-type"] = "_index", "dataframe"
            g.create_dataset("_index", data=np.array(names, dtype=object), dtype=text)


PTIDS = [f"011_S_{i:04d}" for i in range(1, 11)]
DIAGNOSIS = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]


def make_adni(root: Path, sparse_genomic: bool = False) -> dict:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    # 011_S_0010 has a label but no data anywhere: it is left out
    pd.DataFrame({"PTID": PTIDS, "DIAGNOSIS": DIAGNOSIS, "VISCODE": "bl"}).to_csv(
        root / "label.csv", index=False
    )
    (root / "PTID_splits.json").write_text(
        json.dumps({"training": PTIDS[:5], "validation": PTIDS[5:7], "testing": PTIDS[7:] + ["999_S_9999"]})
    )
    # genomic: subjects 1-7 and one unlabelled subject; a NaN cell filled with the column's mode
    (root / "genomic").mkdir()
    g_ids = PTIDS[:7] + ["022_S_0001"]
    g = rng.integers(0, 3, size=(8, 5)).astype(np.float32)
    g[:, 1] = [2, 2, 2, 0, 1, 2, 0, 1]
    g[3, 1] = np.nan
    write_h5ad(root / "genomic" / "genomic_merged.h5ad", g_ids, g, sparse_genomic)
    # clinical: every subject but 10; subject 9's row is empty (missing); a leaking column
    (root / "clinical").mkdir()
    clin = pd.DataFrame(
        {
            "PTID": PTIDS[:9],
            "AGE": rng.normal(70, 5, 9).round(1),
            "PTCOGBEG_2": 1.0,
            "WEIGHT": rng.normal(80, 9, 9).round(1),
        }
    )
    clin.loc[8, ["AGE", "PTCOGBEG_2", "WEIGHT"]] = np.nan
    clin.to_csv(root / "clinical" / "clinical_merged_mean.csv", index=False)
    (root / "biospecimen").mkdir()
    bio = pd.DataFrame(
        {"PTID": [PTIDS[i] for i in (0, 2, 4, 6)], "TAU": [1.0, 2.0, 3.0, 4.0], "ABETA": [5.0, 6.0, 7.0, 8.0]}
    )
    bio.to_csv(root / "biospecimen" / "biospecimen_merged_mean.csv", index=False)
    # image: an atlas with grey matter (150) inside a box, scans as rows of grey-matter voxels
    (root / "image").mkdir()
    atlas = np.zeros((7, 6, 5), dtype=np.uint8)
    atlas[1:6, 1:5, 1:4] = np.where(rng.random((5, 4, 3)) < 0.6, 150, 250)
    write_nifti_gz(root / "image" / "BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz", atlas)
    n_vox = int((atlas == 150).sum())
    scans = [
        "011_S_0001_2010-01-05",
        "011_S_0002_2011-03-01",
        "011_S_0001_2012-06-30",
        "011_S_0004_2009-09-09",
        "011_S_0005_2010-10-10",
        "033_S_0001_2010-01-01",
    ]
    rows = rng.random((len(scans), n_vox)).astype(np.float32) + 0.5
    rows[4] = 0.0  # a scan the pipeline failed on: subject 5 has no image
    np.save(root / "image" / "ADNI_G.npy", rows)
    (root / "image" / "ADNI_subj.txt").write_text("\n".join(scans) + "\n")
    return {"genomic": (g_ids, g), "clinical": clin, "atlas": atlas, "scans": rows}


def block_mean(volume: np.ndarray, k: int) -> np.ndarray:
    """Average over k x k x k blocks; blocks cut by the border average what they cover."""
    out_shape = [-(-s // k) for s in volume.shape]
    out = np.zeros(out_shape, dtype=np.float64)
    for i in range(out_shape[0]):
        for j in range(out_shape[1]):
            for h in range(out_shape[2]):
                out[i, j, h] = volume[i * k : (i + 1) * k, j * k : (j + 1) * k, h * k : (h + 1) * k].mean()
    return out


def test_nifti_reader_returns_x_y_z_indexing(tmp_path):
    vol = np.arange(7 * 6 * 5).reshape(7, 6, 5) % 251
    write_nifti_gz(tmp_path / "m.nii.gz", vol)
    np.testing.assert_array_equal(read_nifti(tmp_path / "m.nii.gz"), vol)
    (tmp_path / "bad.nii").write_bytes(b"\0" * 400)
    with pytest.raises(DataValidationError, match="bad.nii: not a NIfTI-1 file"):
        read_nifti(tmp_path / "bad.nii")


def test_adni_layout_loads_ids_labels_modalities_and_split(tmp_path):
    ref = make_adni(tmp_path / "adni")
    assert detect_format(tmp_path / "adni") == "adni"
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(DataConfig(path=str(tmp_path / "adni"), options={"image_pool": 1}))
    messages = " ".join(str(w.message) for w in record)
    # 9 (an empty clinical row only) and 10 (nothing) observe no modality: left out, and said so
    assert "011_S_0009" in messages and "011_S_0010" in messages and "999_S_9999" in messages
    assert ds.ids == PTIDS[:8]
    assert ds.labels.tolist() == [d - 1 for d in DIAGNOSIS[:8]]
    assert ds.class_names == ["CN", "MCI", "Dementia"]
    assert ds.modality_names == ["image", "genomic", "clinical", "biospecimen"]
    observed = ["".join(str(int(v)) for v in row) for row in ds.observed.tolist()]  # I G C B
    assert observed == ["1111", "1110", "0111", "1110", "0111", "0110", "0111", "0010"]
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": [0, 1, 2, 3, 4],
        "val": [5, 6],
        "test": [7],
    }

    _, g = ref["genomic"]
    genomic = ds.features["genomic"].numpy()
    filled = g.copy()
    filled[3, 1] = 2.0  # the mode of column 1 over subjects 1-7 (2, 2, 2, ?, 1, 2, 0)
    np.testing.assert_array_equal(genomic[:7], filled[:7])
    assert ds.modalities[1].columns == tuple(f"rs{i}" for i in range(5))

    clin = ref["clinical"]
    assert ds.modalities[2].columns == ("AGE", "WEIGHT")  # the diagnosis-revealing column is gone
    np.testing.assert_allclose(
        ds.features["clinical"].numpy(), clin[["AGE", "WEIGHT"]].to_numpy()[:8], rtol=1e-6
    )
    np.testing.assert_array_equal(
        ds.features["biospecimen"][[0, 2, 4, 6]].numpy(), [[1, 5], [2, 6], [3, 7], [4, 8]]
    )

    # image: the latest scan of each subject, voxels put back where the atlas says, cropped to
    # the atlas's grey-matter bounding box
    atlas = ref["atlas"] == 150
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in np.nonzero(atlas))
    assert ds.modalities[0].kind == "volume"
    assert ds.modalities[0].shape == (1, *atlas[box].shape)
    for subject, scan in ((0, 2), (1, 1), (3, 3)):  # subject 1's scans are rows 0 and 2: row 2 is later
        vol = np.zeros(atlas.shape, dtype=np.float32)
        vol[atlas] = ref["scans"][scan]
        np.testing.assert_array_equal(ds.features["image"][subject, 0].numpy(), vol[box])


def test_adni_pooling_letters_and_sparse_genomic(tmp_path):
    ref = make_adni(tmp_path / "adni", sparse_genomic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_adni(tmp_path / "adni", modalities="IGC", image_pool=2)
    assert ds.modality_names == ["image", "genomic", "clinical"]
    atlas = ref["atlas"] == 150
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in np.nonzero(atlas))
    vol = np.zeros(atlas.shape, dtype=np.float32)
    vol[atlas] = ref["scans"][2]
    np.testing.assert_allclose(ds.features["image"][0, 0].numpy(), block_mean(vol[box], 2), rtol=1e-5)
    _, g = ref["genomic"]
    np.testing.assert_array_equal(ds.features["genomic"][:2].numpy(), g[:2])


def test_adni_bad_input_names_the_file_row_and_column(tmp_path):
    make_adni(tmp_path / "a")
    labels = pd.read_csv(tmp_path / "a" / "label.csv")
    labels.loc[3, "DIAGNOSIS"] = 4
    labels.to_csv(tmp_path / "a" / "label.csv", index=False)
    with pytest.raises(
        DataValidationError, match=r"label.csv: row 5, column DIAGNOSIS: '4' is not 1, 2 or 3"
    ):
        load_adni(tmp_path / "a")

    make_adni(tmp_path / "b")
    clin = tmp_path / "b" / "clinical" / "clinical_merged_mean.csv"
    frame = pd.read_csv(clin, dtype=str)
    frame.loc[1, "WEIGHT"] = "heavy"
    frame.to_csv(clin, index=False)
    with pytest.raises(
        DataValidationError, match=r"clinical_merged_mean.csv: row 3, column 'WEIGHT': 'heavy'"
    ):
        load_adni(tmp_path / "b", modalities=["clinical"])

    make_adni(tmp_path / "c")
    bio = tmp_path / "c" / "biospecimen" / "biospecimen_merged_mean.csv"
    bio.write_text(bio.read_text() + "011_S_0001,9,9\n")
    with pytest.raises(
        DataValidationError, match=r"biospecimen_merged_mean.csv: id '011_S_0001' appears twice"
    ):
        load_adni(tmp_path / "c", modalities="B")

    make_adni(tmp_path / "d")
    subj = tmp_path / "d" / "image" / "ADNI_subj.txt"
    subj.write_text(subj.read_text() + "011_S_0007_2015-01-01\n")
    with pytest.raises(DataValidationError, match=r"ADNI_G.npy: 6 rows, but .*ADNI_subj.txt lists 7 scans"):
        load_adni(tmp_path / "d", modalities="I")

    with pytest.raises(ValueError, match=r"unknown letter\(s\) \['X'\]"):
        load_adni(tmp_path / "d", modalities="IX")
    # with image and genomic only, subject 8 (clinical only) is left out and the test part is empty
    with pytest.raises(DataValidationError, match=r"split file's test part.*use_splits: false"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_adni(tmp_path / "c", modalities="IG")


# =========================================================================== MIMIC


def make_mimic(root: Path, code_as_numpy: bool = False) -> dict:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    subjects = [10_000 + 7 * i for i in range(12)]
    mortality = [0, 1] * 6
    pd.DataFrame({"subject_id": subjects, "one_year_mortality": mortality}).to_csv(
        root / "labels.csv", index=False
    )
    (root / "PTID_splits_mimic.json").write_text(
        json.dumps({"training": subjects[:8], "validation": subjects[8:10], "testing": subjects[10:]})
    )
    lab = rng.normal(size=(12, 4)).astype(np.float32)
    lab[2] = np.nan  # no lab values at all: lab is missing
    lab[5, 1] = np.nan  # a single absent measurement
    torch.save(torch.from_numpy(lab), root / "lab_x.pt")
    lengths = np.array([5, 3, 1, 4, 0, 2, 5, 5, 3, 1, 2, 4])  # subject 4 has no note
    note = np.zeros((12, 5, 3), dtype=np.float32)
    for i, n in enumerate(lengths):
        note[i, :n] = rng.normal(size=(n, 3)) + 3.0
    torch.save(torch.from_numpy(note), root / "note_x.pt")
    # codes as a list of per-subject sequences of different lengths; subject 7 has none
    codes = [torch.randint(1, 5, (int(k), 2)).float() for k in rng.integers(1, 4, 12)]
    codes[7] = torch.zeros(0, 2)
    if code_as_numpy:
        torch.save(np.stack([c.sum(0).numpy() for c in codes]), root / "code_x.pt")
    else:
        torch.save(codes, root / "code_x.pt")
    return {"subjects": subjects, "lab": lab, "note": note, "lengths": lengths, "codes": codes}


def test_mimic_layout_loads_tabular_padded_and_ragged_rows(tmp_path):
    ref = make_mimic(tmp_path / "m")
    assert detect_format(tmp_path / "m") == "mimic"
    ds = load_dataset(DataConfig(path=str(tmp_path / "m")))
    assert ds.ids == [str(s) for s in ref["subjects"]]
    assert ds.labels.tolist() == [0, 1] * 6 and ds.class_names == ["alive", "deceased"]
    assert ds.modality_names == ["lab", "note", "code"]
    assert [s.kind for s in ds.modalities] == ["tabular", "sequence", "sequence"]
    missing = (~ds.observed).nonzero().tolist()
    assert missing == [[2, 0], [4, 1], [7, 2]]
    expected_lab = np.nan_to_num(ref["lab"], nan=0.0)
    np.testing.assert_array_equal(ds.features["lab"][[0, 5]].numpy(), expected_lab[[0, 5]])
    np.testing.assert_array_equal(ds.lengths["note"].numpy(), ref["lengths"])
    np.testing.assert_array_equal(ds.features["note"].numpy(), ref["note"])
    code_lengths = [c.shape[0] for c in ref["codes"]]
    assert ds.lengths["code"].tolist() == code_lengths
    assert ds.features["code"].shape == (12, max(code_lengths), 2)
    for i, c in enumerate(ref["codes"]):
        np.testing.assert_array_equal(ds.features["code"][i, : c.shape[0]].numpy(), c.numpy())
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": list(range(8)),
        "val": [8, 9],
        "test": [10, 11],
    }


def test_mimic_non_tensor_pt_needs_trust_pickle(tmp_path):
    make_mimic(tmp_path / "m", code_as_numpy=True)
    with pytest.raises(DataValidationError, match=r"code_x.pt: holds Python objects.*--trust-pickle"):
        load_mimic(tmp_path / "m")
    ds = load_mimic(tmp_path / "m", trust_pickle=True, modalities="LC")
    assert ds.modality_names == ["lab", "code"] and ds.modalities[1].shape == (2,)


def test_mimic_list_of_vectors_is_tabular(tmp_path):
    make_mimic(tmp_path / "m")
    vectors = [torch.full((3,), float(i + 1)) for i in range(12)]
    vectors[4] = torch.zeros(0)  # no lab values for subject 4
    torch.save(vectors, tmp_path / "m" / "lab_x.pt")
    with pytest.warns(UserWarning) as record:
        ds = load_mimic(tmp_path / "m", modalities=["lab"])
    assert "1 labelled sample(s) have no data" in str(record[0].message) and "'10028'" in str(
        record[0].message
    )
    assert ds.modalities[0].kind == "tabular" and ds.modalities[0].shape == (3,)
    assert "10028" not in ds.ids and len(ds) == 11  # lab was its only selected modality
    np.testing.assert_array_equal(ds.features["lab"][:, 0].numpy(), [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12])


def test_sequences_are_moved_to_start_with_inner_gaps_kept():
    from moe_retriever.data.sources.layout_utils import compact_sequences

    x = np.array(
        [
            [[0.0], [0.0], [1.0], [0.0], [2.0]],  # left-padded, a zero step inside
            [[3.0], [4.0], [0.0], [0.0], [0.0]],  # right-padded
            [[0.0], [0.0], [0.0], [0.0], [0.0]],  # empty
            [[0.0], [-np.inf], [5.0], [np.nan], [0.0]],
        ],
        dtype=np.float32,
    )
    out, lengths = compact_sequences(x)
    assert lengths.tolist() == [3, 2, 0, 1]
    np.testing.assert_array_equal(out[..., 0], [[1, 0, 2, 0, 0], [3, 4, 0, 0, 0], [0] * 5, [5, 0, 0, 0, 0]])


def test_mimic_rows_must_align_with_labels(tmp_path):
    make_mimic(tmp_path / "m")
    torch.save(torch.zeros(11, 4), tmp_path / "m" / "lab_x.pt")
    with pytest.raises(DataValidationError, match=r"lab_x.pt: 11 rows, but .*labels.csv has 12"):
        load_mimic(tmp_path / "m")


# =========================================================================== CMU-MOSI


def make_mosi(path: Path) -> dict:
    rng = np.random.default_rng(2)
    data, truth = {}, {}
    steps = {"vision": (6, 3), "audio": (6, 2), "text": (6, 4)}
    for part, n in (("train", 24), ("valid", 8), ("test", 8)):
        block = {
            "labels": rng.uniform(-3, 3, size=(n, 1, 1)).round(1),
            "id": np.array([[f"vid{part}{i // 2}", str(i % 2)] for i in range(n)]),
        }
        block["labels"][0, 0, 0] = 0.0  # neutral: not positive
        lengths = {}
        for m, (L, F) in steps.items():
            x = np.zeros((n, L, F), dtype=np.float32)
            ln = rng.integers(1, L + 1, size=n)
            if part == "train" and m == "vision":
                ln[3] = 0  # no face track: vision is missing
            for i in range(n):  # MultiBench left-pads
                x[i, L - ln[i] :] = rng.normal(size=(ln[i], F)) + 2.0
            if m == "audio":
                x[:, -1, 0] = np.where(ln > 0, -np.inf, 0.0)  # -inf in observed frames becomes 0
            block[m] = x
            lengths[m] = ln
        data[part] = block
        truth[part] = lengths
    with open(path, "wb") as fh:
        pickle.dump(data, fh)
    return {"data": data, "lengths": truth}


def test_mosi_pickle_is_refused_without_trust(tmp_path):
    make_mosi(tmp_path / "mosi_data.pkl")
    assert detect_format(tmp_path) == "mosi" and detect_format(tmp_path / "mosi_data.pkl") == "mosi"
    with pytest.raises(DataValidationError, match=r"mosi_data.pkl: this is a Python pickle.*--trust-pickle"):
        load_dataset(DataConfig(path=str(tmp_path)))


def test_mosi_layout_moves_sequences_to_the_start_binarises_labels_and_keeps_its_split(tmp_path):
    ref = make_mosi(tmp_path / "mosi_data.pkl")
    ds = load_dataset(DataConfig(path=str(tmp_path / "mosi_data.pkl"), format="mosi", trust_pickle=True))
    parts = ("train", "valid", "test")
    assert len(ds) == 40 and ds.modality_names == ["vision", "audio", "text"]
    assert ds.ids[:3] == ["vidtrain0_0", "vidtrain0_1", "vidtrain1_0"]
    sentiment = np.concatenate([ref["data"][p]["labels"].reshape(-1) for p in parts])
    assert ds.labels.tolist() == (sentiment > 0).astype(int).tolist()
    assert ds.labels[0] == 0 and ds.class_names == ["non-positive", "positive"]
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": list(range(24)),
        "val": list(range(24, 32)),
        "test": list(range(32, 40)),
    }
    assert ds.observed.sum().item() == 40 * 3 - 1 and not ds.observed[3, 0]
    for m in ds.modality_names:
        x = np.concatenate([ref["data"][p][m] for p in parts])
        lengths = np.concatenate([ref["lengths"][p][m] for p in parts])
        np.testing.assert_array_equal(ds.lengths[m].numpy(), lengths)
        for i in range(len(ds)):
            n = lengths[i]
            expected = np.nan_to_num(x[i, x.shape[1] - n :], neginf=0.0) if n else np.zeros((0,))
            got = ds.features[m][i].numpy()
            np.testing.assert_array_equal(got[:n], expected.reshape(got[:n].shape))
            assert not got[n:].any()


def test_mosi_trains_end_to_end_with_gru_and_lstm(tmp_path):
    make_mosi(tmp_path / "mosi_data.pkl")
    cfg = load_config(
        overrides=[
            f"data.path={tmp_path}",
            "data.trust_pickle=true",
            "data.missing.kind=drop",
            "data.missing.p=0.3",
            *TINY_MODEL,
            "model.encoders={text: {kind: lstm, hidden: 8, layers: 1}}",
            "train.seeds=[0]",
            "train.epochs=2",
            "train.warmup_epochs=1",
            "train.batch_size=8",
            "train.progress=false",
        ]
    )
    ds = load_dataset(cfg.data)
    seed_data = prepare_seed(cfg, ds, 0)
    assert len(seed_data.train) == 24 and len(seed_data.val) == 8 and len(seed_data.test) == 8
    assert seed_data.train.observed.float().mean() < 1.0  # the p = 0.3 drop hides modalities
    results = run_experiment(cfg, tmp_path / "run", dataset=ds, log=lambda *_: None)
    assert results["seeds"] == [0]
    for metric in ("accuracy", "macro_f1"):
        assert 0.0 <= results["test"][metric]["mean"] <= 1.0
    assert (tmp_path / "run" / "seed_0" / "model.safetensors").is_file()
    model = load_seed_checkpoint(tmp_path / "run" / "seed_0" / "model.safetensors").model
    assert isinstance(model.encoders["vision"].rnn, torch.nn.GRU)  # the default for sequences
    assert isinstance(model.encoders["text"].rnn, torch.nn.LSTM)  # chosen in the config


# =========================================================================== ENRICO


def make_enrico(root: Path) -> dict:
    (root / "screenshots").mkdir(parents=True)
    (root / "wireframes").mkdir()
    screens = ["101", "102", "103", "104", "105", "106"]
    topics = ["login", "news", "login", "gallery", "news", "gallery"]
    pd.DataFrame({"screen_id": screens, "topic": topics, "extra": 1}).to_csv(
        root / "design_topics.csv", index=False
    )
    colours = {s: (40 * i, 255 - 30 * i, 100 + 20 * i) for i, s in enumerate(screens)}
    for s in screens[:5]:  # 106 has no screenshot
        Image.new("RGB", (36, 72), colours[s]).save(root / "screenshots" / f"{s}.jpg", quality=100)
    for s in screens[1:5]:
        Image.new("L", (36, 72), 255 - int(s) % 100 * 20).save(root / "wireframes" / f"{s}.png")
    (root / "wireframes" / "106.png").write_bytes(b"not a png")  # corrupt: counts as missing
    return {"screens": screens, "topics": topics, "colours": colours}


def test_enrico_layout_reads_resizes_and_marks_missing_images(tmp_path):
    ref = make_enrico(tmp_path / "e")
    assert detect_format(tmp_path / "e") == "enrico"
    with pytest.warns(UserWarning) as record:
        ds = load_dataset(DataConfig(path=str(tmp_path / "e"), options={"image_size": [8, 4]}))
    messages = " ".join(str(w.message) for w in record)
    # 106: no screenshot and an undecodable wireframe -> no data at all -> left out, with warnings
    assert "106.png" in messages and "'106'" in messages
    assert ds.ids == ref["screens"][:5] and ds.splits is None
    assert ds.class_names == ["gallery", "login", "news"]
    assert ds.labels.tolist() == [1, 2, 1, 0, 2]
    assert ds.modality_names == ["screenshot", "wireframe"]
    assert [s.kind for s in ds.modalities] == ["image", "image"]
    assert [s.shape for s in ds.modalities] == [(3, 8, 4), (3, 8, 4)]
    assert ds.observed.tolist() == [[True, False]] + [[True, True]] * 4
    for i, screen in enumerate(ds.ids):
        rgb = torch.tensor(ref["colours"][screen], dtype=torch.float32).view(3, 1, 1) / 255
        torch.testing.assert_close(ds.features["screenshot"][i], rgb.expand(3, 8, 4), rtol=0, atol=3 / 255)
    grey = ds.features["wireframe"][1]
    assert torch.allclose(grey, torch.full_like(grey, (255 - 102 % 100 * 20) / 255))
    # the paper's letters select modalities
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_enrico(tmp_path / "e", modalities="W", image_size=[8, 4]).modality_names == ["wireframe"]


def test_enrico_bad_topic_file(tmp_path):
    make_enrico(tmp_path / "e")
    (tmp_path / "e" / "design_topics.csv").write_text("screen_id,topic\n101,login\n101,news\n")
    with pytest.raises(
        DataValidationError, match=r"design_topics.csv: screen_id '101' appears twice \(rows 2 and 3\)"
    ):
        load_enrico(tmp_path / "e")
    (tmp_path / "e" / "design_topics.csv").write_text("screen,topic\n101,login\n")
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['screen_id'\]"):
        load_enrico(tmp_path / "e")
