"""``tools/bench_fit.py --stage pretrain``: time decoder pretraining (:func:`arc.field.pretrain_decoder`, the
hand-written kernels of :mod:`arc.field.decoder_grad`) and, with ``--reference-loop``, the same steps through
autograd (the computation pretraining ran before issue 16), alternated ``--repeats`` times, best time of each.

FLOPs are the decoder matmuls the kernels run, counted analytically as for the factored fitting engine
(``tools/bench_fit.py``): with F = n(z+D) inputs, width W = F, C outputs and K latents, a step costs per latent

    6nzW            (its table Q = lat P, the latent gradient G P^T and the projection's gradient lat^T G)

and a supervised pixel

    forward          2nDW + 2WC + nW   (offsets' part, output layer, the n-row table sum)
    backward         4WC + 2nDW + nW   (dW2 = dy^T h, dh = dy W2, dW1_off = dh^T off, dh summed per table row)

(the bias sums are not counted), and each image adds one full decode of its P pixels (2FW + 2WC each) for
its PSNR. Timings are end to end (group preparation, the steps, the final decode).
"""
from __future__ import annotations

import math
import os
import time

import torch

from arc.field import FieldConfig, FitConfig, JointTraining, PretrainConfig, pretrain_decoder
from arc.field.original import pretrain_image_by_image
from arc.field.sampling import sample_latent_count


def pretrain_gflop_per_sample(shape: tuple[int, ...], latents: int, field: FieldConfig, channels: int,
                              pretrain: PretrainConfig, supervised_pixels) -> float:
    """Decoder FLOPs (forward, input and weight gradients, final decode) of pretraining on one sample of spatial
    shape S with ``latents`` latents, in GFLOP; ``supervised_pixels(P, fit)`` counts the schedule's pixels."""
    n, z, d = field.neighbours, field.latent_dim, len(shape)
    f = w = n * (z + d)
    pixels = math.prod(shape)
    per_step_pixel = 4 * n * d * w + 6 * w * channels + 2 * n * w
    per_decode_pixel = 2 * f * w + 2 * w * channels
    schedule = FitConfig(steps=pretrain.steps, pixel_fraction=pretrain.pixel_fraction)
    return (pretrain.steps * 6 * latents * n * z * w + supervised_pixels(pixels, schedule) * per_step_pixel
            + pixels * per_decode_pixel) / 1e9


def autograd_step(training: JointTraining, step: int, optimiser: torch.optim.Optimizer) -> torch.Tensor:
    """One step of ``training`` by autograd through the decoder and the latents (:meth:`FieldGroup.loss`), the
    computation of pretraining before issue 16 and the reference of its tests -> the step's loss (0-dim, float64)."""
    optimiser.zero_grad(set_to_none=False)
    total = torch.zeros((), dtype=torch.float64, device=training.group.device)
    for piece in training.group.passes(step):
        loss = training.group.loss(training.decoder, training.latents, piece)
        loss.backward()
        total += loss.detach()
    optimiser.step()
    return total


def autograd_pretraining(images, field: FieldConfig, pretrain: PretrainConfig, pixel_budget: int,
                         device: torch.device) -> tuple[torch.Tensor, torch.nn.Module]:
    """All steps of pretraining by autograd -> ([B] PSNR, decoder)."""
    training = JointTraining(images, field, pretrain, "train", list(range(len(images))), pixel_budget, device)
    optimiser = training.optimiser()
    for step in range(pretrain.steps):
        autograd_step(training, step, optimiser)
    return training.psnr(), training.decoder


def bench_pretrain(args, images: list, field: FieldConfig, peak: float, supervised_pixels, sync, log) -> dict:
    """Pretrain a decoder on ``images`` (``--pretrain-steps`` steps) with the engine, and with ``--reference-loop``
    by autograd, alternated ``--repeats`` times; the JSON fields of ``bench_fit`` plus ``steps_per_s``."""
    device = torch.device(args.device)
    count, channels = len(images), int(images[0].shape[0])
    pretrain = PretrainConfig(images=count, steps=args.pretrain_steps, pixel_fraction=args.pretrain_pixel_fraction)
    load_start = [round(v, 2) for v in os.getloadavg()]

    def timed(run) -> tuple[torch.Tensor, torch.nn.Module, float]:
        sync(device)
        start = time.perf_counter()
        psnr, decoder = run()
        sync(device)
        return psnr, decoder, time.perf_counter() - start

    def engine() -> tuple[torch.Tensor, torch.nn.Module]:
        decoder, psnr = pretrain_decoder(images, field, pretrain, "train", list(range(count)), device=device,
                                         pixel_budget=args.pixel_budget)
        return psnr, decoder

    latents = [sample_latent_count(im.shape[1:], math.prod(im.shape[1:]), field) for im in images]  # K = floor(rho P)

    best = ref_best = orig_best = math.inf
    for _ in range(max(1, args.repeats)):
        psnr, decoder, seconds = timed(engine)
        best = min(best, seconds)
        log(f"engine: {pretrain.steps / seconds:.2f} steps/s, {float(psnr.mean()):.2f} dB")
        if args.reference_loop:
            ref_psnr, ref_decoder, seconds = timed(lambda: autograd_pretraining(images, field, pretrain,
                                                                                 args.pixel_budget, device))
            ref_best = min(ref_best, seconds)
            log(f"autograd: {pretrain.steps / seconds:.2f} steps/s, {float(ref_psnr.mean()):.2f} dB")
        if args.original_loop:
            sync(device)
            start = time.perf_counter()
            _, orig_psnr = pretrain_image_by_image(images, field, pretrain, "train", list(range(count)), device)
            sync(device)
            seconds = time.perf_counter() - start
            orig_best = min(orig_best, seconds)
            log(f"original loop: {pretrain.steps / seconds:.2f} steps/s, {float(orig_psnr.mean()):.2f} dB")
    flop = sum(pretrain_gflop_per_sample(tuple(im.shape[1:]), k, field, channels, pretrain, supervised_pixels)
               for im, k in zip(images, latents))
    result = {
        "source": args.source, "stage": "pretrain", "device": str(device), "threads": torch.get_num_threads(),
        "load_average_start": load_start, "images": count, "image_size": list(images[0].shape),
        "steps": pretrain.steps, "pixel_fraction": pretrain.pixel_fraction, "pixel_budget": args.pixel_budget,
        "repeats": max(1, args.repeats), "pretrain_s": round(best, 3), "images_per_s": round(count / best, 3),
        "steps_per_s": round(pretrain.steps / best, 3), "psnr_mean": round(float(psnr.mean()), 3),
        "gflop_per_image": round(flop / count, 4), "achieved_gflops": round(flop / best, 2),
        "matmul_peak_gflops": round(peak, 2), "peak_fraction": round(flop / best / peak, 4),
    }
    if args.reference_loop:
        weights = zip(decoder.state_dict().values(), ref_decoder.cpu().state_dict().values())
        result.update(
            reference="autograd", reference_s=round(ref_best, 3), reference_steps_per_s=round(pretrain.steps / ref_best, 3),
            reference_psnr_mean=round(float(ref_psnr.mean()), 3), speedup=round(ref_best / best, 2),
            psnr_diff=round(float(psnr.mean() - ref_psnr.mean()), 5),
            decoder_max_abs_diff=float(max((a - b).abs().max() for a, b in weights)),
        )
    if args.original_loop:
        result.update(original_s=round(orig_best, 3), original_steps_per_s=round(pretrain.steps / orig_best, 3),
                      original_psnr_mean=round(float(orig_psnr.mean()), 3), speedup_vs_original=round(orig_best / best, 2))
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return result
