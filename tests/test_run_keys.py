"""Run keys of a comparison come from what each method declares it reads."""

import pytest

from moe_retriever.config import load_config
from moe_retriever.methods import METHODS, register_method, sections_read
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.training.comparison import run_key


def key(method: str, *overrides: str) -> str:
    return run_key(load_config("configs/synthetic.yaml", [f"method={method}", *overrides]))


def test_keys_of_stored_runs_stay_valid():
    # digests of runs stored by earlier versions: a restructuring must not invalidate them
    assert key("moe_retriever") == "d406517ea45e"
    assert key("zero") == "a659b679b2f6"
    assert key("mmformer") == "c575f6c2b89b"
    assert key("moe_retriever", "model.retriever.sampling=knn") == "0bb0c535ce30"


def test_a_method_that_does_not_read_the_retriever_section_ignores_it():
    assert sections_read("mmformer") == frozenset()
    assert key("mmformer", "model.retriever.heads=2") == key("mmformer")
    assert key("moe_retriever", "model.retriever.heads=2") != key("moe_retriever")


def test_options_inactive_under_the_chosen_sampling_leave_the_key_unchanged():
    assert key("moe_retriever", "model.retriever.knn_k=8") == key("moe_retriever")
    knn = ("model.retriever.sampling=knn",)
    assert key("moe_retriever", *knn, "model.retriever.knn_k=8") != key("moe_retriever", *knn)


def test_the_declaration_at_registration_drives_the_key():
    name = "retrieving_probe_method"
    register_method(name, reads=("model.retriever",))(MultimodalClassifier)
    try:
        assert key(name, "model.retriever.heads=2") != key(name)
    finally:
        METHODS._entries.pop(name)
    with pytest.raises(ValueError, match="unknown section"):
        register_method("bad_probe_method", reads=("model.nothing",))
