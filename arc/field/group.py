"""A prepared group of images fitted together: the building block of fitting and decoder pretraining.

Per image (random draws from ``item_generator(seed, split, index)`` in this
order: positions, latent init, pixel permutation) the group holds its
fit-space target, latent positions, pixel neighbour index and colour
transform. All latents of the group live in one flat [K, z] tensor, so a
single element-wise optimiser is exactly per-image Adam.

Pixel schedule (ARC-SPEC §5): each image's permutation of its P pixels is cut
into chunks of m = max(1, floor(pixel_fraction * P)); step t supervises chunk
t mod ceil(P / m). The pixel table is laid out by (chunk count c, phase r,
image, pixel), so the pixels of step t for all images with c chunks are one
contiguous slice: a step is a few slices of precomputed tables and no
per-image Python work. Slices longer than the pixel budget are split into
several passes whose gradients accumulate before one optimiser step.

Loss = sum over images of each image's mean squared error over its
supervised pixels and channels, so a batched fit equals fitting each image alone.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.colour import check_image, to_fit_space
from arc.field.config import FieldConfig
from arc.field.decoder import Decoder
from arc.field.errors import FieldInputError
from arc.field.neighbours import pixel_neighbours
from arc.field.sampling import latent_count, sample_positions
from arc.seeding import item_generator

LATENT_INIT = 1e-4
MIN_MSE = 1e-10  # PSNR is capped at 100 dB for a perfect reconstruction
CPU_MICRO_BATCH = 2048  # pixels per matmul block on CPU, so activations stay in cache


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


@dataclass
class _Prepared:
    target: Tensor  # [C, H, W] fit space
    mean: Tensor
    std: Tensor
    pos: Tensor  # [k, 2]
    lat: Tensor  # [k, z]
    perm: Tensor  # [P]
    nbr: Tensor  # [P, n] local latent indices, row-major pixels


def prepare_image(image01: Tensor, field: FieldConfig, seed: int, split: str, index: int) -> _Prepared:
    """Everything random and precomputed for one image (CPU)."""
    check_image(image01)
    image01 = image01.detach().to("cpu", torch.float32)
    _, height, width = image01.shape
    latent_count(height, width, 0, field)  # raises for images with fewer than n pixels
    target, mean, std = to_fit_space(image01, field.colour)
    generator = item_generator(seed, split, index)
    pos = sample_positions(target, field, generator)
    lat = torch.empty(pos.shape[0], field.latent_dim).uniform_(-LATENT_INIT, LATENT_INIT, generator=generator)
    perm = torch.randperm(height * width, generator=generator)
    nbr = pixel_neighbours(pos, height, width, field.neighbours)
    return _Prepared(target, mean, std, pos, lat, perm, nbr)


def _split(start: int, stop: int, budget: int) -> list[Pass]:
    pieces = max(1, math.ceil((stop - start) / budget))
    bounds = [start + (stop - start) * i // pieces for i in range(pieces + 1)]
    return [Pass(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class FieldGroup:
    """Images prepared for joint fitting on ``device``.

    Attributes: ``latents`` [K, z] (leaf, requires_grad), ``latent_offset`` [B] (cumulative
    latent counts), ``pos`` [K, 2], ``sizes`` [B, 2], ``mean``/``std`` [B, C]; the pixel
    table ``nbr`` [T, n] (global latent index, int32), ``off`` [T, 2n] offsets / s, ``target``
    [T, C] fit space, ``weight`` [T, 1] = 1 / (chunk pixels * C), ``image`` [T] image number,
    ``pixel`` [T] row-major pixel index within its image. T = total pixels.
    ``workers`` > 1 prepares the images (sampling, neighbours) in that many threads.

    A training loop with a trainable decoder (e.g. a LightningModule with manual optimisation)::

        for step in range(steps):
            optimiser.zero_grad()
            for piece in group.passes(step):
                group.loss(decoder, group.latents, piece).backward()
            optimiser.step()
        psnr, clouds = group.psnr(decoder), group.clouds(labels=labels)
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
        workers: int = 1,
    ) -> None:
        if len(images) == 0:
            raise FieldInputError("a field group needs at least one image")
        if len(images) != len(indices):
            raise FieldInputError(f"{len(images)} images but {len(indices)} source indices")
        channels = {int(im.shape[0]) if im.ndim == 3 else -1 for im in images}
        if len(channels) != 1:
            raise FieldInputError(f"all images of a group must have the same channel count, got {sorted(channels)}")
        self.field = field
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.pixel_budget = int(pixel_budget)
        self.indices = [int(i) for i in indices]
        jobs = [(im, field, seed, split, i) for im, i in zip(images, self.indices)]
        if workers > 1 and len(jobs) > 1:  # per-image preparation runs mostly outside the GIL
            with ThreadPoolExecutor(max_workers=workers) as pool:
                prepared = list(pool.map(lambda job: prepare_image(*job), jobs))
        else:
            prepared = [prepare_image(*job) for job in jobs]
        self._build(prepared, pixel_fraction)

    def __len__(self) -> int:
        return len(self.indices)

    def _build(self, prepared: list[_Prepared], pixel_fraction: float) -> None:
        n, s = self.field.neighbours, self.field.spacing
        counts = torch.tensor([p.pos.shape[0] for p in prepared])
        self.latent_offset = torch.cumsum(counts, 0)
        starts = (self.latent_offset - counts).tolist()
        self.channels = prepared[0].target.shape[0]
        self.sizes = torch.tensor([list(p.target.shape[1:]) for p in prepared], dtype=torch.long)
        self.mean = torch.stack([p.mean for p in prepared]).to(self.device)
        self.std = torch.stack([p.std for p in prepared]).to(self.device)
        self.pos = torch.cat([p.pos for p in prepared]).to(self.device)
        self.latents = torch.cat([p.lat for p in prepared]).to(self.device).requires_grad_(True)

        chunks: dict[int, list[int]] = {}
        sizes: list[int] = []
        for b, p in enumerate(prepared):
            pixels = p.perm.numel()
            m = chunk_size(pixels, pixel_fraction)
            sizes.append(m)
            chunks.setdefault(math.ceil(pixels / m), []).append(b)
        self.step_pixels = sum(sizes)

        rows: list[tuple[Tensor, ...]] = []
        self._schedule: list[tuple[int, list[list[Pass]]]] = []
        cursor = 0
        for c in sorted(chunks):
            phases = []
            for r in range(c):
                start = cursor
                for b in chunks[c]:
                    p, m = prepared[b], sizes[b]
                    pix = p.perm[r * m : (r + 1) * m]
                    height, width = p.target.shape[1:]
                    local = p.nbr[pix]  # [M, n]
                    query = torch.stack([pix // width, pix % width], 1).float()
                    off = (p.pos[local] - query[:, None, :]).reshape(-1, 2 * n) / s
                    target = p.target.reshape(self.channels, -1)[:, pix].t()
                    weight = torch.full((pix.numel(), 1), 1.0 / (pix.numel() * self.channels))
                    image = torch.full((pix.numel(),), b, dtype=torch.long)
                    rows.append((local + starts[b], off, target, weight, image, pix))
                    cursor += pix.numel()
                phases.append(_split(start, cursor, self.pixel_budget))
            self._schedule.append((c, phases))
        nbr, off, target, weight, image, pixel = (torch.cat(col) for col in zip(*rows))
        index_dtype = torch.int32 if int(self.latent_offset[-1]) < 2**31 else torch.int64
        self.nbr = nbr.to(self.device, index_dtype)  # int32 halves the gather index traffic
        self.off = off.to(self.device)
        self.target = target.contiguous().to(self.device)
        self.weight = weight.to(self.device)
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
        """Decoder input of the pass's pixels -> [M, n(z+2)] (latents nearest-first, then offsets)."""
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
        pixels = (self.sizes[:, 0] * self.sizes[:, 1] * self.channels).to(self.device)
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


class FrozenStep:
    """Input gradient of a group's loss through a frozen decoder, written by hand.

    Only the two big matmul pairs remain: forward h = relu(W1 [lat; off] + b1),
    y = W2 h + b2; backward dh = (W2^T dy) * (h > 0), dlat = W1_lat^T dh, scattered into
    the latent gradient by ``index_add_``. No weight gradients are computed.
    ``dtype`` is the matmul precision (float32, or bfloat16/float16 on CUDA).
    """

    def __init__(self, decoder: Decoder, group: FieldGroup, dtype: torch.dtype = torch.float32, micro_batch: int | None = None) -> None:
        nz = decoder.neighbours * decoder.latent_dim
        w1 = decoder.hidden.weight.detach().to(group.device, dtype)
        self.w1_lat = w1[:, :nz].contiguous()  # [hid, nz]
        self.w1_lat_t = self.w1_lat.t()
        self.w1_off_t = w1[:, nz:].t()  # [2n, hid] (a transposed view; BLAS takes it as is)
        self.b1 = decoder.hidden.bias.detach().to(group.device, dtype)
        self.w2 = decoder.out.weight.detach().to(group.device, dtype)  # [C, hid]
        self.w2_t = self.w2.t()
        self.b2 = decoder.out.bias.detach().to(group.device, dtype)
        # one output channel: dh W1_lat = (mask * dy) (w2^T * W1_lat), which saves one [M, hid] pass
        self.w1_lat_scaled = (self.w2[0][:, None] * self.w1_lat).contiguous() if self.w2.shape[0] == 1 else None
        self.z = decoder.latent_dim
        self.dtype = dtype
        self.group = group
        if micro_batch is None:
            micro_batch = CPU_MICRO_BATCH if group.device.type == "cpu" else group.pixel_budget
        self.micro_batch = max(1, int(micro_batch))

    def accumulate(self, latents: Tensor, grad: Tensor, piece: Pass, loss: bool = True) -> Tensor | None:
        """Add d(loss of the pass)/d latents into ``grad`` [K, z]; return the pass loss (0-dim, float64) or None."""
        g = self.group
        total = torch.zeros((), dtype=torch.float64, device=g.device) if loss else None
        for a in range(piece.start, piece.stop, self.micro_batch):
            sl = slice(a, min(a + self.micro_batch, piece.stop))
            idx = g.nbr[sl].reshape(-1)
            rows = idx.numel() // g.field.neighbours
            lat = latents.index_select(0, idx).reshape(rows, -1).to(self.dtype)
            h = torch.addmm(self.b1, g.off[sl].to(self.dtype), self.w1_off_t)
            h.addmm_(lat, self.w1_lat_t)
            h.relu_()
            residual = torch.addmm(self.b2, h, self.w2_t).float() - g.target[sl]
            weight = g.weight[sl]
            if loss:
                total += (weight * residual.square()).sum().double()
            dy = (residual * (2.0 * weight)).to(self.dtype)
            if self.w1_lat_scaled is not None:
                dlat = torch.ops.aten.threshold_backward(dy.expand_as(h), h, 0.0) @ self.w1_lat_scaled
            else:
                dlat = torch.ops.aten.threshold_backward(dy @ self.w2, h, 0.0) @ self.w1_lat
            grad.index_add_(0, idx, dlat.reshape(-1, self.z).to(grad.dtype))
        return total
