"""``miniacc``: TCGA adrenocortical carcinoma with natural missingness (92 patients).

The data is ``miniACC``, shipped in ``MultiAssayExperiment/data/miniACC.RData`` by the Debian
package ``r-bioc-multiassayexperiment``. ``moe-retriever datasets --fetch miniacc`` downloads the
package with ``apt-get download`` (no root needed once the apt lists exist), unpacks it with
``dpkg -x`` and keeps only that file in the cache (``$MOE_RETRIEVER_CACHE``, else
``$XDG_CACHE_HOME/moe-retriever``, else ``~/.cache/moe-retriever``).

The file is an R serialisation of an S4 ``MultiAssayExperiment``; it is read with the low-level
parser of the PyPI package ``rdata`` (its high-level converter stops on R promises) and a small
walker below that turns the parsed tree into dicts, lists and arrays. R is not needed.

Modalities: rna (RNA-seq, 198 genes, log2(1 + x)), cnv (GISTIC copy number, 198), protein
(RPPA, 33), mutations (97 binary), mirna (miRNA-seq, 471, log2(1 + x)) and clinical (13, always
present). A patient lacks an assay when the sample map lists no column of that assay for them:
43 patients have everything, 7 combinations occur. Label: vital status (alive / dead).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...errors import InputNotFoundError
from ...files import default_cache_dir
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from . import register_dataset
from .builtin import DatasetUnavailableError

DEBIAN_PACKAGE = "r-bioc-multiassayexperiment"
RDATA_MEMBER = "MultiAssayExperiment/data/miniACC.RData"
FETCH_COMMAND = "moe-retriever datasets --fetch miniacc"
# assay name in miniACC -> (modality name, log2(1 + x) transform)
ASSAYS = {
    "RNASeq2GeneNorm": ("rna", True),
    "gistict": ("cnv", False),
    "RPPAArray": ("protein", False),
    "Mutations": ("mutations", False),
    "miRNASeqGene": ("mirna", True),
}
CLASS_NAMES = ["alive", "dead"]  # vital_status 0 / 1


def cached_file(cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "miniacc" / "miniACC.RData"


# --------------------------------------------------------------------------- fetching


def _run(cmd: list[str], cwd: Path, hint: str) -> None:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise DatasetUnavailableError(f"miniacc: {cmd[0]} is not available here; {hint}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DatasetUnavailableError(f"miniacc: {' '.join(cmd)} failed ({' | '.join(tail)}); {hint}")


def fetch_miniacc(cache_dir: str | Path | None = None, deb: str | Path | None = None) -> Path:
    """Download (or take ``deb``), unpack and cache ``miniACC.RData``; returns its path."""
    target = cached_file(cache_dir)
    hint = (
        f"on Debian/Ubuntu run `apt-get update` as root once, or download "
        f"{DEBIAN_PACKAGE}_*.deb elsewhere and pass it with --deb FILE"
    )
    with tempfile.TemporaryDirectory(prefix="miniacc-") as tmp:
        work = Path(tmp)
        if deb is None:
            _run(["apt-get", "download", DEBIAN_PACKAGE], work, hint)
            debs = sorted(work.glob(f"{DEBIAN_PACKAGE}_*.deb"))
            if not debs:
                raise DatasetUnavailableError(f"miniacc: apt-get download produced no .deb; {hint}")
            deb = debs[-1]
        deb = Path(deb)
        if not deb.is_file():
            raise InputNotFoundError(f"--deb: {deb} does not exist")
        _run(
            ["dpkg-deb", "-x", str(deb.resolve()), str(work / "root")],
            work,
            "dpkg-deb (Debian's package tool) is needed to unpack the .deb",
        )
        found = sorted((work / "root").glob(f"**/{RDATA_MEMBER}"))
        if not found:
            raise DatasetUnavailableError(f"miniacc: {deb} holds no {RDATA_MEMBER}")
        read_miniacc_object(found[0])  # refuse to cache a file that does not parse
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], target)
    return target


# --------------------------------------------------------------------------- reading R data


def _r_to_python(obj: Any, envs: dict[int, dict] | None = None) -> Any:
    """Turn an ``rdata.parser`` object tree into Python values.

    Named vectors and pairlists become dicts, S4 objects dicts of their slots, environments dicts
    of their bindings (a reference-class field ``.->x`` also appears as ``x``), factors lists of
    level names, arrays with ``dim`` a dict {"array", "dimnames"}; integer NA becomes NaN.
    Code objects (closures, promises of unevaluated code, bytecode) become None.
    """
    from rdata.parser import RObjectType as T

    envs = {} if envs is None else envs
    kind = obj.info.type
    if kind == T.REF:
        return _r_to_python(obj.referenced_object, envs)
    if kind == T.NILVALUE:
        return None
    if kind == T.CHAR:
        return None if obj.value is None else obj.value.decode("utf-8", "replace")
    if kind == T.SYM:
        return _r_to_python(obj.value, envs)
    if kind == T.ENV:
        if id(obj) in envs:  # environments may refer to themselves
            return envs[id(obj)]
        env: dict[str, Any] = {}
        envs[id(obj)] = env
        frame, table = obj.value.frame, obj.value.hash_table
        if frame is not None and frame.info.type == T.LIST:
            env.update(_r_to_python(frame, envs))
        if table is not None and table.info.type == T.VEC:
            for bucket in table.value:
                if bucket.info.type == T.LIST:
                    env.update(_r_to_python(bucket, envs))
        env.update({k[3:]: v for k, v in list(env.items()) if k.startswith(".->")})
        return env
    if kind == T.LIST:  # a pairlist: follow the chain of (tag, value) cells
        out: dict[str, Any] = {}
        node = obj
        while node is not None and node.info.type == T.LIST:
            key = _r_to_python(node.tag, envs) if node.tag is not None else str(len(out))
            out[key] = _r_to_python(node.value[0], envs)
            node = node.value[1] if len(node.value) > 1 else None
        return out
    attrs = _r_to_python(obj.attributes, envs) if obj.attributes is not None else {}
    attrs = attrs or {}
    if kind == T.S4:
        return dict(attrs)
    if kind == T.STR:
        value: Any = [_r_to_python(c, envs) for c in obj.value]
    elif kind in (T.INT, T.LGL):
        value = np.asarray(obj.value)
        na = value == np.iinfo(np.int32).min
        if "levels" in attrs and kind == T.INT:
            levels = attrs["levels"]
            return [
                None if bad else levels[i - 1] for i, bad in zip(value.tolist(), na.tolist(), strict=True)
            ]
        if na.any():
            value = np.where(na, np.nan, value.astype(np.float64))
    elif kind == T.REAL:
        value = np.asarray(obj.value, dtype=np.float64)
    elif kind == T.VEC:
        value = [_r_to_python(c, envs) for c in obj.value]
        if "names" in attrs:
            return dict(zip(attrs["names"], value, strict=True))
        return value
    else:
        return None
    if "dim" in attrs:
        dims = tuple(int(d) for d in np.asarray(attrs["dim"]).tolist())
        return {"array": np.asarray(value).reshape(dims, order="F"), "dimnames": attrs.get("dimnames")}
    return value


def read_miniacc_object(path: Path) -> dict[str, Any]:
    try:
        import rdata
    except ImportError as exc:
        raise DatasetUnavailableError(
            "dataset 'miniacc' is read with the Python package 'rdata', which is not installed; "
            "install it with: pip install rdata"
        ) from exc
    try:
        parsed = rdata.parser.parse_file(path)
        top = _r_to_python(parsed.object)
        return top["miniACC"]
    except Exception as exc:  # a truncated or foreign file fails deep inside the parser
        raise DataValidationError(
            f"{path}: not the miniACC R data file ({type(exc).__name__}: {exc}); "
            f"fetch it again with: {FETCH_COMMAND}"
        ) from exc


def _assay_matrix(experiment: Any) -> tuple[np.ndarray, list[str], list[str]]:
    """(features x columns) values, feature names and column names of one experiment."""
    if isinstance(experiment, dict) and "array" in experiment:  # a plain matrix
        matrix = experiment
    else:  # a SummarizedExperiment: its first assay lives in a reference-class environment
        assays = experiment["assays"][".xData"]["data"]["listData"]
        matrix = next(iter(assays.values())) if isinstance(assays, dict) else assays[0]
    rows, cols = matrix["dimnames"]
    return np.asarray(matrix["array"], dtype=np.float64), list(rows), list(cols)


def _ordinal(values: list[Any], codes: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Coded values (0 where unknown) and an indicator of unknown values."""
    coded = np.array([codes.get(v, np.nan) if v is not None else np.nan for v in values])
    unknown = np.isnan(coded)
    return np.where(unknown, 0.0, coded), unknown.astype(np.float64)


def clinical_features(col: dict[str, Any]) -> pd.DataFrame:
    """Thirteen pre-treatment clinical features, each coded value beside an indicator of
    unknown; outcome columns (vital status, days to death or last follow-up) and molecular
    cluster labels are left out so that nothing leaks the label."""
    age = np.asarray(col["years_to_birth"], dtype=np.float64)  # age at diagnosis, in years
    out = {
        "age": np.where(np.isnan(age), 0.0, age),
        "age_missing": np.isnan(age).astype(np.float64),
        "male": np.array([g == "male" for g in col["gender"]], dtype=np.float64),
    }
    coded = {
        "stage": ("pathologic_stage", {"stage i": 1, "stage ii": 2, "stage iii": 3, "stage iv": 4}),
        "t_stage": ("pathology_T_stage", {"t1": 1, "t2": 2, "t3": 3, "t4": 4}),
        "n_stage": ("pathology_N_stage", {"n0": 0, "n1": 1}),
        "radiation": ("radiation_therapy", {"no": 0, "yes": 1}),
        # rx: residual tumour cannot be assessed -> unknown
        "residual": ("residual_tumor", {"r0": 0, "r1": 1, "r2": 2}),
    }
    for name, (column, codes) in coded.items():
        out[name], out[f"{name}_missing"] = _ordinal(list(col[column]), codes)
    return pd.DataFrame(out)


@register_dataset("miniacc")
def load_miniacc(cache_dir: str | None = None) -> MultimodalDataset:
    """TCGA-ACC ``miniACC`` (natural missingness); see the module docstring."""
    path = cached_file(cache_dir)
    if not path.is_file():
        raise DatasetUnavailableError(
            f"dataset 'miniacc' is not in the cache ({path}); fetch it once with: {FETCH_COMMAND}"
        )
    mae = read_miniacc_object(path)
    col = mae["colData"]
    patients = [str(p) for p in col["rownames"]]
    position = {p: i for i, p in enumerate(patients)}
    status = np.asarray(col["listData"]["vital_status"], dtype=np.float64)
    if np.isnan(status).any():
        raise DataValidationError(f"{path}: vital_status is missing for some patients")
    sample_map = pd.DataFrame({k: list(v) for k, v in mae["sampleMap"]["listData"].items()})
    n = len(patients)
    specs, features = [], {}
    observed = np.zeros((n, len(ASSAYS) + 1), dtype=bool)
    experiments = mae["ExperimentList"]["listData"]
    for m, (assay, (name, log_scale)) in enumerate(ASSAYS.items()):
        values, feature_names, columns = _assay_matrix(experiments[assay])
        if log_scale:
            values = np.log2(1.0 + np.clip(values, 0.0, None))
        primary = sample_map[sample_map["assay"] == assay].set_index("colname")["primary"]
        x = np.zeros((n, len(feature_names)), dtype=np.float32)
        for j, column in enumerate(columns):
            i = position[str(primary[column])]
            if observed[i, m]:  # a second sample of the same patient: keep the first
                continue
            observed[i, m] = np.isfinite(values[:, j]).all()
            x[i] = np.nan_to_num(values[:, j])
        specs.append(ModalitySpec(name, (len(feature_names),), "tabular", tuple(feature_names)))
        features[name] = torch.from_numpy(x)
    clinical = clinical_features(col["listData"])
    specs.append(ModalitySpec("clinical", (clinical.shape[1],), "tabular", tuple(clinical.columns)))
    features["clinical"] = torch.tensor(clinical.to_numpy(dtype=np.float32))
    observed[:, -1] = True
    return MultimodalDataset(
        specs,
        features,
        torch.from_numpy(observed),
        torch.from_numpy(status.astype(np.int64)),
        patients,
        CLASS_NAMES,
        "miniacc",
        natural_missingness=True,
    )
