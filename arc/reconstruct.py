"""Render a stored cloud, and latent edits of it, back to images (the library of ``tools/reconstruct.py``).

:class:`Clouds` looks clouds up by (split, source index); :func:`open_original` reopens the store's
source for the original image; :func:`reconstruct` renders the panels (original, reconstruction,
one per edit step); :func:`run` / :func:`main` are the command line. The decoder is the store's
(:func:`arc.pipeline.store_decoder`).

1-D and 3-D clouds (a store of signals or volumes) are drawn by :mod:`arc.viz_signals`: a 1-D panel is a
line plot per channel (the decoded signal over the original in grey, latent positions as ticks), a 3-D
panel a row of slices along the first axis. Edits are D-generic (:mod:`arc.edits`); ``--canvas`` is 2-D only.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.data.clouds import CloudDataset
from arc.edits import Edit, apply_edits, parse_edit
from arc.field.decoder import Decoder
from arc.field.errors import DecoderFileError
from arc.pipeline import store_decoder
from arc.store import CloudStore, StoreError
from arc.viz import Frame, image_grid, psnr, render_view, save_png
from arc.viz_signals import line_grid, slice_grid, upsample

log = logging.getLogger("reconstruct")

_REOPENABLE = ("shapes", "digits", "torchvision", "waves", "solids")
MAX_PANEL_PIXELS = 2**26
"""Largest rendered panel (64 Mpx, about 0.8 GB of float32 RGB): ``--scale`` beyond it is refused."""


class ReconstructError(ValueError):
    """The requested reconstruction cannot be made (bad index, foreign decoder, bad option)."""


class Clouds:
    """The store's clouds, looked up by (split, source index); datasets are opened once."""

    def __init__(self, store: CloudStore):
        if not store.counts:
            raise StoreError(f"{store.path}: no split is fitted yet (anchoring did not finish one); run anchoring again")
        self.store = store
        self._datasets: dict[str, CloudDataset] = {}

    def dataset(self, split: str) -> CloudDataset:
        if split not in self.store.counts:
            raise ReconstructError(f"{self.store.path} has no split {split!r}; it has {sorted(self.store.counts)}")
        if split not in self._datasets:
            self._datasets[split] = CloudDataset(self.store, split)
        return self._datasets[split]

    def get(self, split: str, index: int) -> CloudBatch:
        """The cloud of source ``index`` in ``split``; a clear error if it is out of range or was skipped."""
        dataset = self.dataset(split)
        where = torch.nonzero(dataset.indices == int(index)).flatten()
        if where.numel():
            return dataset[int(where[0])]
        if int(index) in self.store.skipped.get(split, []):
            raise ReconstructError(f"{split} image {index} was skipped at anchoring (unusable image); it has no cloud")
        total = self.store.counts[split] + len(self.store.skipped.get(split, []))
        raise ReconstructError(f"index {index} is out of range: {split} has source indices 0..{total - 1}")


def open_original(store: CloudStore, split: str, index: int, spec: Optional[str], root: str) -> tuple[Optional[Tensor], str]:
    """(image [C, H, W] in [0, 1] or None, a note on why not) by reopening the store's source.

    ``spec`` overrides the recorded source spec (npz and imagefolder sources need it); the reopened
    source must have the manifest's identity.
    """
    from arc.data.images import ImageReadError
    from arc.data.sources import SourceError, open_source

    identity = store.manifest.get("source")
    if not isinstance(identity, dict) or "source" not in identity:
        return None, "the manifest records no reopenable source"
    kind = str(identity["source"]).partition(":")[0]
    if spec is None:
        if kind not in _REOPENABLE:
            return None, f"a {kind} source needs --source {kind}:PATH to show the original"
        spec = identity["source"]
    splits = identity.get("splits") or {}
    try:
        source = open_source(spec, root, download=False, val_fraction=splits.get("val_fraction", 0.1),
                             seed=splits.get("seed", 0), canvas=identity.get("canvas"), **(identity.get("options") or {}))
        if source.identity != identity:
            return None, f"source {spec} is not the one the store was fitted on (its identity differs)"
        return source.split(split)[int(index)][0], ""
    except (SourceError, ImageReadError, ValueError, OSError, RuntimeError, KeyError, IndexError, ImportError) as err:
        return None, f"source {spec} could not be reopened ({err})"


@dataclass
class Panels:
    """The panels of a reconstruction grid, in order: the original (when found), the reconstruction, one per edit.

    ``images`` [C, H·scale, W·scale] in [0, 1] on the canvas (1-D / 3-D: [C, *(S·scale)]); ``points`` the
    displayed latent positions [K, 2] (output pixels) when asked for, else None (1-D: always, [K] in samples;
    3-D: [K, 3] output points); ``psnr`` of the reconstruction against the original (dB, None without an
    original); ``cloud`` the unedited cloud; ``reference`` (1-D) the original [C, L] drawn behind the others.
    """

    cloud: CloudBatch
    psnr: Optional[float] = None
    scale: int = 1
    reference: Optional[Tensor] = None
    names: list[str] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    points: list[Optional[Tensor]] = field(default_factory=list)

    def add(self, name: str, image: Tensor, title: str, points: Optional[Tensor]) -> None:
        self.names.append(name)
        self.images.append(image)
        self.titles.append(title)
        self.points.append(points)


def reconstruct(
    clouds: Clouds, split: str, index: int, decoder: Decoder, edits: Sequence[Edit] = (), scale: int = 1,
    canvas: Optional[str] = None, show_points: bool = False, source: Optional[str] = None, root: str = "data",
) -> Panels:
    """The panels of the cloud of source ``index`` in ``split`` and of its edits (applied cumulatively).

    ``canvas``: "H,W" or "pad=P" (:meth:`arc.viz.Frame.parse`; 2-D only); ``source``/``root``: how to reopen the
    original (:func:`open_original`; without it there is no original panel and no PSNR).
    """
    cloud = clouds.get(split, index)
    if int(cloud.colour_mean.shape[1]) != decoder.channels:
        raise ReconstructError(f"the cloud has {cloud.colour_mean.shape[1]} channels, the decoder {decoder.channels}")
    n, spacing, dims = decoder.neighbours, clouds.store.spacing, cloud.dims
    size = cloud.size[0].tolist()
    if dims != 2 and canvas is not None:
        raise ReconstructError(f"--canvas is for 2-D images; this is a {dims}-D cloud (shape {tuple(size)})")
    frame = Frame.parse(canvas, size) if dims == 2 else None
    shape = [frame.height * scale, frame.width * scale] if frame is not None else [v * scale for v in size]
    points = math.prod(shape)
    if points > MAX_PANEL_PIXELS:
        raise ReconstructError(f"--scale {scale} makes {'x'.join(map(str, shape))} panels ({points:,} points, at most "
                               f"{MAX_PANEL_PIXELS:,}): lower --scale")
    states = apply_edits(cloud, edits, n, lookup=lambda i, other: clouds.get(other or split, i),
                         latent_std=clouds.store.latent_std)
    original, note = open_original(clouds.store, split, index, source, root)
    if original is not None and list(original.shape[1:]) != size:
        original, note = None, f"the reopened sample is {tuple(original.shape[1:])}, the cloud {tuple(size)}"
    if note:
        log.warning("no original panel: %s", note)

    def shown(pos: Tensor) -> Optional[Tensor]:  # 1-D: always, as ticks in sample units
        if dims == 1:
            return pos[:, 0].cpu()
        if not show_points:
            return None
        return frame.to_display(pos, scale) if frame is not None else ((pos.double().cpu() + 0.5) * scale - 0.5).float()

    panels = Panels(cloud, scale=scale)
    label = f"{split} #{index}"
    if original is not None:
        original = original.float()
        panels.psnr = psnr(render_view(decoder, cloud, spacing, n), original)
        panels.reference = original if dims == 1 else None
        placed = frame.place(original, scale) if frame is not None else upsample(original, scale)
        panels.add("original", placed, f"original {label}", shown(cloud.pos))
    title = (f"\n{panels.psnr:.2f} dB" if dims == 2 else f" {panels.psnr:.2f} dB") if panels.psnr is not None else f" {label}"
    panels.add("reconstruction", render_view(decoder, cloud, spacing, n, scale, frame), "reconstruction" + title,
               shown(cloud.pos))
    for step, (edit, state) in enumerate(zip(edits, states), start=1):
        panels.add(f"step{step}-{edit.kind}", render_view(decoder, state.cloud, spacing, n, scale, frame, state.query_map),
                   f"{step}. {edit.title}", shown(state.displayed_positions()))
    return panels


def figure(panels: Panels, which: Sequence[int], columns: int, show_points: bool):
    """The panels ``which`` of ``panels`` drawn as one RGB uint8 array [H, W, 3]: an image grid (2-D), line plots
    (1-D, the others over the original) or rows of slices (3-D)."""
    images, titles = [panels.images[i] for i in which], [panels.titles[i] for i in which]
    points = [panels.points[i] for i in which]
    if panels.cloud.dims == 1:
        references = [None if panels.names[i] == "original" else panels.reference for i in which]
        return line_grid(images, titles, references, points, columns, panels.scale)
    if panels.cloud.dims == 3:
        return slice_grid(images, titles, points if show_points else None)
    return image_grid(images, titles, points if show_points else None, columns=columns)


def save_ready(image: Tensor):
    """[C, H, W] in [0, 1] -> an HxW or HxWx3 uint8 array (what wandb.Image and PIL accept)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def log_wandb(project: str, directory: Path, grid, panels: Panels, shown: Sequence, config: dict) -> None:
    """Log the grid and every panel (``shown``: images [C, H, W] or RGB uint8 plots) to a W&B run in ``directory``
    (offline without credentials; never prompts)."""
    from arc.runs import ensure_wandb_never_prompts

    ensure_wandb_never_prompts()
    import wandb

    run = wandb.init(project=project, job_type="reconstruct", dir=str(directory), config=config)
    try:
        media = {"reconstruct/grid": wandb.Image(grid)}
        media.update({f"reconstruct/{name}": wandb.Image(save_ready(image) if isinstance(image, Tensor) else image)
                  for name, image in zip(panels.names, shown)})
        run.log(media)
    finally:
        run.finish()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconstruct.py", description="Render a stored cloud, and latent edits of it, back to images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="edits: translate:dx=..,dy=.. | rotate:deg=..[,row=..,col=..] | flip:axis=h|v | "
               "scale:factor=..[,row=..,col=..] | push:px=..,seed=.. | mask:box=r0,c0,r1,c1 | mask:circle=r,c,radius | "
               "mask:fraction=f,seed=s | mix:index=i,mode=stack|left-right|box[,box=r0,c0,r1,c1] | noise:std=..,seed=.. ; "
               "add ',exact' to a geometric edit for exact mode; 1-D / 3-D clouds: by=/at= in tensor order, "
               "flip:axis=h|v|d, 3-D rotate axis=d|v|h (see arc.edits)",
    )
    parser.add_argument("--store", required=True, help="cloud store directory (holds manifest.json)")
    parser.add_argument("--index", required=True, type=int, help="source index of the image in --split")
    parser.add_argument("--split", default="test", help="train | val | test (default: test)")
    parser.add_argument("--edit", action="append", default=[], metavar="SPEC", help="an edit; repeat for a sequence")
    parser.add_argument("--out", default=None, help="output PNG (default: reconstruct-<split>-<index>.png)")
    parser.add_argument("--scale", type=int, default=1, help="output pixels per image pixel (default 1)")
    parser.add_argument("--canvas", default=None, help="'H,W' (image centred) or 'pad=P' (P pixels each side)")
    parser.add_argument("--show-points", action="store_true", help="overlay the latent positions as dots")
    parser.add_argument("--panels", default=None, metavar="DIR", help="also write each panel as a PNG into DIR")
    parser.add_argument("--exact", action="store_true", help="exact mode for every geometric edit")
    parser.add_argument("--wandb", action="store_true", help="log the panels to W&B (offline without credentials)")
    parser.add_argument("--wandb-project", default="arc", help="W&B project (default arc)")
    parser.add_argument("--decoder", default=None, help="decoder checkpoint (default: the manifest's decoder_path)")
    parser.add_argument("--source", default=None, help="source spec to reopen for the original image (npz:PATH, ...)")
    parser.add_argument("--data-root", default=os.environ.get("ARC_DATA", "data"), help="root of torchvision data")
    parser.add_argument("--columns", type=int, default=6, help="panels per row of the grid (default 6)")
    parser.add_argument("--device", default="cpu", help="torch device for decoding (default cpu)")
    return parser


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Do the work of the command; returns {"out", "panels" (name -> PNG path), "psnr", "names"}.

    argv items may be paths or numbers (converted with ``str``). Raises a ValueError subclass on bad input.
    """
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    if args.scale < 1:
        raise ReconstructError(f"--scale must be a positive integer, got {args.scale}")
    edits = [parse_edit(text, exact=args.exact) for text in args.edit]
    store = CloudStore.open(args.store)
    clouds = Clouds(store)
    try:
        decoder = store_decoder(store, args.decoder).to(args.device)
    except DecoderFileError as err:
        raise ReconstructError(f"{err}; pass the store's decoder with --decoder PATH") from err
    panels = reconstruct(clouds, args.split, args.index, decoder, edits, args.scale, args.canvas, args.show_points,
                         args.source, args.data_root)

    out = Path(args.out or f"reconstruct-{args.split}-{args.index}.png")
    grid = figure(panels, range(len(panels.names)), args.columns, args.show_points)
    shown = (panels.images if panels.cloud.dims == 2 else
             [figure(panels, [i], 1, args.show_points) for i in range(len(panels.names))])
    try:
        save_png(out, grid)
    except OSError as err:
        raise ReconstructError(f"cannot write --out {out}: {err.strerror or err}") from None
    written = {}
    if args.panels:
        for number, (name, image) in enumerate(zip(panels.names, shown)):
            written[name] = save_png(Path(args.panels) / f"{number:02d}-{name}.png", image)
    if args.wandb:
        config = {"store": str(store.path), "split": args.split, "index": args.index, "edits": list(args.edit),
                  "scale": args.scale, "canvas": args.canvas, "psnr": panels.psnr}
        log_wandb(args.wandb_project, out.resolve().parent, grid, panels, shown, config)
    print(f"{args.split} #{args.index}: {panels.cloud.num_points} latents, reconstruction PSNR "
          f"{'n/a (no original)' if panels.psnr is None else f'{panels.psnr:.2f} dB'}; "
          f"{len(edits)} edit(s) -> {out}")
    return {"out": out, "panels": written, "psnr": panels.psnr, "names": panels.names}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: 0 on success, 2 with one clear message on stderr for bad input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(argv)
    except ValueError as err:  # StoreError, EditError, FrameError, DecoderFileError, ReconstructError, ...
        print(f"reconstruct.py: error: {err}", file=sys.stderr)
        return 2
    return 0
