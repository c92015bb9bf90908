"""A synthetic incomplete multimodal task whose missing modalities are recoverable from context.

Every sample has a latent vector z drawn around its class prototype. Each modality is a fixed
random nonlinear view of z plus noise, so modalities share factors: what a missing modality would
have shown is predictable from the observed ones (inter-modal context) and from other samples
that observe it (intra-modal context). Each single view is noisy, so the classifier gains from
every modality it can use.

With ``natural_missing > 0`` the generator also produces its own missingness whose pattern
depends on the label (the paper's ADNI story: costly modalities are acquired later in the
disease), so the observed combination itself carries signal.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .dataset import ModalitySpec, MultimodalDataset


def make_synthetic(
    n_samples: int = 1500,
    n_modalities: int = 4,
    widths: list[int] | None = None,
    n_classes: int = 3,
    latent_dim: int = 8,
    class_separation: float = 1.0,
    noise: float = 1.0,
    natural_missing: float = 0.0,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate the dataset; ``seed`` fixes the data itself (runs draw splits from their own seed)."""
    if n_modalities < 2:
        raise ConfigError(
            f"data.options.n_modalities: the synthetic task needs at least two, got {n_modalities}"
        )
    widths = list(widths) if widths is not None else [16, 24, 12, 20, 16, 8, 12, 10][:n_modalities]
    if len(widths) != n_modalities:
        raise ConfigError(f"data.options.widths: {len(widths)} entries for {n_modalities} modalities")
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.arange(n_samples) % n_classes
    labels = labels[torch.randperm(n_samples, generator=g)]
    prototypes = torch.randn(n_classes, latent_dim, generator=g) * class_separation
    z = prototypes[labels] + torch.randn(n_samples, latent_dim, generator=g)
    names = ["image", "genetic", "clinical", "biospecimen", "lab", "notes", "codes", "wave"][:n_modalities]
    features, specs = {}, []
    for m in range(n_modalities):
        w = widths[m]
        a = torch.randn(latent_dim, w, generator=g) / latent_dim**0.5
        b = torch.randn(w, w, generator=g) / w**0.5
        x = torch.tanh(z @ a) @ b + noise * torch.randn(n_samples, w, generator=g)
        features[names[m]] = x
        specs.append(ModalitySpec(names[m], (w,), "tabular", tuple(f"{names[m]}_{j}" for j in range(w))))
    observed = torch.ones(n_samples, n_modalities, dtype=torch.bool)
    if natural_missing > 0:
        # modality m is missing with a probability that grows with the label for odd m and shrinks
        # for even m, so the combination is informative; the first modality is always observed
        frac = labels.float().unsqueeze(1) / max(n_classes - 1, 1)
        sign = torch.tensor([(-1.0) ** m for m in range(n_modalities)])
        prob = (natural_missing * (1 + 0.8 * sign * (frac - 0.5))).clamp(0, 0.95)
        observed = torch.rand(n_samples, n_modalities, generator=g) >= prob
        observed[:, 0] = True
    return MultimodalDataset(
        specs,
        features,
        observed,
        labels,
        ids=[f"s{i:05d}" for i in range(n_samples)],
        class_names=[f"class_{c}" for c in range(n_classes)],
        name="synthetic",
        natural_missingness=natural_missing > 0,
    )
