"""Cloud-space augmentations, batched on the device (no per-cloud Python loops).

Every augmentation takes a whole :class:`~arc.cloud.CloudBatch` and returns a new one (inputs are
never modified in place); ``op(batch, generator)`` draws from ``generator``, else from the global
torch RNG. Each op has a probability ``p``: drawn per cloud, except ARCMix (per batch).
Positions follow :mod:`arc.geometry`.

- :mod:`arc.augment.base` — the op contract (:class:`CloudAugmentation`) and the shared draws;
- :mod:`arc.augment.points` — Noise, Mask, Push, Rotate, Flip, Shift;
- :mod:`arc.augment.mix` — ARCMix and soft targets;
- :mod:`arc.augment.pipeline` — the composed :class:`Augmentations` (fixed order, one generator
  per op from a seed) and :func:`build_augmentations` (config format there).
"""
from arc.augment.base import AugmentConfigError, CloudAugmentation, random_subset
from arc.augment.mix import ARCMix, soft_labels
from arc.augment.pipeline import ORDER, Augmentations, build_augmentations
from arc.augment.points import Flip, Mask, Noise, Push, Rotate, Shift

__all__ = [
    "AugmentConfigError",
    "CloudAugmentation",
    "Noise",
    "Mask",
    "Push",
    "Rotate",
    "Flip",
    "Shift",
    "ARCMix",
    "Augmentations",
    "build_augmentations",
    "random_subset",
    "soft_labels",
    "ORDER",
]
