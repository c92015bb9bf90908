"""User errors are the library's own types (one line, exit code 2 from the command); anything else
is a bug and keeps its traceback. Registries name the available entries; loader options are
checked against the loader's signature before the call."""

from __future__ import annotations

import pytest

from moe_retriever import errors
from moe_retriever.cli import main
from moe_retriever.commands import evaluate
from moe_retriever.config import ConfigError, DataConfig, EncoderConfig, ExperimentConfig, ModelConfig
from moe_retriever.data.dataset import DataValidationError, ModalitySpec
from moe_retriever.data.sources import DATASETS, load_dataset
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.methods import METHODS, build_model
from moe_retriever.models.encoders import build_encoder
from moe_retriever.registry import Registry


def test_registry_returns_entries_and_lists_the_names_of_an_unknown_one():
    reg: Registry[int] = Registry("colour", key="paint.colour")
    reg.register("red")(1)
    reg.add("blue", 2)
    assert reg.get("red") == 1 and reg["blue"] == 2 and "red" in reg and len(reg) == 2
    assert reg.names() == ["blue", "red"]
    with pytest.raises(ConfigError) as err:
        reg.get("green")
    assert str(err.value) == "paint.colour: unknown colour 'green'; available: ['blue', 'red']"
    with pytest.raises(ConfigError, match=r"^layer 3: unknown colour 'pink'"):
        reg.get("pink", where="layer 3")


def test_the_three_registries_name_what_they_have():
    cfg = ExperimentConfig(method="nope")
    with pytest.raises(ConfigError) as err:
        build_model(cfg, make_synthetic(n_samples=20, n_modalities=2).modalities, 2)
    assert str(err.value) == f"method: unknown method 'nope'; available: {sorted(METHODS)}"
    assert {"moe_retriever", "zero", "flex_moe", "majority"} <= set(METHODS.names())
    with pytest.raises(ConfigError, match=r"data.name: unknown dataset 'nope'; available: \[.*'synthetic'"):
        load_dataset(DataConfig(name="nope"))
    with pytest.raises(
        ConfigError, match=r"modality 'm': unknown encoder kind 'rnn'; available: \[.*'gru'.*'mlp'"
    ):
        build_encoder(ModalitySpec("m", (3,)), EncoderConfig(kind="rnn"), 8)


def test_every_library_error_derives_from_the_base_and_the_builtin_callers_caught():
    assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataValidationError, ValueError)
    assert issubclass(errors.InputNotFoundError, FileNotFoundError)
    for cls in (
        errors.ConfigError,
        errors.DataValidationError,
        errors.InputNotFoundError,
        errors.CheckpointError,
        errors.TrainingDivergedError,
        errors.UsageError,
        errors.MissingDependencyError,
    ):
        assert issubclass(cls, errors.MoERetrieverError)


def test_cli_reports_a_config_error_in_one_line(capsys, tmp_path):
    code = main(["train", "--set", "method=nope", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"moe-retriever: error: method: unknown method 'nope'; available: {sorted(METHODS)}\n"


@pytest.mark.parametrize(
    "exc",
    [
        DataValidationError("x.csv: line 3, column 'a': 'b' is not a number"),
        errors.InputNotFoundError("run: no seed_*/model found"),
    ],
)
def test_cli_reports_a_data_error_in_one_line(capsys, monkeypatch, exc):
    def run(args):
        raise exc

    monkeypatch.setattr(evaluate, "run", run)
    assert main(["evaluate", "--run", "somewhere"]) == 2
    assert capsys.readouterr().err == f"moe-retriever: error: {exc}\n"


@pytest.mark.parametrize(
    "exc", [KeyError("bank_ids"), RuntimeError("shape mismatch"), ValueError("an internal invariant broke")]
)
def test_cli_lets_an_internal_error_propagate(monkeypatch, exc):
    def run(args):
        raise exc

    monkeypatch.setattr(evaluate, "run", run)
    with pytest.raises(type(exc)) as info:
        main(["evaluate", "--run", "somewhere"])
    assert info.value is exc


def test_loader_options_are_checked_before_the_call_and_a_loaders_own_type_error_propagates(monkeypatch):
    calls = []

    def loader(n_samples: int = 10, *, noise: float = 1.0):
        calls.append(n_samples)
        return len(None)  # a bug inside the loader: TypeError

    monkeypatch.setitem(DATASETS._entries, "buggy", loader)
    with pytest.raises(ConfigError) as err:
        load_dataset(DataConfig(name="buggy", options={"n_sample": 5}))
    message = str(err.value)
    assert message.startswith("data.options for 'buggy': ") and "'n_sample'" in message
    assert "allowed: ['n_samples', 'noise']" in message and calls == []
    with pytest.raises(ConfigError, match="data.options for 'buggy'"):
        load_dataset(DataConfig(name="buggy", options={"n_samples": 5, "extra": 1}))
    with pytest.raises(TypeError) as info:
        load_dataset(DataConfig(name="buggy", options={"n_samples": 5, "noise": 0.5}))
    assert not isinstance(info.value, errors.MoERetrieverError) and calls == [5]


def test_direct_methods_take_the_uniform_constructor():
    specs = make_synthetic(n_samples=20, n_modalities=2).modalities
    gbt = METHODS.get("hist_gbt")(specs, 3, ModelConfig(method_options={"hist_gbt": {"max_iter": 7}}))
    assert gbt.options.max_iter == 7 and gbt.n_classes == 3
