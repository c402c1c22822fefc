"""Plots of 1-D and 3-D samples and their reconstructions (the D ≠ 2 half of :mod:`arc.viz`).

A 1-D sample [C, L] is drawn as lines, one axis per channel (x: sample index, y: value in [0, 1]);
a reference (the original signal) is drawn in grey behind the decoded one, and latent positions
are marked as ticks along the bottom of each axis. A 3-D sample [C, D, H, W] is drawn as a row of
a few slices evenly spaced along its first axis (channel 0 in grey, or RGB when C = 3) through
:func:`arc.viz.image_grid`. Figures come back as RGB uint8 arrays [H, W, 3].

At ``scale`` s a sample rendered at sub-sample centres has s·L points; point i sits at content
coordinate (i + 0.5) / s - 0.5 (:func:`arc.geometry.pixel_centres`), which is where it is drawn.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.decode import render
from arc.field.decoder import Decoder
from arc.geometry import pixel_centres
from arc.viz import figure_to_array, image_grid, psnr

__all__ = ["MAX_CHANNELS_SHOWN", "SLICES", "line_grid", "slice_grid", "slice_indices", "sample_panel", "upsample"]

MAX_CHANNELS_SHOWN = 8
"""A 1-D plot draws at most this many channels (one axis each); the title says how many there are."""
SLICES = 4
"""Slices of a 3-D sample shown by default, evenly spaced along its first axis."""


def upsample(sample: Tensor, scale: int) -> Tensor:
    """[C, *S] -> [C, *(S·scale)], every point repeated ``scale`` times along every spatial axis (nearest)."""
    for axis in range(1, sample.ndim):
        sample = sample.repeat_interleave(scale, dim=axis)
    return sample


def line_grid(
    signals: Sequence[Tensor],
    titles: Optional[Sequence[str]] = None,
    references: Optional[Sequence[Optional[Tensor]]] = None,
    points: Optional[Sequence[Optional[Tensor]]] = None,
    columns: Optional[int] = None,
    scale: int = 1,
    dpi: int = 90,
) -> np.ndarray:
    """1-D signals [C, L·scale] in [0, 1], one column per signal and one axis per channel -> RGB uint8 [H, W, 3].

    references: per signal, None or the original [C, L] drawn in grey behind it; points: per signal, None or
    latent positions [K] (content coordinates, sample units) marked as ticks; columns: signals per row of the
    grid (default: all in one row); scale: output points per sample of ``signals`` (their x coordinates).
    """
    from matplotlib.figure import Figure

    if not signals:
        raise ValueError("line_grid needs at least one signal")
    if any(signal.ndim != 2 for signal in signals):
        raise ValueError(f"line_grid draws 1-D signals [C, L], got shapes {[tuple(s.shape) for s in signals]}")
    n = len(signals)
    columns = n if columns is None else max(1, min(int(columns), n))
    channels = min(max(int(signal.shape[0]) for signal in signals), MAX_CHANNELS_SHOWN)
    rows = -(-n // columns) * channels
    fig = Figure(figsize=(3.2 * columns, 1.3 * rows + 0.4), dpi=dpi)
    for i, signal in enumerate(signals):
        signal = signal.detach().float().cpu()
        x = pixel_centres(signal.shape[1] // scale, scale).numpy()
        reference = None if references is None or references[i] is None else references[i].detach().float().cpu()
        for c in range(min(int(signal.shape[0]), channels)):
            block, column = divmod(i, columns)
            ax = fig.add_subplot(rows, columns, (block * channels + c) * columns + column + 1)
            if reference is not None:
                ax.plot(np.arange(reference.shape[1]), reference[c].numpy(), color="0.6", linewidth=1.6, label="original")
            ax.plot(x, signal[c].numpy(), color="tab:blue", linewidth=0.9, label="decoded")
            if points is not None and points[i] is not None and len(points[i]):
                ticks = points[i].detach().float().cpu().numpy()
                ax.plot(ticks, np.full(len(ticks), -0.02), linestyle="none", marker="|", markersize=7, color="tab:red")
            ax.set_ylim(-0.06, 1.04)
            ax.set_xlim(-0.5, signal.shape[1] / scale - 0.5)
            ax.tick_params(labelsize=6)
            label = f"ch {c}" if signal.shape[0] > 1 else ""
            if c == 0 and titles is not None:
                more = f" ({signal.shape[0]} channels, {channels} shown)" if signal.shape[0] > channels else ""
                label = f"{titles[i]}{more}\n{label}".strip()
            if label:
                ax.set_title(label, fontsize=7)
    fig.tight_layout()
    return figure_to_array(fig)


def slice_indices(depth: int, count: int = SLICES) -> list[int]:
    """``count`` (at most ``depth``) slice indices evenly spaced over a first axis of ``depth`` slices, ends included."""
    count = max(1, min(int(count), depth))
    return sorted({int(round(v)) for v in np.linspace(0, depth - 1, count)})


def _slice_image(volume: Tensor, index: int) -> Tensor:
    """Slice ``index`` of [C, D, H, W] as an image [1 or 3, H, W] (RGB when C = 3, else channel 0)."""
    plane = volume[:, index]
    return plane if plane.shape[0] == 3 else plane[:1]


def slice_grid(
    volumes: Sequence[Tensor],
    titles: Optional[Sequence[str]] = None,
    points: Optional[Sequence[Optional[Tensor]]] = None,
    slices: int = SLICES,
) -> np.ndarray:
    """3-D samples [C, D, H, W] in [0, 1], one row of ``slices`` first-axis slices each -> RGB uint8 [H, W, 3].

    The slices are those of the first volume (:func:`slice_indices`); volumes of other depths are sliced at
    the same fraction of their depth. points: per volume, None or latent positions [K, 3] in the volume's own
    (output) coordinates; those within half a slice of a shown slice are drawn on it.
    """
    if not volumes:
        raise ValueError("slice_grid needs at least one volume")
    if any(volume.ndim != 4 for volume in volumes):
        raise ValueError(f"slice_grid draws 3-D samples [C, D, H, W], got shapes {[tuple(v.shape) for v in volumes]}")
    first = slice_indices(int(volumes[0].shape[1]), slices)
    images, labels, dots = [], [], []
    for i, volume in enumerate(volumes):
        volume = volume.detach().float().cpu()
        depth = int(volume.shape[1])
        shown = [min(depth - 1, round(s * (depth - 1) / max(1, volumes[0].shape[1] - 1))) for s in first]
        for s in shown:
            images.append(_slice_image(volume, s))
            name = titles[i] if titles is not None else f"#{i}"
            labels.append(f"{name}\nslice {s}/{depth}")
            near = None
            if points is not None and points[i] is not None:
                p = points[i].detach().float().cpu()
                near = p[(p[:, 0] - s).abs() <= 0.5][:, 1:]
            dots.append(near)
    return image_grid(images, labels, dots if points is not None else None, columns=len(first))


def sample_panel(
    decoder: Decoder,
    clouds: CloudBatch,
    spacing: float,
    neighbours: int,
    originals: Optional[Sequence[Tensor]] = None,
    scale: int = 1,
) -> np.ndarray:
    """:func:`arc.viz.reconstruction_panel` for 1-D and 3-D clouds -> RGB uint8 [H, W, 3].

    1-D: one column per cloud, the decoded signal over its original (when given, with the PSNR in the title),
    latent positions as ticks. 3-D: per cloud, a row of original slices (when given) above a row of decoded ones.
    originals: [C, *S] samples in [0, 1] matching the clouds' sizes.
    """
    if clouds.dims not in (1, 3):
        raise ValueError(f"sample_panel draws 1-D and 3-D clouds; a {clouds.dims}-D cloud goes to arc.viz.reconstruction_panel")
    if originals is not None and len(originals) != len(clouds):
        raise ValueError(f"{len(originals)} originals for {len(clouds)} clouds")
    clouds = clouds.to(next(decoder.parameters()).device)
    decoded = [sample.cpu() for sample in render(decoder, clouds, spacing, neighbours, scale)]
    native = decoded if scale == 1 else [sample.cpu() for sample in render(decoder, clouds, spacing, neighbours)]
    originals = None if originals is None else [original.detach().float().cpu() for original in originals]
    names = [f"#{int(index)}" for index in clouds.index]
    scores = ["" if originals is None else f" {psnr(native[b], originals[b]):.2f} dB" for b in range(len(clouds))]
    if clouds.dims == 1:
        ticks = [clouds.pos[clouds.batch_ids() == b, 0].cpu() for b in range(len(clouds))]
        return line_grid(decoded, [f"{n} decoded{s}" for n, s in zip(names, scores)], originals, ticks, scale=scale)
    volumes, titles = [], []
    for b, name in enumerate(names):
        if originals is not None:
            volumes.append(upsample(originals[b], scale))
            titles.append(f"{name} original")
        volumes.append(decoded[b])
        titles.append(f"{name} decoded{scores[b]}")
    return slice_grid(volumes, titles)
