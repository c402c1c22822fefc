"""The contract every augmentation keeps, and the random draws they share.

An op takes a whole :class:`~arc.cloud.CloudBatch` and returns a new one (inputs are never
modified in place). Randomness comes from ``generator`` when one is passed (drawn on the
generator's device, then moved to the batch's), else from the global torch RNG.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from arc import ragged
from arc.cloud import CloudBatch

__all__ = ["AugmentConfigError", "CloudAugmentation", "random_subset"]


class AugmentConfigError(ValueError):
    """An augmentation name or parameter is invalid."""


def rand(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """U[0, 1) float32 on ``device``, drawn from ``generator`` (on its own device) when given."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randn(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Tensor:
    """N(0, 1) float32 on ``device``, drawn like :func:`rand`."""
    if generator is None:
        return torch.randn(shape, device=device)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def uniform(shape: tuple[int, ...], low: float, high: float, device: torch.device,
            generator: torch.Generator | None) -> Tensor:
    """U[low, high) float32 on ``device``, drawn like :func:`rand`."""
    return low + (high - low) * rand(shape, device, generator)


def random_subset(batch_ids: Tensor, starts: Tensor, n_keep: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """[N] bool mask choosing ``n_keep[c]`` uniformly random points of every cloud ``c``.

    batch_ids: [N] int64 cloud number of each point (sorted, the flat layout);
    starts: [B] int64 first point of each cloud; n_keep: [B] int64 (clipped to
    the cloud size by construction of the ranks).
    """
    n = batch_ids.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=batch_ids.device)
    shuffled = torch.argsort(rand((n,), batch_ids.device, generator))
    order = shuffled[torch.argsort(batch_ids[shuffled], stable=True)]  # random order within each cloud
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=batch_ids.device) - starts[batch_ids]
    return rank < n_keep[batch_ids]


def points_where(batch: CloudBatch, keep: Tensor) -> CloudBatch:
    """The batch restricted to points where ``keep`` [N] is true (cloud order kept)."""
    kept = ragged.segment_sum(keep.long(), batch.batch_ids(), len(batch))
    return replace(batch, pos=batch.pos[keep], lat=batch.lat[keep], offset=ragged.offsets(kept))


def check_prob(name: str, p: float) -> float:
    """``p`` as a float, or :class:`AugmentConfigError` unless it is a number in [0, 1]."""
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) <= 1.0:
        raise AugmentConfigError(f"{name}: p must be a number in [0, 1], got {p!r}")
    return float(p)


def check_nonneg(name: str, key: str, value: Any) -> float:
    """``value`` as a float, or :class:`AugmentConfigError` unless it is a finite number >= 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise AugmentConfigError(f"{name}: {key} must be a finite number >= 0, got {value!r}")
    return float(value)


class CloudAugmentation(ABC):
    """Base class: ``op(batch, generator=None) -> CloudBatch``; applied to each cloud with probability ``p``."""

    name = "augmentation"

    def __init__(self, p: float = 1.0) -> None:
        self.p = check_prob(self.name, p)

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None) -> CloudBatch:
        if self.p == 0.0 or len(batch) == 0:
            return batch
        return self.apply(batch, self.active(batch, generator), generator)

    def active(self, batch: CloudBatch, generator: torch.Generator | None) -> Tensor:
        """[B] bool: which clouds the op applies to (drawn with probability ``p``)."""
        if self.p >= 1.0:
            return torch.ones(len(batch), dtype=torch.bool, device=batch.device)
        return rand((len(batch),), batch.device, generator) < self.p

    @abstractmethod
    def apply(self, batch: CloudBatch, active: Tensor, generator: torch.Generator | None) -> CloudBatch:
        """Transform the clouds where ``active`` [B] is true."""

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        return f"{type(self).__name__}(p={self.p}{', ' + extra if extra else ''})"
