"""Built-in survival datasets from scikit-survival (a dependency of the library), read with its
own loaders (``sksurv.datasets``, imported when a dataset is loaded: the import takes ~1.5 s).

==============  =====  ===================================================  ====================
name            N      modalities (widths)                                  label (events)
==============  =====  ===================================================  ====================
flchain         7,874  demographics 3, assay 4, kidney 1 (creatinine:       days to death
                       missing for 1,350: a natural gap)                    (2,169 deaths)
breast_cancer   198    expression 76 (GSE7390 probes), clinical 6           days to distant
                                                                            metastasis (51)
==============  =====  ===================================================  ====================

flchain leaves out ``chapter``, the cause of death: it is known only after the event, so a model
given it would read the label. breast_cancer has no gaps of its own; its config simulates them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..dataset import ModalitySpec, MultimodalDataset
from ..labels import survival_labels
from . import register_dataset

FLCHAIN_MODALITIES = {
    "demographics": ["age", "sex", "sample.yr"],
    "assay": ["kappa", "lambda", "flc.grp", "mgus"],
    "kidney": ["creatinine"],
}
BREAST_CLINICAL = ["age", "size", "er", "grade_well", "grade_intermediate", "grade_poor"]


def survival_dataset(
    name: str,
    blocks: dict[str, pd.DataFrame],
    time: np.ndarray,
    event: np.ndarray,
    ids: list[str],
    natural_missingness: bool,
) -> MultimodalDataset:
    """A survival dataset from per-modality numeric frames (rows aligned with ``ids``); a row of
    a modality with a missing value is an unobserved modality of that sample."""
    specs, features, observed = [], {}, []
    for modality, frame in blocks.items():
        values = frame.to_numpy(dtype=np.float64)
        present = ~np.isnan(values).any(axis=1)
        specs.append(ModalitySpec(modality, (values.shape[1],), "tabular", tuple(map(str, frame.columns))))
        features[modality] = torch.tensor(np.nan_to_num(values, nan=0.0), dtype=torch.float32)
        observed.append(present)
    return MultimodalDataset(
        specs,
        features,
        torch.from_numpy(np.stack(observed, axis=1)),
        # a field of a structured array is a strided view, which torch cannot wrap
        survival_labels(
            np.ascontiguousarray(time, dtype=np.float64), np.ascontiguousarray(event, dtype=np.float64)
        ),
        ids,
        None,
        name,
        natural_missingness=natural_missingness,
        task="survival",
    )


@register_dataset("flchain")
def load_flchain() -> MultimodalDataset:
    """Serum free light chains and mortality (Dispenzieri et al. 2012; scikit-survival's copy of
    R's ``survival::flchain``): 7,874 residents of Olmsted County, follow-up in days to death.
    Modalities: demographics (age, sex: 1 male, year of the blood sample), the free-light-chain
    assay (kappa, lambda, FLC group 1-10, MGUS diagnosis: 1 yes) and kidney function (serum
    creatinine, not measured for 1,350 people: a natural gap)."""
    from sksurv.datasets import load_flchain as read

    frame, outcome = read()
    numeric = pd.DataFrame(
        {
            "age": frame["age"].astype(float),
            "sex": (frame["sex"] == "M").astype(float),
            "sample.yr": frame["sample.yr"].astype(str).astype(float),
            "kappa": frame["kappa"].astype(float),
            "lambda": frame["lambda"].astype(float),
            "flc.grp": frame["flc.grp"].astype(str).astype(float),
            "mgus": (frame["mgus"] == "yes").astype(float),
            "creatinine": frame["creatinine"].astype(float),
        }
    )
    blocks = {m: numeric[cols] for m, cols in FLCHAIN_MODALITIES.items()}
    ids = [f"flchain{i:04d}" for i in range(len(frame))]
    return survival_dataset("flchain", blocks, outcome["futime"], outcome["death"], ids, True)


@register_dataset("breast_cancer")
def load_breast_cancer() -> MultimodalDataset:
    """Breast cancer gene expression (GSE7390, Desmedt et al. 2007; scikit-survival's copy): 198
    untreated node-negative patients, follow-up in days to distant metastasis. Modalities: the 76
    expression probes of scikit-survival's copy, and clinical data (age, tumour size, oestrogen
    receptor: 1 positive, and the grade one-hot: well / intermediate / poorly differentiated; the
    grade of 2 patients is unknown: no grade column set)."""
    from sksurv.datasets import load_breast_cancer as read

    frame, outcome = read()
    genes = [c for c in frame.columns if c not in ("age", "er", "grade", "size")]
    grade = frame["grade"].astype(str)
    clinical = pd.DataFrame(
        {
            "age": frame["age"].astype(float),
            "size": frame["size"].astype(float),
            "er": (frame["er"] == "positive").astype(float),
            "grade_well": (grade == "well differentiated").astype(float),
            "grade_intermediate": (grade == "intermediate").astype(float),
            "grade_poor": (grade == "poorly differentiated").astype(float),
        }
    )
    blocks = {"expression": frame[genes].astype(float), "clinical": clinical[BREAST_CLINICAL]}
    ids = [f"gse7390_{i:03d}" for i in range(len(frame))]
    return survival_dataset("breast_cancer", blocks, outcome["t.tdm"], outcome["e.tdm"], ids, False)
