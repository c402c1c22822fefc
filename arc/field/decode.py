"""Decoding clouds at arbitrary query points, and rendering them back to samples (chunked, no grad).

Clouds, queries and decoder share one D (1 to 3 spatial axes; images: 2). Offsets are divided by
``spacing``, or, for a decoder with ``offset_scale = "per_image"``, standardised by the statistics
of the cloud's offsets over its own grid (``size``, an image's H x W), whatever the queries or the
canvas (``spacing`` is then unused).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from arc import ragged
from arc.cloud import CloudBatch
from arc.field.colour import from_fit_space
from arc.field.decoder import Decoder
from arc.field.errors import FieldInputError
from arc.field.neighbours import nearest_latents
from arc.field.offsets import sample_offset_statistics, standardise
from arc.geometry import pixel_centres

DECODE_CHUNK = 1 << 18


def _decode_one(
    decoder: Decoder, pos: Tensor, lat: Tensor, queries: Tensor, spacing: float, n: int, chunk: int, size: Sequence[int]
) -> Tensor:
    """Decoder output [Q, C] for one cloud (pos [k, D], lat [k, z], sample shape S) at queries [Q, D]."""
    device = lat.device
    per_image = decoder.offset_scale == "per_image"
    if per_image:
        mean, std = (v.to(device) for v in sample_offset_statistics(pos, [int(v) for v in size], n))
    out = []
    for q in queries.split(chunk):
        nbr = nearest_latents(pos, q, n).to(device)  # [q, n]
        q = q.to(device, torch.float32)
        raw = (pos.to(device)[nbr] - q[:, None, :]).reshape(q.shape[0], q.shape[1] * n)  # latent - query [px]
        off = standardise(raw, mean, std) if per_image else raw / spacing
        x = torch.cat([lat[nbr].reshape(q.shape[0], -1), off], dim=1)
        out.append(decoder(x.to(next(decoder.parameters()).dtype)).float())
    return torch.cat(out) if out else lat.new_zeros(0, decoder.channels)


def _check_dims(decoder: Decoder, clouds: CloudBatch) -> None:
    if clouds.pos.ndim != 2 or clouds.pos.shape[1] != decoder.dims or clouds.size.shape[1:] != (decoder.dims,):
        raise FieldInputError(f"the clouds have positions {tuple(clouds.pos.shape)} and sizes {tuple(clouds.size.shape)}, "
                              f"a {decoder.dims}-D decoder needs [N, {decoder.dims}] and [B, {decoder.dims}]")


@torch.no_grad()
def decode_queries(
    decoder: Decoder,
    clouds: CloudBatch,
    queries: Tensor,
    query_offset: Tensor,
    spacing: float,
    neighbours: int,
    chunk: int = DECODE_CHUNK,
) -> Tensor:
    """Decode a ragged batch of clouds at query points -> [Q, C] in fit space.

    queries [Q, D] float (images: (row, col)); query_offset [B] int64 cumulative query counts
    (queries of cloud b are rows query_offset[b-1]:query_offset[b]). Runs on the device
    of ``clouds.lat``; neighbours are found per cloud on the CPU in chunks of ``chunk``.
    """
    _check_dims(decoder, clouds)
    if queries.ndim != 2 or queries.shape[1] != decoder.dims:
        raise FieldInputError(f"queries must be [Q, {decoder.dims}] for a {decoder.dims}-D decoder, got {tuple(queries.shape)}")
    query_offset = torch.as_tensor(query_offset, dtype=torch.long).cpu()
    if query_offset.numel() != len(clouds):
        raise FieldInputError(f"query_offset has {query_offset.numel()} entries for {len(clouds)} clouds")
    if query_offset.numel() and int(query_offset[-1]) != queries.shape[0]:
        raise FieldInputError(f"query_offset ends at {int(query_offset[-1])} but there are {queries.shape[0]} queries")
    q_start = ragged.starts(query_offset).tolist()
    l_end, l_start = clouds.offset.tolist(), clouds.starts().tolist()
    out = []
    for b in range(len(clouds)):
        pos, lat = clouds.pos[l_start[b] : l_end[b]], clouds.lat[l_start[b] : l_end[b]]
        out.append(_decode_one(decoder, pos, lat, queries[q_start[b] : int(query_offset[b])], spacing, neighbours, chunk,
                               clouds.size[b].tolist()))
    return torch.cat(out) if out else clouds.lat.new_zeros(0, decoder.channels)


@torch.no_grad()
def render(
    decoder: Decoder,
    clouds: CloudBatch,
    spacing: float,
    neighbours: int,
    scale: int = 1,
    canvas: Optional[Sequence[int]] = None,
    chunk: int = DECODE_CHUNK,
) -> list[Tensor]:
    """Render every cloud to a sample [C, *(S*scale)] in [0, 1] (colour transform undone, clamped); an
    image [C, H*scale, W*scale].

    Queries sit at sub-pixel centres (:func:`arc.geometry.pixel_centres`) on every axis: row = (i + 0.5) / scale - 0.5
    for i < H*scale (likewise the other axes). ``canvas`` = S (a D-tuple; images (H, W)) renders every cloud on that
    shape instead of its own. Queries go to the decoder in slabs of whole first-axis rows (about ``chunk`` points).
    """
    if int(scale) != scale or scale < 1:
        raise FieldInputError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    _check_dims(decoder, clouds)
    if canvas is not None and len(canvas) != decoder.dims:
        raise FieldInputError(f"canvas must be {decoder.dims} sizes for {decoder.dims}-D clouds, got {tuple(canvas)}")
    images = []
    l_end, l_start = clouds.offset.tolist(), clouds.starts().tolist()
    for b in range(len(clouds)):
        shape = [int(v) for v in (canvas if canvas is not None else clouds.size[b].tolist())]
        first, *rest = [pixel_centres(size, scale) for size in shape]
        pos, lat = clouds.pos[l_start[b] : l_end[b]], clouds.lat[l_start[b] : l_end[b]]
        slab = math.prod(axis.numel() for axis in rest)  # points per first-axis row
        out = torch.empty(decoder.channels, first.numel() * slab, device=lat.device)
        rows_per_chunk = max(1, chunk // slab)
        for r0 in range(0, first.numel(), rows_per_chunk):
            block = torch.cartesian_prod(first[r0 : r0 + rows_per_chunk], *rest).reshape(-1, len(shape))
            pred = _decode_one(decoder, pos, lat, block, spacing, neighbours, chunk, clouds.size[b].tolist())
            a = r0 * slab
            out[:, a : a + block.shape[0]] = pred.t()
        image = from_fit_space(out, clouds.colour_mean[b], clouds.colour_std[b]).clamp_(0.0, 1.0)
        images.append(image.reshape(decoder.channels, first.numel(), *(axis.numel() for axis in rest)))
    return images
