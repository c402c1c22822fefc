"""Everything random and precomputed for the samples of a field group, batched over samples of one shape.

A sample is [C, *S] with D = len(S) in 1..3 spatial axes (images: [C, H, W]); "pixel" below reads
"point of the sample's grid", and every sample of a call has the same D.

Per image, every random draw comes from ``item_generator(seed, split, index)`` in this
order: positions (one uniform per pixel for the Gumbel top-k), latent init U(±1e-4), pixel
permutation. Images of the same size share the colour, gradient, top-k and neighbour
kernels, so preparing many small images costs a few kernels rather than per-image work;
each image's result equals preparing it alone.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import math

import torch
from torch import Tensor

from arc.field.colour import check_sample, to_fit_space_batch
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError
from arc.field.neighbours import sample_neighbours_batch
from arc.field.sampling import sample_latent_count, sample_positions_batch
from arc.seeding import item_generator

LATENT_INIT = 1e-4
CHUNK_PIXELS = 1 << 22  # pixels of same-size images prepared together (bounds the temporary memory)


@dataclass
class PreparedImages:
    """B images ready for fitting (CPU), concatenated in input order.

    ``sizes`` [B, D] (the shapes S; images: (H, W)) and ``latent_counts`` [B]. Image b owns a block of prod(S) rows of
    ``target`` [T, C] (fit space, row-major pixels), ``perm`` [T] (its pixel permutation, indices
    within the image) and ``nbr`` [T, n] (the latents nearest to each pixel, indices within the
    cloud), and a block of k_b rows of ``pos`` [K, D] (an image's (row, col)) and ``lat`` [K, z].
    ``mean``/``std`` [B, C] undo the colour transform.
    """

    sizes: Tensor
    latent_counts: Tensor
    target: Tensor
    mean: Tensor
    std: Tensor
    pos: Tensor
    lat: Tensor
    perm: Tensor
    nbr: Tensor

    @property
    def pixel_counts(self) -> Tensor:
        """[B] points per sample (pixels per image)."""
        return self.sizes.prod(dim=1)

    @property
    def dims(self) -> int:
        """D, the samples' spatial dimensions."""
        return int(self.sizes.shape[1])


def prepare_images(
    images: Sequence[Tensor], field: FieldConfig, seed: int, split: str, indices: Sequence[int]
) -> PreparedImages:
    """Sample positions, initialise latents, draw pixel permutations and index neighbours for samples [C, *S] in [0, 1]
    (all with one D = len(S); images [C, H, W])."""
    if len(images) != len(indices) or not images:
        raise FieldInputError(f"preparation needs one source index per image, got {len(images)} images and {len(indices)} indices")
    dims = {check_sample(image) for image in images}
    if len(dims) != 1:
        raise FieldInputError(f"the samples of one call must have the same number of spatial dimensions, got {sorted(dims)}")
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for b, image in enumerate(images):
        buckets[tuple(image.shape)].append(b)
    parts: list[tuple[Tensor, ...]] = [()] * len(images)
    for (_, *shape), members in buckets.items():
        sample_latent_count(shape, 0, field)  # raises for samples with fewer than n points
        per_chunk = max(1, CHUNK_PIXELS // math.prod(shape))
        for start in range(0, len(members), per_chunk):
            chunk = members[start : start + per_chunk]
            for b, part in zip(chunk, _prepare_same_size([images[b] for b in chunk], field, seed, split, [indices[b] for b in chunk])):
                parts[b] = part
    target, mean, std, pos, lat, perm, nbr = zip(*parts)
    return PreparedImages(
        sizes=torch.tensor([list(image.shape[1:]) for image in images], dtype=torch.long),
        latent_counts=torch.tensor([p.shape[0] for p in pos], dtype=torch.long),
        target=torch.cat(target),
        mean=torch.stack(mean),
        std=torch.stack(std),
        pos=torch.cat(pos),
        lat=torch.cat(lat),
        perm=torch.cat(perm),
        nbr=torch.cat(nbr),
    )


def _prepare_same_size(
    images: list[Tensor], field: FieldConfig, seed: int, split: str, indices: list[int]
) -> list[tuple[Tensor, ...]]:
    """Per sample (target [P, C], mean [C], std [C], pos [k, D], lat [k, z], perm [P], nbr [P, n])."""
    stack = torch.stack([image.detach().to("cpu", torch.float32) for image in images])
    channels, shape = stack.shape[1], tuple(stack.shape[2:])
    target, mean, std = to_fit_space_batch(stack, field.colour)
    generators = [item_generator(seed, split, index) for index in indices]
    positions = sample_positions_batch(target, field, generators)
    latents = [
        torch.empty(p.shape[0], field.latent_dim).uniform_(-LATENT_INIT, LATENT_INIT, generator=g)
        for p, g in zip(positions, generators)
    ]
    perms = [torch.randperm(math.prod(shape), generator=g) for g in generators]
    neighbours: list[Tensor] = [torch.empty(0)] * len(images)
    by_count: dict[int, list[int]] = defaultdict(list)
    for b, p in enumerate(positions):
        by_count[p.shape[0]].append(b)
    for members in by_count.values():
        found = sample_neighbours_batch(torch.stack([positions[b] for b in members]), shape, field.neighbours)
        for b, nbr in zip(members, found):
            neighbours[b] = nbr
    rows = target.reshape(len(images), channels, -1).transpose(1, 2)  # [B, P, C]
    return list(zip(rows, mean, std, positions, latents, perms, neighbours))
