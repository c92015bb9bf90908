"""A synthetic incomplete multimodal task whose missing modalities are recoverable from context.

Every sample has a latent vector z drawn around its class prototype. Each modality is a fixed
random nonlinear view of z plus noise, so modalities share factors: what a missing modality would
have shown is predictable from the observed ones (inter-modal context) and from other samples
that observe it (intra-modal context). Each single view is noisy, so the classifier gains from
every modality it can use.

With ``natural_missing > 0`` the generator also produces its own missingness whose pattern
depends on the label (the paper's ADNI story: costly modalities are acquired later in the
disease), so the observed combination itself carries signal.

``task="regression"`` / ``"survival"`` keep the modalities and replace the label: z is drawn
around no prototype, and the target is a fixed direction of z (regression: that score plus
``target_noise``; survival: exponential event times whose log-hazard is ``hazard_scale`` x the
score, censored by independent exponential times so that about ``censoring`` of the samples are
censored). The first modality (``image``) shows z with ``signal_noise`` instead of ``noise``:
the signal sits mostly in it, and simulated missingness hides it from some samples.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from .dataset import ModalitySpec, MultimodalDataset
from .labels import TASKS, survival_labels


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
    task: str = "classification",
    signal_noise: float = 0.3,
    target_noise: float = 0.3,
    hazard_scale: float = 1.0,
    censoring: float = 0.3,
) -> MultimodalDataset:
    """Generate the dataset; ``seed`` fixes the data itself (runs draw splits from their own seed)."""
    if task not in TASKS:
        raise ConfigError(f"data.options.task: must be one of {list(TASKS)}, got {task!r}")
    if task != "classification":
        return _make_endpoint(
            task, n_samples, n_modalities, widths, latent_dim, noise, signal_noise, target_noise,
            hazard_scale, censoring, seed,
        )  # fmt: skip
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


def _views(
    z: torch.Tensor, widths: list[int], noise: list[float], g: torch.Generator
) -> tuple[dict[str, torch.Tensor], list[ModalitySpec]]:
    """Every modality as a fixed random nonlinear view of ``z`` plus its noise."""
    n, latent_dim = z.shape
    names = ["image", "genetic", "clinical", "biospecimen", "lab", "notes", "codes", "wave"][: len(widths)]
    features, specs = {}, []
    for m, w in enumerate(widths):
        a = torch.randn(latent_dim, w, generator=g) / latent_dim**0.5
        b = torch.randn(w, w, generator=g) / w**0.5
        features[names[m]] = torch.tanh(z @ a) @ b + noise[m] * torch.randn(n, w, generator=g)
        specs.append(ModalitySpec(names[m], (w,), "tabular", tuple(f"{names[m]}_{j}" for j in range(w))))
    return features, specs


def _make_endpoint(
    task: str,
    n_samples: int,
    n_modalities: int,
    widths: list[int] | None,
    latent_dim: int,
    noise: float,
    signal_noise: float,
    target_noise: float,
    hazard_scale: float,
    censoring: float,
    seed: int,
) -> MultimodalDataset:
    """The regression / survival variant (see the module docstring)."""
    if n_modalities < 2:
        raise ConfigError(
            f"data.options.n_modalities: the synthetic task needs at least two, got {n_modalities}"
        )
    if not 0 <= censoring < 1:
        raise ConfigError(f"data.options.censoring: must be in [0, 1), got {censoring}")
    widths = list(widths) if widths is not None else [16, 24, 12, 20, 16, 8, 12, 10][:n_modalities]
    if len(widths) != n_modalities:
        raise ConfigError(f"data.options.widths: {len(widths)} entries for {n_modalities} modalities")
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n_samples, latent_dim, generator=g)
    features, specs = _views(z, widths, [signal_noise] + [noise] * (n_modalities - 1), g)
    direction = torch.randn(latent_dim, generator=g)
    score = torch.tanh(z @ (direction / direction.norm()))
    score = (score - score.mean()) / score.std()
    if task == "regression":
        labels = (score + target_noise * torch.randn(n_samples, generator=g)).double()
    else:
        # exponential event times with hazard exp(hazard_scale * score); exponential censoring
        # times whose rate gives the censored fraction c: rate_c = c / (1 - c) x the mean hazard
        hazard = torch.exp(hazard_scale * score)
        event_time = -torch.log(torch.rand(n_samples, generator=g)) / hazard
        rate = censoring / (1 - censoring) * float(hazard.mean())
        censor_time = (
            -torch.log(torch.rand(n_samples, generator=g)) / rate
            if rate > 0
            else torch.full((n_samples,), float("inf"))
        )
        time = torch.minimum(event_time, censor_time)
        labels = survival_labels(time.double(), (event_time <= censor_time).double())
    return MultimodalDataset(
        specs,
        features,
        torch.ones(n_samples, n_modalities, dtype=torch.bool),
        labels,
        ids=[f"s{i:05d}" for i in range(n_samples)],
        name="synthetic",
        natural_missingness=False,
        task=task,  # type: ignore[arg-type]  # checked against TASKS
    )
