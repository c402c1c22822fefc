"""A prepared group of images fitted together: the building block of fitting and decoder pretraining.

Images stand for samples [C, *S] with D = len(S) in 1..3 spatial axes (one D per group); a
"pixel" is a point of a sample's grid, positions and offsets have D coordinates.

Per image (prepared by :func:`~arc.field.prepare.prepare_images`) the group
holds its fit-space target, latent positions, pixel neighbour index and colour
transform. All latents of the group live in one flat [K, z] tensor, so a
single element-wise optimiser is exactly per-image Adam.

Pixel schedule (the original code's, thesis App. A): each image's permutation of its P pixels is cut
into chunks of m = max(1, floor(pixel_fraction * P)); step t supervises chunk
t mod ceil(P / m). The pixel table is laid out by (chunk count c, phase r,
image, pixel: permutation order, Z-order of the grid for a large image), so the pixels
of step t for all images with c chunks are one contiguous slice: a step is a
few slices of precomputed tables and no per-image Python work (the tables
themselves are built with whole-group tensor operations). Slices longer than the pixel budget are split into
several passes whose gradients accumulate before one optimiser step.

Loss = sum over images of each image's mean squared error over its
supervised pixels and channels, so a batched fit equals fitting each image alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.config import FieldConfig
from arc.field.decoder import Decoder
from arc.field.errors import FieldInputError
from arc.field.offsets import offset_statistics, standardise
from arc.field.prepare import PreparedImages, prepare_images

MIN_MSE = 1e-10  # PSNR is capped at 100 dB for a perfect reconstruction
LOCAL_ORDER_PIXELS = 2048  # an image supervising more pixels per step has them in Z-order of the grid (cache locality)


def chunk_size(pixels: int, pixel_fraction: float) -> int:
    """m = max(1, floor(pixel_fraction * P)) pixels supervised per step."""
    return max(1, math.floor(pixel_fraction * pixels + 1e-9))


@dataclass(frozen=True)
class Pass:
    """Rows [start, stop) of the group's pixel table, processed in one forward/backward pass."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def grid_coordinates(pixel: Tensor, sizes: Tensor) -> Tensor:
    """Grid coordinates [N, D] (int64, first axis first) of row-major point indices ``pixel`` [N] in samples of
    shapes ``sizes`` [N, D]."""
    coords, rest = [], pixel
    for axis in range(sizes.shape[1] - 1, 0, -1):
        coords.append(rest % sizes[:, axis])
        rest = rest // sizes[:, axis]
    return torch.stack([rest, *coords[::-1]], 1)


def z_order(coords: Tensor) -> Tensor:
    """Morton (Z-order) codes [N] int64 of grid coordinates [N, D] (non-negative, each < 2^(63 // D)): their bits
    interleaved, so any run of consecutive codes covers a few compact cells of the grid."""
    dims = coords.shape[1]
    code = torch.zeros(coords.shape[0], dtype=torch.int64, device=coords.device)
    bits = int(coords.max()).bit_length() if coords.numel() else 0
    if bits * dims > 63:
        raise ValueError(f"Z-order codes of {dims}-D coordinates up to {int(coords.max())} need more than 63 bits")
    for bit in range(bits):
        for axis in range(dims):
            code |= ((coords[:, axis] >> bit) & 1) << (bit * dims + dims - 1 - axis)
    return code


def _split(start: int, stop: int, budget: int) -> list[Pass]:
    pieces = max(1, math.ceil((stop - start) / budget))
    bounds = [start + (stop - start) * i // pieces for i in range(pieces + 1)]
    return [Pass(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class FieldGroup:
    """Images prepared for joint fitting on ``device``.

    Attributes: ``latents`` [K, z] (leaf, requires_grad), ``latent_offset`` [B] (cumulative
    latent counts), ``pos`` [K, D], ``sizes`` [B, D] (shapes S), ``dims`` D, ``mean``/``std`` [B, C]; the pixel
    table ``nbr`` [T, n] (global latent index, int32), ``off`` [T, nD] offsets / s (or standardised
    per image, ``field.offset_scale``), ``target`` [T, C] fit space, ``weight`` [T, 1] = 1 / (chunk
    pixels * C), ``image`` [T] image number, ``pixel`` [T] row-major pixel index within its image.
    T = total pixels.

    Fitting with a frozen decoder: :func:`arc.field.fitting.fit_group`; training the decoder jointly:
    :class:`arc.field.pretraining.JointTraining` (both on hand-written gradients; :meth:`loss` is their
    autograd reference).
    """

    def __init__(
        self,
        images: Sequence[Tensor],
        field: FieldConfig,
        split: str,
        indices: Sequence[int],
        seed: int,
        pixel_fraction: float,
        pixel_budget: int,
        device: torch.device | str | None = None,
    ) -> None:
        if len(images) == 0:
            raise FieldInputError("a field group needs at least one image")
        if len(images) != len(indices):
            raise FieldInputError(f"{len(images)} images but {len(indices)} source indices")
        channels = {int(im.shape[0]) if im.ndim >= 2 else -1 for im in images}
        if len(channels) != 1:
            raise FieldInputError(f"all images of a group must have the same channel count, got {sorted(channels)}")
        self.field = field
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.pixel_budget = int(pixel_budget)
        self.indices = [int(i) for i in indices]
        self._build(prepare_images(images, field, seed, split, self.indices), pixel_fraction)

    def __len__(self) -> int:
        return len(self.indices)

    def _build(self, prepared: PreparedImages, pixel_fraction: float) -> None:
        self.dims = prepared.dims
        n, s = self.field.neighbours, self.field.spacing_for(self.dims)
        batch = len(self.indices)
        self.latent_offset = torch.cumsum(prepared.latent_counts, 0)
        self.channels = prepared.target.shape[1]
        self.sizes = prepared.sizes.clone()
        self.mean = prepared.mean.to(self.device)
        self.std = prepared.std.to(self.device)
        self.pos = prepared.pos.to(self.device)
        self.latents = prepared.lat.to(self.device).requires_grad_(True)

        pixels = prepared.pixel_counts  # [B]
        chunk = torch.tensor([chunk_size(int(p), pixel_fraction) for p in pixels])  # m per image
        phases = (pixels + chunk - 1) // chunk  # c = ceil(P / m) per image
        self.step_pixels = int(chunk.sum())
        image = torch.repeat_interleave(torch.arange(batch), pixels)  # [T] in (image, permutation order)
        pixel_start = torch.cumsum(pixels, 0) - pixels
        rank = torch.arange(image.numel()) - pixel_start[image]  # position in the image's permutation
        phase = rank // chunk[image]
        chunk_pixels = torch.minimum(chunk[image], pixels[image] - phase * chunk[image])  # the last chunk may be short
        # rows ordered by (chunk count c, phase r, image), inside by permutation order, or for an image whose
        # chunk spans several blocks in Z-order of the grid: a block then covers a few compact cells of the image
        # and reads few latents, which stay in cache (the step's pixels are the same; only the order of its sums
        # changes)
        most = int(phases.max())
        slot = phases[image] * most + phase  # (c, r) slot, ascending in c then r
        within = rank.clone()  # the permutation order, kept for small images
        local = chunk[image] > LOCAL_ORDER_PIXELS
        if bool(local.any()):
            within[local] = z_order(grid_coordinates(prepared.perm[local], prepared.sizes[image[local]]))
        order = torch.sort(within, stable=True).indices
        order = order[torch.sort((slot * batch + image)[order], stable=True).indices]
        image, phase, chunk_pixels, slot = image[order], phase[order], chunk_pixels[order], slot[order]
        pixel = prepared.perm[order]
        row = pixel_start[image] + pixel
        latent_start = self.latent_offset - prepared.latent_counts
        nbr = prepared.nbr[row] + latent_start[image, None]  # [T, n] global latent index
        query = grid_coordinates(pixel, prepared.sizes[image]).float()
        raw = (prepared.pos[nbr] - query[:, None, :]).reshape(-1, self.dims * n)  # latent - pixel [px]
        if self.field.offset_mode == "per_image":
            mean, std = offset_statistics(raw, image, batch)
            off = standardise(raw, mean[image, None], std[image, None])
        else:
            off = raw / s

        rows_per_slot = torch.bincount(slot, minlength=(most + 1) * most).tolist()
        self._schedule: list[tuple[int, list[list[Pass]]]] = []
        cursor = 0
        for c in sorted(set(phases.tolist())):
            passes = []
            for r in range(c):
                stop = cursor + rows_per_slot[c * most + r]
                passes.append(_split(cursor, stop, self.pixel_budget))
                cursor = stop
            self._schedule.append((c, passes))
        index_dtype = torch.int32 if int(self.latent_offset[-1]) < 2**31 else torch.int64
        self.nbr = nbr.to(self.device, index_dtype)  # int32 halves the gather index traffic
        self.off = off.to(self.device)
        self.target = prepared.target[row].to(self.device)
        self.weight = (1.0 / (chunk_pixels * self.channels).double()).float()[:, None].to(self.device)
        self.image = image.to(self.device)
        self.pixel = pixel.to(self.device)

    @property
    def num_pixels(self) -> int:
        return int(self.nbr.shape[0])

    def passes(self, step: int) -> list[Pass]:
        """The passes of optimisation step ``step`` (each at most ``pixel_budget`` pixels)."""
        return [p for c, phases in self._schedule for p in phases[step % c]]

    def all_passes(self) -> list[Pass]:
        """Every pixel of every image once, in passes of at most ``pixel_budget`` pixels."""
        return _split(0, self.num_pixels, self.pixel_budget)

    def inputs(self, latents: Tensor, piece: Pass) -> Tensor:
        """Decoder input of the pass's pixels -> [M, n(z+D)] (latents nearest-first, then offsets)."""
        sl = slice(piece.start, piece.stop)
        gathered = latents.index_select(0, self.nbr[sl].reshape(-1)).reshape(piece.size, -1)
        return torch.cat([gathered, self.off[sl].to(gathered.dtype)], dim=1)

    def loss(self, decoder: Decoder, latents: Tensor, piece: Pass) -> Tensor:
        """Autograd loss of one pass: sum over its pixels of weight * squared error (sum of per-image means)."""
        sl = slice(piece.start, piece.stop)
        pred = decoder(self.inputs(latents, piece)).float()
        return (self.weight[sl] * (pred - self.target[sl]).square()).sum()

    @torch.no_grad()
    def predict(self, decoder: Decoder, latents: Tensor, piece: Pass) -> Tensor:
        """Decoder output [M, C] (fit space) for the pass's pixels."""
        return decoder(self.inputs(latents, piece)).float()

    @torch.no_grad()
    def psnr(self, decoder: Decoder, latents: Tensor | None = None) -> Tensor:
        """[B] PSNR of every image on the [0, 1] image (colour transform undone, clamped, data_range 1)."""
        latents = self.latents if latents is None else latents
        squared = torch.zeros(len(self), device=self.device, dtype=torch.float64)
        for piece in self.all_passes():
            sl = slice(piece.start, piece.stop)
            img = self.image[sl]
            mean, std = self.mean[img], self.std[img]
            pred = (self.predict(decoder, latents, piece) * std + mean).clamp(0.0, 1.0)
            truth = self.target[sl] * std + mean
            squared.index_add_(0, img, (pred - truth).square().sum(1).double())
        pixels = (self.sizes.prod(dim=1) * self.channels).to(self.device)
        mse = (squared / pixels).clamp_min(MIN_MSE)
        return (-10.0 * torch.log10(mse)).float().cpu()

    def clouds(self, latents: Tensor | None = None, labels: Sequence[int] | Tensor | None = None) -> CloudBatch:
        """The fitted clouds (CPU) with sizes, source indices, colour transform and labels (-1 if unknown)."""
        latents = self.latents if latents is None else latents
        label = torch.full((len(self),), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels).long()
        return CloudBatch(
            pos=self.pos.detach().cpu().clone(),
            lat=latents.detach().float().cpu().clone(),
            offset=self.latent_offset.clone(),
            label=label.cpu(),
            size=self.sizes.clone(),
            index=torch.tensor(self.indices, dtype=torch.long),
            colour_mean=self.mean.cpu().clone(),
            colour_std=self.std.cpu().clone(),
        )
