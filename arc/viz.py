"""Visualisation: render clouds (edited or not) to images, grids of panels, cloud plots, logger media.

1-D and 3-D samples are plotted by :mod:`arc.viz_signals` (line plots, slice grids); the reconstruction
panel and the logger media dispatch on the cloud's D.

Images are float tensors [C, H, W] in [0, 1] (C = 1 or 3); figures come back as RGB uint8
arrays [H, W, 3] (matplotlib, Agg canvas, no display needed). PSNR is on the [0, 1] image,
data_range 1 (docs/architecture.md).

Sub-pixel rendering: at ``scale`` s, output pixel i sits at content coordinate
(i + 0.5) / s - 0.5 (the sub-pixel centres, :func:`arc.geometry.pixel_centres`).
A :class:`Frame` puts the image on a larger canvas: content pixel (r, c) lands on canvas
pixel (r + top, c + left), so an edit that moves content outside the image stays visible.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.field.colour import from_fit_space
from arc.field.decode import decode_queries
from arc.field.decoder import Decoder
from arc.geometry import Affine, pixel_centres

__all__ = [
    "Frame",
    "FrameError",
    "render_view",
    "psnr",
    "figure_to_array",
    "image_grid",
    "save_png",
    "reconstruction_panel",
    "log_reconstructions",
    "cloud_scatter",
    "confusion_image",
]


MAX_PANEL_INCHES = 8.0


class FrameError(ValueError):
    """A canvas specification is malformed or smaller than the image."""


@dataclass(frozen=True)
class Frame:
    """An output canvas of ``height`` x ``width`` content pixels with the image's pixel (0, 0) at (top, left)."""

    height: int
    width: int
    top: int = 0
    left: int = 0

    @classmethod
    def of_image(cls, size: Sequence[int]) -> "Frame":
        """The image's own frame."""
        return cls(int(size[0]), int(size[1]))

    @classmethod
    def parse(cls, text: Optional[str], size: Sequence[int]) -> "Frame":
        """``None`` (the image frame), ``"pad=P"`` (P pixels on each side) or ``"H,W"`` (image centred).

        size: the image (H, W). Raises :class:`FrameError` for a malformed spec or a canvas smaller than the image.
        """
        h, w = int(size[0]), int(size[1])
        if text is None or not text.strip():
            return cls(h, w)
        text = text.strip()
        values = text[4:] if text.startswith("pad=") else text
        try:
            numbers = [int(v) for v in values.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) != (1 if text.startswith("pad=") else 2):
            raise FrameError(f"canvas must be 'H,W' or 'pad=P' (integers), got {text!r}")
        if text.startswith("pad="):
            if numbers[0] < 0:
                raise FrameError(f"canvas pad must be >= 0, got {numbers[0]}")
            return cls(h + 2 * numbers[0], w + 2 * numbers[0], numbers[0], numbers[0])
        height, width = numbers
        if height < h or width < w:
            raise FrameError(f"canvas {height}x{width} is smaller than the {h}x{w} image; use a larger one or pad=P")
        return cls(height, width, (height - h) // 2, (width - w) // 2)

    def queries(self, scale: int = 1) -> Tensor:
        """[H·s · W·s, 2] float32 content (row, col) of every output pixel, row-major (the same
        :func:`arc.geometry.pixel_centres` as :func:`arc.field.decode.render`)."""
        rows, cols = pixel_centres(self.height, scale, self.top), pixel_centres(self.width, scale, self.left)
        return torch.cartesian_prod(rows, cols)

    def place(self, image: Tensor, scale: int = 1) -> Tensor:
        """An image [C, h, w] of the content frame on the canvas at ``scale`` (nearest), black around it."""
        c, h, w = image.shape
        up = image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
        out = image.new_zeros(c, self.height * scale, self.width * scale)
        out[:, self.top * scale : (self.top + h) * scale, self.left * scale : (self.left + w) * scale] = up
        return out

    def to_display(self, pos: Tensor, scale: int = 1) -> Tensor:
        """Content (row, col) [N, 2] -> output pixel coordinates [N, 2] (pixel centres at integers)."""
        offset = torch.tensor([self.top, self.left], dtype=torch.float64)
        return ((pos.double().cpu() + offset + 0.5) * scale - 0.5).float()


def _device(decoder: Decoder) -> torch.device:
    return next(decoder.parameters()).device


@torch.no_grad()
def render_view(
    decoder: Decoder,
    cloud: CloudBatch,
    spacing: float,
    neighbours: int,
    scale: int = 1,
    frame: Optional[Frame] = None,
    query_map: Optional[Affine] = None,
) -> Tensor:
    """Render cloud 0 of ``cloud`` to [C, H·s, W·s] in [0, 1] on ``frame`` (default: its image frame); a 1-D or
    3-D cloud to [C, *(S·s)] on its own sample frame (no ``frame``).

    query_map: output (content) coordinates -> the cloud's own frame (exact edits, see
    :mod:`arc.edits`); each output pixel decodes the cloud at query_map(q). Neighbours are
    found from the cloud's current positions.
    """
    if int(scale) != scale or scale < 1:
        raise FrameError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    one = cloud.cloud(0).to(_device(decoder))
    size = one.size[0].tolist()
    if one.dims == 2:
        frame = frame or Frame.of_image(size)
        queries, shape = frame.queries(scale), (frame.height * scale, frame.width * scale)
    elif frame is not None:
        raise FrameError(f"a canvas frame is for 2-D images; this is a {one.dims}-D cloud")
    else:
        queries = torch.cartesian_prod(*[pixel_centres(n, scale) for n in size]).reshape(-1, one.dims)
        shape = tuple(n * scale for n in size)
    if query_map is not None and not query_map.is_identity:
        queries = query_map(queries)
    fit = decode_queries(decoder, one, queries, torch.tensor([queries.shape[0]]), spacing, neighbours)
    image = from_fit_space(fit.t(), one.colour_mean[0], one.colour_std[0]).clamp_(0.0, 1.0)
    return image.reshape(-1, *shape).cpu()


def psnr(image: Tensor, reference: Tensor) -> float:
    """PSNR in dB of ``image`` against ``reference`` (both [C, H, W] in [0, 1], clamped, data_range 1)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    if image.shape != reference.shape:
        raise ValueError(f"PSNR needs images of one shape, got {tuple(image.shape)} and {tuple(reference.shape)}")
    return float(peak_signal_noise_ratio(image.float().clamp(0, 1), reference.float().clamp(0, 1), data_range=1.0))


def figure_to_array(fig: Any) -> np.ndarray:
    """Draw a matplotlib Figure on an Agg canvas -> RGB uint8 [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _to_hwc(image: Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> float [H, W] (grey) or [H, W, 3]."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def image_grid(
    images: Sequence[Tensor],
    titles: Optional[Sequence[str]] = None,
    points: Optional[Sequence[Optional[Tensor]]] = None,
    columns: Optional[int] = None,
    panel_inches: float = 2.4,
    dpi: int = 100,
) -> np.ndarray:
    """A grid of images [C, H, W] in [0, 1] with titles -> RGB uint8 [H, W, 3].

    Panels are at least ``panel_inches`` wide and grow to show the largest image at about its own
    resolution (at most :data:`MAX_PANEL_INCHES`; the per-panel PNGs keep full resolution).
    points: per panel, None or [N, 2] output-pixel (row, col) coordinates drawn as red dots.
    columns: panels per row (default: all in one row).
    """
    from matplotlib.figure import Figure

    if not images:
        raise ValueError("image_grid needs at least one image")
    n = len(images)
    columns = n if columns is None else max(1, min(int(columns), n))
    rows = -(-n // columns)
    largest = max(max(int(image.shape[1]), int(image.shape[2])) for image in images)
    panel_inches = min(max(panel_inches, largest / dpi), MAX_PANEL_INCHES)  # native resolution when it fits
    fig = Figure(figsize=(panel_inches * columns, (panel_inches + 0.35) * rows), dpi=dpi)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(_to_hwc(image), cmap="gray" if image.shape[0] == 1 else None, vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        if points is not None and points[i] is not None and len(points[i]):
            p = points[i].detach().float().cpu()
            size = max(2.0, 1200.0 / max(image.shape[1:]))
            ax.scatter(p[:, 1].numpy(), p[:, 0].numpy(), s=size, c="red", edgecolors="white", linewidths=0.3)
            ax.set_xlim(-0.5, image.shape[2] - 0.5)
            ax.set_ylim(image.shape[1] - 0.5, -0.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_array(fig)


def save_png(path: str | os.PathLike, image: Tensor | np.ndarray) -> Path:
    """Write an image [C, H, W] in [0, 1] (tensor) or an RGB/grey uint8 array to a PNG file."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, Tensor):
        array = (_to_hwc(image) * 255.0).round().astype(np.uint8)
    else:
        array = np.asarray(image, dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def reconstruction_panel(
    decoder: Decoder,
    clouds: CloudBatch,
    spacing: float,
    neighbours: int,
    originals: Optional[Sequence[Tensor]] = None,
    scale: int = 1,
) -> np.ndarray:
    """One column per cloud: the original (when given, with the reconstruction's PSNR) above the reconstruction.

    originals: [C, H, W] images in [0, 1] matching the clouds' sizes. Returns RGB uint8 [H, W, 3]. 1-D and 3-D
    clouds (``clouds.dims``) get line plots and slice grids instead (:func:`arc.viz_signals.sample_panel`).
    """
    if clouds.dims != 2:
        from arc.viz_signals import sample_panel  # it builds on this module

        return sample_panel(decoder, clouds, spacing, neighbours, originals, scale)
    if originals is not None and len(originals) != len(clouds):
        raise ValueError(f"{len(originals)} originals for {len(clouds)} clouds")
    top, bottom, top_titles, bottom_titles = [], [], [], []
    for b in range(len(clouds)):
        cloud = clouds.cloud(b)
        recon = render_view(decoder, cloud, spacing, neighbours, scale)
        name = f"#{int(cloud.index[0])}"
        title = f"{name} reconstruction"
        if originals is not None:
            original = originals[b].detach().float().cpu()
            native = recon if scale == 1 else render_view(decoder, cloud, spacing, neighbours)
            title += f"\n{psnr(native, original):.2f} dB"
            top.append(Frame.of_image(original.shape[1:]).place(original, scale))
            top_titles.append(f"{name} original")
        bottom.append(recon)
        bottom_titles.append(title)
    return image_grid(top + bottom, top_titles + bottom_titles, columns=len(clouds))


def log_reconstructions(
    loggers: Optional[Iterable[Any]],
    decoder: Decoder,
    clouds: CloudBatch,
    spacing: float,
    neighbours: int,
    key: str,
    step: Optional[int] = None,
    originals: Optional[Sequence[Tensor]] = None,
    scale: int = 1,
) -> Optional[np.ndarray]:
    """Log :func:`reconstruction_panel` under ``key`` to every Lightning ``WandbLogger`` in ``loggers``.

    Other loggers are left alone; nothing is rendered when there is no WandbLogger or off global rank 0.
    Returns the panel, or None when nothing was logged.
    """
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    targets = [logger for logger in (loggers or ()) if isinstance(logger, WandbLogger)]
    if not targets or len(clouds) == 0 or rank_zero_only.rank != 0:  # loggers write on global rank 0 only
        return None
    panel = reconstruction_panel(decoder, clouds, spacing, neighbours, originals, scale)
    for logger in targets:
        logger.log_image(key=key, images=[panel], step=step)
    return panel


def _latent_colour(lat: Tensor) -> np.ndarray:
    """[N] first principal component of the latents (zeros when they do not vary)."""
    lat = lat.detach().float().cpu()
    if lat.shape[0] < 2:
        return np.zeros(lat.shape[0], dtype=np.float32)
    centred = lat - lat.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[0]).numpy()


def cloud_scatter(
    clouds: CloudBatch,
    titles: Optional[Sequence[str]] = None,
    colour: str | int = "pca",
    panel_inches: float = 2.6,
    dpi: int = 90,
) -> np.ndarray:
    """One scatter per cloud in its image frame (row axis down) -> RGB uint8 [H, W, 3]; a 1-D cloud: position
    against the colour value; a 3-D cloud: a 3-D scatter.

    colour: "pca" (first principal component of all latents of the batch, one scale for every
    panel), "norm" (latent L2 norm) or an int d (latent dimension d).
    """
    from matplotlib.figure import Figure

    lat = clouds.lat.detach().float().cpu()
    if colour == "pca":
        values = _latent_colour(lat)
    elif colour == "norm":
        values = lat.norm(dim=1).numpy()
    elif isinstance(colour, int) and not isinstance(colour, bool) and 0 <= colour < lat.shape[1]:
        values = lat[:, colour].numpy()
    else:
        raise ValueError(f"colour must be 'pca', 'norm' or a latent dimension in [0, {lat.shape[1]}), got {colour!r}")
    if titles is not None and len(titles) != len(clouds):
        raise ValueError(f"{len(titles)} titles for {len(clouds)} clouds")
    n = len(clouds)
    fig = Figure(figsize=(panel_inches * n, panel_inches + 0.3), dpi=dpi)
    ids, pos = clouds.batch_ids().cpu().numpy(), clouds.pos.detach().float().cpu().numpy()
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1, projection="3d" if clouds.dims == 3 else None)
        sel, size = ids == i, clouds.size[i].tolist()
        style = dict(c=values[sel], s=6, cmap="viridis", vmin=low, vmax=high)
        if clouds.dims == 1:  # position along the signal against the colour value
            ax.scatter(pos[sel, 0], values[sel], **style)
            ax.set_xlim(-0.5, size[0] - 0.5)
        elif clouds.dims == 3:  # (slice, row, col) drawn as (col, slice, row), row axis down
            ax.scatter(pos[sel, 2], pos[sel, 0], pos[sel, 1], **style)
            ax.set_zlim(size[1] - 0.5, -0.5)
            ax.set_zticks([])
        else:
            ax.scatter(pos[sel, 1], pos[sel, 0], **style)
            ax.set_xlim(-0.5, size[1] - 0.5)
            ax.set_ylim(size[0] - 0.5, -0.5)
            ax.set_aspect("equal")
        ax.set_title(titles[i] if titles is not None else f"#{int(clouds.index[i])} ({int(sel.sum())} pts)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return figure_to_array(fig)


def confusion_image(matrix: Tensor, names: Sequence[str]) -> np.ndarray:
    """A row-normalised confusion matrix (rows = true class) as RGB uint8 [H, W, 3]."""
    from matplotlib.figure import Figure

    m = matrix.detach().float().cpu()
    m = (m / m.sum(1, keepdim=True).clamp(min=1)).numpy()
    k = len(names)
    if m.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {m.shape} for {k} class names")
    size = min(12.0, 2.0 + 0.4 * k)
    fig = Figure(figsize=(size, size), dpi=80)
    ax = fig.add_subplot()
    ax.imshow(m, vmin=0, vmax=1, cmap="Blues")
    if k <= 30:
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return figure_to_array(fig)
