"""ARCMix: mix every cloud with a partner cloud of the batch, with soft targets from the actual point shares."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arc import ragged
from arc.augment.base import AugmentConfigError, check_nonneg, check_prob, rand, random_subset
from arc.cloud import CloudBatch

__all__ = ["ARCMix", "soft_labels"]


def soft_labels(label: Tensor, num_classes: int) -> Tensor:
    """[B, classes] float probability targets from [B] int64 labels (or pass soft labels through)."""
    if label.ndim == 2:
        if label.shape[1] != num_classes:
            raise AugmentConfigError(f"soft labels have {label.shape[1]} columns for {num_classes} classes")
        return label.float()
    return F.one_hot(label.long(), num_classes).float()


class ARCMix:
    """Mix every cloud i with a partner j; one lambda ~ Beta(alpha, alpha) per batch, applied with probability ``p``.

    variant "subset": floor(lambda k_i) random points of i and floor((1-lambda) k_j) random points of j.
    variant "box": a D-dimensional box covering (1-lambda) of cloud i's sample volume (image area in 2-D,
    an interval in 1-D; inside the sample, random place; every side the fraction (1-lambda)^(1/D) of
    the sample's): points of i outside the box and points of j inside it (j's positions read in the same frame).
    Partners come from the original batch: ``partner="roll"`` (j = i+1 mod B) or ``"permute"`` (random).
    Targets become soft [B, classes]: each cloud's weight is its actual share of points.
    A pair whose mix would be empty keeps cloud i unchanged (weight 1).
    """

    name = "arcmix"
    variants = ("subset", "box")
    partners = ("roll", "permute")

    def __init__(self, num_classes: int, alpha: float = 1.0, variant: str = "subset", partner: str = "roll", p: float = 1.0) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise AugmentConfigError(f"arcmix: num_classes must be a positive int, got {num_classes!r}")
        alpha = check_nonneg(self.name, "alpha", alpha)
        if alpha <= 0:
            raise AugmentConfigError(f"arcmix: alpha must be > 0, got {alpha!r}")
        if variant not in self.variants:
            raise AugmentConfigError(f"arcmix: variant must be one of {list(self.variants)}, got {variant!r}")
        if partner not in self.partners:
            raise AugmentConfigError(f"arcmix: partner must be one of {list(self.partners)}, got {partner!r}")
        self.num_classes, self.alpha, self.variant, self.partner = num_classes, alpha, variant, partner
        self.p = check_prob(self.name, p)

    def __repr__(self) -> str:
        return f"ARCMix(p={self.p}, alpha={self.alpha}, variant={self.variant!r}, partner={self.partner!r})"

    def sample_lambda(self, generator: torch.Generator | None = None) -> float:
        """One lambda ~ Beta(alpha, alpha), reproducible from ``generator`` (or the global torch RNG)."""
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
        return float(np.random.default_rng(seed).beta(self.alpha, self.alpha))

    def __call__(self, batch: CloudBatch, generator: torch.Generator | None = None, lam: float | None = None) -> CloudBatch:
        """The mixed batch (same number of clouds, soft labels [B, classes]); ``lam`` fixes lambda instead of drawing it."""
        b = len(batch)
        if b == 0 or self.p == 0.0:
            return batch
        if self.p < 1.0 and float(rand((1,), torch.device("cpu"), generator)) >= self.p:
            return batch
        lam = self.sample_lambda(generator) if lam is None else float(lam)
        device = batch.device
        if self.partner == "roll":
            partner = torch.roll(torch.arange(b, device=device), -1)
        elif generator is None:
            partner = torch.randperm(b, device=device)
        else:
            partner = torch.randperm(b, generator=generator, device=generator.device).to(device)
        inverse = torch.empty_like(partner)
        inverse[partner] = torch.arange(b, device=device)

        ids, counts = batch.batch_ids(), batch.counts()
        if self.variant == "subset":
            n_own = torch.floor(lam * counts.double()).long()
            n_other = torch.floor((1.0 - lam) * counts[partner].double()).long()
            own = random_subset(ids, batch.starts(), n_own, generator)
            other = random_subset(ids, batch.starts(), n_other[inverse], generator)  # indexed by source cloud
        else:
            lo, extent = self._boxes(batch, lam, generator)
            inside_own = self._inside(batch.pos, lo[ids], extent[ids])
            inside_other = self._inside(batch.pos, lo[inverse][ids], extent[inverse][ids])
            own, other = ~inside_own, inside_other

        n_own = ragged.segment_sum(own.long(), ids, b)
        n_other = ragged.segment_sum(other.long(), inverse[ids], b)  # per destination cloud
        empty = (n_own + n_other) == 0
        if bool(empty.any()):  # such pairs keep cloud i unchanged
            own = own | empty[ids]
            other = other & ~empty[inverse[ids]]
            n_own = ragged.segment_sum(own.long(), ids, b)
            n_other = ragged.segment_sum(other.long(), inverse[ids], b)

        own_idx, other_idx = torch.nonzero(own).flatten(), torch.nonzero(other).flatten()
        dest = torch.cat([ids[own_idx], inverse[ids[other_idx]]])
        part = torch.cat([torch.zeros_like(own_idx), torch.ones_like(other_idx)])
        points = torch.cat([own_idx, other_idx])[torch.argsort(dest * 2 + part, stable=True)]

        total = n_own + n_other
        w_own = (n_own.double() / total.clamp(min=1).double()).float().unsqueeze(1)
        targets = soft_labels(batch.label, self.num_classes)
        label = w_own * targets + (1.0 - w_own) * targets[partner]
        return replace(batch, pos=batch.pos[points], lat=batch.lat[points], offset=ragged.offsets(total), label=label)

    @staticmethod
    def _inside(pos: Tensor, lo: Tensor, extent: Tensor) -> Tensor:
        """[N] bool: pos [N, D] lies in the half-open box [lo, lo + extent) (both [N, D])."""
        return ((pos >= lo) & (pos < lo + extent)).all(dim=1)

    def _boxes(self, batch: CloudBatch, lam: float, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """[B, D] low corner and [B, D] extent of each cloud's box; the sample spans [-0.5, S-0.5) on every axis."""
        size, d, share = batch.size.to(torch.float32), batch.dims, max(0.0, 1.0 - lam)
        extent = size * (math.sqrt(share) if d == 2 else share ** (1.0 / d))  # sqrt: the 2-D draws bit for bit
        lo = -0.5 + (size - extent) * rand((len(batch), d), batch.device, generator)
        return lo.to(batch.pos.dtype), extent.to(batch.pos.dtype)
