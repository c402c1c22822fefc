"""PSNR after S fitting steps from the paper's uniform latent start and from a learned patch map (issue 15).

    python tools/bench_latent_init.py --source digits --option size=28 \
        --decoder data/decoders/digits-42b1cfe9519b90df.safetensors --learn-images 1000 --images 64 \
        --steps 100,250,500 --json

The map (:class:`arc.field.latent_init.PatchInit`) is learned from ``--learn-images`` train images fitted the
usual way (``--learn-steps`` steps, uniform start) with the same decoder; the ``--images`` first train images,
none of them among those, are then fitted for each step count from both starts, and from the map the decoder
learned at the end of its pretraining (``pretrained``, what ``fit.init: patch`` uses) when it carries one.
Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from arc.data.sources import open_source
from arc.field import FieldConfig, FieldGroup, FitConfig, fit_clouds, fit_group
from arc.field.decoder import load_decoder
from arc.field.latent_init import PatchInit


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="image source spec, e.g. digits, npz:PATH")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="source option, e.g. size=28")
    parser.add_argument("--root", default=os.environ.get("ARC_DATA", "data"))
    parser.add_argument("--decoder", required=True, help="a decoder checkpoint of the default field")
    parser.add_argument("--learn-images", type=int, default=256)
    parser.add_argument("--learn-steps", type=int, default=500)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--steps", default="100,250,500", help="step counts, comma-separated")
    parser.add_argument("--radius", type=int, default=2, help="patch radius r: (2r+1)² pixels")
    parser.add_argument("--ridge", type=float, default=1e-2)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", action="store_true", help="(the output is always one JSON line)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(item.split("=", 1) for item in args.option)
    options = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in options.items()}
    split = open_source(args.source, root=args.root, **options).split("train")
    if len(split) < args.images + args.learn_images:
        raise SystemExit(f"the train split has {len(split)} images: fewer than --images + --learn-images")
    decoder, _ = load_decoder(args.decoder)
    field = FieldConfig()
    learn = list(range(args.images, args.images + args.learn_images))
    learn_images = [split[i][0] for i in learn]
    start = time.perf_counter()
    fitted = fit_clouds(learn_images, decoder, field, FitConfig(steps=args.learn_steps), "train", learn)
    init = PatchInit.learn(learn_images, fitted.clouds, field.colour, args.radius, args.ridge)
    learn_s = time.perf_counter() - start
    images = [split[i][0] for i in range(args.images)]
    starts = {"uniform": None, "patch": init}
    if decoder.latent_start is not None:
        starts["pretrained"] = decoder.latent_start
    psnr: dict[str, dict[str, float]] = {name: {} for name in starts}
    for steps in [int(s) for s in args.steps.split(",")]:
        for name, start in starts.items():
            group = FieldGroup(images, field, "train", list(range(args.images)), 0, 0.25, FitConfig.pixel_budget)
            if start is not None:
                start.start(group, images)
            psnr[name][str(steps)] = round(float(fit_group(group, decoder, FitConfig(steps=steps)).mean()), 3)
    result = {"source": args.source, "images": args.images, "learn_images": args.learn_images,
              "learn_steps": args.learn_steps, "radius": args.radius, "ridge": args.ridge, "learn_s": round(learn_s, 2),
              "learn_psnr_mean": round(float(fitted.psnr.mean()), 3), "psnr_mean": psnr}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
