"""MoE-Retriever: a sparse mixture of experts that retrieves embeddings of missing modalities."""

from .config import ExperimentConfig, load_config
from .data import MultimodalDataset, ModalitySpec, SupportingGroupIndex, make_synthetic
from .models import MoERetriever, MultimodalClassifier, SparseMoE, TopKRouter
from .api import Retrieval, RunEnsemble, SchemaMismatchError, TrainedRun, load_new_data, load_run
from .errors import MoERetrieverError

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig", "ModalitySpec", "MoERetriever", "MultimodalClassifier", "MultimodalDataset",
    "SparseMoE", "SupportingGroupIndex", "TopKRouter", "load_config", "make_synthetic",
    "MoERetrieverError", "Retrieval", "RunEnsemble", "SchemaMismatchError", "TrainedRun", "load_new_data",
    "load_run",
]
