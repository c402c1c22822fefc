"""Benchmark the batched fitting engine against the machine's matmul limit and a one-at-a-time loop.

    python tools/bench_fit.py --make-strokes data/strokes28.npz    # MNIST-like 28x28 strokes
    python tools/bench_fit.py --source npz:PATH --images 512 --prepare-only --json  # CPU preparation alone
    python tools/bench_fit.py --source npz:PATH --images 512 --steps 500 --pretrain 100 \
        --device cpu --json [--decoder CKPT] [--reference-loop] [--pixel-budget B] [--precision 32|tf32|bf16|16]
    python tools/bench_fit.py --source digits --option size=28 --inr siren --hidden 32 --layers 2 \
        --images 64 --steps 500 --reference-loop --reference-images 64 --json   # per-sample INRs (arc.baselines)
    python tools/bench_fit.py --generated 2x4000 --images 64 --steps 500 --json     # 1-D signals [C, L], generated
    python tools/bench_fit.py --generated 1x32x32x32 --images 16 --steps 500 --json  # 3-D volumes [C, D, H, W]
    python tools/bench_fit.py --source digits --option size=28 --engine dense,factored --repeats 3 --json  # engines
    python tools/bench_fit.py --stage pretrain --source shapes --option size=256 --option channels=3 --images 3 \
        --pretrain-steps 100 --reference-loop --repeats 3 --json   # decoder pretraining, see tools/bench_pretrain.py

Prints one JSON line. FLOPs are counted analytically for the decoder matmuls only.
With F = n(z+D) inputs (D spatial dimensions: 2 for images), width W = F and C outputs, a supervised pixel costs

    forward  2*F*W + 2*W*C      (two Linear layers)
    backward 2*C*W + 2*W*n*z    (input gradient: dh = dy W2, dlatent = dh W1[:, :n*z]; no weight grads)

and each image adds one full decode of its P pixels (2*F*W + 2*W*C each) for its PSNR, so

    gflop_per_image = (S * (2FW + 4WC + 2Wnz) + P * (2FW + 2WC)) / 1e9

with S the pixels supervised over all steps (about steps * pixel_fraction * P). The factored engine
(``--engine factored``, :mod:`arc.field.factored`) projects each of the image's K latents by every
neighbour slot's block and back once per step (4 K n z W) and per supervised pixel does the offsets'
part, the output layer and the n-row gather-sum and scatter (counted as 2 n W additions):

    gflop_per_image = (steps * 4Knzw + S * (2nDW + 2nW + 4WC) + P * (2FW + 2WC)) / 1e9

``--engine dense,factored`` fits the same images with each engine in turn, ``--repeats R`` times
alternating, and reports the best time of each under ``engines`` (its own FLOPs, rate and PSNR)
and ``engine_psnr_max_abs_diff``; the top-level figures are the first engine's.
``--generated C x S`` fits smooth random samples of that shape made in code instead of a source's
images (one D = len(S) in 1..3): per channel the mean of four plane waves sin(2 pi f.x + phase), |f| in
[1/64, 1/8] cycles per sample point, mapped to [0.1, 0.9]; the decoder is pretrained on other such samples.
``images_per_s`` and ``achieved_gflops = gflop_per_image * images / seconds`` time ``fit_clouds``
end to end (preparation: sampling, neighbours, tables; fitting; final decode), so they are
conservative; matmul_peak_gflops is a 4096^2 (``--peak-size``) matmul timed in the same run and dtype.
``prepare_images_per_s`` times the CPU preparation alone (sampling, neighbours, pixel tables for
all images, packed as ``fit_clouds`` packs them); on a GPU it runs in a background thread while the
device fits, so it bounds the end-to-end rate when it is lower than the device's.
``--reference-loop`` fits the first ``--reference-images`` images one at a time with the same engine
(batch of one, neighbours precomputed and not timed, nothing saved, intra-op threads as set) and
reports its rate, the speedup of the batched run (end to end) and the PSNR difference (batched mean
minus loop mean, and the largest per-image difference) on those images.

``--inr siren|relu|fourier`` times the per-sample INR engine (:func:`arc.baselines.fit_inrs`, widths
[in, hidden x layers, C]) instead, with the same JSON fields; its FLOPs are the MLP's matmuls at nominal
size (the SIREN's separable first layer does fewer): per supervised pixel 2·Σ out·in forward, 2·Σ out·in
for the weight gradients and 2·Σ_(l>0) out·in for the input gradients, plus one full decode per image.
There ``--reference-loop`` runs the plain batched-autograd loop (:mod:`arc.baselines.reference`: one
batch of all ``--reference-images`` images, ``torch.optim.Adam``, default threads) on the same images,
same init and schedule; ``--repeats R`` alternates the two R times and reports the best time of each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from arc.data.sources import open_source
from arc.field import (
    FieldConfig,
    FieldGroup,
    FitConfig,
    PretrainConfig,
    fit_clouds,
    fit_group,
    load_decoder,
    pack_groups,
    pretrain_decoder,
)
from arc.field.fitting import MATMUL_DTYPES, cuda_tf32
from arc.field.group import chunk_size
from arc.field.original import fit_one_at_a_time
from bench_pretrain import bench_pretrain

def supervised_pixels(pixels: int, fit: FitConfig) -> int:
    """Pixels supervised over ``fit.steps`` steps of the chunked schedule for an image of P pixels."""
    m = chunk_size(pixels, fit.pixel_fraction)
    sizes = [min(m, pixels - r * m) for r in range(math.ceil(pixels / m))]
    full, rest = divmod(fit.steps, len(sizes))
    return full * pixels + sum(sizes[:rest])


def gflop_per_image(height: int, width: int, field: FieldConfig, channels: int, fit: FitConfig) -> float:
    """Decoder FLOPs (forward + input gradient + final decode) of fitting one image, in GFLOP."""
    return gflop_per_sample((height, width), field, channels, fit)


def gflop_per_sample(shape, field: FieldConfig, channels: int, fit: FitConfig) -> float:
    """:func:`gflop_per_image` of a sample of spatial shape S (decoder inputs n(z + len(S)))."""
    n, z = field.neighbours, field.latent_dim
    f = w = n * (z + len(shape))
    pixels = math.prod(shape)
    per_step_pixel = 2 * f * w + 4 * w * channels + 2 * w * n * z
    per_decode_pixel = 2 * f * w + 2 * w * channels
    return (supervised_pixels(pixels, fit) * per_step_pixel + pixels * per_decode_pixel) / 1e9


def factored_gflop_per_sample(shape, latents: int, field: FieldConfig, channels: int, fit: FitConfig) -> float:
    """:func:`gflop_per_sample` for the factored engine, for a sample of K = ``latents`` latents."""
    n, z, d = field.neighbours, field.latent_dim, len(shape)
    f = w = n * (z + d)
    pixels = math.prod(shape)
    per_step_pixel = 2 * n * d * w + 2 * n * w + 4 * w * channels
    per_decode_pixel = 2 * f * w + 2 * w * channels
    return (fit.steps * 4 * latents * n * z * w + supervised_pixels(pixels, fit) * per_step_pixel
            + pixels * per_decode_pixel) / 1e9


def inr_gflop_per_image(height: int, width: int, inr, channels: int, steps: int, pixel_fraction: float) -> float:
    """Matmul FLOPs (forward, weight and input gradients, final decode) of fitting one image's INR, in GFLOP."""
    layers = [o * i for o, i in inr.shapes(channels)]
    pixels = height * width
    fit = FitConfig(steps=steps, pixel_fraction=pixel_fraction)
    per_step_pixel = 2 * sum(layers) + 2 * sum(layers) + 2 * sum(layers[1:])
    return (supervised_pixels(pixels, fit) * per_step_pixel + pixels * 2 * sum(layers)) / 1e9


def bench_inr(args, images: list, log) -> dict:
    """Time :func:`arc.baselines.fit_inrs` (and with ``--reference-loop`` the plain autograd loop) on ``images``."""
    from arc.baselines import INRConfig, INRFitConfig, fit_inrs, init_stack
    from arc.baselines.reference import autograd_fit
    from arc.seeding import derive_generator, item_generator

    device = torch.device(args.device)
    inr = INRConfig(kind=args.inr, hidden=(args.hidden,) * args.layers)
    fit = INRFitConfig(steps=args.steps, lr=args.lr, pixel_fraction=args.pixel_fraction, init=args.init,
                       pixel_budget=args.pixel_budget if args.pixel_budget != FitConfig.pixel_budget else INRFitConfig.pixel_budget)
    count, channels, (height, width) = len(images), int(images[0].shape[0]), tuple(images[0].shape[1:])
    load_start = [round(v, 2) for v in os.getloadavg()]
    peak = matmul_peak(device, torch.float32, args.peak_size)
    def engine() -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        psnr = fit_inrs(images, inr, fit, "train", list(range(count)), device=device).psnr
        _sync(device)
        return psnr, time.perf_counter() - start

    ref = min(args.reference_images, count)

    def reference() -> tuple[torch.Tensor, float]:
        generators = [item_generator(fit.seed, "train", i) for i in range(ref)]
        stack = init_stack(inr, channels, generators if fit.init == "random" else [derive_generator(fit.seed, "inr-init")])
        if fit.init != "random":
            stack = stack.select(torch.zeros(ref, dtype=torch.long))
        order = torch.stack([torch.randperm(height * width, generator=g) for g in generators]) if fit.pixel_fraction < 1 else None
        stack = type(stack)([w.to(device) for w in stack.weights], [b.to(device) for b in stack.biases])
        start = time.perf_counter()
        psnr = autograd_fit(inr, stack, torch.stack(images[:ref]).to(device), fit, None if order is None else order.to(device))
        _sync(device)
        return psnr.cpu(), time.perf_counter() - start

    fit_s = ref_s = math.inf  # the best of --repeats alternating runs (the machine's load changes between runs)
    for _ in range(max(1, args.repeats)):
        psnr, seconds = engine()
        fit_s = min(fit_s, seconds)
        log(f"engine: {count / seconds:.2f} images/s, {float(psnr.mean()):.2f} dB")
        if args.reference_loop:
            ref_psnr, seconds = reference()
            ref_s = min(ref_s, seconds)
            log(f"plain autograd loop: {ref / seconds:.2f} images/s, {float(ref_psnr.mean()):.2f} dB")
    flop = count * inr_gflop_per_image(height, width, inr, channels, fit.steps, fit.pixel_fraction)
    result = {
        "source": args.source, "device": str(device), "threads": torch.get_num_threads(), "load_average_start": load_start,
        "inr": args.inr, "widths": [inr.input_dim(), *inr.hidden, channels], "params_per_image": inr.param_count(channels),
        "init": fit.init, "lr": fit.lr, "pixel_fraction": fit.pixel_fraction, "pixel_budget": fit.pixel_budget,
        "images": count, "image_size": list(images[0].shape), "steps": fit.steps, "repeats": max(1, args.repeats),
        "fit_s": round(fit_s, 3), "images_per_s": round(count / fit_s, 3), "psnr_mean": round(float(psnr.mean()), 3),
        "gflop_per_image": round(flop / count, 4), "achieved_gflops": round(flop / fit_s, 2),
        "matmul_peak_gflops": round(peak, 2), "peak_fraction": round(flop / fit_s / peak, 4),
    }
    if args.reference_loop:
        result.update(
            reference="plain batched autograd", reference_images=ref, reference_images_per_s=round(ref / ref_s, 3),
            reference_psnr_mean=round(float(ref_psnr.mean()), 3), speedup=round((count / fit_s) / (ref / ref_s), 2),
            psnr_diff=round(float(psnr[:ref].mean() - ref_psnr.mean()), 5),
            psnr_max_abs_diff=round(float((psnr[:ref] - ref_psnr).abs().max()), 5),
        )
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return result


def write_strokes_npz(path: str, count: int = 2200, seed: int = 0) -> None:
    """An MNIST-like npz source: 28x28 uint8 anti-aliased random polylines on an exactly-0 background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float64)
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for i in range(count):
        points = rng.uniform(6, 22, size=(rng.integers(3, 6), 2))
        dist = np.full((28, 28), np.inf)
        for a, b in zip(points[:-1], points[1:]):
            ab = b - a
            t = np.clip(((rows - a[0]) * ab[0] + (cols - a[1]) * ab[1]) / (ab @ ab + 1e-9), 0, 1)
            dist = np.minimum(dist, np.hypot(rows - a[0] - t * ab[0], cols - a[1] - t * ab[1]))
        images[i] = np.round(np.clip(rng.uniform(1.0, 2.0) + 0.8 - dist, 0, 1) * 255)
    labels = rng.integers(0, 10, count)
    cut = count * 10 // 11
    np.savez(path, x_train=images[:cut], y_train=labels[:cut], x_test=images[cut:], y_test=labels[cut:])


class GeneratedSplit:
    """``count`` smooth random samples of shape [C, *S] (see the module docstring), as (sample, 0) items."""

    def __init__(self, shape: tuple[int, ...], count: int, seed: int = 0) -> None:
        if len(shape) not in (2, 3, 4) or min(shape) < 1:
            raise SystemExit(f"--generated needs C x S with 1 to 3 spatial sizes, e.g. 2x4000 or 1x32x32x32, got {shape}")
        self.shape, self.count, self.seed = shape, count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        channels, spatial = self.shape[0], self.shape[1:]
        grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in spatial], indexing="ij"))
        direction = torch.randn(channels, 4, len(spatial), generator=g, dtype=torch.float64)
        freq = direction / direction.norm(dim=-1, keepdim=True) * (1 / 64 + torch.rand(channels, 4, 1, generator=g, dtype=torch.float64) * (1 / 8 - 1 / 64))
        phase = torch.rand(channels, 4, generator=g, dtype=torch.float64) * 2 * math.pi
        angle = torch.einsum("cwd,d...->cw...", freq, grid) * 2 * math.pi + phase.reshape(channels, 4, *[1] * len(spatial))
        return (0.5 + 0.4 * torch.sin(angle).mean(1)).float(), 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of a size x size matmul."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_reference(images, indices, decoder, field, fit, device) -> tuple[torch.Tensor, float]:
    """One image at a time through the same engine (neighbours precomputed) -> (psnr [B], seconds)."""
    groups = [FieldGroup([im], field, "train", [i], fit.seed, fit.pixel_fraction, fit.pixel_budget, device)
              for im, i in zip(images, indices)]
    _sync(device)
    start = time.perf_counter()
    psnr = torch.cat([fit_group(group, decoder, fit) for group in groups])
    _sync(device)
    return psnr, time.perf_counter() - start


def time_preparation(images, indices, field: FieldConfig, fit: FitConfig) -> float:
    """Seconds to prepare every image's field group on the CPU (no fitting)."""
    groups = pack_groups([tuple(im.shape[1:]) for im in images], fit.pixel_fraction, fit.pixel_budget)
    start = time.perf_counter()
    for members in groups:
        FieldGroup([images[i] for i in members], field, "train", [indices[i] for i in members],
                   fit.seed, fit.pixel_fraction, fit.pixel_budget, "cpu")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="image source spec, e.g. npz:PATH, digits, shapes")
    parser.add_argument("--generated", metavar="CxS", help="fit generated samples of this shape instead, e.g. 2x4000 (1-D), 1x32x32x32 (3-D)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="source option (repeatable), e.g. size=28; integer values are converted")
    parser.add_argument("--make-strokes", metavar="PATH", help="write the MNIST-like strokes npz to PATH and exit")
    parser.add_argument("--root", default=os.environ.get("ARC_DATA", "data"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--pretrain", type=int, default=100,
                        help="pretrain the decoder on this many other train images (after the fitted ones)")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--pretrain-pixel-fraction", type=float, default=PretrainConfig.pixel_fraction)
    parser.add_argument("--stage", default="fit", choices=["fit", "pretrain"],
                        help="pretrain: time decoder pretraining on the --images images instead (tools/bench_pretrain.py)")
    parser.add_argument("--decoder", help="a decoder checkpoint to use instead of pretraining")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pixel-budget", type=int, default=FitConfig.pixel_budget)
    parser.add_argument("--precision", default="32", choices=list(MATMUL_DTYPES))
    parser.add_argument("--engine", default="dense", help="fit.engine, or several separated by commas to compare")
    parser.add_argument("--fit-lr", type=float, help="fit.lr, the latents' Adam rate (default FitConfig's)")
    parser.add_argument("--fit-init", choices=("uniform", "patch"), default="uniform",
                        help="fit.init, where the latents start (patch: the decoder's map; its cost is in the timing)")
    parser.add_argument("--reference-loop", action="store_true")
    parser.add_argument("--reference-images", type=int, default=32)
    parser.add_argument("--original-loop", action="store_true",
                        help="also time the original implementation's loops (arc.field.original: one image at a time by "
                             "autograd; --stage pretrain: its per-image loop inside every step) on --device")
    parser.add_argument("--latents-per-pixel", type=float, default=0.05)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--peak-size", type=int, default=4096, help="matrix size of the peak-matmul timing")
    parser.add_argument("--prepare-only", action="store_true",
                        help="time only the CPU preparation (best of 3) and print prepare_images_per_s")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--inr", choices=["siren", "relu", "fourier"], help="time the per-sample INR engine instead")
    parser.add_argument("--hidden", type=int, default=32, help="--inr: hidden width")
    parser.add_argument("--layers", type=int, default=2, help="--inr: hidden layers")
    parser.add_argument("--lr", type=float, default=1e-3, help="--inr: Adam learning rate")
    parser.add_argument("--pixel-fraction", type=float, default=1.0, help="--inr: pixels supervised per step")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--inr, --stage pretrain, several --engine: alternate the runs this often, keep the best")
    parser.add_argument("--init", default="random", choices=["shared", "random", "transfer"], help="--inr: initialisation")
    args = parser.parse_args(argv)
    if args.fit_init != "uniform" and (args.reference_loop or args.original_loop):
        parser.error("--fit-init patch: the reference and original loops start from the uniform start only")
    if args.make_strokes:
        write_strokes_npz(args.make_strokes)
        return {"written": args.make_strokes}
    if not args.source and not args.generated:
        parser.error("--source or --generated is required")
    options = {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.generated:
        split = GeneratedSplit(tuple(int(v) for v in args.generated.lower().split("x")), args.images + args.pretrain)
        args.source = f"generated:{args.generated}"
    else:
        split = open_source(args.source, root=args.root, **options).split(args.split)
    count = min(args.images, len(split))
    images = [split[i][0] for i in range(count)]
    indices = list(range(count))
    channels = int(images[0].shape[0])
    field = FieldConfig(latents_per_pixel=args.latents_per_pixel)
    engines = args.engine.split(",")
    if not set(engines) <= {"dense", "factored"}:
        raise SystemExit(f"--engine names the engines to time (dense, factored), got {args.engine!r}")
    fit = FitConfig(steps=args.steps, pixel_budget=args.pixel_budget, precision=args.precision, engine=engines[0],
                    init=args.fit_init, **({} if args.fit_lr is None else {"lr": args.fit_lr}))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    if args.inr:
        result = bench_inr(args, images, log)
        print(json.dumps(result))
        return result
    if args.stage == "pretrain":
        with cuda_tf32(False):  # pretraining runs in full float32
            peak = matmul_peak(device, torch.float32, args.peak_size)
        result = bench_pretrain(args, images, field, peak, supervised_pixels, _sync, log)
        print(json.dumps(result))
        return result
    if args.prepare_only:
        best = min(time_preparation(images, indices, field, fit) for _ in range(3))
        result = {"source": args.source, "threads": torch.get_num_threads(), "images": count,
                  "image_size": list(images[0].shape), "prepare_images_per_s": round(count / best, 3)}
        print(json.dumps(result))
        return result

    load_start = [round(v, 2) for v in os.getloadavg()]  # other processes on the machine distort timings
    start = time.perf_counter()
    if args.decoder:
        decoder, _ = load_decoder(args.decoder)
    else:
        others = list(range(count, min(count + args.pretrain, len(split))))
        if not others:
            raise SystemExit(f"no train images left to pretrain on: the split has {len(split)}, {count} are fitted")
        decoder, _ = pretrain_decoder([split[i][0] for i in others], field,
                                      PretrainConfig(images=len(others), steps=args.pretrain_steps), "train", others,
                                      device=device)
    pretrain_s = time.perf_counter() - start
    log(f"decoder ready in {pretrain_s:.1f}s")
    decoder = decoder.to(device)

    dtype = MATMUL_DTYPES[args.precision] if device.type == "cuda" else torch.float32
    with cuda_tf32(args.precision == "tf32"):  # the peak in the precision the fit uses
        peak = matmul_peak(device, dtype, args.peak_size)
    runs = {engine: (math.inf, None) for engine in engines}  # engine -> (best seconds, psnr)
    for _ in range(max(1, args.repeats)):  # alternating, as the machine's load changes between runs
        for engine in engines:
            start = time.perf_counter()
            fitted = fit_clouds(images, decoder, field, replace(fit, engine=engine), "train", indices, device=device)
            _sync(device)
            seconds = time.perf_counter() - start
            runs[engine] = (min(seconds, runs[engine][0]), fitted.psnr)
            log(f"{engine}: {count / seconds:.2f} images/s, {float(fitted.psnr.mean()):.2f} dB")
    latents = fitted.clouds.counts().tolist()
    shapes = [tuple(im.shape[1:]) for im in images]
    figures = {}
    for engine, (seconds, psnr) in runs.items():
        flop = sum(gflop_per_sample(shape, field, channels, fit) if engine == "dense" else
                   factored_gflop_per_sample(shape, k, field, channels, fit) for shape, k in zip(shapes, latents))
        figures[engine] = {"fit_s": round(seconds, 3), "images_per_s": round(count / seconds, 3),
                           "psnr_mean": round(float(psnr.mean()), 3), "gflop_per_image": round(flop / count, 4),
                           "achieved_gflops": round(flop / seconds, 2), "peak_fraction": round(flop / seconds / peak, 4)}
    fit_s, psnr = runs[engines[0]]
    prepare_s = time_preparation(images, indices, field, fit)
    result = {
        "source": args.source,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "precision": args.precision,
        "engine": engines[0],
        "images": count,
        "image_size": list(images[0].shape),
        "steps": args.steps,
        "fit_lr": fit.lr,
        "fit_init": fit.init,
        "pixel_budget": args.pixel_budget,
        "pretrain_s": round(pretrain_s, 3),
        "fit_s": round(fit_s, 3),
        "images_per_s": round(count / fit_s, 3),
        "prepare_images_per_s": round(count / prepare_s, 3),
        "psnr_mean": figures[engines[0]]["psnr_mean"],
        "gflop_per_image": figures[engines[0]]["gflop_per_image"],
        "achieved_gflops": figures[engines[0]]["achieved_gflops"],
        "matmul_peak_gflops": round(peak, 2),
        "peak_fraction": figures[engines[0]]["peak_fraction"],
    }
    if len(engines) > 1:
        result.update(repeats=max(1, args.repeats), engines=figures, engine_psnr_max_abs_diff=round(
            max(float((runs[e][1] - psnr).abs().max()) for e in engines), 5))
    if args.reference_loop:
        ref_count = min(args.reference_images, count)
        ref_psnr, ref_s = run_reference(images[:ref_count], indices[:ref_count], decoder, field, fit, device)
        result.update(
            reference_images=ref_count,
            reference_images_per_s=round(ref_count / ref_s, 3),
            reference_psnr_mean=round(float(ref_psnr.mean()), 3),
            speedup=round((count / fit_s) / (ref_count / ref_s), 2),
            psnr_diff=round(float(psnr[:ref_count].mean() - ref_psnr.mean()), 5),
            psnr_max_abs_diff=round(float((psnr[:ref_count] - ref_psnr).abs().max()), 5),
        )
    if args.original_loop:
        ref_count = min(args.reference_images, count)
        _sync(device)
        start = time.perf_counter()
        orig_psnr = fit_one_at_a_time(images[:ref_count], decoder, field, fit, "train", indices[:ref_count], device)
        _sync(device)
        orig_s = time.perf_counter() - start
        result.update(
            original_images=ref_count, original_images_per_s=round(ref_count / orig_s, 3),
            original_psnr_mean=round(float(orig_psnr.mean()), 3),
            original_psnr_diff=round(float(psnr[:ref_count].mean() - orig_psnr.mean()), 5),
            speedup_vs_original={engine: round(figures[engine]["images_per_s"] / (ref_count / orig_s), 2) for engine in engines},
        )
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
