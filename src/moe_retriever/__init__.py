"""MoE-Retriever: a sparse mixture of experts that retrieves embeddings of missing modalities."""

from .api.new_data import load_new_data
from .api.retrieval import Retrieval
from .api.schema import SchemaMismatchError
from .api.trained_run import RunEnsemble, TrainedRun, load_run
from .config import ExperimentConfig, load_config
from .data import ModalitySpec, MultimodalDataset, SupportingGroupIndex, make_synthetic
from .errors import MoERetrieverError
from .models import MoERetriever, MultimodalClassifier, SparseMoE, TopKRouter

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
    "ModalitySpec",
    "MoERetriever",
    "MultimodalClassifier",
    "MultimodalDataset",
    "SparseMoE",
    "SupportingGroupIndex",
    "TopKRouter",
    "load_config",
    "make_synthetic",
    "MoERetrieverError",
    "Retrieval",
    "RunEnsemble",
    "SchemaMismatchError",
    "TrainedRun",
    "load_new_data",
    "load_run",
]
