"""Reconstruction PSNR with different decoder-offset scales, on images placed on a padded canvas.

    python tools/bench_offset_scale.py --source digits --option size=28 --canvas 100 \
        --pretrain 20 --pretrain-steps 500 --images 8 --steps 500 [--scale fixed --fixed-px 20] [--json]

The decoder sees each of its n neighbour offsets (latent - pixel) [pixels] scaled by
``FieldConfig.offset_scale``:

- ``spacing``: divided by the dataset constant s = 1/sqrt(latents_per_pixel), the default;
- ``per_image``: the published code's standardisation, (offset - m_b) / s_b with m_b and the
  unbiased std s_b of all offsets of image b (all pixels x n neighbours x both axes), so s_b
  grows with the image's empty background;
- ``fixed``: divided by the constant ``--fixed-px`` (e.g. the mean s_b that ``per_image`` printed),
  which tells a larger constant apart from a per-image scale.

For each scale a decoder is pretrained (``pretrain_decoder``) jointly with the latents of
``--pretrain`` train images (the images after the fitted ones), then the first ``--images`` train
images are fitted against it with the frozen decoder (``fit_group``). All scales use the same
images, seeds, positions and pixel schedule; only the offsets differ. Prints one JSON line per
scale: mean PSNR of the pretraining and fitted images on the whole canvas and on the pasted
image's own window (the centred H x W of the source image), the per-image PSNR of the fitted
images, and the mean offset scale in pixels (s, or the mean s_b).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from arc.data.sources import open_source
from arc.field import FieldConfig, FieldGroup, FitConfig, PretrainConfig, fit_group, pretrain_decoder
from arc.field.group import MIN_MSE
from arc.field.offsets import offset_statistics

SCALES = ("spacing", "per_image", "fixed")


def field_for(scale: str, latents_per_pixel: float, fixed_px: float) -> FieldConfig:
    """The field of a scale name."""
    offset_scale = {"spacing": "spacing", "per_image": "per_image", "fixed": fixed_px}[scale]
    return FieldConfig(latents_per_pixel=latents_per_pixel, offset_scale=offset_scale)


def offset_scale_px(group: FieldGroup) -> torch.Tensor:
    """[B] the scale each image's offsets are divided by, in pixels (s, or s_b when per image)."""
    if group.field.offset_mode == "spacing":
        return torch.full((len(group),), group.field.spacing)
    width = group.sizes[group.image, 1]
    query = torch.stack([group.pixel // width, group.pixel % width], 1).float()
    raw = (group.pos[group.nbr.long()] - query[:, None, :]).reshape(query.shape[0], -1)
    return offset_statistics(raw, group.image, len(group))[1].float()


@torch.no_grad()
def window_psnr(group: FieldGroup, decoder, window: tuple[int, int]) -> torch.Tensor:
    """[B] PSNR on the centred window (h, w) of each canvas ([0, 1] image, clamped, data_range 1)."""
    h, w = window
    squared = torch.zeros(len(group), dtype=torch.float64)
    for piece in group.all_passes():
        sl = slice(piece.start, piece.stop)
        img, pixel = group.image[sl], group.pixel[sl]
        height, width = group.sizes[img, 0], group.sizes[img, 1]
        row, col = pixel // width, pixel % width
        top, left = (height - h) // 2, (width - w) // 2
        inside = (row >= top) & (row < top + h) & (col >= left) & (col < left + w)
        mean, std = group.mean[img], group.std[img]
        pred = (group.predict(decoder, group.latents, piece) * std + mean).clamp(0.0, 1.0)
        truth = group.target[sl] * std + mean
        err = (pred - truth).square().sum(1).double() * inside
        squared.index_add_(0, img, err)
    mse = (squared / (h * w * group.channels)).clamp_min(MIN_MSE)
    return (-10.0 * torch.log10(mse)).float()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="source option (repeatable), e.g. size=28; integer values are converted")
    parser.add_argument("--root", default=os.environ.get("ARC_DATA", "data"))
    parser.add_argument("--canvas", type=int, required=True, help="centred canvas side in pixels")
    parser.add_argument("--images", type=int, default=8, help="fitted train images (the first ones)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--pretrain", type=int, default=20, help="pretraining images (after the fitted ones)")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--latents-per-pixel", type=float, default=0.05)
    parser.add_argument("--scale", action="append", choices=SCALES,
                        help="scales to measure (repeatable; default spacing and per_image)")
    parser.add_argument("--fixed-px", type=float, default=20.0, help="the constant of --scale fixed, in pixels")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print only the JSON lines")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))

    plain = open_source(args.source, root=args.root, **options).split("train")
    split = open_source(args.source, root=args.root, canvas={"size": args.canvas, "mode": "centre"}, **options).split("train")
    window = tuple(int(v) for v in plain[0][0].shape[1:])
    fitted = list(range(args.images))
    others = list(range(args.images, args.images + args.pretrain))
    fit = FitConfig(steps=args.steps)
    config = PretrainConfig(images=len(others), steps=args.pretrain_steps)
    fit_images = [split[i][0] for i in fitted]
    pre_images = [split[i][0] for i in others]
    results = []
    for scale in args.scale or SCALES[:2]:
        field = field_for(scale, args.latents_per_pixel, args.fixed_px)
        start = time.perf_counter()
        decoder, pre_psnr = pretrain_decoder(pre_images, field, config, "train", others)
        log(f"{scale}: pretrained in {time.perf_counter() - start:.1f}s, PSNR {float(pre_psnr.mean()):.2f}")
        group = FieldGroup(fit_images, field, "train", fitted, fit.seed, fit.pixel_fraction, fit.pixel_budget)
        psnr = fit_group(group, decoder, fit)
        result = {
            "source": args.source, "options": options, "canvas": args.canvas, "window": list(window), "scale": scale,
            "latents_per_pixel": args.latents_per_pixel, "latents_mean": round(int(group.latent_offset[-1]) / len(group), 1),
            "pretrain_images": len(others), "pretrain_steps": args.pretrain_steps,
            "images": len(fitted), "steps": args.steps,
            "pretrain_psnr_mean": round(float(pre_psnr.mean()), 3),
            "psnr_mean": round(float(psnr.mean()), 3),
            "window_psnr_mean": round(float(window_psnr(group, decoder, window).mean()), 3),
            "psnr": [round(float(v), 3) for v in psnr],
            "offset_scale_px": round(float(offset_scale_px(group).mean()), 3),
            "seconds": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    return results


if __name__ == "__main__":
    main()
