"""The training objective: cross-entropy + the weighted sum of the model's auxiliary terms.

A model returns its auxiliary terms unweighted and by name in ``ModelOutput.losses`` and gives
each name its configured weight in ``model.loss_weights``; the weights are applied here only. A
term whose weight is 0 is never computed, and the run history records every computed term's
epoch mean as ``loss.<name>`` (unweighted) next to ``loss`` (the total) and
``loss.cross_entropy``.

===========================  =================================  ==============================================
name                         term                               weight (config key)
===========================  =================================  ==============================================
reconstruction               MSE of a hidden observed           ``model.retriever.reconstruction_weight``
                             modality, retrieved from the
                             rest, to its encoder embedding
retriever.load_balance       Switch load balancing of the       ``model.retriever.moe.aux_loss_weight``
                             retriever's MoE, within each
                             expert pool
retriever.z_loss             ST-MoE router z-loss of the        ``model.retriever.moe.z_loss_weight``
                             retriever's MoE
fusion.load_balance          load balancing of the SMoE         ``model.fusion.moe.aux_loss_weight``
                             fusion, summed over layers
fusion.z_loss                router z-loss of the SMoE fusion   ``model.fusion.moe.z_loss_weight``
                             (summed)
flex_moe.load_balance        Flex-MoE's load balancing (summed  ``method_options.flex_moe.router_loss_weight``
                             over layers)
flex_moe.router_ce           Flex-MoE's router cross-entropy    ``method_options.flex_moe.router_loss_weight``
                             towards the expert of an
                             incomplete sample's combination
shaspec.alignment            L1 distance of shared features of  ``method_options.shaspec.align_weight``
                             modality pairs observed together
shaspec.modality_ce          cross-entropy of the modality      ``method_options.shaspec.domain_weight``
                             classifier on specific features
muse.contrastive             InfoNCE between the graph and an   ``method_options.muse.contrastive_weight``
                             edge-dropped view
muse.supervised_contrastive  SupCon over both views             ``method_options.muse.supcon_weight``
mmformer.unimodal_ce         cross-entropy of the head on each  ``method_options.mmformer.aux_weight``
                             observed modality's own features
===========================  =================================  ==============================================
"""

from __future__ import annotations

from torch import Tensor


def weighted_sum(losses: dict[str, Tensor], weights: dict[str, float]) -> Tensor | None:
    """sum(weights[name] * term) over ``losses`` in their order; None when there is none.

    A term without a weight, or computed although its weight is 0, is a bug in the model that
    returned it, never dropped silently.
    """
    total = None
    for name, term in losses.items():
        if name not in weights:
            raise RuntimeError(
                f"the model returned loss term {name!r}, which its loss_weights {sorted(weights)} do not name"
            )
        if weights[name] == 0:
            raise RuntimeError(f"the model computed loss term {name!r} although its weight is 0")
        weighted = weights[name] * term
        total = weighted if total is None else total + weighted
    return total
