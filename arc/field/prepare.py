"""Everything random and precomputed for the images of a field group, batched over images of one size.

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

import torch
from torch import Tensor

from arc.field.colour import check_image, to_fit_space_batch
from arc.field.config import FieldConfig
from arc.field.errors import FieldInputError
from arc.field.neighbours import pixel_neighbours_batch
from arc.field.sampling import latent_count, sample_positions_batch
from arc.seeding import item_generator

LATENT_INIT = 1e-4
CHUNK_PIXELS = 1 << 22  # pixels of same-size images prepared together (bounds the temporary memory)


@dataclass
class PreparedImages:
    """B images ready for fitting (CPU), concatenated in input order.

    ``sizes`` [B, 2] (H, W) and ``latent_counts`` [B]. Image b owns a block of H*W rows of
    ``target`` [T, C] (fit space, row-major pixels), ``perm`` [T] (its pixel permutation, indices
    within the image) and ``nbr`` [T, n] (the latents nearest to each pixel, indices within the
    cloud), and a block of k_b rows of ``pos`` [K, 2] (row, col) and ``lat`` [K, z].
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
        """[B] pixels per image."""
        return self.sizes[:, 0] * self.sizes[:, 1]


def prepare_images(
    images: Sequence[Tensor], field: FieldConfig, seed: int, split: str, indices: Sequence[int]
) -> PreparedImages:
    """Sample positions, initialise latents, draw pixel permutations and index neighbours for [C, H, W] images in [0, 1]."""
    if len(images) != len(indices) or not images:
        raise FieldInputError(f"preparation needs one source index per image, got {len(images)} images and {len(indices)} indices")
    for image in images:
        check_image(image)
    buckets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for b, image in enumerate(images):
        buckets[tuple(image.shape)].append(b)
    parts: list[tuple[Tensor, ...]] = [()] * len(images)
    for (_, height, width), members in buckets.items():
        latent_count(height, width, 0, field)  # raises for images with fewer than n pixels
        per_chunk = max(1, CHUNK_PIXELS // (height * width))
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
    """Per image (target [P, C], mean [C], std [C], pos [k, 2], lat [k, z], perm [P], nbr [P, n])."""
    stack = torch.stack([image.detach().to("cpu", torch.float32) for image in images])
    channels, height, width = stack.shape[1:]
    target, mean, std = to_fit_space_batch(stack, field.colour)
    generators = [item_generator(seed, split, index) for index in indices]
    positions = sample_positions_batch(target, field, generators)
    latents = [
        torch.empty(p.shape[0], field.latent_dim).uniform_(-LATENT_INIT, LATENT_INIT, generator=g)
        for p, g in zip(positions, generators)
    ]
    perms = [torch.randperm(height * width, generator=g) for g in generators]
    neighbours: list[Tensor] = [torch.empty(0)] * len(images)
    by_count: dict[int, list[int]] = defaultdict(list)
    for b, p in enumerate(positions):
        by_count[p.shape[0]].append(b)
    for members in by_count.values():
        found = pixel_neighbours_batch(torch.stack([positions[b] for b in members]), height, width, field.neighbours)
        for b, nbr in zip(members, found):
            neighbours[b] = nbr
    rows = target.reshape(len(images), channels, -1).transpose(1, 2)  # [B, P, C]
    return list(zip(rows, mean, std, positions, latents, perms, neighbours))
