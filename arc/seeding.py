"""Seeds derived from a run's seed and the purpose of a draw.

Every random draw of arc comes from a generator seeded by ``derive_seed(seed, purpose...)``
(sha256, not Python's salted ``hash``), never from whatever state the global generator was
left in. Two seeds exist:

- the **representation seed** (``data.seed``): per image (positions, latent init, pixel
  permutation), the val split and the pretraining subset; it is part of the store key, so
  runs that differ only in the training seed share one store;
- the **training seed** (``seed_everything``, read back from Lightning's ``PL_GLOBAL_SEED``
  by :func:`run_seed`): classifier init, data order, augmentations, ARCMix partners,
  dropout / drop-path and the curve order of each training step.
"""
from __future__ import annotations

import hashlib
import os

import torch


def derive_seed(seed: int, *purpose: str | int) -> int:
    """A stable 63-bit seed for ``seed`` and a purpose path such as ``("augment", epoch, batch)``."""
    key = "/".join(str(int(p)) if isinstance(p, int) else str(p) for p in (int(seed), *purpose))
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def derive_generator(seed: int, *purpose: str | int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`derive_seed`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *purpose))
    return generator


def item_seed(seed: int, split: str, index: int) -> int:
    """The seed of image ``index`` of ``split``: ``derive_seed(seed, split, index)``."""
    return derive_seed(seed, split, int(index))


def item_generator(seed: int, split: str, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded by :func:`item_seed`.

    Everything random for one image draws from it, in this order: positions,
    latent init, pixel permutation.
    """
    return derive_generator(seed, split, int(index), device=device)


def run_seed(seed: int | None = None) -> int:
    """The training seed: ``seed`` when given, else the one ``seed_everything`` set (``PL_GLOBAL_SEED``), else 0."""
    if seed is not None:
        return int(seed)
    return int(os.environ.get("PL_GLOBAL_SEED", 0))
