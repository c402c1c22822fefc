"""Batched per-sample INR fitting: many images at once, each its own INR and its own Adam.

A sample is an image [C, H, W], or in general [C, *S] with D = len(S) in {1, 2, 3} axes (signals
[C, L], volumes [C, D, H, W]); "pixel" below reads "sample point", and the INR's input width is D
(:meth:`~arc.baselines.inr.INRConfig.shapes`). All samples of a call share one shape.

The hot step, :func:`fit_stack`: gather the step's pixels, :func:`~arc.baselines.inr.forward_backward`
(hand-written gradient, batched matmuls), one fused Adam step over the group's weight tensors. The
loss is the sum of per-image mean squared errors and Adam is element-wise, so an image's result does
not depend on which images share its group (``tests/test_baselines_inr.py`` checks it).

Pixel schedule (as ARC's, :mod:`arc.field.group`): with ``pixel_fraction`` < 1 each image's
permutation of its P pixels (from its own generator) is cut into chunks of m = max(1, ⌊fP⌋); step t
supervises chunk t mod ⌈P/m⌉. With 1, every step sees all pixels and the inputs are shared.

Initialisation (``init``): ``shared`` — one INR drawn from ``derive_generator(seed, "inr-init")`` for
every image; ``random`` — each image's own, drawn from ``item_generator(seed, split, index)`` (then
its pixel permutation from the same generator); ``transfer`` — each fit starts from the fitted weights
of the previous image (the BRATS paper's weight transfer, there within a class; here in source order,
so no label enters the representation). Transfer is sequential by construction; it is batched by
cutting the images of one call (one store shard) into ``chains`` contiguous runs: round r fits the
r-th image of every run at once, each started from the (r-1)-th image of its run (round 0 from the
shared init). Results therefore depend on ``chains`` and on the shard size (both in the store key).

Execution: images of a batch are packed into groups of about ``pixel_budget`` pixels per step, at least
one group per intra-op thread; on the CPU the groups run concurrently, one per thread with
single-threaded kernels, as :func:`arc.field.fit_clouds` does. Fewer, larger groups pay the per-op
dispatch of a step less often (64 digits on 2 threads: 15.5 images/s with groups of 8,192 pixels, 19.8
with one group per thread; ``docs/benchmarks.md``).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from arc.baselines.inr import (
    Grid, INRConfig, INRError, WeightStack, encode, forward, forward_backward, init_stack, sample_coordinates,
)
from arc.field.fitting import adam, intra_op_threads
from arc.field.group import MIN_MSE, chunk_size
from arc.seeding import derive_generator, item_generator

INITS = ("shared", "random", "transfer")


@dataclass(frozen=True)
class INRFitConfig:
    """Fitting settings: ``steps``, Adam ``lr``, ``pixel_fraction`` per step, ``init`` (shared | random |
    transfer), ``chains`` (transfer: runs fitted side by side), ``seed``; ``pixel_budget`` (supervised
    pixels per group and step) bounds memory and does not change the results."""

    steps: int = 500
    lr: float = 1e-3
    pixel_fraction: float = 1.0
    init: str = "random"
    chains: int = 64
    seed: int = 0
    pixel_budget: int = 32768

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise INRError(f"fit.init {self.init!r} is not one of {list(INITS)}")
        if self.steps < 0 or self.lr <= 0 or not 0 < self.pixel_fraction <= 1:
            raise INRError("fit.steps must be >= 0, fit.lr > 0 and fit.pixel_fraction in (0, 1]")
        if self.chains < 1 or self.pixel_budget < 1:
            raise INRError("fit.chains and fit.pixel_budget must be positive")

    def key_settings(self) -> dict:
        """The settings that change the fitted weights (all but ``pixel_budget``; ``chains`` only with transfer)."""
        settings = asdict(self)
        settings.pop("pixel_budget")
        if self.init != "transfer":
            settings.pop("chains")
        return settings


@dataclass
class INRFitResult:
    """Fitted flat weights [N, P] (float32, CPU, input order) and PSNR [N] (dB, on the [0, 1] images)."""

    weights: Tensor
    psnr: Tensor


def psnr_of(config: INRConfig, stack: WeightStack, images: Tensor) -> Tensor:
    """[B] PSNR of the INRs decoded at every point against ``images`` [B, C, *S] in [0, 1]."""
    out, _ = forward(config, stack, step_inputs(config, *images.shape[2:], device=images.device))
    recon = config.from_fit_space(out).clamp_(0, 1)
    mse = (recon - pixel_rows(images)).square().mean(dim=(1, 2)).clamp_min(MIN_MSE)
    return -10 * torch.log10(mse)


def pixel_rows(images: Tensor) -> Tensor:
    """[B, ΠS, C] row-major points of ``images`` [B, C, *S]."""
    return images.flatten(2).transpose(1, 2).contiguous()


def step_inputs(config: INRConfig, *shape: int, device: torch.device | str = "cpu") -> Tensor | Grid:
    """The inputs of a full-sample step on a grid of ``shape`` S: a :class:`Grid` for a SIREN (separable
    first layer), else the encoded coordinates [ΠS, in]."""
    if config.kind == "siren":
        return Grid(*shape)
    return encode(config, sample_coordinates(shape, device))


def fit_stack(
    config: INRConfig, stack: WeightStack, images: Tensor, fit: INRFitConfig,
    order: Optional[Tensor] = None, on_step: Optional[Callable[[int], None]] = None,
) -> Tensor:
    """Fit ``stack`` (B INRs, updated in place) to ``images`` [B, C, *S] in [0, 1] for ``fit.steps``
    Adam steps; ``order`` [B, ΠS] is each image's pixel permutation (needed when ``fit.pixel_fraction``
    < 1). Returns [B] PSNR. ``on_step(B)`` follows every step."""
    shape = images.shape[2:]
    target = config.to_fit_space(pixel_rows(images))  # [B, M, C]
    pixels = math.prod(shape)
    m = chunk_size(pixels, fit.pixel_fraction)
    inputs = step_inputs(config, *shape, device=images.device)
    if m < pixels:
        if order is None:
            raise INRError("a pixel fraction below 1 needs each image's pixel order")
        coords = encode(config, sample_coordinates(shape, images.device))
        inputs_p = coords[order]  # [B, M, in], each image's pixels in its own order
        target_p = target.gather(1, order.unsqueeze(2).expand_as(target))
    grad = stack.zeros_like()
    params = stack.tensors()
    for param, g in zip(params, grad.tensors()):
        param.grad = g
    optimiser = adam(params, fit.lr, images.device)
    with torch.no_grad():
        for step in range(fit.steps):
            if m < pixels:
                first = step % math.ceil(pixels / m) * m
                forward_backward(config, stack, inputs_p[:, first : first + m], target_p[:, first : first + m], grad)
            else:
                forward_backward(config, stack, inputs, target, grad)
            optimiser.step()
            if on_step is not None:
                on_step(len(stack))
        for param in params:
            param.grad = None
        return psnr_of(config, stack, images)


def as_batch(images: Tensor | Sequence[Tensor]) -> Tensor:
    """[N, C, *S] float32 from a tensor or a sequence of same-shape [C, *S] samples (D = len(S) in 1, 2, 3)."""
    if isinstance(images, Tensor):
        batch = images
    else:
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) > 1:
            hint = ("resize them (e.g. size=28)" if len({len(s) for s in sizes}) == 1 and len(next(iter(sizes))) == 3
                    else "give the source option length (1-D) or shape (3-D) so every sample has one")
            raise INRError(f"per-sample INRs need samples of one shape, got {sorted(sizes)[:3]}...; {hint}")
        batch = torch.stack(list(images)) if images else torch.empty(0)
    if batch.ndim not in (3, 4, 5) or batch.shape[0] == 0:
        raise INRError(f"expected a non-empty batch of samples [N, C, L], [N, C, H, W] or [N, C, D, H, W], "
                       f"got shape {tuple(batch.shape)}")
    return batch.float()


def fit_inrs(
    images: Tensor | Sequence[Tensor], config: INRConfig, fit: INRFitConfig, split: str, indices: Sequence[int],
    device: torch.device | str | None = None, on_step: Optional[Callable[[int], None]] = None,
) -> INRFitResult:
    """Fit one INR per sample (same-shape [C, *S] in [0, 1], D = len(S) in 1, 2, 3); seeds from
    (fit.seed, split, indices[i]). The weights are [N, :meth:`INRConfig.param_count` (C, D)]."""
    batch = as_batch(images)
    if len(indices) != len(batch):
        raise INRError(f"{len(batch)} images but {len(indices)} source indices")
    device = torch.device(device) if device is not None else torch.device("cpu")
    n, channels, *shape = batch.shape
    dims, pixels = len(shape), math.prod(shape)
    generators = [item_generator(fit.seed, split, int(i)) for i in indices]
    if fit.init == "random":
        start = init_stack(config, channels, generators, dims)
    else:
        start = init_stack(config, channels, [derive_generator(fit.seed, "inr-init")], dims)
    partial = chunk_size(pixels, fit.pixel_fraction) < pixels
    order = torch.stack([torch.randperm(pixels, generator=g) for g in generators]) if partial else None
    weights = torch.empty(n, config.param_count(channels, dims))
    psnr = torch.empty(n)

    def run(rows: list[int], begin: WeightStack) -> None:
        picked = torch.tensor(rows)
        stack = WeightStack([w.to(device) for w in begin.weights], [b.to(device) for b in begin.biases])
        got = _fit_groups(config, stack, batch[picked].to(device), fit,
                          None if order is None else order[picked].to(device), on_step)
        weights[picked] = stack.flat().cpu()
        psnr[picked] = got.cpu()

    if fit.init == "transfer":
        chains = min(fit.chains, n)
        bounds = [n * k // chains for k in range(chains + 1)]
        for r in range(math.ceil(n / chains)):  # the longest run
            rows = [bounds[k] + r for k in range(chains) if bounds[k] + r < bounds[k + 1]]
            if r == 0:
                begin = start.select(torch.zeros(len(rows), dtype=torch.long))
            else:
                begin = WeightStack.from_flat(weights[torch.tensor(rows) - 1], config.shapes(channels, dims))
            run(rows, begin)
    else:
        rows = list(range(n))
        run(rows, start if fit.init == "random" else start.select(torch.zeros(n, dtype=torch.long)))
    return INRFitResult(weights, psnr)


def _fit_groups(
    config: INRConfig, stack: WeightStack, images: Tensor, fit: INRFitConfig,
    order: Optional[Tensor], on_step: Optional[Callable[[int], None]],
) -> Tensor:
    """Fit ``stack`` in groups of about ``fit.pixel_budget`` pixels per step, concurrently on the CPU;
    writes the fitted weights back into ``stack`` and returns [B] PSNR."""
    b, pixels = images.shape[0], math.prod(images.shape[2:])
    per_group = max(1, fit.pixel_budget // chunk_size(pixels, fit.pixel_fraction))
    workers = torch.get_num_threads() if images.device.type == "cpu" else 1
    if workers > 1:
        per_group = min(per_group, math.ceil(b / workers))
    groups = [slice(a, min(a + per_group, b)) for a in range(0, b, per_group)]

    def run(rows: slice) -> Tensor:
        part = stack.select(rows)
        got = fit_stack(config, part, images[rows], fit, None if order is None else order[rows], on_step)
        for mine, theirs in zip(stack.tensors(), part.tensors()):
            mine[rows] = theirs
        return got

    workers = min(workers, len(groups))
    with ExitStack() as scope:
        if workers > 1:
            scope.enter_context(intra_op_threads(1))
            pool = scope.enter_context(ThreadPoolExecutor(max_workers=workers))
            results = list(pool.map(run, groups))
        else:
            results = [run(rows) for rows in groups]
    return torch.cat(results)
