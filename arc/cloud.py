"""The data contract: a flat, ragged batch of latent clouds (PTv3 ``offset`` convention).

Every part of arc (fitting, store, augmentations, classifier, visualisation)
exchanges clouds as a :class:`CloudBatch`. See ``docs/architecture.md``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import torch
from torch import Tensor

from arc import ragged


class CloudError(ValueError):
    """A cloud batch violates the data contract."""


@dataclass
class CloudBatch:
    """B clouds with N points in total, of samples with D spatial axes (images: D = 2).

    pos: [N, D] float32, in sample units along the spatial axes (images: (row, col) in pixel units, origin top-left).
    lat: [N, z] float32 latent vectors.
    offset: [B] int64, cumulative point counts (end index of each cloud).
    label: [B] int64, or [B, classes] float for mixed targets.
    size: [B, D] int64, the sample shape S (images: (H, W)).
    index: [B] int64, the image's index in its source split.
    colour_mean, colour_std: [B, C] float32, the colour transform used at fitting.
    """

    pos: Tensor
    lat: Tensor
    offset: Tensor
    label: Tensor
    size: Tensor
    index: Tensor
    colour_mean: Tensor
    colour_std: Tensor

    def __len__(self) -> int:
        return int(self.offset.numel())

    @property
    def num_points(self) -> int:
        return int(self.pos.shape[0])

    @property
    def dims(self) -> int:
        """D, the spatial dimensions of the clouds' samples."""
        return int(self.pos.shape[1])

    @property
    def device(self) -> torch.device:
        return self.pos.device

    def counts(self) -> Tensor:
        """[B] int64 number of points per cloud."""
        return ragged.counts(self.offset)

    def starts(self) -> Tensor:
        """[B] int64 start index of each cloud."""
        return ragged.starts(self.offset)

    def batch_ids(self) -> Tensor:
        """[N] int64 cloud number of every point."""
        return ragged.batch_ids(self.counts())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CloudBatch":
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> "CloudBatch":
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def select(self, clouds: Sequence[int] | Tensor) -> "CloudBatch":
        """The sub-batch of the given cloud numbers, in that order."""
        clouds = torch.as_tensor(clouds, dtype=torch.long, device=self.device)
        counts = self.counts()[clouds]
        point_ids = ragged.range_indices(self.starts()[clouds], counts)
        return CloudBatch(
            pos=self.pos[point_ids],
            lat=self.lat[point_ids],
            offset=ragged.offsets(counts),
            label=self.label[clouds],
            size=self.size[clouds],
            index=self.index[clouds],
            colour_mean=self.colour_mean[clouds],
            colour_std=self.colour_std[clouds],
        )

    def cloud(self, i: int) -> "CloudBatch":
        """Cloud number ``i`` as a batch of one."""
        return self.select([i])

    @classmethod
    def empty(cls, latent_dim: int, channels: int, dims: int = 2) -> "CloudBatch":
        """A batch of zero clouds with z = ``latent_dim``, ``channels`` colour channels and D = ``dims``."""
        long = torch.zeros(0, dtype=torch.long)
        return cls(pos=torch.zeros(0, dims), lat=torch.zeros(0, latent_dim), offset=long, label=long,
                   size=torch.zeros(0, dims, dtype=torch.long), index=long, colour_mean=torch.zeros(0, channels),
                   colour_std=torch.zeros(0, channels))

    @classmethod
    def concat(cls, batches: Sequence["CloudBatch"]) -> "CloudBatch":
        """Join batches into one (clouds keep their order)."""
        if not batches:
            raise CloudError("cannot concatenate an empty list of cloud batches")
        shifts = torch.cumsum(torch.tensor([0] + [b.num_points for b in batches[:-1]]), 0)
        return cls(
            pos=torch.cat([b.pos for b in batches]),
            lat=torch.cat([b.lat for b in batches]),
            offset=torch.cat([b.offset + int(s) for b, s in zip(batches, shifts)]),
            label=torch.cat([b.label for b in batches]),
            size=torch.cat([b.size for b in batches]),
            index=torch.cat([b.index for b in batches]),
            colour_mean=torch.cat([b.colour_mean for b in batches]),
            colour_std=torch.cat([b.colour_std for b in batches]),
        )

    def validate(self) -> "CloudBatch":
        """Raise :class:`CloudError` with one clear message if the batch breaks the contract."""
        b = len(self)
        if self.pos.ndim != 2 or self.pos.shape[1] not in (1, 2, 3):
            raise CloudError(f"pos must be [N, D] with D in 1..3, got {tuple(self.pos.shape)}")
        if self.size.ndim != 2 or self.size.shape[1] != self.pos.shape[1]:
            raise CloudError(f"size must be [B, D] with the D of pos [N, {self.pos.shape[1]}], got {tuple(self.size.shape)}")
        if self.lat.ndim != 2 or self.lat.shape[0] != self.pos.shape[0]:
            raise CloudError(f"lat must be [N, z] with N = {self.pos.shape[0]}, got {tuple(self.lat.shape)}")
        if self.offset.dtype != torch.int64 or self.offset.ndim != 1:
            raise CloudError("offset must be a 1-D int64 tensor of cumulative point counts")
        if b and (int(self.offset[-1]) != self.num_points or bool((self.counts() < 0).any())):
            raise CloudError("offset must be non-decreasing and end at the number of points")
        for name in ("label", "size", "index", "colour_mean", "colour_std"):
            if getattr(self, name).shape[0] != b:
                raise CloudError(f"{name} has {getattr(self, name).shape[0]} rows for {b} clouds")
        if b and bool((self.counts() == 0).any()):
            raise CloudError(f"clouds {torch.nonzero(self.counts() == 0).flatten().tolist()} are empty")
        if not bool(torch.isfinite(self.lat).all()) or not bool(torch.isfinite(self.pos).all()):
            raise CloudError("cloud positions or latents contain NaN or inf")
        return self
