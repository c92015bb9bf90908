"""Training: the trainer, experiments and run directories, comparisons, metrics, checkpoints."""
