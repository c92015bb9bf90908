"""Shared test settings."""

import pytest
import torch

# The small model the end-to-end tests train (hidden size 16, two heads, two experts per modality
# plus one shared, top-2 routing); each test adds its data and training settings.
TINY_MODEL = [
    "model.hidden=16",
    "model.encoder.hidden=16",
    "model.retriever.heads=2",
    "model.fusion.heads=2",
    "model.retriever.moe.experts_per_modality=2",
    "model.retriever.moe.shared_experts=1",
    "model.retriever.moe.top_k=2",
    "model.retriever.moe.expert_hidden=16",
]


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # The tests train tiny models: one thread is as fast as two, does not fight over a busy
    # machine's cores, and fixes the order of floating-point reductions, so trained models (and
    # the comparisons the tests assert) are the same on every machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
