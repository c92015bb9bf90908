"""Models: encoders, the sparse MoE (router, experts, block), the retriever, fusion, classifier."""

from . import (
    sequence_image_encoders,  # noqa: F401  (registers lstm, gru, cnn3d, vgg2d)
    text_encoders,  # noqa: F401  (registers hashed_bag)
)
from .classifier import ModelOutput, MultimodalClassifier
from .encoders import ENCODERS, MLPEncoder, ModalityEncoder, build_encoder, register_encoder
from .experts import FFNExperts
from .fusion import SMoEFusion, SparseTransformerLayer, build_fusion, sparse_fusion
from .retriever import MoERetriever, RetrieverOutput
from .router import LaplaceRouter, RouterOutput, TopKRouter
from .smoe import MoEOutput, SparseMoE, build_sparse_moe, load_balancing_loss, router_z_loss

__all__ = [
    "ENCODERS",
    "FFNExperts",
    "LaplaceRouter",
    "MLPEncoder",
    "ModalityEncoder",
    "ModelOutput",
    "MoEOutput",
    "MoERetriever",
    "MultimodalClassifier",
    "RetrieverOutput",
    "RouterOutput",
    "SMoEFusion",
    "SparseMoE",
    "SparseTransformerLayer",
    "TopKRouter",
    "build_encoder",
    "build_fusion",
    "build_sparse_moe",
    "load_balancing_loss",
    "register_encoder",
    "router_z_loss",
    "sparse_fusion",
]
