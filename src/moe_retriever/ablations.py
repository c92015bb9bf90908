"""The ablations of the paper's Table 3 as named presets: a method plus config overrides.

A preset changes only its own axis, on top of whatever experiment config it is applied to, so
``experts_8`` on a config that already uses E_T = 8 is the reference model itself (the
``compare`` command runs such duplicates once). The paper's ``|R|`` is the number of routers, not
top-k. Top-k must stay <= E_T + E_sh; the presets respect that for the default E_T = 8, E_sh = 4.

Presets are named in the ``methods`` of a ``moe-retriever compare`` config; a single one can be
run by hand with its overrides, e.g. ``moe-retriever train --config C --set
model.retriever.inter=false`` for ``no_inter``.
"""

from __future__ import annotations

from dataclasses import dataclass

MOE = "model.retriever.moe"


@dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    method: str = "moe_retriever"
    overrides: tuple[str, ...] = ()

    def apply(self, overrides: list[str]) -> list[str]:
        """``overrides`` (the base run's) followed by this preset's method and overrides."""
        return [*overrides, f"method={self.method}", *self.overrides]


def _presets() -> dict[str, Ablation]:
    out = [
        Ablation("no_intra", "w/o intra-modal context", overrides=("model.retriever.intra=false",)),
        Ablation("no_inter", "w/o inter-modal context", overrides=("model.retriever.inter=false",)),
        Ablation(
            "no_routing",
            "w/o context-aware routing (0.5 mean intra + 0.5 mean inter, the released code)",
            overrides=("model.retriever.mode=mean",),
        ),
    ]
    out += [
        Ablation(f"experts_{e}", f"E_T = {e}", overrides=(f"{MOE}.experts_per_modality={e}",))
        for e in (4, 8, 16)
    ]
    out += [
        Ablation(f"shared_{e}", f"E_sh = {e}", overrides=(f"{MOE}.shared_experts={e}",)) for e in (1, 2, 4, 8)
    ]
    out += [
        Ablation(
            f"routers_{r}",
            f"{r} router{'s' if r > 1 else ''} (the paper's |R|)",
            overrides=(f"{MOE}.num_routers={r}",),
        )
        for r in (1, 2, 4)
    ]
    out += [Ablation(f"top_k_{k}", f"top-k = {k}", overrides=(f"{MOE}.top_k={k}",)) for k in (1, 2, 4)]
    out += [
        # not in the paper: the library trains the retriever with an extra masked-modality loss
        Ablation(
            "no_reconstruction",
            "w/o the masked-modality retrieval loss (the paper's objective)",
            overrides=("model.retriever.reconstruction_weight=0",),
        ),
        Ablation("fusion_layers_2", "2 x Transformer fusion layers", overrides=("model.fusion.layers=2",)),
        # not in the paper: the training samples whose labels data.label_fraction hid are left
        # out instead of joining the bank (data/unlabelled.py)
        Ablation(
            "no_unlabelled_bank",
            "w/o the bank-only samples (hidden labels dropped)",
            overrides=("data.unlabelled=drop",),
        ),
        Ablation(
            "smoe_fusion",
            "sparse-MoE fusion layer instead of the Transformer",
            overrides=("model.fusion.kind=smoe",),
        ),
    ]
    # not in the paper: the speed options for wide modalities, compared with the exact default
    out += [
        Ablation(
            "bank_cache_epoch",
            "bank embeddings cached once per epoch",
            overrides=("model.retriever.bank_cache=epoch",),
        ),
        Ablation(
            "lowrank_encoder",
            "low-rank (rank 32) first layer in the MLP encoders",
            overrides=("model.encoder.options.first_layer=lowrank",),
        ),
    ]
    # not in the paper: intra context from the most similar supporting-group members
    out += [
        Ablation(
            "knn_retrieval",
            "intra context drawn from the most similar supporting-group members",
            overrides=("model.retriever.sampling=knn",),
        )
    ]
    # a cheaper reference for large comparisons: gradient boosting without its inner grid search
    out += [
        Ablation(
            "hist_gbt_default",
            "hist_gbt with default settings, no grid search",
            method="hist_gbt",
            overrides=("model.method_options.hist_gbt.search=false",),
        )
    ]
    # not in the paper: the observed mask as an extra input to fusion (model.missing_indicators)
    out += [
        Ablation(
            f"{m}_indicators",
            f"{m} with missingness indicators in fusion",
            method=m,
            overrides=("model.missing_indicators=true",),
        )
        for m in ("moe_retriever", "zero", "mean", "learned_token", "modality_dropout")
    ]
    return {a.name: a for a in out}


ABLATIONS: dict[str, Ablation] = _presets()
