"""Render a stored cloud, and latent edits of it, back to images.

    python tools/reconstruct.py --store DIR --index 12 [--split test] \\
        --edit translate:dx=30,dy=0 --edit rotate:deg=45 --out edits.png \\
        [--scale 4] [--canvas H,W | --canvas pad=P] [--show-points] [--panels DIR] [--wandb] [--exact]

``--index`` is the image's source index in ``--split``. Edits apply cumulatively in the order
given; their syntax and the exact mode are described in :mod:`arc.edits`. The output PNG is a
grid: the original image (when the source can be reopened), the reconstruction with its PSNR,
then one panel per edit step. ``--panels DIR`` also writes every panel as its own PNG at the
rendered resolution. ``--wandb`` logs the grid and the panels to Weights & Biases (offline
unless credentials exist; it never prompts).

The decoder is the one named in the store manifest (or ``--decoder``); a decoder whose
content hash differs from the store's is refused. The original image is found by reopening
the source recorded in the manifest (``shapes``, ``digits``, ``torchvision:*`` under
``--data-root``); npz and imagefolder sources need ``--source npz:PATH`` / ``imagefolder:PATH``.
The reopened source must have the manifest's identity (same content hash), otherwise no
original panel is shown.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from arc.cloud import CloudBatch
from arc.data.clouds import CloudDataset
from arc.edits import Edit, apply_edits, parse_edit
from arc.field.decoder import Decoder, load_decoder
from arc.store import CloudStore, StoreError
from arc.viz import Frame, image_grid, psnr, render_view, save_png

log = logging.getLogger("reconstruct")


class ReconstructError(ValueError):
    """The requested reconstruction cannot be made (bad index, foreign decoder, bad option)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconstruct.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="edits: translate:dx=..,dy=.. | rotate:deg=..[,row=..,col=..] | flip:axis=h|v | "
               "scale:factor=..[,row=..,col=..] | push:px=..,seed=.. | mask:box=r0,c0,r1,c1 | mask:circle=r,c,radius | "
               "mask:fraction=f,seed=s | mix:index=i,mode=stack|left-right|box[,box=r0,c0,r1,c1] | noise:std=..,seed=.. ; "
               "add ',exact' to a geometric edit for exact mode",
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


def load_decoder_for(store: CloudStore, path: Optional[str] = None) -> tuple[Decoder, dict]:
    """The store's decoder (or ``path``); refuses one whose content hash is not the store's decoder_hash."""
    given = path is not None
    path = path if given else store.decoder_path
    if path is None:
        raise ReconstructError(f"{store.path}: the manifest names no decoder; pass --decoder PATH")
    candidates = [Path(path)] if given or Path(path).is_absolute() else [Path(path), store.path / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise ReconstructError(f"decoder checkpoint {path} not found{'' if given else ' (from the store manifest)'}; "
                               "pass --decoder PATH")
    decoder, meta = load_decoder(found)
    if meta["hash"] != store.decoder_hash:
        raise ReconstructError(
            f"decoder {found} (content hash {meta['hash'][:12]}) is not the decoder the store {store.path} was fitted "
            f"with (hash {store.decoder_hash[:12]}); clouds only decode with their own decoder: pass that one with --decoder"
        )
    field = store.manifest.get("field", {})
    if (field.get("latent_dim"), field.get("neighbours")) not in ((None, None), (decoder.latent_dim, decoder.neighbours)):
        raise ReconstructError(f"decoder {found} has z={decoder.latent_dim}, n={decoder.neighbours}; the store has "
                               f"z={field.get('latent_dim')}, n={field.get('neighbours')}")
    return decoder.eval(), meta


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


_REOPENABLE = ("shapes", "digits", "torchvision")


def open_original(store: CloudStore, split: str, index: int, spec: Optional[str], root: str) -> tuple[Optional[Tensor], str]:
    """(image [C, H, W] in [0, 1] or None, a note on why not) by reopening the store's source."""
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


def _log_wandb(project: str, directory: Path, grid, panels: dict[str, Tensor], config: dict) -> None:
    from arc.cli import ensure_wandb_never_prompts

    ensure_wandb_never_prompts()
    import wandb

    run = wandb.init(project=project, job_type="reconstruct", dir=str(directory), config=config)
    try:
        media = {"reconstruct/grid": wandb.Image(grid)}
        media.update({f"reconstruct/{name}": wandb.Image(save_ready(image)) for name, image in panels.items()})
        run.log(media)
    finally:
        run.finish()


def save_ready(image: Tensor):
    """[C, H, W] in [0, 1] -> an HxW or HxWx3 uint8 array (what wandb.Image and PIL accept)."""
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Do the work of the command; returns {"out", "panels" (name -> PNG path), "psnr", "names"}.

    argv items may be paths or numbers (converted with ``str``). Raises a ValueError subclass on bad input.
    """
    args = build_parser().parse_args(None if argv is None else [str(a) for a in argv])
    if args.scale < 1:
        raise ReconstructError(f"--scale must be a positive integer, got {args.scale}")
    edits: list[Edit] = [parse_edit(text, exact=args.exact) for text in args.edit]
    store = CloudStore.open(args.store)
    clouds = Clouds(store)
    cloud = clouds.get(args.split, args.index)
    decoder, _ = load_decoder_for(store, args.decoder)
    decoder = decoder.to(args.device)
    if int(cloud.colour_mean.shape[1]) != decoder.channels:
        raise ReconstructError(f"the cloud has {cloud.colour_mean.shape[1]} channels, the decoder {decoder.channels}")
    n, spacing = decoder.neighbours, store.spacing
    size = cloud.size[0].tolist()
    frame = Frame.parse(args.canvas, size)

    states = apply_edits(cloud, edits, n, lookup=lambda i, split: clouds.get(split or args.split, i),
                         latent_std=store.latent_std)
    original, note = open_original(store, args.split, args.index, args.source, args.data_root)
    if original is not None and list(original.shape[1:]) != size:
        original, note = None, f"the reopened image is {tuple(original.shape[1:])}, the cloud {tuple(size)}"
    if note:
        log.warning("no original panel: %s", note)

    names, images, titles, points = [], [], [], []

    def shown(pos: Tensor) -> Optional[Tensor]:
        return frame.to_display(pos, args.scale) if args.show_points else None

    recon = render_view(decoder, cloud, spacing, n, args.scale, frame)
    result_psnr = None
    label = f"{args.split} #{args.index}"
    if original is not None:
        native = render_view(decoder, cloud, spacing, n)
        result_psnr = psnr(native, original.float())
        names.append("original")
        images.append(frame.place(original.float(), args.scale))
        titles.append(f"original {label}")
        points.append(shown(cloud.pos))
    names.append("reconstruction")
    images.append(recon)
    titles.append("reconstruction" + (f"\n{result_psnr:.2f} dB" if result_psnr is not None else f" {label}"))
    points.append(shown(cloud.pos))
    for step, (edit, state) in enumerate(zip(edits, states), start=1):
        names.append(f"step{step}-{edit.kind}")
        images.append(render_view(decoder, state.cloud, spacing, n, args.scale, frame, state.query_map))
        titles.append(f"{step}. {edit.title}")
        points.append(shown(state.displayed_positions()))

    out = Path(args.out or f"reconstruct-{args.split}-{args.index}.png")
    grid = image_grid(images, titles, points if args.show_points else None, columns=args.columns)
    save_png(out, grid)
    written = {}
    if args.panels:
        for number, (name, image) in enumerate(zip(names, images)):
            written[name] = save_png(Path(args.panels) / f"{number:02d}-{name}.png", image)
    if args.wandb:
        config = {"store": str(store.path), "split": args.split, "index": args.index, "edits": list(args.edit),
                  "scale": args.scale, "canvas": args.canvas, "psnr": result_psnr}
        _log_wandb(args.wandb_project, out.resolve().parent, grid, dict(zip(names, images)), config)
    print(f"{label}: {cloud.num_points} latents, reconstruction PSNR "
          f"{'n/a (no original)' if result_psnr is None else f'{result_psnr:.2f} dB'}; "
          f"{len(edits)} edit(s) -> {out}")
    return {"out": out, "panels": written, "psnr": result_psnr, "names": names}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: 0 on success, 2 with one clear message on stderr for bad input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(argv)
    except ValueError as err:  # StoreError, EditError, FrameError, DecoderFileError, ReconstructError, ...
        print(f"reconstruct.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
