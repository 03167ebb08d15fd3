"""prefdistill: preference alignment and preference-based distillation of language models,
composed with Hydra and trained with PyTorch Lightning."""

__version__ = "0.1.0"
