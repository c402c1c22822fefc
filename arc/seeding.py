"""Per-image seeds that do not depend on batch packing, rank or resume."""
from __future__ import annotations

import hashlib

import torch


def item_seed(seed: int, split: str, index: int) -> int:
    """A stable 63-bit seed for image ``index`` of ``split`` (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{int(seed)}/{split}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def item_generator(seed: int, split: str, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded by :func:`item_seed`.

    Everything random for one image draws from it, in this order: positions,
    latent init, pixel permutation.
    """
    generator = torch.Generator(device=device)
    generator.manual_seed(item_seed(seed, split, index))
    return generator
