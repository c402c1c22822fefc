"""Throughput of the ARC classifier (paper architecture) on synthetic clouds.

    python tools/bench_classifier.py --device cpu|cuda --json [--batch N] [--steps N] [--case cifar|imagenette|all]

Training = augment (mask 0.3 + ARCMix, the paper's recipe) + forward + backward + AdamW step.
Inference = forward in eval mode under torch.inference_mode. Augment = the augmentation pipeline
alone (its share of a training step). Prints one line per (case, mode):
clouds/s, ms/step, and the forward matmul/attention FLOPs per cloud counted by
torch.utils.flop_counter (gathers, scatters and sparse-conv index work are not counted),
from which the achieved TFLOP/s is derived (training counted as 3x forward).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

from arc.augment import Augmentations, build_augmentations, soft_labels
from arc.cloud import CloudBatch
from arc.model import ARCModel

PAPER_AUGMENT = {"mask": 0.3, "arcmix": {"alpha": 1.0}}  # the paper's best recipe (configs/base/classifier.yaml)

CASES = {
    # name: (image side, points per cloud, default batch on cuda, default batch on cpu)
    "cifar": (32, 51, 1024, 64),
    "imagenette": (424, 9000, 32, 2),
}


def synthetic_batch(batch: int, side: int, points: int, latent_dim: int, classes: int, seed: int) -> CloudBatch:
    """``batch`` clouds of ``points`` distinct integer pixel positions in a side x side image, N(0,1) latents."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.cat([torch.randperm(side * side, generator=g)[:points] for _ in range(batch)])
    pos = torch.stack([pos // side, pos % side], 1).float()
    return CloudBatch(
        pos=pos,
        lat=torch.randn(batch * points, latent_dim, generator=g),
        offset=torch.arange(1, batch + 1) * points,
        label=torch.randint(0, classes, (batch,), generator=g),
        size=torch.tensor([[side, side]] * batch),
        index=torch.arange(batch),
        colour_mean=torch.zeros(batch, 3),
        colour_std=torch.ones(batch, 3),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(model: ARCModel, batch: CloudBatch) -> float:
    """Counted FLOPs of one eval forward pass of ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(batch)
    return float(counter.get_total_flops())


def bench(model: ARCModel, augment: Augmentations, batch: CloudBatch, mode: str, steps: int, warmup: int) -> float:
    """Seconds per step (mean over ``steps`` after ``warmup``)."""
    device = batch.device
    if mode == "train":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            mixed = augment(batch, normalise=model.normaliser)
            logits = model.classify(mixed.pos, mixed.lat, mixed.offset)
            F.cross_entropy(logits, soft_labels(mixed.label, model.num_classes)).backward()
            optimizer.step()

    elif mode == "augment":

        def step() -> None:
            with torch.no_grad():
                augment(batch, normalise=model.normaliser)

    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(batch)

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--batch", type=int, help="clouds per batch (default per case and device)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 10 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--no-tf32", action="store_true", help="full fp32 matmuls on cuda (the paper ran with TF32)")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms, as --trainer.deterministic true (its cost)")
    args = parser.parse_args(argv)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what Lightning sets for deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
    try:
        return run(args, parser)
    finally:
        torch.use_deterministic_algorithms(False)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Benchmark every requested case and mode; one JSON line (or text line) per (case, mode)."""

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    if device.type == "cuda" and not args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    steps = args.steps or (10 if device.type == "cuda" else 3)
    torch.manual_seed(0)
    model = ARCModel(num_classes=args.classes).to(device)
    model.normaliser.set_stats(torch.zeros(model.latent_dim), torch.ones(model.latent_dim))
    augment = build_augmentations(PAPER_AUGMENT, num_classes=args.classes)
    params = sum(p.numel() for p in model.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    cases = list(CASES) if args.case == "all" else [args.case]
    for case in cases:
        side, points, gpu_batch, cpu_batch = CASES[case]
        b = args.batch or (gpu_batch if device.type == "cuda" else cpu_batch)
        batch = synthetic_batch(b, side, points, model.latent_dim, args.classes, seed=0).to(device)
        flops = forward_flops(model, batch) / b
        for mode in ("train", "infer", "augment"):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds = bench(model, augment, batch, mode, steps, args.warmup)
            per_s = b / seconds
            record = {
                "bench": "classifier",
                "case": case,
                "mode": mode,
                "device": name,
                "batch": b,
                "points_per_cloud": points,
                "image_side": side,
                "params": params,
                "steps": steps,
                "ms_per_step": round(seconds * 1e3, 3),
                "clouds_per_s": round(per_s, 2),
                "gflop_per_cloud_fwd": round(flops / 1e9, 4),
                "achieved_tflops": round(per_s * flops * {"train": 3, "infer": 1}.get(mode, 0) / 1e12, 4),
                "tf32": device.type == "cuda" and not args.no_tf32,
                "deterministic": args.deterministic,
            }
            if device.type == "cuda":
                record["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if args.json:
                print(json.dumps(record), flush=True)
            else:
                print(
                    f"{case:>10} {mode:>5}  batch {b:>5}  {record['ms_per_step']:>10.1f} ms/step  "
                    f"{record['clouds_per_s']:>10.1f} clouds/s  {record['achieved_tflops']:.3f} TFLOP/s",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
