"""The contract between the training code and the methods (``moe_retriever.methods``).

A method is one of two kinds, each a :class:`typing.Protocol` that mypy checks where a model is
handed to the code that fits or loads it:

* :class:`MethodModel`: a ``torch.nn.Module`` fitted by the Trainer. ``forward(batch, inputs)``
  takes the batch and the :class:`~moe_retriever.models.context.RetrievalInputs` (the bank, the
  draws' random stream, whether to retrieve) and returns a
  :class:`~moe_retriever.models.classifier.ModelOutput`. Every deep method derives from
  :class:`~moe_retriever.models.classifier.MultimodalClassifier`, which gives each attribute and
  hook below its default.
* :class:`DirectMethod`: fitted on the training split without the Trainer (``fit`` /
  ``predict_proba``, e.g. gradient-boosted trees); see ``baselines.common.DirectMethodBase``.

:func:`is_direct` tells the two apart. :class:`FitResult` is what fitting returns for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from typing_extensions import TypeIs

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from .data.bank import RetrievalBank
    from .data.dataset import Batch, ModalitySpec, MultimodalDataset
    from .models.classifier import ModelOutput
    from .models.context import RetrievalInputs
    from .models.encoders import ModalityEncoders
    from .models.retriever import MoERetriever


@dataclass
class FitResult:
    """The outcome of fitting one method on one split: the selected epoch, its validation
    metrics, the per-epoch history and the time it took."""

    best_epoch: int
    best_val: dict[str, float]
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)


class MethodModel(Protocol):
    """A method the Trainer fits (an ``nn.Module``)."""

    fit_direct: Literal[False]
    modalities: list[ModalitySpec]
    training: bool
    encoders: ModalityEncoders
    retriever: MoERetriever | None  # None for methods that do not retrieve

    # whether ``model.missing_indicators`` reaches this model's fusion
    supports_missing_indicators: bool

    @property
    def uses_retrieval(self) -> bool:
        """Whether forward passes retrieve from a bank (warm-up and evaluation pass one)."""
        ...

    @property
    def loss_weights(self) -> dict[str, float]:
        """The configured weight of every auxiliary term ``forward`` may return, by name."""
        ...

    def __call__(self, batch: Batch, inputs: RetrievalInputs = ...) -> ModelOutput: ...

    def before_train_step(self, bank: RetrievalBank, step: int) -> None:
        """Called before every retrieval step (``step`` counts from 0 in each epoch)."""
        ...

    def upgrade_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename the keys of a checkpoint written before a module moved."""
        ...

    # the parts of nn.Module the training, checkpoint and analysis code use
    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...
    def modules(self) -> Iterator[torch.nn.Module]: ...
    def named_parameters(self, *args: Any, **kwargs: Any) -> Any: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...
    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...
    def eval(self) -> Any: ...
    def to(self, *args: Any, **kwargs: Any) -> Any: ...


class DirectMethod(Protocol):
    """A method fitted on the training split without the Trainer; it writes no checkpoint.

    ``fit`` may use the validation split for model selection; ``predict_proba`` gives (N, C)
    class probabilities.
    """

    fit_direct: Literal[True]
    modalities: list[ModalitySpec]
    n_classes: int
    supports_missing_indicators: bool

    @property
    def uses_retrieval(self) -> bool: ...

    def fit(
        self, train: MultimodalDataset, val: MultimodalDataset, select_metric: str = ...
    ) -> FitResult: ...

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray: ...


Method = MethodModel | DirectMethod


def is_direct(model: Method) -> TypeIs[DirectMethod]:
    """Whether ``model`` is fitted without the Trainer."""
    return model.fit_direct
