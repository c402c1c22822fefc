"""The INR: position sampling, neighbour index, decoder, batched decode and fitting (pure PyTorch)."""
from arc.field.config import FieldConfig, FitConfig, PretrainConfig

__all__ = ["FieldConfig", "FitConfig", "PretrainConfig"]
