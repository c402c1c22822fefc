"""The split names and the split rules (see :mod:`arc.data.sources`): which pools become train / val /
test, and the seeded carving of val and test out of train."""
from __future__ import annotations

import torch

from arc.data.sources.readers import Reader, SourceError, Subset
from arc.seeding import item_seed

SPLITS = ("train", "val", "test")


def _carve(pool: Reader, fractions: dict[str, float], seed: int) -> dict[str, Reader]:
    """Split a pool: each named split gets round(fraction * N) images from one seeded permutation, "train" the rest."""
    n = len(pool)
    generator = torch.Generator().manual_seed(item_seed(seed, "splits", n))
    order = torch.randperm(n, generator=generator)
    parts, start = {}, 0
    for name, fraction in fractions.items():
        take = int(round(fraction * n))
        if fraction > 0 and take == 0 and n > len(fractions):
            take = 1
        parts[name] = order[start : start + take]
        start += take
    if start >= n:
        raise SourceError(f"fractions {fractions} leave no training images out of {n}")
    parts["train"] = order[start:]
    return {name: Subset(pool, indices.sort().values) for name, indices in parts.items()}


def assign_splits(
    train: Reader, val: Reader | None, test: Reader | None, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, Reader]:
    """Apply the split rules of :mod:`arc.data.sources`; returns readers for train, val, test."""
    if test is None and val is not None:
        test, val = val, None
    if val is not None:
        return {"train": train, "val": val, "test": test}
    if test is None:
        carved = _carve(train, {"test": test_fraction, "val": val_fraction}, seed)
        return {"train": carved["train"], "val": carved["val"], "test": carved["test"]}
    carved = _carve(train, {"val": val_fraction}, seed)
    return {"train": carved["train"], "val": carved["val"], "test": test}
